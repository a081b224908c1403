#!/usr/bin/env bash
# The README's deployment path, for real: builds the image from this checkout, brings the
# compose stack up (Redis, three replicas, nginx), drives it through the balancer
# (scripts/compose_smoke.py), then takes it down with its volume.
#
#   scripts/compose-smoke.sh
#
# Uses the Docker engine DOCKER_HOST points at; without one, starts the private engine
# of ../shared/docker/offline-docker.sh (stand-in base images, no registry) and stops it
# at the end. Traffic goes only to loopback and the stack's own bridge.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

engine=""
if ! docker info >/dev/null 2>&1; then
  offline=${OFFLINE_DOCKER_SCRIPT:-../shared/docker/offline-docker.sh}
  [ -f "$offline" ] || { echo "no Docker engine and no $offline" >&2; exit 1; }
  echo "--- starting a private Docker engine"
  eval "$(bash "$offline" start)"
  engine=$offline
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export STATEFUL_MCP_PORT=$port
# The stack draws its own requestState key (compose_smoke.py checks that it did).
unset STATEFUL_MCP_MRTR_KEYS
project=stateful-mcp-smoke
compose=(docker compose -p "$project")

cleanup() {
  "${compose[@]}" logs --no-color --tail 30 lb > target/compose-smoke-lb.log 2>&1 || true
  "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  if [ -n "$engine" ]; then bash "$engine" stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
mkdir -p target

echo "--- docker build (release build of the server inside the image)"
build_started=$(date +%s)
docker build --network host -t stateful-mcp:local .
echo "image built in $(( $(date +%s) - build_started )) s"

echo "--- docker compose up --wait (published on 127.0.0.1:$port)"
"${compose[@]}" up -d --no-build --wait --wait-timeout 180

echo "--- through the balancer"
python3 scripts/compose_smoke.py "http://127.0.0.1:$port/mcp" "${compose[*]}"

echo "compose smoke test passed in $(( $(date +%s) - started )) s"
