#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests start
# themselves (redis-server, nginx, openssl) when missing, then `cargo test`.
# The tests never use the Redis on port 6379: they start their own servers on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh
cargo test "$@"
