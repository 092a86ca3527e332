#!/usr/bin/env bash
# Installs the AI-gateway peers bench/run.sh compares edgegate with, under
# target/bench-peers/ (kept between runs; delete it to reinstall):
#   Portkey AI gateway : npm package @portkey-ai/gateway, run with node
#   LiteLLM proxy      : PyPI package litellm[proxy], in a venv
# Versions are pinned below so runs compare like with like; raise them on
# purpose. Prints the folder. Needs node/npm and python3 (venv); installs the
# Debian packages when they are missing.
#
#   bash bench/peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PORTKEY_VERSION=${PORTKEY_VERSION:-1.15.2}
LITELLM_VERSION=${LITELLM_VERSION:-1.108.7}
dir=$PWD/target/bench-peers

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
command -v npm >/dev/null || need+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}"
fi

mkdir -p "$dir/portkey"
if [ "$(cat "$dir/portkey/.version" 2>/dev/null)" != "$PORTKEY_VERSION" ]; then
  echo "installing @portkey-ai/gateway@$PORTKEY_VERSION into $dir/portkey" >&2
  (cd "$dir/portkey" && npm install --no-audit --no-fund --silent "@portkey-ai/gateway@$PORTKEY_VERSION" >&2)
  echo "$PORTKEY_VERSION" > "$dir/portkey/.version"
fi
if [ "$(cat "$dir/litellm/.version" 2>/dev/null)" != "$LITELLM_VERSION" ]; then
  echo "installing litellm[proxy]==$LITELLM_VERSION into $dir/litellm" >&2
  rm -rf "$dir/litellm"
  python3 -m venv "$dir/litellm"
  "$dir/litellm/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" >&2
  echo "$LITELLM_VERSION" > "$dir/litellm/.version"
fi
echo "$dir"
