#!/usr/bin/env bash
# Redaction inside wasm vs the same logic compiled natively, in one run:
#   native: components/redaction/logic/benches/redact.rs
#   wasm  : host/runtime/benches/policy_call.rs, group `redaction` (a fresh
#           instance, init and on-request per call, as the gateway runs it)
# Both redact bench/fixtures/chat-64k.json with the default rules and build
# the policy from its config in every iteration. Prints MiB/s and the ratio
# (goal: wasm >= 0.5x native).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-components.sh >/dev/null
native=$(cargo bench -q --manifest-path components/Cargo.toml -p edgegate-redaction --bench redact 2>/dev/null)
wasm=$(cargo bench -q -p edgegate-runtime --bench policy_call -- redaction 2>/dev/null)
echo "$native"
echo "$wasm"
# criterion prints `thrpt:  [low mid high]`; take the middle value in MiB/s.
mid() { awk '/thrpt:/ { v=$(NF-3); u=$(NF-2); if (u ~ /GiB/) v*=1024; if (u ~ /KiB/) v/=1024; print v; exit }'; }
n=$(echo "$native" | mid)
w=$(echo "$wasm" | mid)
awk -v n="$n" -v w="$w" 'BEGIN { printf "redaction of a 64 KB JSON body: native %.1f MiB/s, wasm %.1f MiB/s, wasm/native %.2fx (goal >= 0.5x)\n", n, w, w/n }'
