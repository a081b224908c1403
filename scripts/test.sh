#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests start
# themselves (redis-server, nginx, openssl) when missing, builds the previous release's
# binary for the upgrade test (scripts/previous-release.sh, reused once built), then
# `cargo test`. The tests never use the Redis on port 6379: they start their own
# servers on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh
STATEFUL_MCP_PREVIOUS_RELEASE_BIN="$(scripts/previous-release.sh)"
export STATEFUL_MCP_PREVIOUS_RELEASE_BIN
cargo test "$@"
