"""A copy of a callback folder in which every JSON object's keys (a wrapper's body given
as a string too) are in a random order and every line has one of two spacings: each
line is of a shape seen once, the worst case for `resolve`'s learned shapes and the
reader's plans (simdjson parses every line, every line's fields are looked up by name).
The same callbacks, so the same resolution: bench/compare.py checks it equal to the
peers'. Gzip files stay gzip, CRLF files CRLF.

Usage: python bench/shuffle_keys.py FROM_DIR TO_DIR [SEED]"""
import gzip, json, os, random, sys

src, dst = sys.argv[1], sys.argv[2]
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 5)


def shuffled(value):
    if isinstance(value, dict):
        items = [(k, shuffled(v)) for k, v in value.items()]
        if isinstance(value.get("body"), str):
            items = [(k, shuffled_text(v) if k == "body" else v) for k, v in items]
        rng.shuffle(items)
        return dict(items)
    if isinstance(value, list):
        return [shuffled(v) for v in value]
    return value


def shuffled_text(text):
    """A JSON document's text, shuffled; anything else as it was."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return json.dumps(shuffled(value), separators=(",", ":") if rng.random() < 0.5 else None)


def shuffled_line(line):
    try:
        return shuffled_text(line.decode()).encode()
    except UnicodeDecodeError:
        return line


for root, _, files in os.walk(src):
    for name in sorted(files):
        path = os.path.join(root, name)
        raw = open(path, "rb").read()
        gz = raw[:2] == b"\x1f\x8b"
        if gz:
            raw = gzip.decompress(raw)
        end = b"\r\n" if b"\r\n" in raw else b"\n"
        lines = [shuffled_line(line) for line in raw.splitlines()]
        data = end.join(lines) + end
        out = os.path.join(dst, os.path.relpath(path, src))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        open(out, "wb").write(gzip.compress(data, 6) if gz else data)
