"""Runs `bsp-status-loader resolve` and the DuckDB query (duckdb_resolve.py) on the same folder,
alternating, several pairs; checks the outputs are identical; prints medians of wall time and
peak memory (max RSS of each process), their ratios, MB/s and events/s.

Usage: python bench/compare.py DATA_DIR [PAIRS] [BINARY]
Needs `duckdb` importable by this Python (scripts/bench.sh sets that up)."""
import json, os, statistics, subprocess, sys, tempfile, time

data = sys.argv[1]
pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
binary = sys.argv[3] if len(sys.argv) > 3 else "target/release/bsp-status-loader"
here = os.path.dirname(os.path.abspath(__file__))
out = tempfile.mkdtemp()


def measure(cmd):
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed:\n{stderr}")
    return wall, usage.ru_maxrss / 1024, stderr


ours_cmd = [binary, "--log-format", "json", "resolve", "--source", data, "--output", f"{out}/ours.ndjson"]
duck_cmd = [sys.executable, f"{here}/duckdb_resolve.py", data, f"{out}/duckdb.ndjson", "2"]
ours, duck, summary = [], [], None
for i in range(pairs):
    order = [("ours", ours_cmd, ours), ("duck", duck_cmd, duck)]
    for name, cmd, acc in (order if i % 2 == 0 else order[::-1]):
        wall, rss, stderr = measure(cmd)
        acc.append((wall, rss))
        if name == "ours":
            summary = json.loads(stderr.strip().splitlines()[-1])
same = open(f"{out}/ours.ndjson", "rb").read() == open(f"{out}/duckdb.ndjson", "rb").read()
if not same:
    sys.exit("outputs differ: " + out)

med = lambda xs, k: statistics.median(x[k] for x in xs)
ow, dw, om, dm = med(ours, 0), med(duck, 0), med(ours, 1), med(duck, 1)
size_mb = summary["bytes"] / 1e6
print(f"data: {summary['files']} files, {size_mb:.0f} MB on disk, {summary['lines']} lines, "
      f"{summary['events']} events, {summary['messages']} messages; outputs identical: {same}")
print(f"{'':12}{'wall s':>10}{'peak MB':>10}{'MB/s':>10}{'events/s':>14}")
for name, w, m in [("resolve", ow, om), ("duckdb", dw, dm)]:
    print(f"{name:12}{w:10.2f}{m:10.0f}{size_mb / w:10.0f}{summary['events'] / w:14,.0f}")
print(f"ratios (resolve / duckdb): wall {ow / dw:.2f}, peak memory {om / dm:.2f}  ({pairs} pairs, medians)")
