#!/usr/bin/env bash
# Builds the policy components (components/) and the hostile test guests
# (tests/guests/) for wasm32-wasip2 and copies each component to
# target/components/<package-name>.wasm. Works from any directory; quiet and
# quick when nothing changed. Checks that every output is a component (not a
# core module) and, when `wasm-tools` is on PATH, that it imports nothing but
# edgegate:policy/* and wasi:* interfaces (the Spin gateway: fermyon:spin/*
# and wasi:*).
#
#   scripts/build-components.sh                     # everything
#   scripts/build-components.sh --only spin-gateway # one package (spin.toml's build)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=wasm32-wasip2
# One target folder for both workspaces, apart from the host's (override to reuse a cache).
export CARGO_TARGET_DIR="${EDGEGATE_WASM_TARGET_DIR:-$repo/target/wasm}"
built="$CARGO_TARGET_DIR/$target/release"
out="$repo/target/components"

# The packages to copy out, by workspace; each file is named after its package.
components=(noop headers auth routing caching redaction spin-gateway) # components/
guests=(trap spin oom init-fails kv-user stack body-echo instance-counter hostile-output contract-0-1)  # tests/guests/
workspaces=(components tests/guests)
build_args=()

if [[ "${1:-}" == "--only" ]]; then
    only="${2:?--only needs a package name}"
    if [[ " ${components[*]} " == *" $only "* ]]; then
        workspaces=(components)
    elif [[ " ${guests[*]} " == *" $only "* ]]; then
        workspaces=(tests/guests)
    else
        echo "error: no package \`$only\`; known: ${components[*]} ${guests[*]}" >&2
        exit 2
    fi
    components=("$only")
    guests=()
    build_args=(--package "$only")
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

for workspace in "${workspaces[@]}"; do
    echo "building $workspace for $target" >&2
    cargo build --quiet --release --target "$target" --manifest-path "$repo/$workspace/Cargo.toml" "${build_args[@]}"
done

mkdir -p "$out"
component_header="0061736d0d000100" # "\0asm", version 0x0d, layer 1 (a core module has layer 0)
status=0
for package in "${components[@]}" "${guests[@]+"${guests[@]}"}"; do
    src="$built/${package//-/_}.wasm"
    dst="$out/$package.wasm"
    if [[ ! -f "$src" ]]; then
        echo "error: $package was not built ($src missing): is it a cdylib member of its workspace?" >&2
        status=1
        continue
    fi
    header="$(od -An -tx1 -N8 "$src" | tr -d ' \n')"
    if [[ "$header" != "$component_header" ]]; then
        echo "error: $src is not a component (header $header)" >&2
        status=1
        continue
    fi
    if command -v wasm-tools >/dev/null; then
        allowed='^(edgegate:policy/|wasi:)'
        [[ "$package" == spin-gateway ]] && allowed='^(fermyon:spin/|wasi:)'
        foreign="$(wasm-tools component wit "$src" |
            awk '$1 == "import" { sub(/;$/, "", $2); print $2 }' |
            grep -Ev "$allowed" | tr '\n' ' ' || true)"
        if [[ -n "$foreign" ]]; then
            echo "error: $src imports interfaces the host does not provide: $foreign" >&2
            status=1
            continue
        fi
    fi
    # Replace only on change (keeps mtimes, so whatever watches these files stays
    # cached), and atomically: a test may be reading the previous version.
    if ! cmp -s "$src" "$dst"; then
        cp "$src" "$dst.tmp.$$"
        mv -f "$dst.tmp.$$" "$dst"
    fi
    echo "$dst"
done
if ! command -v wasm-tools >/dev/null; then
    echo "note: wasm-tools not on PATH; imports not checked" >&2
fi
exit "$status"
