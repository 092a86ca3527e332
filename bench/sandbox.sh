#!/usr/bin/env bash
# The sandbox under a hostile policy, in one run on this machine:
#   isolation : GET /fast (no policy) with wrk, idle, then while /spin (a
#               policy that loops until its 1 s budget cuts it) is hammered by
#               8 connections; reports /fast's p99 under load against idle
#               (goal <= 1.5x)
#   cost      : a one-policy route (noop) and pass-through, with this build and,
#               when BASELINE_BIN names another build of edgegate, with that one,
#               alternating, compared by their means (goal: noop within 5%)
#
#   bash bench/sandbox.sh                               # DURATION=10s by default
#   BASELINE_BIN=/path/to/old/edgegate bash bench/sandbox.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-2}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ "${#need[@]}" -gt 0 ]; then
  as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}"
fi

bash scripts/build-components.sh >/dev/null
cargo build --release -q -p edgegate-cli
BIN=${CARGO_TARGET_DIR:-target}/release/edgegate
bash scripts/sign-components.sh "$BIN" >/dev/null

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}" $(cat "$WORK"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

UP_PORT=$(free_port)
head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/1k"
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_PORT; location / { root $WORK; try_files /1k =404; } }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)

config() { # port admin
  cat <<TOML
version = 1
[trust]
store = "$PWD/target/demo-keys/trust.toml"
[server]
listen = "127.0.0.1:$1"
workers = $WORKERS
[admin]
listen = "127.0.0.1:$2"
[upstreams.backend]
endpoints = ["127.0.0.1:$UP_PORT"]
max_idle_per_endpoint = 256
[policies.noop]
component = "$PWD/target/signed/noop.wasm"
on_error = "allow"
[policies.spin]
component = "$PWD/target/signed/spin.wasm"
timeout_ms = 1000
[[routes]]
name = "spin"
path_prefix = "/spin"
upstream = "backend"
policies = ["spin"]
[[routes]]
name = "noop"
path_prefix = "/noop"
upstream = "backend"
policies = ["noop"]
[[routes]]
name = "fast"
path_prefix = "/"
upstream = "backend"
policies = []
TOML
}
start() { # name bin -> port
  local port admin
  port=$(free_port); admin=$(free_port)
  config "$port" "$admin" > "$WORK/$1.toml"
  "$2" serve --config "$WORK/$1.toml" >/dev/null 2>"$WORK/$1.log" &
  echo $! > "$WORK/$1.pid" # start runs in a subshell: cleanup reads the pid back
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/fast" && break; sleep 0.1; done
  echo "$port"
}
CUR=$(start current "$BIN")
if [ -n "${BASELINE_BIN:-}" ]; then BASE=$(start baseline "$BASELINE_BIN"); fi

to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } }'; }
run() { # name port path connections
  wrk -t1 -c"$4" -d"$DURATION" --latency "http://127.0.0.1:$2$3" > "$WORK/$1.wrk"
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$1.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$1.wrk" | to_us)
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$1.wrk" | to_us)
  echo "$1 $rps $p50 $p99"
}
hammered() { # name port: /fast measured while 8 connections loop on /spin
  wrk -t1 -c8 -d"$DURATION" --timeout 5s "http://127.0.0.1:$2/spin" > "$WORK/$1-spin.wrk" &
  local hammer=$!
  sleep 1
  run "$1" "$2" /fast 8
  wait "$hammer" || true
}
table() {
  awk 'NR==1 { base_rps=$2; base_p99=$4 }
       { printf "%-22s %10.0f req/s (%.2fx)  p50 %7.0f us  p99 %7.0f us (%.2fx)\n", $1, $2, $2/base_rps, $3, $4, $4/base_p99 }' "$1"
}

wrk -t1 -c8 -d1s "http://127.0.0.1:$CUR/fast" >/dev/null
{
  run fast-idle "$CUR" /fast 8
  hammered fast-while-looping "$CUR"
} > "$WORK/isolation"
if [ -n "${BASE:-}" ]; then
  {
    run baseline-fast-idle "$BASE" /fast 8
    hammered baseline-fast-while-looping "$BASE"
  } > "$WORK/isolation-baseline"
  wrk -t1 -c16 -d1s "http://127.0.0.1:$BASE/noop" >/dev/null
  {
    for _ in 1 2; do
      run noop "$CUR" /noop "$CONNECTIONS"
      run baseline-noop "$BASE" /noop "$CONNECTIONS"
      run pass "$CUR" /fast "$CONNECTIONS"
      run baseline-pass "$BASE" /fast "$CONNECTIONS"
    done
  } > "$WORK/cost"
fi

echo "wrk, $WORKERS workers, $(nproc) cores, $(date -u +%FT%TZ), $DURATION per row"
echo "-- isolation: GET /fast (no policy), 8 connections; goal fast-while-looping p99 <= 1.5x idle"
table "$WORK/isolation"
echo "spin requests answered while measured: $(awk '/requests in/ {print $1}' "$WORK/fast-while-looping-spin.wrk")"
if [ -n "${BASE:-}" ]; then
  echo "-- the same with BASELINE_BIN"
  table "$WORK/isolation-baseline"
  echo "-- cost, $CONNECTIONS connections, means of two runs each; goal noop >= 0.95x baseline"
  awk '{ s[$1]+=$2; n[$1]++ } END {
         printf "noop: %.0f req/s / baseline %.0f req/s = %.3fx\n", s["noop"]/n["noop"], s["baseline-noop"]/n["baseline-noop"], (s["noop"]/n["noop"])/(s["baseline-noop"]/n["baseline-noop"]);
         printf "pass: %.0f req/s / baseline %.0f req/s = %.3fx\n", s["pass"]/n["pass"], s["baseline-pass"]/n["baseline-pass"], (s["pass"]/n["pass"])/(s["baseline-pass"]/n["baseline-pass"]) }' "$WORK/cost"
fi
