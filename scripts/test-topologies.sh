#!/usr/bin/env bash
# The test harness's own tests of its Redis topologies (testkit/tests/topologies.rs: a
# 3-master / 3-replica cluster, a Sentinel set, their failovers and a slot migration),
# once on Debian's Redis 7 and once on Valkey 8.1 (scripts/ensure-valkey.sh), with each
# run's time. Arguments go to the test binary (a test name filter, --nocapture to see the
# measured failover times).
#
#   scripts/test-topologies.sh
#   scripts/test-topologies.sh --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh
valkey_bin=$(scripts/ensure-valkey.sh)
cargo test -p testkit --no-run

run() {
  local name=$1
  shift
  local started
  started=$(date +%s)
  echo "--- testkit topologies on ${name}"
  env "$@" cargo test -p testkit -- "${args[@]}"
  echo "--- testkit topologies on ${name}: $(( $(date +%s) - started )) s"
}

args=("$@")
run "Redis ($(redis-server --version | sed 's/.* v=\([^ ]*\).*/\1/'))" REDIS_SERVER_BIN=redis-server REDIS_CLI_BIN=redis-cli
run "Valkey ($("${valkey_bin}/valkey-server" --version | sed 's/.* v=\([^ ]*\).*/\1/'))" \
  REDIS_SERVER_BIN="${valkey_bin}/valkey-server" REDIS_CLI_BIN="${valkey_bin}/valkey-cli"
