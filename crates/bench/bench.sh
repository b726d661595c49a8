#!/usr/bin/env bash
# Installs the peers and load generators from Debian when missing, then
# builds and runs legate-bench. Arguments go to legate-bench, for example
# `crates/bench/bench.sh --quick --out target/bench-results`. Without
# `--scenarios` every scenario runs (1 to 10); `--scenarios 4,9,10` picks some.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
for tool in nginx haproxy wrk h2load taskset; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]}; installing Debian packages" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq nginx-light haproxy wrk nghttp2-client util-linux
fi

exec cargo run --release -p legate-bench -- "$@"
