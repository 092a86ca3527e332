#!/usr/bin/env bash
# Run every test edgegate has, on a fresh machine: installs what the tests need,
# builds the guest components once, then runs the native and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests use, installed only when missing:
# - chromium: the dashboard test (tests/coordinator.rs) drives headless Chromium;
# - etcd-server: tests/etcd.rs starts a real etcd on loopback ports;
# - protobuf-compiler: the etcd-client crate's build runs protoc;
# - curl, openssl: tests/tls.rs checks the TLS listener with them as users do.
PACKAGES=(chromium etcd-server protobuf-compiler curl openssl)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
fi

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# The official SDKs users run (PyPI `openai`), in a venv under target/ that
# the tests call as real clients.
if ! target/py/bin/python -c "import openai" 2>/dev/null; then
  python3 -m venv target/py
  target/py/bin/pip install --quiet --disable-pip-version-check "openai>=1.40,<3"
fi

# Guest components, built once for every test binary (tests call the same script).
bash scripts/build-components.sh

# Policy logic unit tests run natively, without wasm.
cargo test --manifest-path components/Cargo.toml --workspace --quiet

# Host unit tests and the integration tests in tests/ (real loopback servers).
cargo test --workspace --quiet
