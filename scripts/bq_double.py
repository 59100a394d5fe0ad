#!/usr/bin/env python3
"""A strict BigQuery double: an HTTP proxy in front of bqemulator that enforces what real
BigQuery enforces and the emulator does not (see shared/reference/bigquery-notes.md).

Usage: bq_double.py --port PORT --backend http://127.0.0.1:EMULATOR_PORT
                    [--host 127.0.0.1] [--streaming-buffer-default on|off]
(--streaming-buffer-default defaults to $BSP_BQ_STREAMING_BUFFER, else off.)
Every request the double does not handle is forwarded byte for byte (path, query string,
headers but hop-by-hop ones and Accept-Encoding, body). Answers close the connection.

Rules ("references D": the query text names dataset D as a whole word, or the job's
destinationTable / defaultDataset / load destination names D; matched against the datasets
the emulator lists plus every dataset named in rules or buffers):
 1. Job ids are unique per project, forever (always on). jobs.insert (also a multipart or
    resumable load upload: bqemulator names an uploaded load job itself, the double keeps the
    id the client chose, as BigQuery does, and maps job reads of it to the emulator's job)
    with an id any earlier insert through the double used answers 409
    {"error":{"code":409,"message":"Already Exists: Job P:LOC.ID","errors":[{"message":...,
    "domain":"global","reason":"duplicate"}],"status":"ALREADY_EXISTS"}}; nothing runs.
 2. Jobs live in a region (always on). datasets.insert records `location` (default "US");
    datasets.get/list answer it. A job's location: jobReference.location, else the location
    of the first dataset it references, else "US". A referenced dataset elsewhere answers 404
    "Not found: Dataset P:D was not found in location L" (reason notFound). Insert, jobs.get
    and getQueryResults answers carry jobReference.location. jobs.get, getQueryResults,
    jobs.cancel and jobs.delete of a job made through the double answer 404 "Not found: Job
    P:ID" when `location=` is absent (for jobs outside US/EU) or names another region.
    jobs.query (POST .../queries) gets the same location check and answer patch.
 3. Lost answers: {"lose_insert_answers": N | "first"}: the next N inserts referencing D (or,
    with "first", every insert whose id is new, so every first try) are carried out, but the
    client gets 503 {"error":{"code":503,"message":"The service is currently unavailable.",
    "errors":[{...,"reason":"backendError"}],"status":"UNAVAILABLE"}}.
 4. Concurrent-update abort: {"abort_scripts": N}: the next N inserts of a query containing
    BEGIN TRANSACTION that reference D do not run. The insert answers 200 with state RUNNING
    (or DONE: "insert_state"); jobs.get answers DONE with errorResult and errors =
    [{"reason":"invalidQuery","location":"query","message":"Transaction is aborted due to
    concurrent update against table P.D.T. Transaction ID: ..."}] (invalidQuery is what real
    BigQuery reports for it); getQueryResults answers 400 with that error.
 5. Streaming buffer: {"streaming_buffer": true} (default off, or --streaming-buffer-default):
    rows that tabledata.insertAll adds to D.T through the double are buffered until
    POST /_double/flush. tables.get then shows streamingBuffer {estimatedRows, estimatedBytes,
    oldestEntryTime}. A query job or jobs.query whose text contains UPDATE/DELETE/MERGE/
    TRUNCATE and that would change or remove a buffered row fails whole, changing nothing:
    DONE with errorResult invalidQuery "UPDATE or DELETE statement over table P.D.T would
    affect rows in the streaming buffer, which is not supported" (jobs.query: HTTP 400).
    How: a buffered row is its TO_JSON_STRING, found by diffing the table around insertAll.
    A mutating job first runs on a probe: every table of every dataset it references is
    copied (CREATE TABLE AS SELECT) into D__probe_<n>, the query runs there with the dataset
    names rewritten, and if any buffered row's count dropped the job is refused; else the real
    job runs. The probe datasets are deleted afterwards.
 6. Log: GET /_double/jobs?dataset=D lists every jobs.insert referencing D: {"job_id",
    "location","query","outcome","answer_lost","error","time","kind"}; outcome: ran, failed
    (the emulator ran it and answered an error), duplicate, lost_answer (ran, answer lost),
    aborted, buffer_refused, wrong_location; kind: query, load, copy or extract.
    GET /_double/requests?dataset=D lists the other calls on D: jobs.query (same fields, kind
    "jobs.query") and {"method","path","status","time"} of dataset, table, insertAll and job
    read calls (status null for job reads).
 7. Control API (plain JSON): POST /_double/rules {"dataset": D, ...} merges and answers the
    dataset's rules; GET /_double/rules?dataset=D; DELETE /_double/rules?dataset=D resets them;
    POST /_double/flush {"dataset": D[, "table": T]}; GET /_double/buffer?dataset=D;
    GET /_double/health.

Limitations: rules, buffers and logs are keyed by dataset name only (not project). A query
"references" D by a word match, so a column or string equal to a dataset name counts too. The
probe copies drop partitioning, clustering and REQUIRED modes; a buffered row counts as
changed only when its content changes or it disappears (a no-op UPDATE of a buffered row, or a
change that leaves an identical copy behind, is not refused as BigQuery would); statements
that fail on the probe are handed to the emulator to fail there. Rows buffered while
streaming_buffer was off stay unbuffered. Per-dataset locks serialise inserts and jobs on one
dataset. State lives in memory only.
"""
import argparse
import collections
import contextlib
import copy
import http.client
import json
import os
import re
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
       "upgrade", "host", "content-length", "accept-encoding"}
MUTATING = re.compile(r"\b(UPDATE|DELETE|MERGE|TRUNCATE)\b", re.I)
R = "/bigquery/v2/projects/([^/]+)"
ROUTES = [  # (method, pattern, handler name)
    ("POST", R + r"/jobs$", "job_insert"),
    ("POST", r"/upload" + R + r"/jobs$", "job_insert"),
    ("GET", R + r"/jobs/([^/]+)$", "job_read"),
    ("POST", R + r"/jobs/([^/]+)/cancel$", "job_read"),
    ("DELETE", R + r"/jobs/([^/]+)/delete$", "job_read"),
    ("GET", R + r"/queries/([^/]+)$", "job_read"),
    ("POST", R + r"/queries$", "jobs_query"),
    ("POST", R + r"/datasets$", "dataset_insert"),
    ("GET", R + r"/datasets$", "dataset_list"),
    ("GET", R + r"/datasets/([^/]+)$", "dataset_get"),
    ("DELETE", R + r"/datasets/([^/]+)$", "dataset_delete"),
    ("GET", R + r"/datasets/([^/]+)/tables/([^/]+)$", "table_get"),
    ("DELETE", R + r"/datasets/([^/]+)/tables/([^/]+)$", "table_delete"),
    ("POST", R + r"/datasets/([^/]+)/tables/([^/]+)/insertAll$", "insert_all"),
]


def now_ms():
    return int(time.time() * 1000)


def error_body(code, status, reason, message):
    err = {"message": message, "domain": "global", "reason": reason}
    return {"error": {"code": code, "message": message, "errors": [err], "status": status}}


def not_found(message):
    return 404, error_body(404, "NOT_FOUND", "notFound", message)


def word(name):
    """A dataset name as a whole identifier: not inside a longer name (D__probe_1, xD)."""
    return re.compile(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])")


class Backend:
    """The emulator: raw forwarding plus the few JSON calls the double makes itself."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.netloc = u.netloc

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.getheaders(), r.read()
        finally:
            conn.close()

    def json(self, method, path, obj=None):
        body = None if obj is None else json.dumps(obj).encode()
        status, _, data = self.request(method, path, body, {"content-type": "application/json"})
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode("utf-8", "replace")

    def sql(self, project, query):
        """Runs one query (the emulator runs jobs synchronously) and returns column 0 of all rows."""
        jid = "_double_" + uuid.uuid4().hex
        status, job = self.json("POST", f"/bigquery/v2/projects/{project}/jobs", {
            "jobReference": {"projectId": project, "jobId": jid},
            "configuration": {"query": {"query": query, "useLegacySql": False}}})
        err = (job or {}).get("status", {}).get("errorResult") if status == 200 else job
        if err:
            raise RuntimeError(f"backend query failed: {err}: {query}")
        rows, token = [], None
        while True:
            q = "?maxResults=100000" + (f"&pageToken={urllib.parse.quote(token)}" if token else "")
            status, page = self.json("GET", f"/bigquery/v2/projects/{project}/queries/{jid}{q}")
            if status != 200:
                raise RuntimeError(f"backend results failed: {page}")
            rows += [(r["f"][0] or {}).get("v") for r in page.get("rows") or []]
            token = page.get("pageToken")
            if not token:
                return rows

    def list_all(self, path, key):
        items, token = [], None
        while True:
            sep = "&" if "?" in path else "?"
            q = f"{sep}maxResults=1000" + (f"&pageToken={urllib.parse.quote(token)}" if token else "")
            status, page = self.json("GET", path + q)
            if status != 200:
                return items
            items += page.get(key) or []
            token = page.get("nextPageToken")
            if not token:
                return items


class StreamingBuffer:
    """Rule 5: which rows of which table are still in the streaming buffer, and the probe."""

    def __init__(self, backend):
        self.backend = backend
        self.tables = {}  # (dataset, table) -> {"rows": Counter(json), "oldest": ms, "bytes": n}
        self.probes = 0
        self.lock = threading.Lock()

    def snapshot(self, project, dataset, table):
        return collections.Counter(self.backend.sql(
            project, f"SELECT TO_JSON_STRING(t) FROM `{project}.{dataset}.{table}` AS t"))

    def add(self, dataset, table, before, after):
        added = after - before
        if not added:
            return
        with self.lock:
            entry = self.tables.setdefault((dataset, table), {
                "rows": collections.Counter(), "oldest": now_ms(), "bytes": 0})
            entry["rows"] += added
            entry["bytes"] += sum(len(r) * n for r, n in added.items())

    def flush(self, dataset, table=None):
        with self.lock:
            keys = [k for k in self.tables if k[0] == dataset and table in (None, k[1])]
            return {k[1]: sum(self.tables.pop(k)["rows"].values()) for k in keys}

    def info(self, dataset, table):
        with self.lock:
            e = self.tables.get((dataset, table))
            if not e or not e["rows"]:
                return None
            return {"estimatedRows": str(sum(e["rows"].values())),
                    "estimatedBytes": str(e["bytes"]), "oldestEntryTime": str(e["oldest"])}

    def buffered(self, datasets):
        with self.lock:
            return {k: collections.Counter(v["rows"]) for k, v in self.tables.items()
                    if k[0] in datasets and v["rows"]}

    def refused_table(self, project, datasets, config):
        """Runs the job's query on copies of `datasets`; answers the first (dataset, table)
        whose buffered rows it would change, or None (also when the probe itself fails)."""
        buffered = self.buffered(datasets)
        if not buffered:
            return None
        with self.lock:
            self.probes += 1
            names = {d: f"{d}__probe_{self.probes}" for d in datasets}
        created = []
        try:
            for d, p in names.items():
                self.backend.json("POST", f"/bigquery/v2/projects/{project}/datasets",
                                  {"datasetReference": {"projectId": project, "datasetId": p}})
                created.append(p)
                for t in self.backend.list_all(
                        f"/bigquery/v2/projects/{project}/datasets/{d}/tables", "tables"):
                    if t.get("type", "TABLE") == "TABLE":
                        tid = t["tableReference"]["tableId"]
                        self.backend.sql(project, f"CREATE TABLE `{project}.{p}.{tid}` AS "
                                                  f"SELECT * FROM `{project}.{d}.{tid}`")
            before = {k: self.snapshot(project, names[k[0]], k[1]) for k in buffered}
            cfg = copy.deepcopy(config)
            q = cfg["query"]
            for d, p in names.items():
                q["query"] = word(d).sub(p, q["query"])
                for key in ("destinationTable", "defaultDataset"):
                    if (q.get(key) or {}).get("datasetId") == d:
                        q[key]["datasetId"] = p
            status, job = self.backend.json("POST", f"/bigquery/v2/projects/{project}/jobs", {
                "jobReference": {"projectId": project, "jobId": "_double_probe_" + uuid.uuid4().hex},
                "configuration": cfg})
            if status != 200 or (job.get("status") or {}).get("errorResult"):
                return None  # the real job will fail on the emulator just the same
            for (d, t), rows in buffered.items():
                after = self.snapshot(project, names[d], t)
                if any(after[r] < min(count, before[(d, t)][r]) for r, count in rows.items()):
                    return d, t
            return None
        finally:
            for p in created:
                self.backend.request("DELETE", f"/bigquery/v2/projects/{project}/datasets/{p}"
                                               "?deleteContents=true")


class State:
    """Everything the double remembers: dataset locations, jobs, rules, logs, locks."""

    def __init__(self, backend, buffer_default):
        self.backend = backend
        self.buffer = StreamingBuffer(backend)
        self.buffer_default = buffer_default
        self.lock = threading.Lock()
        self.locations = {}     # dataset -> location, from datasets.insert
        self.jobs = {}          # (project, job id) -> {"location", "datasets"}
        self.synthetic = {}     # (project, job id) -> (job resource, error message)
        self.aliases = {}       # (project, job id) -> the emulator's own id for that job
        self.rules = {}         # dataset -> dict
        self.job_log = collections.defaultdict(list)
        self.request_log = collections.defaultdict(list)
        self.ds_locks = collections.defaultdict(threading.Lock)

    def rule(self, dataset, name, default=None):
        with self.lock:
            r = self.rules.get(dataset, {})
            return r.get(name, self.buffer_default if name == "streaming_buffer" else default)

    def take(self, datasets, name):
        """Consumes one unit of a counted rule for the first dataset that has one left
        ("first" never runs out: only new job ids get this far)."""
        with self.lock:
            for d in datasets:
                v = self.rules.get(d, {}).get(name)
                if v == "first":
                    return True
                if isinstance(v, int) and v > 0:
                    self.rules[d][name] = v - 1
                    return True
        return False

    def known_datasets(self, project):
        listed = self.backend.list_all(f"/bigquery/v2/projects/{project}/datasets?all=true",
                                       "datasets")
        found = {d["datasetReference"]["datasetId"]: d.get("location", "US") for d in listed}
        with self.lock:
            found.update(self.locations)
            extra = set(self.rules) | {d for d, _ in self.buffer.tables}
        names = {d for d in found if not re.search(r"__probe_\d+$|^_bqemu", d)} | extra
        return names, found

    def referenced(self, project, text, explicit):
        """Datasets a job references, in order of first mention, and their locations."""
        names, locations = self.known_datasets(project)
        hits = sorted((m.start(), d) for d in names for m in [word(d).search(text or "")] if m)
        order = [d for d in explicit if isinstance(d, str) and d] + [d for _, d in hits]
        return list(dict.fromkeys(order)), locations

    @contextlib.contextmanager
    def locked(self, datasets):
        """Holds the datasets' locks, taken in sorted order so that two jobs cannot deadlock."""
        with self.lock:
            locks = [self.ds_locks[d] for d in sorted(set(datasets))]
        with contextlib.ExitStack() as stack:
            for lk in locks:
                stack.enter_context(lk)
            yield

    def log(self, datasets, entry):
        """jobs.insert entries go to the job log, jobs.query ones to the request log."""
        with self.lock:
            for d in datasets:
                (self.request_log if entry["kind"] == "jobs.query" else self.job_log)[d].append(entry)


def dict_or_empty(value):
    return value if isinstance(value, dict) else {}


def job_config_of(body, content_type):
    """The job resource of a jobs.insert body: JSON, or the first JSON part of a multipart."""
    if "multipart" in content_type:
        m = re.search(r'boundary="?([^";]+)"?', content_type)
        for part in body.split(b"--" + m.group(1).encode()) if m else []:
            head, _, payload = part.partition(b"\r\n\r\n")
            if b"json" in head.lower():
                try:
                    return json.loads(payload.strip())
                except ValueError:
                    pass
        return {}
    try:
        return json.loads(body or b"{}")
    except ValueError:
        return {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: no keep-alive bookkeeping
    state = None  # set in main()

    def log_message(self, fmt, *args):
        pass

    # --- plumbing -------------------------------------------------------------------------
    def read_body(self):
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body, headers=()):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = [("Content-Type", "application/json; charset=UTF-8")]
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP and k.lower() not in ("date", "server"):
                self.send_header(k, v.replace(self.state.backend.netloc, self.netloc))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def region(self, project, datasets, locations, asked, entry):
        """Rule 2: a job runs where its datasets are (or where it asks, if they agree).
        Returns its location, and whether a dataset is elsewhere (then the 404 is sent)."""
        located = [d for d in datasets if d in locations]
        location = asked or (locations[located[0]] if located else "US")
        entry["location"] = location
        wrong = next((d for d in located if locations[d].lower() != location.lower()), None)
        if not wrong:
            return location, False
        entry["outcome"] = "wrong_location"
        self.state.log(datasets, entry)
        self.send(*not_found(
            f"Not found: Dataset {project}:{wrong} was not found in location {location}"))
        return location, True

    def forward(self):
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if self.body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(self.body))
        return self.state.backend.request(self.command, self.path, self.body or None, headers)

    def forward_json(self):
        """Forwards; answers (status, headers, raw, parsed JSON or None)."""
        status, headers, raw = self.forward()
        try:
            return status, headers, raw, json.loads(raw) if raw else None
        except ValueError:
            return status, headers, raw, None

    def handle_any(self):
        try:
            self.netloc = f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            self.body = self.read_body()
            url = urllib.parse.urlsplit(self.path)
            self.query = dict(urllib.parse.parse_qsl(url.query))
            if url.path.startswith("/_double/"):
                return self.send(*self.control(url.path[len("/_double/"):]))
            for method, pattern, name in ROUTES:
                m = re.match(pattern, url.path)
                if m and method == self.command:
                    args = [urllib.parse.unquote(a) for a in m.groups()]
                    return getattr(self, name)(*args)
            status, headers, raw = self.forward()
            self.send(status, raw, headers)
        except Exception as e:  # never die on odd input: say what broke
            traceback.print_exc(file=sys.stderr)
            try:
                self.send(500, error_body(500, "INTERNAL", "internalError", f"bq_double: {e!r}"))
            except Exception:
                pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any

    def note(self, dataset, status):
        with self.state.lock:
            self.state.request_log[dataset].append(
                {"method": self.command, "path": self.path, "status": status, "time": now_ms()})

    # --- control API ----------------------------------------------------------------------
    def control(self, what):
        st = self.state
        body = json.loads(self.body) if self.body.strip() else {}
        ds = body.get("dataset") or self.query.get("dataset")
        if what == "health":
            return 200, {"ok": True, "backend": f"http://{st.backend.netloc}"}
        if not ds:
            return 400, {"error": "name a dataset"}
        if what == "rules":
            with st.lock:
                if self.command == "POST":
                    r = st.rules.setdefault(ds, {})
                    r.update({k: v for k, v in body.items() if k != "dataset"})
                elif self.command == "DELETE":
                    st.rules.pop(ds, None)
                return 200, dict(st.rules.get(ds, {}), dataset=ds)
        if what == "flush" and self.command == "POST":
            return 200, {"dataset": ds, "flushed": st.buffer.flush(ds, body.get("table"))}
        if what == "buffer":
            rows = st.buffer.buffered({ds})
            return 200, {t: sorted(c.elements()) for (_, t), c in rows.items()}
        if what in ("jobs", "requests"):
            with st.lock:
                return 200, list((st.job_log if what == "jobs" else st.request_log).get(ds, []))
        return 404, {"error": f"unknown control call {self.command} /_double/{what}"}

    # --- datasets and tables (rule 2, rule 5) -----------------------------------------------
    def dataset_insert(self, project):
        spec = dict_or_empty(job_config_of(self.body, "application/json"))
        ds = dict_or_empty(spec.get("datasetReference")).get("datasetId")
        status, headers, raw, obj = self.forward_json()
        if status == 200 and isinstance(ds, str) and isinstance(obj, dict):
            with self.state.lock:
                self.state.locations[ds] = spec.get("location") or "US"
            obj["location"] = self.state.locations[ds]
            raw = json.dumps(obj).encode()
        self.note(ds, status)
        self.send(status, raw, headers)

    def patched_location(self, d):
        with self.state.lock:
            loc = self.state.locations.get(d.get("datasetReference", {}).get("datasetId"))
        if loc:
            d["location"] = loc

    def dataset_list(self, project):
        status, headers, raw, obj = self.forward_json()
        if status == 200 and isinstance(obj, dict):
            for d in obj.get("datasets") or []:
                self.patched_location(d)
            raw = json.dumps(obj).encode()
        self.send(status, raw, headers)

    def dataset_get(self, project, ds):
        status, headers, raw, obj = self.forward_json()
        if status == 200 and isinstance(obj, dict):
            self.patched_location(obj)
            raw = json.dumps(obj).encode()
        self.note(ds, status)
        self.send(status, raw, headers)

    def dataset_delete(self, project, ds):
        status, headers, raw = self.forward()
        if status in (200, 204):
            self.state.buffer.flush(ds)
            with self.state.lock:
                self.state.locations.pop(ds, None)
        self.note(ds, status)
        self.send(status, raw, headers)

    def table_get(self, project, ds, table):
        status, headers, raw, obj = self.forward_json()
        info = self.state.buffer.info(ds, table)
        if status == 200 and isinstance(obj, dict) and info:
            obj["streamingBuffer"] = info
            raw = json.dumps(obj).encode()
        self.note(ds, status)
        self.send(status, raw, headers)

    def table_delete(self, project, ds, table):
        status, headers, raw = self.forward()
        if status in (200, 204):
            self.state.buffer.flush(ds, table)
        self.note(ds, status)
        self.send(status, raw, headers)

    def insert_all(self, project, ds, table):
        st = self.state
        if not st.rule(ds, "streaming_buffer"):
            status, headers, raw = self.forward()
        else:
            with st.locked([ds]):  # nobody else writes D between the two snapshots
                try:
                    before = st.buffer.snapshot(project, ds, table)
                except RuntimeError:  # no such table: let the emulator answer that
                    before = None
                status, headers, raw = self.forward()
                if status == 200 and before is not None:
                    st.buffer.add(ds, table, before, st.buffer.snapshot(project, ds, table))
        self.note(ds, status)
        self.send(status, raw, headers)

    # --- jobs (rules 1-6) -----------------------------------------------------------------
    def job_insert(self, project):
        st = self.state
        job = dict_or_empty(job_config_of(self.body, self.headers.get("content-type", "")))
        ref = dict_or_empty(job.get("jobReference"))
        job_id = ref.get("jobId")
        config = dict_or_empty(job.get("configuration"))
        text = dict_or_empty(config.get("query")).get("query") or ""
        if not isinstance(job_id, str) or not isinstance(text, str):
            job_id, text = None, ""  # odd input: the emulator shall answer it
        explicit = [dict_or_empty(dict_or_empty(config.get(k)).get(f)).get("datasetId")
                    for k in ("query", "load", "copy", "extract")
                    for f in ("destinationTable", "defaultDataset")]
        datasets, locations = st.referenced(project, text, explicit)
        entry = {"job_id": job_id, "location": None, "query": text, "outcome": None,
                 "answer_lost": False, "error": None, "time": now_ms(),
                 "kind": next((k for k in ("query", "load", "copy", "extract") if k in config), "?")}
        if not job_id:  # no id of its own (or odd input): the emulator's to answer
            status, headers, raw = self.forward()
            return self.send(status, raw, headers)
        with st.lock:
            earlier = st.jobs.get((project, job_id))
            if not earlier:
                st.jobs[(project, job_id)] = {"location": None, "datasets": datasets}
        if earlier:
            msg = f"Already Exists: Job {project}:{earlier['location'] or 'US'}.{job_id}"
            entry.update(outcome="duplicate", location=earlier["location"])
            st.log(datasets, entry)
            return self.send(409, error_body(409, "ALREADY_EXISTS", "duplicate", msg))
        # Rule 2: the job's region.
        location, refused = self.region(project, datasets, locations, ref.get("location"), entry)
        st.jobs[(project, job_id)]["location"] = location
        if refused:
            return None
        with st.locked(datasets):
            status, answer = self.run_job(project, job_id, location, config, text, datasets, entry)
        if st.take(datasets, "lose_insert_answers"):
            entry["answer_lost"] = True
            if entry["outcome"] in ("ran", "failed"):
                entry["outcome"] = "lost_answer"
            status, answer = 503, (error_body(503, "UNAVAILABLE", "backendError",
                                              "The service is currently unavailable."),)
        st.log(datasets, entry)
        self.send(status, *answer)

    def run_job(self, project, job_id, location, config, text, datasets, entry):
        """Aborts, refuses or forwards the job; answers (status, (body, headers))."""
        st = self.state
        if "BEGIN TRANSACTION" in text.upper() and st.take(datasets, "abort_scripts"):
            ds, table = next(((d, t) for d in datasets for t in [first_table(text, d)] if t),
                             (datasets[0] if datasets else "?", "?"))
            msg = (f"Transaction is aborted due to concurrent update against table "
                   f"{project}.{ds}.{table}. Transaction ID: {uuid.uuid4().hex[:24]}")
            entry.update(outcome="aborted", error=msg)
            return 200, (self.synthetic_job(project, job_id, location, config, msg, datasets),)
        buffered = [d for d in datasets if st.rule(d, "streaming_buffer")]
        if text and MUTATING.search(text) and buffered:
            hit = st.buffer.refused_table(project, datasets, config)
            if hit:
                msg = (f"UPDATE or DELETE statement over table {project}.{hit[0]}.{hit[1]} "
                       "would affect rows in the streaming buffer, which is not supported")
                entry.update(outcome="buffer_refused", error=msg)
                return 200, (self.synthetic_job(project, job_id, location, config, msg, datasets),)
        status, headers, raw, obj = self.forward_json()
        entry["outcome"] = "ran"
        if isinstance(obj, dict):
            err = (obj.get("status") or {}).get("errorResult") or (obj.get("error") if status != 200 else None)
            if err:
                entry.update(outcome="failed", error=err.get("message"))
            if status == 200:
                own = (obj.get("jobReference") or {}).get("jobId")
                if own and own != job_id:  # the emulator names uploaded loads itself
                    with st.lock:
                        st.aliases[(project, job_id)] = own
                    obj["jobReference"]["jobId"] = job_id
                obj.setdefault("jobReference", {})["location"] = location
                obj["id"] = f"{project}:{location}.{job_id}"
                raw = json.dumps(obj).encode()
        return status, (raw, headers)

    def synthetic_job(self, project, job_id, location, config, msg, datasets):
        err = {"reason": "invalidQuery", "location": "query", "message": msg}
        t = now_ms()
        done = {"kind": "bigquery#job", "id": f"{project}:{location}.{job_id}",
                "jobReference": {"projectId": project, "jobId": job_id, "location": location},
                "configuration": config,
                "status": {"state": "DONE", "errorResult": err, "errors": [err]},
                "statistics": {"creationTime": str(t), "startTime": str(t), "endTime": str(t),
                               "query": {"statementType": "SCRIPT"}}}
        with self.state.lock:
            self.state.synthetic[(project, job_id)] = (done, msg)
        if next((self.state.rule(d, "insert_state") for d in datasets
                 if self.state.rule(d, "insert_state")), "RUNNING") == "DONE":
            return done
        running = copy.deepcopy(done)
        running["status"] = {"state": "RUNNING"}
        del running["statistics"]["endTime"]
        return running

    def job_read(self, project, job_id):
        """jobs.get, getQueryResults, cancel, delete: region check, synthetic jobs, patch."""
        st = self.state
        with st.lock:
            known = st.jobs.get((project, job_id))
            synthetic = st.synthetic.get((project, job_id))
            alias = st.aliases.get((project, job_id))
        for d in (known or {}).get("datasets", []):
            self.note(d, None)
        if known and known["location"]:
            asked, loc = self.query.get("location"), known["location"]
            if (asked or "").lower() != loc.lower() and (asked or loc.upper() not in ("US", "EU")):
                return self.send(*not_found(f"Not found: Job {project}:{job_id}"))
        results = "/queries/" in self.path
        if synthetic:
            done, msg = synthetic
            if results:
                return self.send(400, error_body(400, "INVALID_ARGUMENT", "invalidQuery", msg))
            if self.path.split("?")[0].endswith("/cancel"):
                return self.send(200, {"kind": "bigquery#jobCancelResponse", "job": done})
            return self.send(200, done if self.command == "GET" else b"")
        if alias:  # read the emulator's job under the id the client chose
            self.path = self.path.replace(f"/jobs/{urllib.parse.quote(job_id, safe='')}", f"/jobs/{alias}", 1)
            self.path = self.path.replace(f"/queries/{urllib.parse.quote(job_id, safe='')}", f"/queries/{alias}", 1)
        status, headers, raw, obj = self.forward_json()
        if results and status == 404 and known:
            # The emulator has no results for a failed job; BigQuery answers its error, 400.
            s, job = st.backend.json("GET", f"/bigquery/v2/projects/{project}/jobs/{job_id}")
            err = (job or {}).get("status", {}).get("errorResult") if s == 200 else None
            if err:
                return self.send(400, error_body(400, "INVALID_ARGUMENT", err.get("reason", "invalidQuery"),
                                                 err.get("message", "")))
        if status == 200 and known and isinstance(obj, dict):
            target = obj.get("job", obj)
            target.setdefault("jobReference", {})["location"] = known["location"]
            if alias:
                target["jobReference"]["jobId"] = job_id
                target["id"] = f"{project}:{known['location']}.{job_id}"
            raw = json.dumps(obj).encode()
        self.send(status, raw, headers)

    def jobs_query(self, project):
        """jobs.query: location check (rule 2) and the streaming buffer (rule 5)."""
        st = self.state
        req = dict_or_empty(job_config_of(self.body, "application/json"))
        text = req.get("query")
        if not isinstance(text, str) or not isinstance(req.get("location") or "", str):
            status, headers, raw = self.forward()  # odd input: the emulator's to answer
            return self.send(status, raw, headers)
        datasets, locations = st.referenced(
            project, text, [dict_or_empty(req.get("defaultDataset")).get("datasetId")])
        entry = {"job_id": None, "location": None, "query": text, "outcome": "ran",
                 "answer_lost": False, "error": None, "time": now_ms(), "kind": "jobs.query"}
        location, refused = self.region(project, datasets, locations, req.get("location"), entry)
        if refused:
            return None
        with st.locked(datasets):
            if MUTATING.search(text) and any(st.rule(d, "streaming_buffer") for d in datasets):
                config = {"query": {k: req[k] for k in ("query", "useLegacySql", "queryParameters",
                                                        "parameterMode", "defaultDataset")
                                    if k in req}}
                hit = st.buffer.refused_table(project, datasets, config)
                if hit:
                    msg = (f"UPDATE or DELETE statement over table {project}.{hit[0]}.{hit[1]} "
                           "would affect rows in the streaming buffer, which is not supported")
                    entry.update(outcome="buffer_refused", error=msg)
                    st.log(datasets, entry)
                    return self.send(400, error_body(400, "INVALID_ARGUMENT", "invalidQuery", msg))
            status, headers, raw, obj = self.forward_json()
        if status == 200 and isinstance(obj, dict):
            obj.setdefault("jobReference", {})["location"] = location
            entry["job_id"] = obj["jobReference"].get("jobId")
            raw = json.dumps(obj).encode()
            with st.lock:  # its result pages are regional too
                st.jobs.setdefault((project, entry["job_id"]),
                                   {"location": location, "datasets": datasets})
        elif status != 200:
            entry.update(outcome="failed", error=raw[:500].decode("utf-8", "replace"))
        st.log(datasets, entry)
        self.send(status, raw, headers)


def first_table(text, dataset):
    """The table of `dataset` a script mutates first (else the first it names), or None."""
    refs = [(m.start(), m.group(1)) for m in re.finditer(
        r"(?<![\w-])" + re.escape(dataset) + r"`?\s*\.\s*`?([\w-]+)", text)]
    kw = MUTATING.search(text) or re.search(r"\bINSERT\b", text, re.I)
    after = [t for pos, t in refs if kw and pos > kw.start()]
    return (after or [t for _, t in refs] or [None])[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backend", required=True, help="the emulator, http://host:port")
    p.add_argument("--streaming-buffer-default", choices=("on", "off"),
                   default=os.environ.get("BSP_BQ_STREAMING_BUFFER", "off"),
                   help="rule 5 for datasets without a streaming_buffer rule "
                        "(default: $BSP_BQ_STREAMING_BUFFER, else off)")
    a = p.parse_args()
    Handler.state = State(Backend(a.backend), a.streaming_buffer_default == "on")
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    server.daemon_threads = True
    print(f"bq_double on http://{a.host}:{a.port} in front of {a.backend}", file=sys.stderr)
    server.serve_forever()


if __name__ == "__main__":
    main()
