#!/usr/bin/env bash
# Instructions and (simulated) branch misses of `resolve`, counted by cachegrind: the
# same on every run, so a change of a few percent shows on a machine whose timings
# wander by ten (docs/benchmarks.md, "Counting instructions"). Times still decide:
# the simulated branch predictor is far simpler than a CPU's.
#   bash scripts/instructions.sh [BIN...]   default: the release build of this tree
# On two small folders from the two generators (40 k messages). Needs valgrind
# (Debian: apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bsp-status-loader/target}"
VENV="${BSP_VENV:-$HOME/.cache/bsp-status-loader/venv}"
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
cargo build --release --bin bsp-status-loader --example generate
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=("$CARGO_TARGET_DIR/release/bsp-status-loader")
DATA="${TMPDIR:-/tmp}/bsp-bench-40000"
ALT="${TMPDIR:-/tmp}/bsp-bench-alt-40000"
[ -d "$DATA" ] || "$CARGO_TARGET_DIR/release/examples/generate" "$DATA" 40000 1 >/dev/null
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
[ -d "$ALT" ] || "$VENV/bin/python" bench/generate_alt.py "$ALT" 40000 7 >/dev/null
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
printf '%-40s %-10s %15s %15s\n' binary folder instructions branch_misses
for bin in "${BINS[@]}"; do
  for folder in "$DATA" "$ALT"; do
    valgrind --tool=cachegrind --cache-sim=no --branch-sim=yes \
      --cachegrind-out-file="$OUT/cg" --log-file="$OUT/log" \
      "$bin" resolve --source "$folder" --output "$OUT/out.ndjson" 2>/dev/null
    ir=$(sed -n 's/.*I *refs: *\([0-9,]*\).*/\1/p' "$OUT/log")
    misses=$(sed -n 's/.*Mispredicts: *\([0-9,]*\).*/\1/p' "$OUT/log")
    printf '%-40s %-10s %15s %15s\n' "$(basename "$bin")" "$(basename "$folder" | sed 's/bsp-bench-//')" "$ir" "$misses"
  done
done
