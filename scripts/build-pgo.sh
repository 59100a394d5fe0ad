#!/usr/bin/env bash
# The release binary, built with profile-guided optimisation: an instrumented build
# resolves two small training folders (one from each benchmark generator, seeds the
# benchmark never uses), and the profile it writes guides the final build's inlining
# and code layout. Measured in docs/benchmarks.md (twelfth session).
#   bash scripts/build-pgo.sh        prints the binary's path as its last line
# Needs an llvm-profdata that reads rustc's raw profiles: the toolchain's own
# (`rustup component add llvm-tools`, which it runs) or Debian's llvm-19 (reads
# rustc 1.95's; installed with apt-get as root when rustup cannot). Without one, or if
# any step fails, it says why and prints the plain release build's path instead.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${CARGO_TARGET_DIR:-$HOME/.cache/bsp-status-loader/target}"
# Own target folders: flags differ from the plain build's, which stays untouched.
GEN="$BASE-pgo-generate"
USE="$BASE-pgo-use"

# rustc tracks the profile's file, so a new profile rebuilds every crate (minutes):
# skip it all when the binary was built from the same sources and toolchain.
SOURCES=$( (rustc -V; find Cargo.toml Cargo.lock src crates scripts/build-pgo.sh -type f -print0 | sort -z |
  xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)
if [ -x "$USE/release/bsp-status-loader" ] && [ "$(cat "$USE/sources" 2>/dev/null)" = "$SOURCES" ]; then
  echo "$USE/release/bsp-status-loader"
  exit 0
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# build DIR [RUSTFLAGS]: the job alone, into target folder DIR (the caller's RUSTFLAGS
# when none are given).
build() {
  local flags=()
  [ -z "${2:-}" ] || flags=(RUSTFLAGS="$2")
  env "${flags[@]}" CARGO_TARGET_DIR="$1" cargo build --release --locked --bin bsp-status-loader >&2
}

plain() {
  echo "build-pgo: $1; building without a profile" >&2
  build "$BASE"
  echo "$BASE/release/bsp-status-loader"
  exit 0
}

# train ARGS: one run of the instrumented job, adding to the raw profiles.
train() {
  "$GEN/release/bsp-status-loader" "$@" 2>/dev/null || plain "a training run failed"
}

profdata() {
  local sysroot tool
  sysroot=$(rustc --print sysroot)
  for tool in "$sysroot"/lib/rustlib/*/bin/llvm-profdata llvm-profdata-{22,21,20,19}; do
    command -v "$tool" >/dev/null 2>&1 && { echo "$tool"; return; }
  done
  return 1
}

PROFDATA=$(profdata) || {
  # The toolchain's own (matches rustc's LLVM), else Debian's.
  command -v rustup >/dev/null && rustup component add llvm-tools >&2 || true
  PROFDATA=$(profdata) ||
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    # A fresh image has no package lists yet.
    apt-get install -y -q llvm-19 >&2 ||
      { apt-get update -q >&2 && apt-get install -y -q llvm-19 >&2; } || true
  fi
  PROFDATA=$(profdata) || plain "no llvm-profdata found"
}

# 1. Instrumented build (the job alone: building an example beside it would bring
#    dev-dependencies' features, other crate hashes, and a profile that matches
#    nothing in the final build), and the training folders (small: the profile
#    needs which branches are taken, not many of them).
#    The raw profiles' folder is fixed so that an unchanged job is not rebuilt.
RAW="$GEN/profraw"
rm -rf "$RAW"
build "$GEN" "-Cprofile-generate=$RAW" || plain "the instrumented build failed"
CARGO_TARGET_DIR="$BASE" cargo build --release --locked --example generate >&2 &&
  "$BASE/release/examples/generate" "$WORK/data" 20000 101 >&2 ||
  plain "the training folder could not be generated"
if command -v python3 >/dev/null; then
  python3 bench/generate_alt.py "$WORK/data-alt" 20000 103 >&2 ||
    plain "the second training folder could not be generated"
  # The first folder as one file (27 MB), plain and gzip: read in pieces, and inflated a
  # stretch at a time (code the small files never reach, else laid out as cold).
  for kind in "" gzip; do
    python3 bench/split_small.py "$WORK/data" "$WORK/data-large${kind:+-$kind}" 1000000000 $kind >&2 ||
      plain "the one-file training folder could not be written"
  done
fi

# 2. The job's paths on them: statuses, timelines, and a run into a target.
for data in "$WORK"/data*; do
  train resolve --source "$data" --output "$WORK/out"
done
train resolve --timeline --source "$WORK/data" --output "$WORK/out"
train run --source "$WORK/data" --target "sqlite://$WORK/train.db" --create-messages
"$PROFDATA" merge -o "$WORK/job.profdata" "$RAW"/*.profraw >&2 ||
  plain "$PROFDATA could not read rustc's profiles"

# 3. The final build.
mkdir -p "$USE"
cp "$WORK/job.profdata" "$USE/job.profdata"
build "$USE" "-Cprofile-use=$USE/job.profdata" || plain "the profile-guided build failed"
echo "$SOURCES" >"$USE/sources"
echo "$USE/release/bsp-status-loader"
