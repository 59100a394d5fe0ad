"""Uploads a callback folder into fake-gcs-server (STORAGE_EMULATOR_HOST) through its JSON
API, for the gs:// benchmark: bucket BUCKET, each file as PREFIX/<its path>.
Usage: python bench/upload.py DATA_DIR BUCKET PREFIX"""
import os, sys, urllib.parse, urllib.request
from concurrent.futures import ThreadPoolExecutor

data, bucket, prefix = sys.argv[1:4]
host = os.environ["STORAGE_EMULATOR_HOST"].rstrip("/")


def post(url, body):
    urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=60).read()


post(f"{host}/storage/v1/b?project=demo", f'{{"name": "{bucket}"}}'.encode())
paths = [os.path.join(d, f) for d, _, fs in os.walk(data) for f in fs]


def upload(path):
    name = urllib.parse.quote(f"{prefix}/{os.path.relpath(path, data)}", safe="")
    with open(path, "rb") as f:
        post(f"{host}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}", f.read())


with ThreadPoolExecutor(8) as pool:
    list(pool.map(upload, paths))
print(f"uploaded {len(paths)} files to gs://{bucket}/{prefix}", file=sys.stderr)
