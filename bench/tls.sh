#!/usr/bin/env bash
# TLS benchmark, side by side with nginx in one run on this machine, all with
# the same ECDSA P-256 certificate (a test CA made here with openssl):
#   keepalive   : wrk over HTTPS keep-alive, GET 1 KB
#                 nginx `ssl` + proxy_pass  vs  edgegate [server.tls], both to a
#                 cleartext nginx upstream
#   handshakes  : the same with `Connection: close`: one request, one new
#                 TLS handshake per connection (wrk keeps its session across
#                 reconnects, so each is a resumed TLS 1.3 handshake: PSK
#                 with an X25519 exchange, no certificate signature)
#   upstream    : edgegate's cleartext listener to an HTTPS upstream (nginx
#                 `ssl`, verified against the test CA, ALPN h2 by default and
#                 http1 as a second row) vs to the same content in cleartext
# The tables give requests/s, p50 and p99 and the ratio to the first row.
#
#   bash bench/tls.sh            # DURATION=10s CONNECTIONS=64 THREADS=1 WORKERS=2
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
command -v openssl >/dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
  as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}"
fi

cargo build --release -q -p edgegate-cli
BIN=${CARGO_TARGET_DIR:-target}/release/edgegate

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A CA and a P-256 leaf for localhost/127.0.0.1, made for this run only.
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/ca.key" 2>/dev/null
openssl req -x509 -new -key "$WORK/ca.key" -days 2 -subj /CN=bench-ca -out "$WORK/ca.crt" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$WORK/leaf.key.sec1" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$WORK/leaf.key.sec1" -out "$WORK/leaf.key"
openssl req -new -key "$WORK/leaf.key" -subj /CN=localhost -out "$WORK/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > "$WORK/leaf.ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 2 -extfile "$WORK/leaf.ext" -out "$WORK/leaf.crt" 2>/dev/null
chmod 644 "$WORK"/*.key "$WORK"/*.crt

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); UPS=$(free_port); NGX=$(free_port)
EG_TLS=$(free_port); EG_PLAIN=$(free_port); EG_ADMIN=$(free_port)
EGU_PORT=$(free_port); EGU_ADMIN=$(free_port); EGU1_PORT=$(free_port); EGU1_ADMIN=$(free_port)

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
  upstream backend { server 127.0.0.1:$UP; keepalive 128; }
  # The content, in cleartext and over TLS (the HTTPS upstream).
  server {
    listen 127.0.0.1:$UP;
    location / { root $WORK; try_files /1k =404; }
  }
  server {
    listen 127.0.0.1:$UPS ssl http2;
    ssl_certificate $WORK/leaf.crt;
    ssl_certificate_key $WORK/leaf.key;
    location / { root $WORK; try_files /1k =404; }
  }
  # The peer: TLS termination and proxy_pass, as edgegate does.
  server {
    listen 127.0.0.1:$NGX ssl;
    ssl_certificate $WORK/leaf.crt;
    ssl_certificate_key $WORK/leaf.key;
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

gateway() { # port admin endpoint extra-upstream-lines extra-server-lines
  cat <<TOML
version = 1
[trust]
allow_unsigned = true
[server]
listen = "127.0.0.1:$1"
workers = $WORKERS
$5
[admin]
listen = "127.0.0.1:$2"
[upstreams.backend]
endpoints = ["$3"]
max_idle_per_endpoint = 256
$4
[[routes]]
name = "bench"
path_prefix = "/"
upstream = "backend"
TOML
}
tls_listener=$(printf '[server.tls]\nlisten = "127.0.0.1:%s"\nwatch_interval_ms = 0\n[[server.tls.certificates]]\ncert = "%s"\nkey = "%s"\n' "$EG_TLS" "$WORK/leaf.crt" "$WORK/leaf.key")
gateway "$EG_PLAIN" "$EG_ADMIN" "127.0.0.1:$UP" "" "" > "$WORK/tls.toml"
printf '%s\n' "$tls_listener" >> "$WORK/tls.toml"
gateway "$EGU_PORT" "$EGU_ADMIN" "https://localhost:$UPS" "tls = { ca_file = \"$WORK/ca.crt\" }" "" > "$WORK/https-up.toml"
gateway "$EGU1_PORT" "$EGU1_ADMIN" "https://localhost:$UPS" "protocol = \"http1\"
tls = { ca_file = \"$WORK/ca.crt\" }" "" > "$WORK/https-up-h1.toml"
for c in tls https-up https-up-h1; do
  "$BIN" serve --config "$WORK/$c.toml" >/dev/null 2>"$WORK/$c.log" &
  PIDS+=($!)
done

wait_up() { for _ in $(seq 100); do curl -sk -o /dev/null "$1" && return 0; sleep 0.1; done; echo "$1 did not come up" >&2; cat "$WORK"/*.log >&2; exit 1; }
wait_up "http://127.0.0.1:$UP/"
wait_up "https://127.0.0.1:$UPS/"
wait_up "https://127.0.0.1:$NGX/"
wait_up "https://127.0.0.1:$EG_TLS/"
for p in $EGU_PORT $EGU1_PORT; do wait_up "http://127.0.0.1:$p/"; done
# The HTTPS upstream really is verified: the answers come through.
curl -sf --cacert "$WORK/ca.crt" "https://localhost:$EG_TLS/" | head -c 4 >/dev/null
for p in $EGU_PORT $EGU1_PORT; do
  [ "$(curl -s "http://127.0.0.1:$p/" | wc -c)" = 1024 ] || { echo "the HTTPS upstream did not answer through :$p: $(curl -s "http://127.0.0.1:$p/")" >&2; cat "$WORK"/https-up*.log "$WORK"/nginx/error.log >&2; exit 1; }
done

to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } }'; }
run() { # name url [wrk args...]
  local name=$1 url=$2
  shift 2
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" > "$WORK/$name.wrk"
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$name.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$name.wrk" | to_us)
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$name.wrk" | to_us)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/$name.wrk" | tr '\n' ' ')
  echo "$name $rps $p50 $p99 ${errs:-none}"
}
table() {
  awk 'NR==1 { base_rps=$2; base_p50=$3; base_p99=$4 }
       { printf "%-18s %10.0f req/s (%.2fx)  p50 %7.0f us (%.2fx)  p99 %7.0f us (%.2fx)  errors: %s\n",
           $1, $2, $2/base_rps, $3, $3/base_p50, $4, $4/base_p99, substr($0, index($0,$5)) }' "$1"
}

for u in "https://127.0.0.1:$NGX/" "https://127.0.0.1:$EG_TLS/" "http://127.0.0.1:$EG_PLAIN/" \
         "http://127.0.0.1:$EGU_PORT/" "http://127.0.0.1:$EGU1_PORT/"; do
  wrk -t1 -c16 -d1s "$u" >/dev/null
done
{
  run nginx-tls "https://127.0.0.1:$NGX/"
  run edgegate-tls "https://127.0.0.1:$EG_TLS/"
} > "$WORK/keepalive"
{
  run nginx-handshake "https://127.0.0.1:$NGX/" -H "Connection: close"
  run edgegate-handshake "https://127.0.0.1:$EG_TLS/" -H "Connection: close"
} > "$WORK/handshakes"
# Full handshakes (certificate signature, no resumption) with a GET each:
# openssl s_time -new, 4 clients at once for 5 s. These clients verify and
# sign nothing themselves but wait for each answer, so the row shows
# handshake latency under load more than the server's capacity.
full() { # name port
  local total=0 i clients=()
  for i in 1 2 3 4; do
    openssl s_time -connect "127.0.0.1:$2" -new -www / -time 5 2>/dev/null \
      | awk '/connections in/ && /user sec/ {print $1}' > "$WORK/full.$i" &
    clients+=($!)
  done
  wait "${clients[@]}"
  for i in 1 2 3 4; do total=$((total + $(cat "$WORK/full.$i" 2>/dev/null || echo 0))); done
  echo "$1 $((total / 5))"
}
{
  full nginx-full "$NGX"
  full edgegate-full "$EG_TLS"
} > "$WORK/full"
{
  run cleartext-up "http://127.0.0.1:$EG_PLAIN/"
  run https-up-h2 "http://127.0.0.1:$EGU_PORT/"
  run https-up-h1 "http://127.0.0.1:$EGU1_PORT/"
} > "$WORK/upstream"

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $WORKERS workers each, $(nproc) cores, $(date -u +%FT%TZ); ECDSA P-256, $(nginx -v 2>&1)"
echo "-- TLS keep-alive, GET 1 KB through the proxy; goal edgegate-tls >= 1.0x"
table "$WORK/keepalive"
echo "-- one request per TLS connection (a resumed handshake with X25519 each); goal edgegate-handshake >= 1.0x"
table "$WORK/handshakes"
echo "-- full handshakes with a GET each (openssl s_time -new, 4 clients, 5 s): connections/s"
awk 'NR==1 { base=$2 } { printf "%-18s %10.0f conn/s (%.2fx)\n", $1, $2, $2/base }' "$WORK/full"
echo "-- edgegate to an HTTPS upstream vs a cleartext one (cleartext client side)"
table "$WORK/upstream"
