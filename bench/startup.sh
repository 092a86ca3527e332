#!/usr/bin/env bash
# Start-up and push time with and without the compile cache, in one run:
#   cold  : `edgegate serve` on the demo's four policies (auth, routing,
#           redaction, caching) with an empty state folder: every component
#           is compiled (and kept in state_dir/compiled)
#   warm  : the same start again: every component is loaded from the cache
#   off   : the same start with `admin.compile_cache = false`
# each measured from spawning the process to the first 200 from /readyz,
# ROUNDS times, alternating; then push-to-first-response of `auth` (the
# demo's own digest) with the cache holding it (hit) and emptied (miss),
# with the compile step as the gateway reports it.
#
#   bash bench/startup.sh     # ROUNDS=5
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}

bash scripts/build-components.sh >/dev/null
cargo build --release -q -p edgegate-cli
BIN=${CARGO_TARGET_DIR:-target}/release/edgegate
bash scripts/sign-components.sh "$BIN" >/dev/null

WORK=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EG_PORT=$(free_port); EG_ADMIN=$(free_port)

# The demo config without TLS and coordinator, on free ports, its paths absolute.
make_config() { # file compile_cache
  python3 - "$PWD" "$EG_PORT" "$EG_ADMIN" "$WORK/state" "$2" > "$1" <<'PY'
import re, sys
root, port, admin, state, cache = sys.argv[1:]
text = open(f"{root}/policies/gateway.toml").read()
text = re.sub(r"\n\[server\.tls\].*?(?=\n\[admin\])", "\n", text, flags=re.S)
text = re.sub(r"\n\[node\].*?(?=\n\[(?!node))", "\n", text, flags=re.S)
text = text.replace('"../', f'"{root}/')
text = text.replace('"127.0.0.1:8080"', f'"127.0.0.1:{port}"')
text = text.replace('listen = "127.0.0.1:9901"', f'listen = "127.0.0.1:{admin}"\nstate_dir = "{state}"\ncompile_cache = {cache}')
text = text.replace('target = "stdout"', 'enabled = false')
print(text)
PY
}
make_config "$WORK/on.toml" true
make_config "$WORK/off.toml" false

now_ms() { python3 -c 'import time; print(time.monotonic_ns() // 1000000)'; }
start() { # config; sets PID and TOOK (ms to ready)
  local t0 t1
  t0=$(now_ms)
  "$BIN" serve --config "$1" >/dev/null 2>>"$WORK/gateway.log" &
  PID=$!
  for _ in $(seq 600); do
    curl -sf -o /dev/null "http://127.0.0.1:$EG_ADMIN/readyz" && break
    sleep 0.01
  done
  t1=$(now_ms)
  curl -sf -o /dev/null "http://127.0.0.1:$EG_ADMIN/readyz" || { cat "$WORK/gateway.log" >&2; exit 1; }
  TOOK=$((t1 - t0))
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

cold=(); warm=(); off=()
for i in $(seq "$ROUNDS"); do
  rm -rf "$WORK/state"
  start "$WORK/on.toml"; cold+=("$TOOK"); stop
  start "$WORK/on.toml"; warm+=("$TOOK"); stop
  start "$WORK/off.toml"; off+=("$TOOK"); stop
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mc=$(median "${cold[@]}"); mw=$(median "${warm[@]}"); mo=$(median "${off[@]}")
echo "start-up to /readyz, 4 policies, ms (median of $ROUNDS; each run listed)"
printf '%-6s %6s   %s\n' cold "$mc" "${cold[*]}"
printf '%-6s %6s   %s\n' warm "$mw" "${warm[*]}"
printf '%-6s %6s   %s\n' off "$mo" "${off[*]}"
awk -v c="$mc" -v w="$mw" 'BEGIN { printf "warm / cold = %.2f\n", w / c }'

# Push-to-first-response of the demo's auth digest, cached and not.
start "$WORK/on.toml"
push() { # → "total_ms compile_ms outcome"
  local t0 out t1
  t0=$(now_ms)
  out=$(curl -sf -X POST --data-binary @"$PWD/target/signed/auth.wasm" "http://127.0.0.1:$EG_ADMIN/v1/policies/auth/versions")
  curl -s -o /dev/null -H 'authorization: Bearer demo-key' "http://127.0.0.1:$EG_PORT/v1/models"
  t1=$(now_ms)
  python3 -c 'import json,sys; t=json.loads(sys.argv[1])["timings_ms"]; print(sys.argv[2], t["compile"], t["compile_cache"])' "$out" $((t1 - t0))
}
echo
echo "push of auth (~$(( $(stat -c %s target/signed/auth.wasm) / 1024 )) KB) to first response: total ms, compile ms, cache"
for i in $(seq "$ROUNDS"); do
  echo "hit   $(push)"
  rm -f "$WORK"/state/compiled/*.cwasm
  echo "miss  $(push)"
done
stop
