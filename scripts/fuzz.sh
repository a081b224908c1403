#!/usr/bin/env bash
# Fuzzes the edge's request decoder (fuzz/fuzz_targets/request_decoder.rs) with libFuzzer
# for a bounded time: FUZZ_SECONDS (default 60). Installs cargo-fuzz when missing.
# Runs on the stable toolchain: without a sanitizer (`-s none`) cargo-fuzz needs no
# nightly flags; the target checks its own invariants and a panic is a finding.
# New inputs go to target/fuzz-corpus; fuzz/corpus/ holds the committed seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "--- installing cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
mkdir -p target/fuzz-corpus
cd fuzz
cargo fuzz build -s none request_decoder
cargo fuzz run -s none request_decoder ../target/fuzz-corpus corpus/request_decoder -- \
  -max_total_time="${FUZZ_SECONDS:-60}" -max_len=4096 -print_final_stats=1
