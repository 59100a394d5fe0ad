#!/usr/bin/env bash
# resolve's reader against general JSON parsers (serde_json, simdjson, sonic-rs, simd-json) on
# the lines of a callback folder, one thread: bench/parsers. Usage:
#   bash scripts/parsers.sh DIR [ROUNDS]      (DIR: e.g. a folder scripts/bench.sh wrote)
#   CHECK=1 ...   first holds the two-stage prototype's verdicts to serde_json's, on every
#                 line and on damaged copies
#   ONLY=N ...    runs only parser N (0 is ours, always run), e.g. under perf record
# Built for this CPU (sonic-rs and simd-json pick their vector code at compile time),
# in a target folder of its own so the project's builds are not redone.
set -euo pipefail
cd "$(dirname "$0")/../bench/parsers"
export CARGO_TARGET_DIR="$HOME/.cache/bsp-status-loader/target-parsers"
RUSTFLAGS="-C target-cpu=native" cargo build --release --quiet
"$CARGO_TARGET_DIR/release/parsers" "$@"
