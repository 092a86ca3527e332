#!/usr/bin/env bash
# Run every test edgegate has, on a fresh machine: installs what the tests need,
# builds the guest components once, then runs the native and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests use, installed only when missing:
# - chromium: the dashboard test (tests/coordinator.rs) drives headless Chromium;
# - etcd-server: tests/etcd.rs starts a real etcd on loopback ports;
# - protobuf-compiler: the etcd-client crate's build runs protoc.
PACKAGES=(chromium etcd-server protobuf-compiler)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
fi

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Guest components, built once for every test binary (tests call the same script).
bash scripts/build-components.sh

# Policy logic unit tests run natively, without wasm.
cargo test --manifest-path components/Cargo.toml --workspace --quiet

# Host unit tests and the integration tests in tests/ (real loopback servers).
cargo test --workspace --quiet
