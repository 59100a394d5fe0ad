#!/usr/bin/env bash
# The yardstick: generate two callback folders of the same size from two independent
# generators (examples/generate.rs and bench/generate_alt.py, default 400 k messages),
# then on each run `resolve`, the floor (examples/floor.rs) and the same resolution in
# DuckDB and ClickHouse (chdb) in rotating order, outputs compared (bench/compare.py).
#   bash scripts/bench.sh [MESSAGES] [ROUNDS]       both folders
#   bash scripts/bench.sh gcs [MESSAGES] [ROUNDS]   the first folder from a folder and
#                                                   from fake-gcs-server (gs://; objects in
#                                                   memory, then on disk), no peers
#   bash scripts/bench.sh shuffled [MESSAGES] [ROUNDS]  the second folder with every line's
#                                                   keys shuffled (bench/shuffle_keys.py):
#                                                   no line of a shape seen before
#   bash scripts/bench.sh small [MESSAGES] [ROUNDS]  the first folder cut into files of 8
#                                                   lines (bench/split_small.py): the
#                                                   work per file, ~50 k files
#   bash scripts/bench.sh large [MESSAGES] [ROUNDS]  the first folder joined into one
#                                                   plain file (split_small.py): one
#                                                   file read in pieces on every core
#   bash scripts/bench.sh large-gz [MESSAGES] [ROUNDS]  the same as one gzip file: inflated
#                                                   a stretch at a time, parsed on every core
# BSP_BASELINE=BIN adds another build of the binary to compare against in the same run;
# BSP_BINARY=BIN measures that build instead of the profile-guided one.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bsp-status-loader/target}"
VENV="${BSP_VENV:-$HOME/.cache/bsp-status-loader/venv}"
MODE=folders
case "${1:-}" in gcs | shuffled | small | large | large-gz) MODE=$1; shift ;; esac
MESSAGES="${1:-400000}"
ROUNDS="${2:-5}"
DATA="${BSP_BENCH_DATA:-${TMPDIR:-/tmp}/bsp-bench-$MESSAGES}"
ALT="${BSP_BENCH_ALT:-${TMPDIR:-/tmp}/bsp-bench-alt-$MESSAGES}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import duckdb, chdb" 2>/dev/null || "$VENV/bin/pip" install -q duckdb chdb
cargo build --release --example generate --example floor
# The binary as shipped: profile-guided (scripts/build-pgo.sh; the plain build if it cannot be).
BIN="${BSP_BINARY:-$(bash scripts/build-pgo.sh | tail -n 1)}"
echo "resolve: $BIN"
FLOOR="$CARGO_TARGET_DIR/release/examples/floor"
[ "$MODE" = shuffled ] || [ -d "$DATA" ] || "$CARGO_TARGET_DIR/release/examples/generate" "$DATA" "$MESSAGES" 1
BASELINE=(${BSP_BASELINE:+--baseline "$BSP_BASELINE"})

if [ "$MODE" = gcs ]; then
  # fake-gcs-server keeping objects in memory (as the tests run it), then on disk.
  ROOT=$(mktemp -d)
  trap 'bash scripts/emulators.sh stop >/dev/null; rm -rf "$ROOT"' EXIT
  for backend in "" "$ROOT"; do
    if [ -n "$backend" ]; then echo "== fake-gcs-server, objects on disk"; else echo "== fake-gcs-server, objects in memory"; fi
    eval "$(bash scripts/emulators.sh gcs $backend)"
    "$VENV/bin/python" bench/upload.py "$DATA" bench callbacks
    "$VENV/bin/python" bench/compare.py "$DATA" --rounds "$ROUNDS" --binary "$BIN" --peers "" \
      --gcs gs://bench/callbacks --gcs-server "${BSP_EMULATOR_PIDS}" "${BASELINE[@]}"
    bash scripts/emulators.sh stop
  done
  exit
fi

[ -d "$ALT" ] || "$VENV/bin/python" bench/generate_alt.py "$ALT" "$MESSAGES" 7
FOLDERS=("$DATA" "$ALT")
if [ "$MODE" = shuffled ]; then
  FOLDERS=("$ALT-shuffled")
  [ -d "$ALT-shuffled" ] || "$VENV/bin/python" bench/shuffle_keys.py "$ALT" "$ALT-shuffled"
elif [ "$MODE" = small ]; then
  FOLDERS=("$DATA-small")
  [ -d "$DATA-small" ] || "$VENV/bin/python" bench/split_small.py "$DATA" "$DATA-small"
elif [ "$MODE" = large ]; then
  FOLDERS=("$DATA-large")
  [ -d "$DATA-large" ] || "$VENV/bin/python" bench/split_small.py "$DATA" "$DATA-large" 1000000000
elif [ "$MODE" = large-gz ]; then
  FOLDERS=("$DATA-large-gz")
  [ -d "$DATA-large-gz" ] || "$VENV/bin/python" bench/split_small.py "$DATA" "$DATA-large-gz" 1000000000 gzip
fi
for dir in "${FOLDERS[@]}"; do
  echo "== $dir"
  "$VENV/bin/python" bench/compare.py "$dir" --rounds "$ROUNDS" --binary "$BIN" --floor "$FLOOR" \
    "${BASELINE[@]}"
done
