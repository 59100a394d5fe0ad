#!/usr/bin/env bash
# The test command: formatting, lints, and every test. Installs and starts what the
# tests need itself (see scripts/emulators.sh), so a fresh machine needs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bsp-status-loader/target}"
export CARGO_TERM_COLOR=never

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets
