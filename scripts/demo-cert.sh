#!/usr/bin/env bash
# The demo's self-signed TLS certificate for localhost (ECDSA P-256, 90 days),
# made once under target/demo-tls/ and again once it is within 30 days of its
# end (the gateway warns about certificates that close to expiry).
# The demo config's [server.tls] serves it; curl trusts it with --cacert.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/demo-tls
mkdir -p "$dir"
if [ -s "$dir/localhost.crt" ] && openssl x509 -checkend 2592000 -noout -in "$dir/localhost.crt" >/dev/null 2>&1; then
  exit 0
fi
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$dir/localhost.key.new" -out "$dir/localhost.crt.new" 2>/dev/null
mv "$dir/localhost.key.new" "$dir/localhost.key"
mv "$dir/localhost.crt.new" "$dir/localhost.crt"
echo "demo TLS certificate: $dir/localhost.crt"
