"""A second, independently written callback folder for the benchmark: another mix of
shapes than examples/generate.rs, so a speed-up tuned to one generator shows on the
other or not at all.

What differs: Python's `json.dumps` spacing (`", "`, `": "`), V3 batches (several
statuses per change, several changes per entry) and long V3 lines (conversation and
pricing objects), long real-looking wamids as keys (past the 46 bytes a key is held
inline), V2 keyed by `id` alone, millisecond V3 times, codes as digit strings,
upper-case statuses, CRLF files, a flat layout of many small files beside a few
large ones, and gzip at levels 1 and 9 on a third of them.

Usage: python bench/generate_alt.py OUT_DIR [MESSAGES] [SEED]"""
import base64, gzip, json, os, random, sys

out = sys.argv[1]
messages = int(sys.argv[2]) if len(sys.argv) > 2 else 400_000
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 7)

START = 1_767_225_600  # 2026-01-01T00:00:00Z
CODES = ["131047", "131026", "131049", "131053", "470", "1013"]
APPS = ["glific-ngo-1", "glific-ngo-2", "literacy-bot"]


def wamid():
    """Meta's id: base64 of a phone and a hex id, 58 bytes or so (heap keys)."""
    raw = b"\x15\x02\x00\x11\x18\x12" + f"91{rng.randrange(10**10):010d}".encode() + rng.randbytes(18).hex().upper().encode()
    return "wamid." + base64.b64encode(raw).decode()


def gs_id():
    """Gupshup's own id: a UUID, or (older apps) a short decimal."""
    if rng.random() < 0.8:
        return "%08x-%04x-%04x-%04x-%012x" % tuple(rng.getrandbits(b) for b in (32, 16, 16, 16, 48))
    return str(rng.randrange(10**15, 10**16))


def v3_status(key, wid, status, at_ms, code):
    s = {"id": wid, "status": status, "recipient_id": f"91{rng.randrange(10**10):010d}"}
    if key is not None:
        s["gs_id"] = key
    # Seconds as a string (Meta), sometimes milliseconds as a number (Gupshup's enqueued).
    s["timestamp"] = at_ms if rng.random() < 0.3 else str(at_ms // 1000)
    if status in ("sent", "delivered", "read") and rng.random() < 0.6:
        s["conversation"] = {"id": rng.randbytes(16).hex(), "origin": {"type": rng.choice(["marketing", "utility", "service"])},
                             "expiration_timestamp": str(at_ms // 1000 + 86400)}
        s["pricing"] = {"billable": True, "pricing_model": "CBP", "category": s["conversation"]["origin"]["type"]}
    if code is not None:
        if rng.random() < 0.5:
            s["errors"] = [{"code": int(code), "title": "Message undeliverable", "message": "Message undeliverable",
                            "error_data": {"details": "Message Undeliverable."}}]
        else:
            s["code"] = code  # a flat code, as a digit string
    return s


def v3(statuses):
    """One envelope: statuses spread over one or two changes of one or two entries."""
    entries = []
    while statuses:
        take = rng.randint(1, len(statuses))
        part, statuses = statuses[:take], statuses[take:]
        changes = [{"value": {"messaging_product": "whatsapp",
                              "metadata": {"display_phone_number": "919000000000", "phone_number_id": "1234567890"},
                              "statuses": part}, "field": "messages"}]
        if rng.random() < 0.1:
            changes.append({"value": {"messaging_product": "whatsapp", "messages": [
                {"from": "91XXXXXXXXXX", "id": wamid(), "text": {"body": "Namaste \u0928\u092e\u0938\u094d\u0924\u0947"}, "type": "text"}]},
                "field": "messages"})
        entries.append({"id": "1122334455", "changes": changes})
    return {"object": "whatsapp_business_account", "gs_app_id": rng.choice(APPS), "entry": entries}


def v2(key, wid, status, at_ms, code):
    inner = {}
    if code is not None:
        inner = {"code": int(code), "reason": "Message failed", "destination": "91XXXXXXXXXX"}
    elif rng.random() < 0.7:
        inner = {"ts": at_ms // 1000} if rng.random() < 0.5 else {"ts": str(at_ms // 1000)}
    payload = {"type": status, "destination": "91XXXXXXXXXX", "payload": inner}
    if status == "enqueued" or rng.random() < 0.2:
        payload["id"] = key  # keyed by its own id alone
    else:
        payload["id"], payload["gsId"] = wid, key
    return {"app": rng.choice(APPS), "timestamp": at_ms + rng.randrange(500), "version": 2,
            "type": "message-event", "payload": payload}


def history(i):
    """A message's statuses, each (word, ms, code)."""
    t = (START + i * 45 * 86400 // messages) * 1000 + rng.randrange(1000)
    out = [("enqueued", t, None)]
    t += rng.randrange(500, 20_000)
    r = rng.random()
    if r < 0.04:
        out.append(("failed", t, rng.choice(CODES)))
        return out
    out.append(("sent", t, None))
    if r < 0.06:  # delivered, then failed on another device: stays delivered
        out.append(("delivered", t + 900, None))
        out.append(("failed", t + 1800, rng.choice(CODES)))
        return out
    if rng.random() < 0.9:
        t += rng.randrange(300, 600_000)
        out.append(("delivered", t, None))
        if rng.random() < 0.45:
            out.append(("read", t + rng.randrange(1000, 86_400_000), None))
            if rng.random() < 0.02:
                out.append(("played", t + rng.randrange(86_400_000, 90_000_000), None))
    return out


def word(status):
    return status.upper() if rng.random() < 0.02 else status


lines = []  # (arrival seconds, text)
pending_v3 = []  # statuses waiting to be batched into one envelope
for i in range(messages):
    wid, hist = wamid(), history(i)
    style = rng.random()
    key = gs_id() if style < 0.85 else None  # None: V3 keyed by the wamid alone
    use_v2 = key is not None and style < 0.35
    for status, at_ms, code in hist:
        arrival = at_ms // 1000 + (rng.randrange(7200, 36000) if rng.random() < 0.05 else rng.randrange(30))
        for _ in range(2 if rng.random() < 0.05 else 1):
            if use_v2:
                lines.append((arrival, v2(key, wid, word(status), at_ms, code)))
            else:
                pending_v3.append((arrival, v3_status(key, wid, word(status), at_ms, code)))
        if len(pending_v3) >= 3 or rng.random() < 0.6:
            if pending_v3:
                lines.append((max(a for a, _ in pending_v3), v3([s for _, s in pending_v3])))
                pending_v3 = []
    if rng.random() < 0.02:
        lines.append((hist[0][1] // 1000, {"app": APPS[0], "timestamp": hist[0][1], "version": 2, "type": "user-event",
                                           "payload": {"type": "sandbox-start", "phone": "91XXXXXXXXXX"}}))
if pending_v3:
    lines.append((pending_v3[-1][0], v3([s for _, s in pending_v3])))


def text(obj):
    body = json.dumps(obj)
    r = rng.random()
    if r < 0.04:
        return json.dumps({"received_at": "2026-01-01T00:00:00Z", "headers": {"user-agent": "Gupshup"}, "body": obj})
    if r < 0.06:
        return json.dumps({"received_at": "2026-01-01T00:00:00Z", "body": body})
    return body


# Files: by arrival in 30-minute slots; a slot is one large file, or split into many small ones.
slots = {}
for arrival, obj in lines:
    slots.setdefault(arrival // 1800, []).append(text(obj))
bytes_written = files = 0
for slot, texts in sorted(slots.items()):
    rng.shuffle(texts)
    parts = 1 if rng.random() < 0.7 else rng.randint(3, 10)
    for p in range(parts):
        chunk = texts[p::parts]
        if not chunk:
            continue
        crlf = rng.random() < 0.05
        body = ("\r\n" if crlf else "\n").join(chunk) + ("\r\n" if crlf else "\n")
        name = os.path.join(out, f"d{slot // 48}", f"s{slot}-{p}.ndjson")
        os.makedirs(os.path.dirname(name), exist_ok=True)
        data = body.encode()
        if rng.random() < 0.33:
            data = gzip.compress(data, compresslevel=rng.choice([1, 9]), mtime=0)
            name += ".gz"
        with open(name, "wb") as f:
            f.write(data)
        bytes_written += len(data)
        files += 1
print(f"{messages} messages, {len(lines)} lines, {files} files, {bytes_written >> 20} MB on disk in {out}", file=sys.stderr)
