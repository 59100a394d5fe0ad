"""A copy of a callback folder cut into many small files: every file's lines, in the
order of the files' names, written LINES at a time (default 8) into files, a thousand
to a folder, every other one gzip (as in the first folder). The same callbacks, so the same resolution; what grows is the
work per file (listing, opening, reading, handing over), the case of a receiver that
writes a file every few callbacks. With LINES past the folder's lines, the other end:
one plain file (an export for a backfill), which `resolve` reads in pieces; and with
`gzip` after LINES, every file gzip (one large gzip file: inflated a stretch at a time).

Usage: python bench/split_small.py FROM_DIR TO_DIR [LINES [gzip]]"""
import gzip, os, sys

src, dst = sys.argv[1], sys.argv[2]
per_file = int(sys.argv[3]) if len(sys.argv) > 3 else 8
all_gzip = sys.argv[4:] == ["gzip"]

paths = sorted(
    os.path.relpath(os.path.join(folder, name), src)
    for folder, _, names in os.walk(src)
    for name in names
)
written, pending = 0, []


def flush():
    global written, pending
    folder = os.path.join(dst, f"f{written // 1000:05d}")
    os.makedirs(folder, exist_ok=True)
    text = b"".join(pending)
    name = os.path.join(folder, f"{written:08d}.ndjson")
    if written % 2 or all_gzip:
        name, text = name + ".gz", gzip.compress(text, mtime=0)
    with open(name, "wb") as out:
        out.write(text)
    written, pending = written + 1, []


for path in paths:
    with open(os.path.join(src, path), "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    for line in data.splitlines(keepends=True):
        # A last line without its end gets one: lines of two files never join.
        pending.append(line if line.endswith(b"\n") else line + b"\n")
        if len(pending) == per_file:
            flush()
if pending:
    flush()
print(f"{written} files")
