#!/usr/bin/env bash
# The yardstick: generate a callback folder (default 400 k messages), then run `resolve` and
# the same resolution in DuckDB side by side. Usage: bash scripts/bench.sh [MESSAGES] [PAIRS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bsp-status-loader/target}"
VENV="${BSP_VENV:-$HOME/.cache/bsp-status-loader/venv}"
MESSAGES="${1:-400000}"
DATA="${BSP_BENCH_DATA:-${TMPDIR:-/tmp}/bsp-bench-$MESSAGES}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import duckdb" 2>/dev/null || "$VENV/bin/pip" install -q duckdb
cargo build --release --bin bsp-status-loader --example generate
[ -d "$DATA" ] || "$CARGO_TARGET_DIR/release/examples/generate" "$DATA" "$MESSAGES" 1
"$VENV/bin/python" bench/compare.py "$DATA" "${2:-5}" "$CARGO_TARGET_DIR/release/bsp-status-loader"
