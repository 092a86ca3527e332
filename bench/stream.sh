#!/usr/bin/env bash
# Streaming benchmarks, in one run on this machine:
#   ttfb  : time to the first event, and to the first answer text, of a
#           streamed chat answer (50 events, 20 ms apart, from
#           `edgegate demo-upstream`), direct and through the demo config's
#           four-policy chain (auth → routing → redaction → caching, the
#           answer's events seen by auth, redaction and caching); median and
#           p90 over ROUNDS requests each, alternating
#   redact: MB/s of an 8 MiB SSE answer (OpenAI chunks, served by nginx)
#           through the redaction policy per event (response_body = "sse")
#           against the buffered path (response_body = "buffer"), and
#           through no policy; best of 5 each
#
#   bash bench/stream.sh        # ROUNDS=40 by default
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-40}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
command -v nginx >/dev/null || { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nginx; }

bash scripts/build-components.sh >/dev/null
cargo build --release -q -p edgegate-cli
BIN=${CARGO_TARGET_DIR:-target}/release/edgegate
bash scripts/sign-components.sh "$BIN" >/dev/null

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

DEMO_PORT=$(free_port); GW_PORT=$(free_port); GW_ADMIN=$(free_port); GW_TLS=$(free_port)
NGINX_PORT=$(free_port); RS_PORT=$(free_port); RS_ADMIN=$(free_port)
RB_PORT=$(free_port); RB_ADMIN=$(free_port); RP_PORT=$(free_port); RP_ADMIN=$(free_port)

"$BIN" demo-upstream --listen "127.0.0.1:$DEMO_PORT" --stream-interval-ms 20 >/dev/null &
PIDS+=($!)
# The demo config as scripts/demo.sh runs it, on free ports, without a coordinator.
bash scripts/demo-cert.sh >/dev/null 2>&1 || true
sed -e "s/127.0.0.1:8080/127.0.0.1:$GW_PORT/" -e "s/127.0.0.1:9901/127.0.0.1:$GW_ADMIN/" \
    -e "s/127.0.0.1:8443/127.0.0.1:$GW_TLS/" -e "s/127.0.0.1:9000/127.0.0.1:$DEMO_PORT/" \
    -e "s|http://127.0.0.1:7070|http://127.0.0.1:9|" \
    -e "s|\"../target/|\"$PWD/target/|g" policies/gateway.toml > "$WORK/demo.toml"
# The bench makes more requests than the demo's 120 a minute.
sed -i 's/rate_limits = { "\*" = { requests = 120, window_s = 60 } }/rate_limits = { "*" = { requests = 100000, window_s = 60 } }/' "$WORK/demo.toml"
"$BIN" serve --config "$WORK/demo.toml" >/dev/null 2>"$WORK/demo.log" &
PIDS+=($!)
wait_port "$DEMO_PORT"; wait_port "$GW_PORT"

PY=${PYTHON:-target/py/bin/python}
[ -x "$PY" ] || { python3 -m venv target/py && target/py/bin/pip install -q openai; }

echo "== ttfb: 50 events 20 ms apart, ${ROUNDS} requests each, alternating"
"$PY" - "$DEMO_PORT" "$GW_PORT" "$ROUNDS" <<'PY'
import json, statistics, sys, time, httpx
demo, gw, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
words = " ".join(f"w{i}" for i in range(47))   # "You said: " + 47 words = 49 text events + role = 50
body = {"model": "gpt-4o", "stream": True, "temperature": 0.7,
        "messages": [{"role": "user", "content": words}]}
def once(client, port):
    t0 = time.perf_counter()
    first = text = None
    events = 0
    with client.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body,
                       headers={"authorization": "Bearer demo-key"}) as r:
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            now = time.perf_counter() - t0
            events += 1
            if first is None:
                first = now
            if text is None and line != "data: [DONE]":
                c = json.loads(line[6:])["choices"]
                if c and c[0]["delta"].get("content"):
                    text = now
    return first, text, time.perf_counter() - t0, events
res = {"direct": [], "chain": []}
with httpx.Client(timeout=30) as client:
    for _ in range(3):
        once(client, demo); once(client, gw)
    for _ in range(rounds):
        res["direct"].append(once(client, demo))
        res["chain"].append(once(client, gw))
def q(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(p * len(xs)))]
print(f"{'path':<8} {'events':>6} {'first event p50':>16} {'p90':>8} {'first text p50':>15} {'p90':>8} {'whole p50':>10}")
for name, rows in res.items():
    f = [r[0] * 1000 for r in rows]; t = [r[1] * 1000 for r in rows]; w = [r[2] * 1000 for r in rows]
    print(f"{name:<8} {rows[0][3]:>6} {statistics.median(f):>13.2f} ms {q(f, .9):>5.2f} ms"
          f" {statistics.median(t):>12.2f} ms {q(t, .9):>5.2f} ms {statistics.median(w):>7.1f} ms")
d = statistics.median(r[0] for r in res["direct"]) * 1000
c = statistics.median(r[0] for r in res["chain"]) * 1000
print(f"first event through the chain: direct + {c - d:.2f} ms at the median")
PY

echo
echo "== redact: an 8 MiB SSE answer through the redaction policy"
python3 - "$WORK/answer.sse" <<'PY'
import json, sys
words = "Thanks for asking, here is the plan: ship the order on Monday and mail the invoice. "
out, size, i = [], 0, 0
while size < 8 << 20:
    c = json.dumps({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": words[i % 8 * 10:][:10] + " "}, "finish_reason": None}]})
    line = f"data: {c}\n\n"; out.append(line); size += len(line); i += 1
out.append("data: [DONE]\n\n")
open(sys.argv[1], "w").write("".join(out))
PY
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  types { text/event-stream sse; }
  server { listen 127.0.0.1:$NGINX_PORT; location / { root $WORK; try_files /answer.sse =404; default_type text/event-stream; } }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
redact_config() { # port admin mode
  cat <<TOML
version = 1
[trust]
store = "$PWD/target/demo-keys/trust.toml"
[server]
listen = "127.0.0.1:$1"
workers = 2
[admin]
listen = "127.0.0.1:$2"
[upstreams.backend]
endpoints = ["127.0.0.1:$NGINX_PORT"]
[policies.redaction]
component = "$PWD/target/signed/redaction.wasm"
kind = "redaction"
reuse_instances = true
capabilities = ["crypto"]
response_body = "$3"
body_limit_bytes = 16777216
memory_limit_bytes = 67108864
timeout_ms = 5000
config = { rules = [{ detector = "email", mode = "mask" }, { detector = "phone", mode = "mask" }, { detector = "credit_card", mode = "block" }, { detector = "iban", mode = "mask" }, { detector = "ip", mode = "hash" }, { detector = "secret", mode = "mask" }] }
[[routes]]
name = "bench"
path_prefix = "/"
upstream = "backend"
policies = [$4]
TOML
}
redact_config "$RS_PORT" "$RS_ADMIN" sse '"redaction"' > "$WORK/sse.toml"
redact_config "$RB_PORT" "$RB_ADMIN" buffer '"redaction"' > "$WORK/buffer.toml"
redact_config "$RP_PORT" "$RP_ADMIN" none '' > "$WORK/pass.toml"
for c in sse buffer pass; do "$BIN" serve --config "$WORK/$c.toml" >/dev/null 2>"$WORK/$c.log" & PIDS+=($!); done
wait_port "$NGINX_PORT"; wait_port "$RS_PORT"; wait_port "$RB_PORT"; wait_port "$RP_PORT"
SIZE=$(stat -c %s "$WORK/answer.sse")
best() { # port → best MB/s of 5
  local best=0
  for _ in 1 2 3 4 5; do
    local t; t=$(curl -s -o "$WORK/out" -w '%{time_total}' "http://127.0.0.1:$1/answer.sse")
    local mbs; mbs=$(python3 -c "print(f'{$SIZE / $t / 1e6:.1f}')")
    best=$(python3 -c "print(max($best, $mbs))")
  done
  echo "$best"
}
S=$(best "$RS_PORT"); B=$(best "$RB_PORT"); P=$(best "$RP_PORT")
grep -c 'REDACTED' "$WORK/out" >/dev/null || true
printf '%-22s %10s %8s\n' path MB/s ratio
printf '%-22s %10s %8s\n' "redaction, sse" "$S" "1.00"
printf '%-22s %10s %8s\n' "redaction, buffer" "$B" "$(python3 -c "print(f'{$B / $S:.2f}')")"
printf '%-22s %10s %8s\n' "no policy" "$P" "$(python3 -c "print(f'{$P / $S:.2f}')")"
