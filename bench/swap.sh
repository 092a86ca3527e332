#!/usr/bin/env bash
# Hot swap benchmark (issue 6), in one run on this machine:
#   steady : wrk against edgegate with one policy (`p`), no swaps
#   swaps  : the same wrk run while `edgegate push` swaps `p` every second
#            (alternating the `headers` component, ~180 KB, and `noop`)
# reported as requests/s and p99 with their ratios (goal: p99 <= 1.5x steady,
# 0 failed requests); then push-to-first-response for the ~180 KB `headers`
# component: the time from starting `edgegate push` until a request is
# answered by the new version, with verify / compile / admission as the
# gateway reports them (goal <= 200 ms).
#
#   bash bench/swap.sh       # DURATION=10s CONNECTIONS=64 THREADS=1 ROUNDS=10
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-2}
ROUNDS=${ROUNDS:-10}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
command -v wrk >/dev/null || { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk; }

bash scripts/build-components.sh >/dev/null
cargo build --release -q -p edgegate-cli
BIN=${CARGO_TARGET_DIR:-target}/release/edgegate
bash scripts/sign-components.sh "$BIN" >/dev/null
SIGNED=$PWD/target/signed

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port); EG_PORT=$(free_port); EG_ADMIN=$(free_port)
ADMIN="http://127.0.0.1:$EG_ADMIN"

"$BIN" demo-upstream --listen "127.0.0.1:$UP_PORT" >/dev/null 2>&1 &
PIDS+=($!)
cat > "$WORK/gateway.toml" <<TOML
version = 1
[trust]
store = "$PWD/target/demo-keys/trust.toml"
[server]
listen = "127.0.0.1:$EG_PORT"
workers = $WORKERS
[admin]
listen = "127.0.0.1:$EG_ADMIN"
[upstreams.backend]
endpoints = ["127.0.0.1:$UP_PORT"]
[policies.p]
component = "$SIGNED/noop.wasm"
config = { response_set = { "x-version" = "headers" } }
[[routes]]
name = "all"
path_prefix = "/"
upstream = "backend"
policies = ["p"]
TOML
"$BIN" serve --config "$WORK/gateway.toml" >/dev/null 2>"$WORK/gateway.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$EG_PORT/" && break; sleep 0.1; done

to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } }'; }
run() { # name
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$EG_PORT/" > "$WORK/$1.wrk"
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$1.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$1.wrk" | to_us)
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$1.wrk" | to_us)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/$1.wrk" | tr '\n' ' ')
  echo "$1 $rps $p50 $p99 ${errs:-none}"
}

wrk -t1 -c16 -d2s "http://127.0.0.1:$EG_PORT/" >/dev/null
run steady > "$WORK/results"

# Swap every second for as long as wrk runs. The pushes go to the admin API
# with curl (what `edgegate push` sends), a lighter client process on these
# shared cores than the CLI binary.
seconds=${DURATION%s}
(
  for i in $(seq "$seconds"); do
    if (( i % 2 )); then c=headers; else c=noop; fi
    curl -sf -X POST --data-binary "@$SIGNED/$c.wasm" "$ADMIN/v1/policies/p/versions" >> "$WORK/pushes.log" 2>&1 \
      && echo >> "$WORK/pushes.log" || echo "push $i failed" >> "$WORK/pushes.log"
    sleep 1
  done
) &
SWAPPER=$!
run swaps >> "$WORK/results"
wait "$SWAPPER"
swaps=$(grep -c '"state": "serving"' "$WORK/pushes.log" || true)
failed_pushes=$(grep -c 'failed' "$WORK/pushes.log" || true)

# Push to first response, ROUNDS times; each round pushes the other component.
: > "$WORK/first"
for i in $(seq "$ROUNDS"); do
  if (( i % 2 )); then c=headers; want=headers; else c=noop; want=""; fi
  start=$(date +%s%N)
  out=$("$BIN" push --admin "$ADMIN" p "$SIGNED/$c.wasm")
  while :; do
    got=$(curl -s -D - -o /dev/null "http://127.0.0.1:$EG_PORT/" | awk 'tolower($1)=="x-version:" {print $2}' | tr -d '\r')
    [ "$got" = "$want" ] && break
  done
  end=$(date +%s%N)
  # "p: serving DIGEST (verify A ms, compile B ms, admission C ms)"
  echo "$c $(( (end - start) / 1000000 )) $(echo "$out" | sed -E 's/.*verify ([0-9.]+) ms, compile ([0-9.]+) ms, admission ([0-9.]+) ms.*/\1 \2 \3/')" >> "$WORK/first"
done

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $WORKERS workers, $(nproc) cores, $(date -u +%FT%TZ)"
echo "-- one policy, GET through edgegate; goal: swaps p99 <= 1.5x steady, 0 failed requests"
awk 'NR==1 { base_rps=$2; base_p99=$4 }
     { printf "%-8s %10.0f req/s (%.2fx)  p50 %7.0f us  p99 %7.0f us (%.2fx)  errors: %s\n",
         $1, $2, $2/base_rps, $3, $4, $4/base_p99, substr($0, index($0,$5)) }' "$WORK/results"
echo "   swaps during the run: $swaps promoted, $failed_pushes failed pushes"
echo "-- push to first response served by the new version ($ROUNDS rounds); goal headers <= 200 ms"
echo "   component   size    total ms   verify ms  compile ms  admission ms"
while read -r c total v comp adm; do
  printf "   %-10s %6s KB %8s %11s %11s %13s\n" "$c" "$(( $(stat -c %s "$SIGNED/$c.wasm") / 1024 ))" "$total" "$v" "$comp" "$adm"
done < "$WORK/first"
awk '$1=="headers" { n++; t+=$2; c+=$4; a+=$5 } END { if (n) printf "   headers mean: total %.0f ms, compile %.1f ms, admission %.1f ms\n", t/n, c/n, a/n }' "$WORK/first"
