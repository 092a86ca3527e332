#!/usr/bin/env bash
# Run edgegate on the demo config with a local upstream, on a fresh machine:
# installs the wasm target (and protoc, which the etcd client's build needs),
# builds the components and the gateway, starts the demo upstream on
# 127.0.0.1:9000, the coordinator on 127.0.0.1:7070 (dashboard at /) and the
# gateway on 127.0.0.1:8080 and https://localhost:8443 (admin 9901).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v protoc >/dev/null || ! command -v openssl >/dev/null; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq protobuf-compiler openssl
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
bash scripts/build-components.sh
cargo build --release -p edgegate-cli
bin=${CARGO_TARGET_DIR:-target}/release/edgegate
# A demo signing key (generated once) signs the components the demo config trusts.
bash scripts/sign-components.sh "$bin"
# The self-signed certificate of the demo's HTTPS listener (127.0.0.1:8443).
bash scripts/demo-cert.sh

"$bin" check-config policies/gateway.toml
"$bin" demo-upstream --listen 127.0.0.1:9000 &
upstream=$!
"$bin" coordinator --config policies/coordinator.toml &
coordinator=$!
trap 'kill $upstream $coordinator 2>/dev/null || true' EXIT
echo "health graph dashboard: http://127.0.0.1:7070/"
echo "try: curl -H 'x-api-key: demo-key' http://127.0.0.1:8080/hello   (README: a five-minute tour)"
echo "  or: curl --cacert target/demo-tls/localhost.crt -H 'x-api-key: demo-key' https://localhost:8443/hello"
"$bin" serve --config policies/gateway.toml
