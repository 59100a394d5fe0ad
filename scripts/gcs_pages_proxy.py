"""A proxy in front of fake-gcs-server that lists as GCS does, and counts.

fake-gcs-server answers a JSON listing in one page whatever `maxResults` says;
GCS pages at 1,000 names (or `maxResults`) with a `nextPageToken`. This proxy
pages the emulator's answer as GCS would and counts the list calls and the
names it returned (GET /_proxy/counts, POST /_proxy/reset), so a measurement
of how much a run lists means what it would on GCS. Everything else is passed
through. Standard library only.

    python3 scripts/gcs_pages_proxy.py --port 4444 --backend http://127.0.0.1:4443
"""

import argparse
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS = {"list_calls": 0, "names_listed": 0, "object_reads": 0}
LOCK = threading.Lock()
GCS_PAGE = 1000


def count(**more):
    with LOCK:
        for key, n in more.items():
            COUNTS[key] += n


class Proxy(BaseHTTPRequestHandler):
    backend = ""

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def upstream(self, method, path, body=None):
        request = urllib.request.Request(self.backend + path, data=body, method=method)
        for name in ("Content-Type",):
            if self.headers.get(name):
                request.add_header(name, self.headers[name])
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers.get("Content-Type", "application/json")

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_proxy/counts":
            with LOCK:
                return self.answer(200, json.dumps(COUNTS).encode())
        parts = url.path.split("/")
        # /storage/v1/b/BUCKET/o is a listing; /storage/v1/b/BUCKET/o/NAME an object.
        if len(parts) == 6 and parts[1:4] == ["storage", "v1", "b"] and parts[5] == "o":
            return self.list_page(url)
        if "alt=media" in url.query:
            count(object_reads=1)
        self.answer(*self.upstream("GET", self.path))

    def list_page(self, url):
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        size = min(int(query.pop("maxResults", GCS_PAGE)), GCS_PAGE)
        token = query.pop("pageToken", None)
        query.pop("fields", None)  # the emulator's answer is cut to the page here
        if token:
            query["startOffset"] = max(token, query.get("startOffset", ""))
        status, body, kind = self.upstream("GET", url.path + "?" + urllib.parse.urlencode(query))
        if status != 200:
            return self.answer(status, body, kind)
        items = json.loads(body).get("items", [])
        # The emulator should honour startOffset; make sure, as GCS does.
        if "startOffset" in query:
            items = [i for i in items if i["name"] >= query["startOffset"]]
        page = {"kind": "storage#objects", "items": items[:size]}
        if len(items) > size:
            page["nextPageToken"] = items[size]["name"]
        count(list_calls=1, names_listed=len(page["items"]))
        self.answer(200, json.dumps(page).encode())

    def do_POST(self):
        if self.path == "/_proxy/reset":
            with LOCK:
                for key in COUNTS:
                    COUNTS[key] = 0
            return self.answer(200, b"{}")
        length = int(self.headers.get("Content-Length", 0))
        self.answer(*self.upstream("POST", self.path, self.rfile.read(length)))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True)
    args = parser.parse_args()
    Proxy.backend = args.backend.rstrip("/")
    ThreadingHTTPServer(("127.0.0.1", args.port), Proxy).serve_forever()


if __name__ == "__main__":
    main()
