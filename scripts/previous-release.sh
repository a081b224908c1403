#!/usr/bin/env bash
# Builds the previous release's binary, for the test that upgrades a deployment from it
# and back (tests/it/upgrade.rs), and prints its path on stdout (everything else goes to
# stderr): the commit is the one CHANGELOG.md names on its `previous-release-commit:`
# line. The build runs in a git worktree at that commit (<target>/previous-release/<sha>/
# tree, removed whatever happens) with this checkout's target directory
# (CARGO_TARGET_DIR, default ./target), so it reuses the dependencies already built:
# - it selects the example too, which makes cargo resolve features with the
#   dev-dependencies as `cargo test` does (without it, tokio and what depends on it would
#   be built a second time with other features);
# - cargo names a workspace member's artifacts by its name, version and path inside the
#   workspace, which the two checkouts share: the old tree's test harness (`testkit`, a
#   dev-dependency, not in the binary) gets another version there, or its build would
#   replace this checkout's, and this checkout's would then be taken for up to date; the
#   server crate itself differs by its version (checked below).
# The binary is kept in <target>/previous-release/<sha>/stateful-mcp and reused when
# already there.
#
#   export STATEFUL_MCP_PREVIOUS_RELEASE_BIN="$(scripts/previous-release.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

sha=$(sed -n 's/^previous-release-commit: *\([0-9a-f]\{40\}\) *$/\1/p' CHANGELOG.md | head -n 1)
if [ -z "$sha" ]; then
    echo "CHANGELOG.md has no 'previous-release-commit: <40 hex digits>' line" >&2
    exit 1
fi
target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in /*) ;; *) target=$root/$target ;; esac
out=$target/previous-release/$sha/stateful-mcp
if [ -x "$out" ]; then
    echo "previous release $sha: $out (built before)" >&2
    echo "$out"
    exit 0
fi
if ! git cat-file -e "$sha^{commit}" 2>/dev/null; then
    echo "commit $sha (the previous release) is not in this clone's history;" \
        "a shallow clone needs 'git fetch --unshallow'" >&2
    exit 1
fi

version_of() { sed -n 's/^version = "\(.*\)"$/\1/p' "$1" | head -n 1; }
tree=$target/previous-release/$sha/tree
cleanup() {
    git worktree remove --force "$tree" >/dev/null 2>&1 || true
    rm -rf "$tree"
    git worktree prune
}
cleanup
build=
trap cleanup EXIT
# A signal stops the build and ends the script through exit, so the worktree is
# removed then too (the build runs in the background: bash runs a trap only once the
# command in the foreground has ended).
trap '[ -z "$build" ] || kill "$build" 2>/dev/null; exit 130' INT TERM HUP
git worktree add --detach --quiet "$tree" "$sha" >&2
if [ "$(version_of "$tree/Cargo.toml")" = "$(version_of Cargo.toml)" ]; then
    echo "the previous release $sha has this checkout's version ($(version_of Cargo.toml)):" \
        "bump the version in Cargo.toml" >&2
    exit 1
fi
sed -i 's/^version = "\(.*\)"$/version = "\1-previous-release"/' "$tree/testkit/Cargo.toml"

started=$(date +%s)
echo "building the previous release $sha (debug, target $target)" >&2
(
    cd "$tree"
    CARGO_TARGET_DIR="$target" exec cargo build --bin stateful-mcp --example embed >&2
) &
build=$!
wait "$build"
build=
mkdir -p "$(dirname "$out")"
# cargo copies the binary to <target>/debug/stateful-mcp (the next build of this
# checkout puts its own back there): keep the previous release's under its sha.
cp "$target/debug/stateful-mcp" "$out.partial"
mv "$out.partial" "$out"
echo "previous release $sha built in $(($(date +%s) - started)) s: $out" >&2
echo "$out"
