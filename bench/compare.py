"""Runs `bsp-status-loader resolve`, its peers (the same resolution in DuckDB,
duckdb_resolve.py, and in ClickHouse via chdb, chdb_resolve.py) and the floor
(examples/floor.rs: read, inflate, find line ends, nothing parsed) on the same folder,
in rotating order, several rounds; checks every resolution's output is identical;
prints medians of wall time and peak memory (max RSS of each process) and the ratios
of `resolve` to the floor and to the faster peer.

Usage: python bench/compare.py DATA_DIR [--rounds N] [--binary BIN] [--floor BIN]
           [--peers duckdb,chdb] [--baseline BIN] [--gcs gs://BUCKET/PREFIX]
--baseline adds another build of `resolve` (before/after in one run); --gcs adds
`resolve` of the same files from a bucket (STORAGE_EMULATOR_HOST in the environment);
--gcs-server PID also reports the CPU the emulator spent serving each such run.
Needs `duckdb` and `chdb` importable by this Python (scripts/bench.sh sets that up)."""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
p = argparse.ArgumentParser()
p.add_argument("data")
p.add_argument("--rounds", type=int, default=5)
p.add_argument("--binary", default="target/release/bsp-status-loader")
p.add_argument("--floor")
p.add_argument("--peers", default="duckdb,chdb")
p.add_argument("--baseline")
p.add_argument("--gcs")
p.add_argument("--gcs-server", type=int)
args = p.parse_args()
out = tempfile.mkdtemp()


def resolve(binary, source, output):
    return [binary, "--log-format", "json", "resolve", "--source", source, "--output", output]


# name → (command, file it writes or None); every file written must be identical.
runners = {"resolve": (resolve(args.binary, args.data, f"{out}/resolve.ndjson"), f"{out}/resolve.ndjson")}
if args.baseline:
    runners["baseline"] = (resolve(args.baseline, args.data, f"{out}/baseline.ndjson"), f"{out}/baseline.ndjson")
if args.gcs:
    runners["resolve gs://"] = (resolve(args.binary, args.gcs, f"{out}/gcs.ndjson"), f"{out}/gcs.ndjson")
for peer in filter(None, args.peers.split(",")):
    runners[peer] = ([sys.executable, f"{here}/{peer}_resolve.py", args.data, f"{out}/{peer}.ndjson", "2"],
                     f"{out}/{peer}.ndjson")
if args.floor:
    runners["floor"] = ([args.floor, args.data], None)


def cpu_of(pid):
    """CPU seconds process `pid` has used (user + system), from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(cmd):
    """Wall seconds, peak RSS (MB), CPU seconds (its own; the emulator's), stderr of one child."""
    server = cpu_of(args.gcs_server) if args.gcs_server else 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed:\n{stderr}")
    server = cpu_of(args.gcs_server) - server if args.gcs_server else 0
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, server, stderr


names = list(runners)
results = {name: [] for name in names}
summary = None
for i in range(args.rounds):
    # Rotate the order and reverse it every other round: rotating alone keeps the cycle,
    # so each runner would always follow the same one (caches, the neighbour's load).
    order = names[i % len(names):] + names[:i % len(names)]
    for name in order if i % 2 == 0 else order[::-1]:
        wall, rss, cpu, server, stderr = measure(runners[name][0])
        results[name].append((wall, rss, cpu, server))
        if name == "resolve":
            summary = json.loads(stderr.strip().splitlines()[-1])
outputs = {name: open(f, "rb").read() for name, (_, f) in runners.items() if f}
differ = [name for name, text in outputs.items() if text != outputs["resolve"]]
if differ:
    sys.exit(f"outputs differ from resolve's: {', '.join(differ)} (in {out})")

med = {name: [statistics.median(run[i] for run in r) for i in range(4)] for name, r in results.items()}
size_mb = summary["bytes"] / 1e6
print(f"data: {summary['files']} files, {size_mb:.0f} MB on disk, {summary['lines']} lines, "
      f"{summary['events']} events, {summary['messages']} messages; outputs identical: {', '.join(outputs)}")
print(f"{'':14}{'wall s':>10}{'CPU s':>8}{'peak MB':>10}{'MB/s':>10}{'events/s':>14}{'wall / resolve':>16}")
ow, om = med["resolve"][:2]
for name, (w, m, c, _) in med.items():
    print(f"{name:14}{w:10.3f}{c:8.2f}{m:10.0f}{size_mb / w:10.0f}{summary['events'] / w:14,.0f}{w / ow:16.2f}")
peers = [n for n in filter(None, args.peers.split(","))]
if peers:
    best = min(peers, key=lambda n: med[n][0])
    print(f"resolve / faster peer ({best}): wall {ow / med[best][0]:.3f}, peak memory {om / med[best][1]:.3f}")
if args.floor:
    print(f"resolve / floor: wall {ow / med['floor'][0]:.2f}")
if args.gcs:
    print(f"resolve gs:// / resolve folder: wall {med['resolve gs://'][0] / ow:.2f}")
    if args.gcs_server:
        print(f"CPU the emulator spent serving one gs:// run: {med['resolve gs://'][3]:.2f} s")
print(f"({args.rounds} rounds in rotating order, medians)")
