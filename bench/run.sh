#!/usr/bin/env bash
# Side-by-side proxy benchmark, in one run on this machine:
#   upstream : nginx serving a 1 KB body (keep-alive), and a fixed
#              OpenAI-style JSON answer on POST /v1/chat/completions
#   nginx    : nginx proxy_pass to it (upstream keepalive pool)
#   edgegate : pass-through (no policies)
#   edgegate : one no-op policy, a fresh instance per call (the default)
#   edgegate : the same policy with its instances kept (reuse_instances)
# then the shipped policies (issue 4):
#   post-pass   : edgegate pass-through of a 1 KB JSON chat request (POST)
#   chain4-miss : the same through auth → routing → redaction → caching, every
#                 request unique (a cache miss that is stored)
#   nginx-hit   : nginx proxy_cache hit of a 1 KB GET
#   cache-hit   : edgegate caching policy hit of the same GET
#   stream-pass / chain4-stream : the same chat request with "stream": true
#                 to an SSE answer (10 events), through edgegate with no
#                 policy and through the chain with the demo config's body
#                 modes (auth, redaction and caching see each event)
# the AI gateways (issue 17), each sent the same unique 1 KB JSON chat request
# and pointed at the same nginx-served provider answer:
#   ai-edgegate : the four-policy chain again (the first row of its table)
#   ai-portkey  : the Portkey AI gateway (npm @portkey-ai/gateway, one node process)
#   ai-litellm  : the LiteLLM proxy (PyPI litellm[proxy], WORKERS uvicorn workers)
#   bench/peers.sh installs both under target/bench-peers/; PEERS=0 skips them
# and the health graph (issue 7):
#   graph-off / graph-on : edgegate pass-through without [node], and with
#                 [node] reporting to a coordinator every 500 ms; run twice
#                 each, alternating, and compared by their means
# Each is driven by the same wrk command for the same time; the tables report
# requests/s, p50 and p99 and their ratios against the first row.
#
#   bash bench/run.sh            # DURATION=10s CONNECTIONS=64 THREADS=1 by default
#   ACCESS_LOG=true bash bench/run.sh   # edgegate with its access log on
#   EDGEGATE_BIN=/path/edgegate bash bench/run.sh   # that binary, not a fresh
#                                       # build (before/after runs, alternating)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-2}
# nginx runs with `access_log off`, and so does edgegate unless ACCESS_LOG=true
# (then each gateway logs to a file in the work folder).
ACCESS_LOG=${ACCESS_LOG:-false}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ "${#need[@]}" -gt 0 ]; then
  as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}"
fi

bash scripts/build-components.sh >/dev/null
if [ -n "${EDGEGATE_BIN:-}" ]; then
  BIN=$EDGEGATE_BIN
else
  cargo build --release -q -p edgegate-cli
  BIN=${CARGO_TARGET_DIR:-target}/release/edgegate
fi
bash scripts/sign-components.sh "$BIN" >/dev/null
PEERS=${PEERS:-1}
if [ "$PEERS" != 0 ]; then
  PEER_DIR=$(bash bench/peers.sh)
fi

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
EGC_PORT=$(free_port); EGC_ADMIN=$(free_port); NGINX_CACHE_PORT=$(free_port)
EGG_PORT=$(free_port); EGG_ADMIN=$(free_port); COORD_PORT=$(free_port)
EGK_PORT=$(free_port); EGK_ADMIN=$(free_port)
PK_PORT=$(free_port); LL_PORT=$(free_port)
SSE_PORT=$(free_port); EGSP_PORT=$(free_port); EGSP_ADMIN=$(free_port)
EGS_PORT=$(free_port); EGS_ADMIN=$(free_port)

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
  proxy_cache_path $WORK/nginx/cache keys_zone=hits:10m;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { root $WORK; try_files /1k =404; }
    location /cache/ { root $WORK; try_files /1k =404; add_header Cache-Control "max-age=3600"; }
    location = /v1/chat/completions {
      default_type application/json;
      return 200 '{"id":"chatcmpl-bench","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Thanks, your order is on its way."},"finish_reason":"stop"}],"usage":{"prompt_tokens":250,"completion_tokens":9,"total_tokens":259}}';
    }
  }
  server {
    # A streamed chat answer: 10 server-sent events (OpenAI chunks, usage, [DONE]).
    listen 127.0.0.1:$SSE_PORT;
    location = /v1/chat/completions {
      default_type text/event-stream;
      return 200 'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Thanks,"},"finish_reason":null}]}

data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" your"},"finish_reason":null}]}

data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" order"},"finish_reason":null}]}

data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" is"},"finish_reason":null}]}

data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" on"},"finish_reason":null}]}

data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" its"},"finish_reason":null}]}

data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" way."},"finish_reason":null}]}

data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" Regards."},"finish_reason":null}]}

data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":250,"completion_tokens":9,"total_tokens":259}}

data: [DONE]

';
    }
  }
  server {
    listen 127.0.0.1:$NGINX_CACHE_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache hits;
      proxy_cache_valid 200 1h;
    }
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

gateway_config() { # port admin policies [reuse_instances]
  cat <<TOML
version = 1
[trust]
store = "$PWD/target/demo-keys/trust.toml"
[server]
listen = "127.0.0.1:$1"
workers = $WORKERS
[admin]
listen = "127.0.0.1:$2"
[access_log]
enabled = $ACCESS_LOG
target = "$WORK/access-$1.log"
[upstreams.backend]
endpoints = ["127.0.0.1:$UP_PORT"]
max_idle_per_endpoint = 256
[policies.noop]
component = "$PWD/target/signed/noop.wasm"
on_error = "allow"
reuse_instances = ${4:-false}
[[routes]]
name = "bench"
path_prefix = "/"
upstream = "backend"
policies = [$3]
TOML
}
gateway_config "$EG_PORT" "$EG_ADMIN" "" > "$WORK/pass.toml"
gateway_config "$EGN_PORT" "$EGN_ADMIN" '"noop"' > "$WORK/noop.toml"
gateway_config "$EGK_PORT" "$EGK_ADMIN" '"noop"' true > "$WORK/noop-kept.toml"
# Pass-through with the health graph on: sampled and reported every 500 ms.
{ gateway_config "$EGG_PORT" "$EGG_ADMIN" ""
  printf '[node]\nid = "bench-edge"\nsite = "bench"\ncoordinator = "http://127.0.0.1:%s"\nreport_interval_ms = 500\n' "$COORD_PORT"
} > "$WORK/graph.toml"
printf 'listen = "127.0.0.1:%s"\n[store]\nbackend = "embedded"\npath = "%s/coordinator-state.json"\n' "$COORD_PORT" "$WORK" > "$WORK/coordinator.toml"
BENCH_KEY=bench-key-0123456789
BENCH_KEY_SHA=$(printf %s "$BENCH_KEY" | sha256sum | cut -d' ' -f1)
# The four shipped policies; routes: /v1 (all four, LLM mode) and /cache/ (caching only).
cat > "$WORK/chain.toml" <<TOML
version = 1
[trust]
store = "$PWD/target/demo-keys/trust.toml"
[server]
listen = "127.0.0.1:$EGC_PORT"
workers = $WORKERS
[admin]
listen = "127.0.0.1:$EGC_ADMIN"
[access_log]
enabled = $ACCESS_LOG
target = "$WORK/access-chain.log"
[upstreams.backend]
endpoints = ["127.0.0.1:$UP_PORT"]
max_idle_per_endpoint = 256
[policies.auth]
component = "$PWD/target/signed/auth.wasm"
kind = "auth"
reuse_instances = true
capabilities = ["kv", "clock", "crypto"]
request_body = "buffer"
response_body = "buffer"
[policies.auth.config]
api_keys = { keys = [{ id = "bench", sha256 = "$BENCH_KEY_SHA", roles = ["chat"] }] }
access = { chat = ["chat"] }
rate_limits = { "*" = { requests = 100000000, window_s = 60 } }
token_quota = { tokens = 100000000000, window_s = 3600 }
[policies.routing]
component = "$PWD/target/signed/routing.wasm"
kind = "routing"
reuse_instances = true
capabilities = ["health"]
request_body = "buffer"
[policies.routing.config]
llm = { models = { "gpt-4o" = ["backend"] }, retries = 1 }
[policies.redaction]
component = "$PWD/target/signed/redaction.wasm"
kind = "redaction"
reuse_instances = true
capabilities = ["crypto"]
request_body = "buffer"
response_body = "buffer"
[policies.caching]
component = "$PWD/target/signed/caching.wasm"
kind = "caching"
reuse_instances = true
capabilities = ["kv", "clock", "crypto"]
request_body = "buffer"
response_body = "buffer"
kv_budget_bytes = 67108864
[policies.caching.config]
llm = { enabled = true }
[[routes]]
name = "chat"
path_prefix = "/v1"
upstream = "backend"
policies = ["auth", "routing", "redaction", "caching"]
[[routes]]
name = "cache"
path_prefix = "/cache"
upstream = "backend"
policies = ["caching"]
TOML
# The streaming rows: pass-through and the chain, pointed at the SSE answer;
# the chain with the demo config's body modes (`sse` for auth, redaction and
# caching, so each sees the answer event by event).
sed -e "s/127.0.0.1:$EG_PORT\"/127.0.0.1:$EGSP_PORT\"/; s/127.0.0.1:$EG_ADMIN\"/127.0.0.1:$EGSP_ADMIN\"/" \
    -e "s/127.0.0.1:$UP_PORT\"/127.0.0.1:$SSE_PORT\"/" "$WORK/pass.toml" > "$WORK/pass-stream.toml"
sed -e "s/127.0.0.1:$EGC_PORT\"/127.0.0.1:$EGS_PORT\"/; s/127.0.0.1:$EGC_ADMIN\"/127.0.0.1:$EGS_ADMIN\"/" \
    -e "s/127.0.0.1:$UP_PORT\"/127.0.0.1:$SSE_PORT\"/" -e 's/^response_body = "buffer"/response_body = "sse"/' \
    -e "s#access-chain.log#access-chain-stream.log#" "$WORK/chain.toml" > "$WORK/chain-stream.toml"
"$BIN" serve --config "$WORK/pass.toml" >/dev/null 2>"$WORK/pass.log" &
PIDS+=($!)
"$BIN" serve --config "$WORK/noop.toml" >/dev/null 2>"$WORK/noop.log" &
PIDS+=($!)
"$BIN" serve --config "$WORK/noop-kept.toml" >/dev/null 2>"$WORK/noop-kept.log" &
PIDS+=($!)
"$BIN" serve --config "$WORK/chain.toml" >/dev/null 2>"$WORK/chain.log" &
PIDS+=($!)
"$BIN" serve --config "$WORK/pass-stream.toml" >/dev/null 2>"$WORK/pass-stream.log" &
PIDS+=($!)
"$BIN" serve --config "$WORK/chain-stream.toml" >/dev/null 2>"$WORK/chain-stream.log" &
PIDS+=($!)
"$BIN" coordinator --config "$WORK/coordinator.toml" >/dev/null 2>"$WORK/coordinator.log" &
PIDS+=($!)
"$BIN" serve --config "$WORK/graph.toml" >/dev/null 2>"$WORK/graph.log" &
PIDS+=($!)

# The LiteLLM proxy's master key, for its wrk script.
LITELLM_KEY=sk-$(python3 -c 'import secrets; print(secrets.token_hex(16))')

# wrk scripts: a unique 1 KB JSON chat request per call (so the cache misses).
TEMPLATE=$(cat bench/fixtures/chat-1k.json.template)
cat > "$WORK/post.lua" <<LUA
local template = [==[$TEMPLATE]==]
local n = 0
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $BENCH_KEY"
request = function()
  n = n + 1
  local body = string.format(template, os.time() .. "-" .. n)
  return wrk.format("POST", "/v1/chat/completions", nil, body)
end
LUA
# The same request asking for a streamed answer.
sed -e 's/{"model": "gpt-4o", /{"model": "gpt-4o", "stream": true, /' "$WORK/post.lua" > "$WORK/stream.lua"
grep -q '"stream": true' "$WORK/stream.lua" || { echo "stream.lua: the chat template changed; update the sed above" >&2; exit 1; }
# The same request to the peers, with the headers each needs.
sed -e 's#^wrk.headers\["Authorization"\].*#wrk.headers["Authorization"] = "Bearer sk-bench"\
wrk.headers["x-portkey-provider"] = "openai"\
wrk.headers["x-portkey-custom-host"] = "http://127.0.0.1:'"$UP_PORT"'/v1"#' "$WORK/post.lua" > "$WORK/portkey.lua"
sed -e 's#^wrk.headers\["Authorization"\].*#wrk.headers["Authorization"] = "Bearer '"${LITELLM_KEY:-none}"'"#' "$WORK/post.lua" > "$WORK/litellm.lua"

wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 did not come up" >&2; exit 1; }
for p in $UP_PORT $NGINX_PORT $EG_PORT $EGN_PORT $EGK_PORT $NGINX_CACHE_PORT $EGG_PORT; do wait_up "$p"; done
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$EGC_PORT/" && break; sleep 0.1; done

# wrk latency values come as 1.23ms / 456.78us / 1.2s: print microseconds.
to_us() { awk '{ v=$1; if (v ~ /us$/) { sub(/us$/,"",v); print v } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v*1000 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000000 } }'; }
run() { # name port [path] [wrk args...]
  local name=$1 port=$2 path=${3:-/}
  shift 3 2>/dev/null || shift $#
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "http://127.0.0.1:$port$path" > "$WORK/$name.wrk"
  set -- "$name"
  rps=$(awk '/^Requests\/sec/ {print $2}' "$WORK/$1.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/$1.wrk" | to_us)
  p99=$(awk '$1=="99%" {print $2}' "$WORK/$1.wrk" | to_us)
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/$1.wrk" | tr '\n' ' ')
  echo "$1 $rps $p50 $p99 ${errs:-none}"
}

# Warm up each so pools and caches are in place, then measure.
for p in $NGINX_PORT $EG_PORT $EGN_PORT $EGK_PORT; do wrk -t1 -c16 -d1s "http://127.0.0.1:$p/" >/dev/null; done
{
  run nginx "$NGINX_PORT"
  run edgegate-pass "$EG_PORT"
  run edgegate-noop "$EGN_PORT"
  run noop-kept "$EGK_PORT"
} > "$WORK/results"

# The shipped policies: a checked request through the chain first (the
# component and config must work), then warm-up and measurement.
code=$(curl -s -o "$WORK/chain-check" -w '%{http_code}' -H "Authorization: Bearer $BENCH_KEY" \
  -H 'Content-Type: application/json' --data "$(printf "$TEMPLATE" 1)" "http://127.0.0.1:$EGC_PORT/v1/chat/completions")
if [ "$code" != 200 ]; then
  echo "the four-policy chain answered $code: $(cat "$WORK/chain-check")" >&2
  cat "$WORK/chain.log" >&2
  exit 1
fi
wrk -t1 -c16 -d1s -s "$WORK/post.lua" "http://127.0.0.1:$EG_PORT/" >/dev/null
wrk -t1 -c16 -d1s -s "$WORK/post.lua" "http://127.0.0.1:$EGC_PORT/" >/dev/null
for p in $NGINX_CACHE_PORT $EGC_PORT; do wrk -t1 -c16 -d1s "http://127.0.0.1:$p/cache/1k" >/dev/null; done
{
  run post-pass "$EG_PORT" / -s "$WORK/post.lua"
  run chain4-miss "$EGC_PORT" / -s "$WORK/post.lua"
} > "$WORK/chain-results"
{
  run nginx-hit "$NGINX_CACHE_PORT" /cache/1k
  run cache-hit "$EGC_PORT" /cache/1k
} > "$WORK/cache-results"
# The streamed rows: a checked request first (events must come through).
for p in $EGSP_PORT $EGS_PORT; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
  curl -s -N -o "$WORK/stream-check" -H "Authorization: Bearer $BENCH_KEY" -H 'Content-Type: application/json' \
    --data "$(printf "$TEMPLATE" stream-check | sed 's/{"model": "gpt-4o", /{"model": "gpt-4o", "stream": true, /')" \
    "http://127.0.0.1:$p/v1/chat/completions"
  if ! grep -q 'data: \[DONE\]' "$WORK/stream-check"; then
    echo "the streamed answer through port $p did not come through: $(head -c 400 "$WORK/stream-check")" >&2
    cat "$WORK/chain-stream.log" >&2
    exit 1
  fi
  wrk -t1 -c16 -d1s -s "$WORK/stream.lua" "http://127.0.0.1:$p/" >/dev/null
done
{
  run stream-pass "$EGSP_PORT" / -s "$WORK/stream.lua"
  run chain4-stream "$EGS_PORT" / -s "$WORK/stream.lua"
} > "$WORK/stream-results"
curl -s "http://127.0.0.1:$EGC_ADMIN/metrics" > "$WORK/chain.metrics"
if [ "$PEERS" != 0 ]; then
  # The peers run only for their table: started here, stopped after it, so
  # their start-up and background work take nothing from the other rows.
  # Both point at nginx's chat answer: Portkey takes the provider and its
  # host from headers, LiteLLM from its config, behind a master key.
  NODE_ENV=production node "$PEER_DIR/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" \
    --port="$PK_PORT" --headless >"$WORK/portkey.log" 2>&1 &
  PIDS+=($!); PEER_PIDS=($!)
  cat > "$WORK/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:$UP_PORT/v1
      api_key: sk-bench
general_settings:
  master_key: $LITELLM_KEY
  disable_spend_logs: true
litellm_settings:
  telemetry: false
YAML
  # The price map ships with the package; no fetch at start.
  LITELLM_LOCAL_MODEL_COST_MAP=True "$PEER_DIR/litellm/bin/litellm" --config "$WORK/litellm.yaml" \
    --host 127.0.0.1 --port "$LL_PORT" --num_workers "$WORKERS" >"$WORK/litellm.log" 2>&1 &
  PIDS+=($!); PEER_PIDS+=($!)
  # Each peer must answer the chat request before it is measured.
  check_peer() { # name port extra-curl-args...
    local name=$1 port=$2 code=000
    shift 2
    for _ in $(seq 120); do
      code=$(curl -s -o "$WORK/$name-check" -w '%{http_code}' -H 'Content-Type: application/json' "$@" \
        --data "$(printf "$TEMPLATE" 1)" "http://127.0.0.1:$port/v1/chat/completions" || true)
      [ "$code" = 200 ] && return 0
      sleep 0.5
    done
    echo "$name answered $code: $(cat "$WORK/$name-check" 2>/dev/null)" >&2
    tail -20 "$WORK/$name.log" >&2
    exit 1
  }
  check_peer portkey "$PK_PORT" -H 'Authorization: Bearer sk-bench' -H 'x-portkey-provider: openai' \
    -H "x-portkey-custom-host: http://127.0.0.1:$UP_PORT/v1"
  check_peer litellm "$LL_PORT" -H "Authorization: Bearer $LITELLM_KEY"
  wrk -t1 -c16 -d2s -s "$WORK/portkey.lua" "http://127.0.0.1:$PK_PORT/" >/dev/null
  wrk -t1 -c16 -d2s -s "$WORK/litellm.lua" "http://127.0.0.1:$LL_PORT/" >/dev/null
  {
    run ai-edgegate "$EGC_PORT" / -s "$WORK/post.lua"
    run ai-portkey "$PK_PORT" / -s "$WORK/portkey.lua"
    run ai-litellm "$LL_PORT" / -s "$WORK/litellm.lua"
  } > "$WORK/ai-results"
  kill "${PEER_PIDS[@]}" 2>/dev/null || true
  wait "${PEER_PIDS[@]}" 2>/dev/null || true
fi
wrk -t1 -c16 -d1s "http://127.0.0.1:$EGG_PORT/" >/dev/null
{
  run graph-off "$EG_PORT"
  run graph-on "$EGG_PORT"
  run graph-off "$EG_PORT"
  run graph-on "$EGG_PORT"
} > "$WORK/graph-results"
# The graph-on gateway reported what it carried to the coordinator.
reported=$(curl -s "http://127.0.0.1:$COORD_PORT/v1/graph" | python3 -c 'import json,sys; g=json.load(sys.stdin); print(sum(1 for e in g["edges"] if e["live"]), "live edge(s), seq", max([e["seq"] for e in g["edges"]] or [0]))')

table() {
  awk 'NR==1 { base_rps=$2; base_p50=$3; base_p99=$4 }
       { printf "%-15s %10.0f req/s (%.2fx)  p50 %7.0f us (%.2fx)  p99 %7.0f us (%.2fx)  errors: %s\n",
           $1, $2, $2/base_rps, $3, $3/base_p50, $4, $4/base_p99, substr($0, index($0,$5)) }' "$1"
}
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $WORKERS workers each, $(nproc) cores, $(date -u +%FT%TZ)"
echo "-- proxy, GET 1 KB body; goals edgegate-pass >= 1.0x, edgegate-noop >= 0.9x edgegate-pass"
table "$WORK/results"
echo "-- shipped policies, POST 1 KB JSON chat request (unique, cache miss); goal chain4-miss >= 0.75x"
table "$WORK/chain-results"
echo "-- cache hit, GET 1 KB; goal cache-hit >= 1.0x"
table "$WORK/cache-results"
echo "-- streamed answers (10 SSE events), POST 1 KB JSON chat request with \"stream\": true (unique, cache miss)"
table "$WORK/stream-results"
if [ "$PEERS" != 0 ]; then
  echo "-- AI gateways, POST 1 KB JSON chat request to the same answer; ratios against edgegate's four-policy chain"
  echo "   (portkey $(cat "$PEER_DIR/portkey/.version"), one node process; litellm $(cat "$PEER_DIR/litellm/.version"), $WORKERS workers)"
  table "$WORK/ai-results"
fi
echo "-- health graph on the request path, GET 1 KB pass-through; goal graph-on >= 0.97x graph-off"
table "$WORK/graph-results"
awk '{ s[$1]+=$2; n[$1]++ } END { printf "mean: graph-on %.0f req/s / graph-off %.0f req/s = %.3fx\n", s["graph-on"]/n["graph-on"], s["graph-off"]/n["graph-off"], (s["graph-on"]/n["graph-on"])/(s["graph-off"]/n["graph-off"]) }' "$WORK/graph-results"
echo "coordinator: $reported"
echo "-- policy events during the run"
grep '^edgegate_policy_events_total' "$WORK/chain.metrics" | sort || true
