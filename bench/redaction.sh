#!/usr/bin/env bash
# Redaction inside wasm vs the same logic compiled natively, in one run:
#   native: components/redaction/logic/benches/redact.rs
#   wasm  : host/runtime/benches/policy_call.rs, group `redaction` (a fresh
#           instance, init and on-request per call, as the gateway runs it)
# Both redact bench/fixtures/chat-64k.json with the default rules, once
# building the policy from its config in every iteration (a fresh instance
# per call in wasm) and once with the policy kept (`reuse_instances = true`
# in wasm). Prints MiB/s and the ratios (goal: wasm >= 0.5x native).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/build-components.sh >/dev/null
native=$(cargo bench -q --manifest-path components/Cargo.toml -p edgegate-redaction --bench redact 2>/dev/null)
wasm=$(cargo bench -q -p edgegate-runtime --bench policy_call -- redaction 2>/dev/null)
echo "$native"
echo "$wasm"
# criterion prints `thrpt:  [low mid high]` after each benchmark's name;
# take the middle value in MiB/s of the benchmark whose name contains $1.
mid() { awk -v want="$1" 'index($0, want) { found=1 } found && /thrpt:/ { v=$(NF-3); u=$(NF-2); if (u ~ /GiB/) v*=1024; if (u ~ /KiB/) v/=1024; print v; exit }'; }
for case in "default rules" "policy kept"; do
  n=$(echo "$native" | mid "$case")
  w=$(echo "$wasm" | mid "$case")
  awk -v c="$case" -v n="$n" -v w="$w" 'BEGIN { printf "redaction of a 64 KB JSON body (%s): native %.1f MiB/s, wasm %.1f MiB/s, wasm/native %.2fx (goal >= 0.5x)\n", c, n, w, w/n }'
done
