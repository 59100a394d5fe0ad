#!/usr/bin/env python3
"""Self-test of scripts/bq_double.py against the real bqemulator: every rule, one test each.

Run: python3 scripts/bq_double_test.py
Uses the double named by BIGQUERY_EMULATOR_HOST when BSP_BQ_BACKEND is set too (as after
`eval "$(bash scripts/emulators.sh start)"`); otherwise starts its own emulators with
scripts/emulators.sh and stops exactly those afterwards. Each test uses its own datasets.
"""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.environ.get("BSP_EMULATOR_PROJECT", "demo")
P = f"/bigquery/v2/projects/{PROJECT}"
DOUBLE = None
STARTED_PIDS = []


def setUpModule():
    global DOUBLE
    if os.environ.get("BIGQUERY_EMULATOR_HOST") and os.environ.get("BSP_BQ_BACKEND"):
        DOUBLE = os.environ["BIGQUERY_EMULATOR_HOST"]
        return
    out = subprocess.run(["bash", os.path.join(HERE, "emulators.sh"), "start"], check=True,
                         capture_output=True, text=True).stdout
    env = dict(re.findall(r"export (\w+)='?([^'\n]*)'?", out))
    DOUBLE = env["BIGQUERY_EMULATOR_HOST"]
    STARTED_PIDS.extend(int(p) for p in env["BSP_EMULATOR_PIDS"].split())


def tearDownModule():
    for pid in STARTED_PIDS:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def call(method, path, body=None, raw=None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(DOUBLE + path, data=data, method=method,
                                 headers=headers or {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode()


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def dataset(prefix, location=None):
    name = unique(prefix)
    spec = {"datasetReference": {"projectId": PROJECT, "datasetId": name}}
    if location:
        spec["location"] = location
    status, _ = call("POST", f"{P}/datasets", spec)
    assert status == 200, status
    return name


MESSAGES = [{"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
            {"name": "bsp_message_id", "type": "STRING"},
            {"name": "status", "type": "STRING", "mode": "REQUIRED"},
            {"name": "bsp_status", "type": "STRING"},
            {"name": "inserted_at", "type": "DATETIME"},
            {"name": "bq_inserted_at", "type": "DATETIME"},
            {"name": "updated_at", "type": "TIMESTAMP"}]


def messages_table(ds):
    status, _ = call("POST", f"{P}/datasets/{ds}/tables", {
        "tableReference": {"projectId": PROJECT, "datasetId": ds, "tableId": "messages"},
        "schema": {"fields": MESSAGES},
        "timePartitioning": {"type": "MONTH", "field": "inserted_at"}})
    assert status == 200


def insert(sql, job_id=None, location=None, extra=None):
    ref = {"projectId": PROJECT, "jobId": job_id or unique("job")}
    if location:
        ref["location"] = location
    body = {"jobReference": ref,
            "configuration": {"query": dict({"query": sql, "useLegacySql": False}, **(extra or {}))}}
    status, answer = call("POST", f"{P}/jobs", body)
    return ref["jobId"], status, answer


def run_ok(sql, location=None):
    job_id, status, answer = insert(sql, location=location)
    assert status == 200 and not answer["status"].get("errorResult"), answer
    return job_id


def rows(sql):
    status, answer = call("POST", f"{P}/queries", {"query": sql, "useLegacySql": False})
    assert status == 200, answer
    return [[c["v"] for c in r["f"]] for r in answer.get("rows") or []]


def rules(ds, **kw):
    status, answer = call("POST", "/_double/rules", dict(kw, dataset=ds))
    assert status == 200, answer
    return answer


def jobs(ds):
    return call("GET", f"/_double/jobs?dataset={ds}")[1]


def glific_row(i, status, at):
    return {"insertId": str(uuid.uuid4()), "json": {
        "id": i, "bsp_message_id": f"k{i}", "status": "sent", "bsp_status": status,
        "inserted_at": at, "bq_inserted_at": at}}


class DuplicateJobIds(unittest.TestCase):
    def test_a_reused_job_id_answers_409_and_does_not_run_again(self):
        ds = dataset("dup")
        run_ok(f"CREATE TABLE `{PROJECT}.{ds}.t` (x INT64)")
        job_id, status, answer = insert(f"INSERT INTO `{PROJECT}.{ds}.t` VALUES (1)")
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["jobReference"]["location"], "US")
        _, status, answer = insert(f"INSERT INTO `{PROJECT}.{ds}.t` VALUES (2)", job_id)
        msg = f"Already Exists: Job {PROJECT}:US.{job_id}"
        self.assertEqual((status, answer), (409, {"error": {
            "code": 409, "message": msg,
            "errors": [{"message": msg, "domain": "global", "reason": "duplicate"}],
            "status": "ALREADY_EXISTS"}}))
        self.assertEqual(rows(f"SELECT x FROM `{PROJECT}.{ds}.t`"), [["1"]])
        # Another dataset (organization) in the same project: still the same id space.
        other = dataset("dup_other")
        _, status, _ = insert(f"CREATE TABLE `{PROJECT}.{other}.t` (x INT64)", job_id)
        self.assertEqual(status, 409)
        self.assertEqual([j["outcome"] for j in jobs(ds)], ["ran", "ran", "duplicate"])


class Regions(unittest.TestCase):
    def test_a_job_in_asia_south1_is_found_only_with_its_location(self):
        ds = dataset("mumbai", "asia-south1")
        self.assertEqual(call("GET", f"{P}/datasets/{ds}")[1]["location"], "asia-south1")
        listed = call("GET", f"{P}/datasets?all=true&maxResults=100000")[1]["datasets"]
        self.assertEqual([d["location"] for d in listed
                          if d["datasetReference"]["datasetId"] == ds], ["asia-south1"])
        job_id, status, answer = insert(f"CREATE TABLE `{PROJECT}.{ds}.t` (x INT64)")
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["jobReference"]["location"], "asia-south1")
        msg = f"Not found: Job {PROJECT}:{job_id}"
        gone = (404, {"error": {"code": 404, "message": msg, "errors": [
            {"message": msg, "domain": "global", "reason": "notFound"}], "status": "NOT_FOUND"}})
        for path in (f"/jobs/{job_id}", f"/queries/{job_id}", f"/jobs/{job_id}?location=US"):
            self.assertEqual(call("GET", P + path), gone, path)
        self.assertEqual(call("POST", f"{P}/jobs/{job_id}/cancel")[0], 404)
        status, answer = call("GET", f"{P}/jobs/{job_id}?location=ASIA-SOUTH1")
        self.assertEqual((status, answer["jobReference"]["location"]), (200, "asia-south1"))
        self.assertEqual(call("GET", f"{P}/queries/{job_id}?location=asia-south1")[0], 200)
        # Unqualified `dataset.table` names count too, and jobs.query follows the same rule.
        _, status, answer = insert(f"SELECT COUNT(*) FROM {ds}.t")
        self.assertEqual(answer["jobReference"]["location"], "asia-south1")
        status, answer = call("POST", f"{P}/queries", {"query": f"SELECT 1 FROM `{ds}.t`"})
        self.assertEqual((status, answer["jobReference"]["location"]), (200, "asia-south1"))

    def test_a_job_sent_to_another_region_does_not_find_the_dataset(self):
        ds = dataset("elsewhere", "asia-south1")
        _, status, answer = insert(f"SELECT 1 FROM `{PROJECT}.{ds}.t`", location="US")
        msg = f"Not found: Dataset {PROJECT}:{ds} was not found in location US"
        self.assertEqual((status, answer), (404, {"error": {"code": 404, "message": msg, "errors": [
            {"message": msg, "domain": "global", "reason": "notFound"}], "status": "NOT_FOUND"}}))
        self.assertEqual(jobs(ds)[0]["outcome"], "wrong_location")

    def test_us_jobs_are_found_without_a_location(self):
        ds = dataset("usa")
        job_id = run_ok(f"SELECT 1 AS one FROM (SELECT 1) AS `{ds}`")
        status, answer = call("GET", f"{P}/jobs/{job_id}")
        self.assertEqual((status, answer["jobReference"]["location"]), (200, "US"))
        self.assertEqual(call("GET", f"{P}/queries/{job_id}")[0], 200)


class LostAnswers(unittest.TestCase):
    UNAVAILABLE = {"error": {"code": 503, "message": "The service is currently unavailable.",
                             "errors": [{"message": "The service is currently unavailable.",
                                         "domain": "global", "reason": "backendError"}],
                             "status": "UNAVAILABLE"}}

    def test_the_next_n_answers_are_lost_but_the_jobs_ran(self):
        ds = dataset("lost")
        run_ok(f"CREATE TABLE `{PROJECT}.{ds}.t` (x INT64)")
        rules(ds, lose_insert_answers=1)
        job_id, status, answer = insert(f"INSERT INTO `{PROJECT}.{ds}.t` VALUES (1)")
        self.assertEqual((status, answer), (503, self.UNAVAILABLE))
        self.assertEqual(rows(f"SELECT x FROM `{PROJECT}.{ds}.t`"), [["1"]])
        self.assertEqual(call("GET", f"{P}/jobs/{job_id}")[1]["status"]["state"], "DONE")
        self.assertEqual(insert("SELECT 1", job_id)[1], 409)  # the retry of the same insert
        self.assertEqual(insert(f"INSERT INTO `{PROJECT}.{ds}.t` VALUES (2)")[1], 200)
        log = jobs(ds)
        self.assertEqual([j["outcome"] for j in log], ["ran", "lost_answer", "ran"])
        self.assertTrue(log[1]["answer_lost"])

    def test_first_loses_the_first_answer_of_every_insert(self):
        ds = dataset("first", "asia-south1")
        rules(ds, lose_insert_answers="first")
        for n in range(2):
            job_id, status, _ = insert(f"CREATE TABLE IF NOT EXISTS `{PROJECT}.{ds}.t{n}` (x INT64)")
            self.assertEqual(status, 503)
            _, status, answer = insert(f"CREATE TABLE IF NOT EXISTS `{PROJECT}.{ds}.t{n}` (x INT64)",
                                       job_id, "asia-south1")
            self.assertEqual(status, 409)
            self.assertEqual(answer["error"]["message"],
                             f"Already Exists: Job {PROJECT}:asia-south1.{job_id}")
            status, job = call("GET", f"{P}/jobs/{job_id}?location=asia-south1")
            self.assertEqual((status, job["status"]["state"]), (200, "DONE"))
        self.assertEqual([j["outcome"] for j in jobs(ds)], ["lost_answer", "duplicate"] * 2)
        self.assertTrue(all(j["location"] == "asia-south1" for j in jobs(ds)))


class ConcurrentUpdateAbort(unittest.TestCase):
    def test_aborted_scripts_change_nothing_and_report_the_abort(self):
        ds = dataset("abort")
        messages_table(ds)
        run_ok(f"INSERT INTO `{PROJECT}.{ds}.messages` (id, status, bsp_status, inserted_at) "
               "VALUES (1, 'sent', NULL, DATETIME '2025-11-01 10:00:00')")
        rules(ds, abort_scripts=1)
        script = (f"BEGIN TRANSACTION;\nUPDATE `{PROJECT}.{ds}.messages` SET bsp_status = 'read' "
                  "WHERE id = 1;\nCOMMIT TRANSACTION;")
        job_id, status, answer = insert(script)
        self.assertEqual((status, answer["status"]), (200, {"state": "RUNNING"}))
        status, job = call("GET", f"{P}/jobs/{job_id}")
        err = job["status"]["errorResult"]
        self.assertEqual((job["status"]["state"], err["reason"]), ("DONE", "invalidQuery"))
        self.assertTrue(err["message"].startswith(
            f"Transaction is aborted due to concurrent update against table {PROJECT}.{ds}.messages."))
        self.assertEqual(job["status"]["errors"], [err])
        status, answer = call("GET", f"{P}/queries/{job_id}")
        self.assertEqual((status, answer["error"]["errors"][0]["reason"]), (400, "invalidQuery"))
        self.assertEqual(answer["error"]["message"], err["message"])
        self.assertEqual(rows(f"SELECT bsp_status FROM `{PROJECT}.{ds}.messages`"), [[None]])
        run_ok(script)  # the rerun (a new id) goes through
        self.assertEqual(rows(f"SELECT bsp_status FROM `{PROJECT}.{ds}.messages`"), [["read"]])
        self.assertEqual([j["outcome"] for j in jobs(ds)][-2:], ["aborted", "ran"])

    def test_insert_state_done_answers_the_failure_at_once(self):
        ds = dataset("abort_done")
        run_ok(f"CREATE TABLE `{PROJECT}.{ds}.t` (x INT64)")
        rules(ds, abort_scripts=1, insert_state="DONE")
        _, status, answer = insert(f"BEGIN TRANSACTION; INSERT INTO `{ds}.t` VALUES (1); "
                                   "COMMIT TRANSACTION;")
        self.assertEqual(answer["status"]["state"], "DONE")
        self.assertIn(f"against table {PROJECT}.{ds}.t.", answer["status"]["errorResult"]["message"])
        self.assertEqual(rows(f"SELECT COUNT(*) FROM `{PROJECT}.{ds}.t`"), [["0"]])


class StreamingBuffer(unittest.TestCase):
    REFUSED = ("UPDATE or DELETE statement over table {} would affect rows in the streaming "
               "buffer, which is not supported")

    def statuses(self, ds):
        return rows(f"SELECT id, bsp_status FROM `{PROJECT}.{ds}.messages` ORDER BY id, bsp_status")

    def merge(self, ds, ids, status):
        source = " UNION ALL ".join(f"SELECT {i} AS id, '{status}' AS s" for i in ids)
        return (f"MERGE `{PROJECT}.{ds}.messages` AS T USING ({source}) AS S "
                "ON T.id = S.id AND T.inserted_at >= DATETIME '2025-10-01' "
                "WHEN MATCHED THEN UPDATE SET bsp_status = S.s")

    def test_mutations_of_buffered_rows_fail_whole_until_flushed(self):
        ds = dataset("buffer", "asia-south1")
        messages_table(ds)
        rules(ds, streaming_buffer=True)
        # Older rows, loaded by DML (never in the buffer), then fresh rows streamed.
        run_ok(f"INSERT INTO `{PROJECT}.{ds}.messages` (id, bsp_message_id, status, inserted_at) "
               "VALUES (1, 'k1', 'sent', DATETIME '2025-11-01 10:00:00'), "
               "(2, 'k2', 'sent', DATETIME '2025-11-01 10:05:00')")
        table = f"{P}/datasets/{ds}/tables/messages"
        self.assertNotIn("streamingBuffer", call("GET", table)[1])
        status, answer = call("POST", table + "/insertAll", {"rows": [
            glific_row(3, None, "2025-11-02T10:00:00"), glific_row(4, None, "2025-11-02T11:00:00")]})
        self.assertEqual((status, answer.get("insertErrors") or []), (200, []))
        buf = call("GET", table)[1]["streamingBuffer"]
        self.assertEqual(buf["estimatedRows"], "2")
        self.assertGreater(int(buf["estimatedBytes"]), 0)
        self.assertLessEqual(abs(int(buf["oldestEntryTime"]) - time.time() * 1000), 120_000)
        before = self.statuses(ds)

        # A MERGE that would change a buffered row (id 3) together with an old one: refused whole.
        job_id, status, answer = insert(self.merge(ds, [1, 3], "delivered"), location="asia-south1")
        self.assertEqual(status, 200, answer)
        status, job = call("GET", f"{P}/jobs/{job_id}?location=asia-south1")
        self.assertEqual(job["status"]["state"], "DONE")
        self.assertEqual(job["status"]["errorResult"]["reason"], "invalidQuery")
        self.assertEqual(job["status"]["errorResult"]["message"],
                         self.REFUSED.format(f"{PROJECT}.{ds}.messages"))
        self.assertEqual(self.statuses(ds), before)
        # The same through a script, a DELETE and jobs.query.
        script = (f"BEGIN TRANSACTION; DELETE FROM `{PROJECT}.{ds}.messages` WHERE id = 4; "
                  "COMMIT TRANSACTION;")
        job_id, _, _ = insert(script)
        self.assertIn("streaming buffer", call("GET", f"{P}/jobs/{job_id}?location=asia-south1")
                      [1]["status"]["errorResult"]["message"])
        job_id, _, _ = insert(f"TRUNCATE TABLE `{PROJECT}.{ds}.messages`")
        self.assertIn("streaming buffer", call("GET", f"{P}/jobs/{job_id}?location=asia-south1")
                      [1]["status"]["errorResult"]["message"])
        status, answer = call("POST", f"{P}/queries", {
            "query": f"UPDATE `{PROJECT}.{ds}.messages` SET bsp_status = 'x' WHERE id >= 2",
            "useLegacySql": False})
        self.assertEqual((status, answer["error"]["errors"][0]["reason"]), (400, "invalidQuery"))
        self.assertEqual(self.statuses(ds), before)

        # Only old rows: goes through, and the buffer stays.
        run_ok(self.merge(ds, [1, 2], "delivered"))
        self.assertEqual(self.statuses(ds), [["1", "delivered"], ["2", "delivered"],
                                             ["3", None], ["4", None]])
        self.assertIn("streamingBuffer", call("GET", table)[1])
        # Read-only jobs and inserts are never refused.
        run_ok(f"SELECT COUNT(*) FROM `{PROJECT}.{ds}.messages`")
        run_ok(f"INSERT INTO `{PROJECT}.{ds}.messages` (id, status) VALUES (5, 'sent')")

        # After the flush the same MERGE runs.
        status, answer = call("POST", "/_double/flush", {"dataset": ds, "table": "messages"})
        self.assertEqual(answer["flushed"], {"messages": 2})
        self.assertNotIn("streamingBuffer", call("GET", table)[1])
        run_ok(self.merge(ds, [1, 3], "read"))
        self.assertEqual(self.statuses(ds)[:3], [["1", "read"], ["2", "delivered"], ["3", "read"]])
        self.assertEqual([j["outcome"] for j in jobs(ds)],
                         ["ran"] + ["buffer_refused"] * 3 + ["ran"] * 4)
        requests = call("GET", f"/_double/requests?dataset={ds}")[1]
        self.assertIn("buffer_refused", [r.get("outcome") for r in requests])
        # No probe dataset is left behind.
        listed = call("GET", f"{P}/datasets?all=true&maxResults=100000")[1]["datasets"]
        self.assertFalse([d for d in listed if "__probe_" in d["datasetReference"]["datasetId"]])

    def test_the_glific_messages_schema(self):
        """The project's own messages schema: every column type survives the probe's copy."""
        ds = dataset("glific")
        with open(os.path.join(HERE, "..", "schemas", "messages.json")) as f:
            fields = json.load(f)
        status, _ = call("POST", f"{P}/datasets/{ds}/tables", {
            "tableReference": {"projectId": PROJECT, "datasetId": ds, "tableId": "messages"},
            "schema": {"fields": fields}, "timePartitioning": {"type": "MONTH", "field": "inserted_at"}})
        self.assertEqual(status, 200)
        rules(ds, streaming_buffer=True)

        def row(i, at):
            return {"json": {"id": i, "type": "text", "flow": "outbound", "status": "sent",
                             "sender_phone": "91XXXXXXXX00", "receiver_phone": "91XXXXXXXX01",
                             "contact_phone": "91XXXXXXXX01", "body": "hello", "inserted_at": at,
                             "bq_inserted_at": at, "bsp_status": None, "bsp_message_id": f"k{i}"}}
        table = f"{P}/datasets/{ds}/tables/messages"
        call("POST", table + "/insertAll", {"rows": [row(1, "2025-11-01T10:00:00")]})
        call("POST", "/_double/flush", {"dataset": ds})  # row 1 is old now
        call("POST", table + "/insertAll", {"rows": [row(2, "2025-11-22T10:00:00")]})
        self.assertEqual(call("GET", table)[1]["streamingBuffer"]["estimatedRows"], "1")
        job_id, _, answer = insert(self.merge(ds, [2], "read"))
        self.assertEqual(call("GET", f"{P}/jobs/{job_id}")[1]["status"]["errorResult"]["message"],
                         self.REFUSED.format(f"{PROJECT}.{ds}.messages"))
        run_ok(self.merge(ds, [1], "read"))
        self.assertEqual(self.statuses(ds), [["1", "read"], ["2", None]])

    def test_without_the_rule_rows_are_not_buffered(self):
        ds = dataset("nobuffer")
        messages_table(ds)
        table = f"{P}/datasets/{ds}/tables/messages"
        call("POST", table + "/insertAll", {"rows": [glific_row(1, None, "2025-11-02T10:00:00")]})
        self.assertNotIn("streamingBuffer", call("GET", table)[1])
        run_ok(self.merge(ds, [1], "read"))
        self.assertEqual(self.statuses(ds), [["1", "read"]])


class ControlAndPassThrough(unittest.TestCase):
    def test_rules_merge_and_reset(self):
        ds = unique("rules")
        rules(ds, abort_scripts=2)
        self.assertEqual(rules(ds, lose_insert_answers="first"),
                         {"dataset": ds, "abort_scripts": 2, "lose_insert_answers": "first"})
        self.assertEqual(call("DELETE", f"/_double/rules?dataset={ds}"), (200, {"dataset": ds}))
        self.assertEqual(call("GET", f"/_double/rules?dataset={ds}"), (200, {"dataset": ds}))

    def load(self, ds, job_id, lines, location=None):
        """A multipart load upload of NDJSON `lines` into ds.t: (status, answer)."""
        ref = {"projectId": PROJECT, "jobId": job_id}
        if location:
            ref["location"] = location
        meta = {"jobReference": ref, "configuration": {"load": {
            "destinationTable": {"projectId": PROJECT, "datasetId": ds, "tableId": "t"},
            "sourceFormat": "NEWLINE_DELIMITED_JSON", "writeDisposition": "WRITE_APPEND"}}}
        b = "bq_double_boundary"
        body = (f"--{b}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps(meta)}\r\n"
                f"--{b}\r\nContent-Type: application/octet-stream\r\n\r\n" + "".join(lines)
                + f"\r\n--{b}--\r\n").encode()
        path = f"/upload/bigquery/v2/projects/{PROJECT}/jobs?uploadType=multipart"
        return call("POST", path, raw=body, headers={"content-type": f"multipart/related; boundary={b}"})

    def test_a_multipart_load_job_passes_and_its_id_is_unique(self):
        ds = dataset("load")
        run_ok(f"CREATE TABLE `{PROJECT}.{ds}.t` (x INT64, s STRING)")
        job_id = unique("load")
        lines = [f'{{"x": {i}, "s": "{"a" * 90}"}}\n' for i in range(30000)]  # ~3 MB
        status, answer = self.load(ds, job_id, lines)
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["jobReference"]["jobId"], job_id, "the client's id, as BigQuery keeps it")
        self.assertEqual(rows(f"SELECT COUNT(*) FROM `{PROJECT}.{ds}.t`"), [["30000"]])
        status, job = call("GET", f"{P}/jobs/{job_id}")
        self.assertEqual((status, job["jobReference"]["jobId"], job["status"]["state"]),
                         (200, job_id, "DONE"))
        self.assertEqual(job["configuration"]["load"]["destinationTable"]["tableId"], "t")
        self.assertEqual(self.load(ds, job_id, lines)[0], 409)
        self.assertEqual(rows(f"SELECT COUNT(*) FROM `{PROJECT}.{ds}.t`"), [["30000"]])
        self.assertEqual([j["kind"] for j in jobs(ds)][-2:], ["load", "load"])

    def test_load_jobs_get_the_rules_too_lost_answers_and_regions(self):
        ds = dataset("loadrules", "asia-south1")
        run_ok(f"CREATE TABLE `{PROJECT}.{ds}.t` (x INT64, s STRING)", "asia-south1")
        rules(ds, lose_insert_answers=1)
        job_id = unique("load")
        status, _ = self.load(ds, job_id, ['{"x": 1}\n'], "asia-south1")
        self.assertEqual(status, 503, "the answer is lost, the load ran")
        self.assertEqual(rows(f"SELECT COUNT(*) FROM `{PROJECT}.{ds}.t`"), [["1"]])
        self.assertEqual(self.load(ds, job_id, ['{"x": 1}\n'], "asia-south1")[0], 409)
        self.assertEqual(call("GET", f"{P}/jobs/{job_id}")[0], 404, "regional: location needed")
        status, job = call("GET", f"{P}/jobs/{job_id}?location=asia-south1")
        self.assertEqual((status, job["status"]["state"]), (200, "DONE"))
        self.assertEqual(rows(f"SELECT COUNT(*) FROM `{PROJECT}.{ds}.t`"), [["1"]], "ran once")
        status, _ = self.load(ds, unique("load"), ['{"x": 2}\n'], "US")
        self.assertEqual(status, 404, "a load sent to another region does not find the dataset")
        self.assertEqual([j["outcome"] for j in jobs(ds)],
                         ["ran", "lost_answer", "duplicate", "wrong_location"])  # the CREATE first

    def test_results_of_a_failed_job_answer_its_error(self):
        ds = dataset("failed")
        job_id, status, answer = insert(f"SELECT nothing FROM `{PROJECT}.{ds}.missing`")
        self.assertEqual(status, 200)
        status, answer = call("GET", f"{P}/queries/{job_id}")
        self.assertEqual(status, 400, answer)
        self.assertEqual(jobs(ds)[0]["outcome"], "failed")

    def test_chunked_bodies_and_odd_input(self):
        ds = unique("chunked")
        u = urllib.parse.urlsplit(DOUBLE)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        body = json.dumps({"datasetReference": {"projectId": PROJECT, "datasetId": ds}}).encode()
        conn.request("POST", f"{P}/datasets", body=iter([body[:10], body[10:]]),
                     headers={"content-type": "application/json"}, encode_chunked=True)
        r = conn.getresponse()
        self.assertEqual((r.status, json.loads(r.read())["location"]), (200, "US"))
        conn.close()
        for raw in (b"{not json", b"[]", b'{"jobReference": 5}'):
            status, _ = call("POST", f"{P}/jobs", raw=raw)
            self.assertIn(status, (400, 404, 409, 422, 500), raw)
        self.assertEqual(call("GET", "/_double/health")[0], 200)
        self.assertEqual(call("GET", f"{P}/datasets/{ds}")[0], 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
