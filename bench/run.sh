#!/usr/bin/env bash
# Side-by-side proxy benchmark, in one run on this machine:
#   upstream : nginx serving a 1 KB body (keep-alive)
#   nginx    : nginx proxy_pass to it (upstream keepalive pool)
#   edgegate : pass-through (no policies)
#   edgegate : one no-op policy
# Each is driven by the same wrk command for the same time; the table reports
# requests/s, p50 and p99 and their ratios against nginx.
#
#   bash bench/run.sh            # DURATION=10s CONNECTIONS=64 THREADS=1 by default
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
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
chmod 755 "$WORK"   # nginx workers run as an unprivileged user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port); NGINX_PORT=$(free_port)
EG_PORT=$(free_port); EG_ADMIN=$(free_port); EGN_PORT=$(free_port); EGN_ADMIN=$(free_port)

head -c 1024 /dev/zero | tr '\0' 'x' > "$WORK/1k"
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes $WORKERS;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { root $WORK; try_files /1k =404; }
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)

gateway_config() { # port admin policies
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
[[routes]]
name = "bench"
path_prefix = "/"
upstream = "backend"
policies = [$3]
TOML
}
gateway_config "$EG_PORT" "$EG_ADMIN" "" > "$WORK/pass.toml"
gateway_config "$EGN_PORT" "$EGN_ADMIN" '"noop"' > "$WORK/noop.toml"
"$BIN" serve --config "$WORK/pass.toml" >/dev/null 2>"$WORK/pass.log" &
PIDS+=($!)
"$BIN" serve --config "$WORK/noop.toml" >/dev/null 2>"$WORK/noop.log" &
PIDS+=($!)

wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 did not come up" >&2; exit 1; }
for p in $UP_PORT $NGINX_PORT $EG_PORT $EGN_PORT; do wait_up "$p"; done

# wrk latency values come as 1.23ms / 456.78us / 1.2s: print microseconds.
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } }'; }
run() { # name port
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$2/" > "$WORK/$1.wrk"
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$1.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$1.wrk" | to_us)
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$1.wrk" | to_us)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/$1.wrk" | tr '\n' ' ')
  echo "$1 $rps $p50 $p99 ${errs:-none}"
}

# Warm up each so pools and caches are in place, then measure.
for p in $NGINX_PORT $EG_PORT $EGN_PORT; do wrk -t1 -c16 -d1s "http://127.0.0.1:$p/" >/dev/null; done
{
  run nginx "$NGINX_PORT"
  run edgegate-pass "$EG_PORT"
  run edgegate-noop "$EGN_PORT"
} > "$WORK/results"

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, 1 KB body, $WORKERS workers each, $(nproc) cores, $(date -u +%FT%TZ)"
awk 'NR==1 { base_rps=$2; base_p50=$3; base_p99=$4 }
     { printf "%-15s %10.0f req/s (%.2fx)  p50 %7.0f us (%.2fx)  p99 %7.0f us (%.2fx)  errors: %s\n",
         $1, $2, $2/base_rps, $3, $3/base_p50, $4, $4/base_p99, substr($0, index($0,$5)) }' "$WORK/results"
