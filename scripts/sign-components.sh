#!/usr/bin/env bash
# Sign every built component (target/components/*.wasm) into target/signed/ with
# a demo key, generated on first use into target/demo-keys/ (its trust.toml is
# what the demo config and the tests trust). For production, keep your key
# elsewhere and sign with `edgegate sign --key ...` (docs/signing.md).
#
#   scripts/sign-components.sh [path/to/edgegate]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-$repo/target/release/edgegate}"
keys="$repo/target/demo-keys"
out="$repo/target/signed"

if ! ls "$keys"/*.secret >/dev/null 2>&1; then
    "$bin" keygen --out "$keys" >/dev/null
fi
secret="$(ls "$keys"/*.secret | head -1)"
mkdir -p "$out"
for component in "$repo"/target/components/*.wasm; do
    name="$(basename "$component")"
    # Sign a copy and move it into place, so readers never see a half-written file.
    "$bin" sign --key "$secret" --out "$out/$name.tmp.$$" "$component" >/dev/null
    mv -f "$out/$name.tmp.$$" "$out/$name"
done
echo "$out"
