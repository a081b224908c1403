#!/usr/bin/env bash
# The server's suites on a Redis Cluster: with REDIS_TEST_CLUSTER=1 the test binary
# starts one 3-master / 3-replica cluster (testkit/src/redis_cluster.rs, Redis 7 or
# REDIS_SERVER_BIN's engine) and every replica and pool of the chosen suites runs on it
# (redis.mode = "cluster", each test under its own key prefix); tests that inject faults
# into their own Redis give way there (they run in the standalone suite). cluster:: is
# the pool's and the bus's own suite on clusters of its own (a slot migrated, a master
# killed). Arguments replace the suite list.
#
#   scripts/test-cluster.sh
#   scripts/test-cluster.sh sessions:: -- --nocapture
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-packages.sh
suites=(cluster:: bus::)
if [ $# -gt 0 ]; then suites=("$@"); fi
started=$(date +%s)
REDIS_TEST_CLUSTER=1 cargo test --test it -- "${suites[@]}"
echo "--- the server's suites on a Redis Cluster: $(( $(date +%s) - started )) s"
