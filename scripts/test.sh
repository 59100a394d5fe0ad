#!/usr/bin/env bash
# The test command: formatting, lints, and every test, including the end-to-end
# tests against fake-gcs-server and bqemulator, which this script installs (into a
# venv, once) and starts on free ports. A fresh machine needs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bsp-status-loader/target}"
export CARGO_TERM_COLOR=never

cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
# The parser comparison (scripts/parsers.sh) is not part of the build; it must still build.
cargo fmt --check --manifest-path bench/parsers/Cargo.toml
cargo clippy --locked --manifest-path bench/parsers/Cargo.toml -- -D warnings

eval "$(bash scripts/emulators.sh start)"
trap 'bash scripts/emulators.sh stop' EXIT
log=$(mktemp)
cargo test --locked --workspace --all-targets --features emulator-tests 2>&1 | tee "$log"
# One closing line for all test binaries together.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
