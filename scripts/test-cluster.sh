#!/usr/bin/env bash
# The server's suites on Redis Cluster, in two runs of the one test binary:
#
# 1. On a real 3-master / 3-replica cluster (REDIS_TEST_CLUSTER=1: the test binary
#    starts one cluster, testkit/src/redis_cluster.rs, Redis 7 or REDIS_SERVER_BIN's
#    engine, and every replica and pool of the chosen suites runs on it with
#    redis.mode = "cluster", each test under its own key prefix): the behavioural
#    suites (sessions, both eras across replicas, the holder, cache, tasks and their
#    status notifications, event-store resume, idempotency, rate limits, listen, the bus,
#    the sessions command, the traces' Redis spans on cluster connections), plus
#    cluster:: (the pool and
#    the bus on clusters of their own: a slot migrated, a master killed) and
#    cluster_faults:: (keyed increments from three replicas while a master is killed,
#    with replica_acks 0 and 1, and while the busy session's slot migrates). Tests that
#    read or fault their own Redis directly give way here (they run in step 2).
# 2. On one-node clusters (REDIS_TEST_ONE_NODE_CLUSTER=1: every private test Redis owns
#    all 16384 slots, so any script, pipeline or multi-key command spanning slots is
#    refused): the whole suite but the Sentinel and cluster suites, which proves the
#    key layout of every path, those that inspect or fault Redis included.
#
# Arguments replace step 1's suite list and skip step 2.
#
#   scripts/test-cluster.sh
#   scripts/test-cluster.sh sessions:: -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh
# The upgrade test of the whole suite below starts the previous release (built once).
STATEFUL_MCP_PREVIOUS_RELEASE_BIN="$(scripts/previous-release.sh)"
export STATEFUL_MCP_PREVIOUS_RELEASE_BIN
suites=(sessions:: legacy:: replicas:: holder:: cache:: tool_cache:: tasks:: task_status::
  event_store:: streams:: idempotency:: rate_limit:: listen:: request_state:: bus::
  telemetry:: cli::sessions cluster:: cluster_faults::)
if [ $# -gt 0 ]; then suites=("$@"); fi
started=$(date +%s)
REDIS_TEST_CLUSTER=1 cargo test --test it -- "${suites[@]}"
echo "--- the server's suites on a 3-master Redis Cluster: $(( $(date +%s) - started )) s"
[ $# -gt 0 ] && exit 0
started=$(date +%s)
REDIS_TEST_ONE_NODE_CLUSTER=1 cargo test --test it -- --skip sentinel:: --skip cluster:: \
  --skip cluster_faults::
echo "--- the whole suite on one-node clusters (cross-slot refused): $(( $(date +%s) - started )) s"
