//! What the emulator cannot show, against recorded BigQuery answers served by a
//! small local HTTP server: 5xx then success, a 409 on a repeated job id, a job
//! that fails transiently, `jobComplete: false`, the streaming-buffer rejection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::api::Api;
use super::retry::{Failure, Policy};
use super::*;
use crate::batch::Batch;
use crate::target::RunContext;

/// (method, path, body, query string) of a request the server saw.
type Request = (String, String, String, String);
type Log = Arc<Mutex<Vec<Request>>>;

/// Serves `answer(method, path, body, log so far)` → (status, JSON body).
async fn serve<F>(answer: F) -> (String, Log)
where
    F: Fn(&str, &str, &str, &[Request]) -> (u16, Value) + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let answer = Arc::new(answer);
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (answer, seen) = (answer.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let (head_end, length) = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = sock.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let mut first = head.split_whitespace();
                let (method, target) = (
                    first.next().unwrap().to_owned(),
                    first.next().unwrap().to_owned(),
                );
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let (path, query) = (
                    path.trim_start_matches("/bigquery/v2").to_owned(),
                    query.to_owned(),
                );
                let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
                let (status, reply) = {
                    let mut log = seen.lock().unwrap();
                    let reply = answer(&method, &path, &body, &log);
                    log.push((method, path, body, query));
                    reply
                };
                let reply = reply.to_string();
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                    reply.len()
                );
                sock.write_all(response.as_bytes()).await.unwrap();
            });
        }
    });
    (base, log)
}

/// The target of dataset `d` behind the recorded answers at `base`.
async fn target(base: &str) -> BigQuery {
    BigQuery {
        api: api(base).await,
        dataset: "d".into(),
        columns: Columns::default(),
        lookback: chrono::Duration::days(31),
        streamed_at: "bq_inserted_at".into(),
        timezone: chrono_tz::Tz::UTC,
        applies: AtomicU32::new(0),
    }
}

async fn api(base: &str) -> Api {
    let mut api = Api::unauthenticated(base, "p").await.unwrap();
    api.policy = Policy {
        max_attempts: 4,
        deadline: Duration::from_secs(30),
        first_wait: Duration::from_millis(5),
        concurrent_reruns: 5,
    };
    api
}

/// Runs the job "run1_merge" against the recorded answers at `base`.
async fn run_merge(base: &str) -> Result<api::Done, Failure> {
    api(base).await.run("run1_merge", "SELECT 1", vec![]).await
}

/// A BigQuery that takes every job, then reports it done with the error `reason`.
async fn failing_with(reason: &'static str, message: &'static str) -> (String, Log) {
    serve(move |method, _, body, _| match method {
        "POST" => (200, job(&job_id_of(body), "RUNNING", None)),
        _ => (200, job("x", "DONE", Some((reason, message)))),
    })
    .await
}

fn job(id: &str, state: &str, error: Option<(&str, &str)>) -> Value {
    let mut j = json!({
        "jobReference": { "projectId": "p", "jobId": id, "location": "asia-south1" },
        "status": { "state": state },
        "statistics": { "query": { "totalBytesProcessed": "1048576" } },
    });
    if let Some((reason, message)) = error {
        j["status"]["errorResult"] = json!({ "reason": reason, "message": message });
        j["status"]["errors"] = json!([{ "reason": reason, "message": message }]);
    }
    j
}

fn http_error(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({ "error": { "code": code, "message": message, "errors": [{ "reason": reason, "message": message }], "status": "" } }),
    )
}

/// The job ids inserted, in order.
fn inserted(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.0 == "POST" && r.1 == "/projects/p/jobs")
        .map(|r| job_id_of(&r.2))
        .collect()
}

/// Where load jobs are uploaded (the server strips only `/bigquery/v2`).
const UPLOAD: &str = "/upload/bigquery/v2/projects/p/jobs";

/// The job id in a multipart load upload's JSON part.
fn load_id_of(body: &str) -> String {
    let json = body.split_once("\r\n\r\n").unwrap().1;
    job_id_of(json.split_once("\r\n").unwrap().0)
}

fn job_id_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["jobReference"]["jobId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_5xx_on_insert_is_retried_with_the_same_job_id_and_the_job_followed_to_done() {
    let (base, log) = serve(|method, path, body, log| match (method, path) {
        ("POST", "/projects/p/jobs") if log.is_empty() => {
            http_error(503, "backendError", "try again")
        }
        ("POST", "/projects/p/jobs") => (200, job(&job_id_of(body), "RUNNING", None)),
        ("GET", p) if log.iter().filter(|r| r.0 == "GET").count() < 2 => {
            (200, job(p.rsplit('/').next().unwrap(), "RUNNING", None))
        }
        ("GET", p) => (200, job(p.rsplit('/').next().unwrap(), "DONE", None)),
        _ => (404, json!({})),
    })
    .await;
    let done = run_merge(&base).await.unwrap();
    assert_eq!(done.job_id, "run1_merge");
    assert_eq!(done.bytes_processed, 1_048_576);
    assert_eq!(
        inserted(&log),
        ["run1_merge", "run1_merge"],
        "the same id: BigQuery dedupes it"
    );
    let polls = log.lock().unwrap().iter().filter(|r| r.0 == "GET").count();
    assert_eq!(polls, 3, "polled until DONE");
}

/// A job as `jobs.get` shows it, with its query text.
fn job_with_text(id: &str, sql: &str) -> Value {
    let mut j = job(id, "DONE", None);
    j["configuration"] = json!({ "query": { "query": sql, "useLegacySql": false } });
    j
}

#[tokio::test]
async fn a_409_for_this_inserts_own_earlier_try_is_followed_not_rerun() {
    let (base, log) = serve(|method, path, _, _| match (method, path) {
        ("POST", _) => http_error(409, "duplicate", "Already Exists: Job p:run1_merge"),
        ("GET", p) => (
            200,
            job_with_text(p.rsplit('/').next().unwrap(), "SELECT 1"),
        ),
        _ => (404, json!({})),
    })
    .await;
    let done = run_merge(&base).await.unwrap();
    assert_eq!(done.job_id, "run1_merge");
    assert_eq!(inserted(&log).len(), 1);
}

#[tokio::test]
async fn a_409_for_another_jobs_id_gets_a_fresh_id_and_runs() {
    // "run1_merge" was taken by another job (other text); a fresh id is free.
    let (base, log) = serve(|method, path, body, _| match (method, path) {
        ("POST", _) if job_id_of(body) == "run1_merge" => {
            http_error(409, "duplicate", "Already Exists: Job p:run1_merge")
        }
        ("POST", _) => (200, job(&job_id_of(body), "RUNNING", None)),
        ("GET", "/projects/p/jobs/run1_merge") => (200, job_with_text("run1_merge", "SELECT 2")),
        ("GET", p) => (
            200,
            job_with_text(p.rsplit('/').next().unwrap(), "SELECT 1"),
        ),
        _ => (404, json!({})),
    })
    .await;
    let done = run_merge(&base).await.unwrap();
    let ids = inserted(&log);
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids[1].starts_with("run1_merge_") && ids[1] != "run1_merge");
    assert_eq!(
        done.job_id, ids[1],
        "the fresh job's own result, not the other's"
    );
}

#[tokio::test]
async fn every_job_call_names_the_datasets_location() {
    let (base, log) = serve(|method, path, body, _| match (method, path) {
        ("GET", "/projects/p/datasets/d") => (
            200,
            json!({ "datasetReference": { "projectId": "p", "datasetId": "d" }, "location": "asia-south1" }),
        ),
        ("POST", "/projects/p/jobs") => (200, job(&job_id_of(body), "RUNNING", None)),
        ("GET", p) if p.starts_with("/projects/p/jobs/") => {
            (200, job(p.rsplit('/').next().unwrap(), "DONE", None))
        }
        ("GET", p) if p.starts_with("/projects/p/queries/") => {
            (200, json!({ "jobComplete": true, "rows": [{ "f": [{ "v": "1" }] }] }))
        }
        _ => (404, json!({})),
    })
    .await;
    let mut api = api(&base).await;
    api.locate("d").await.unwrap();
    let done = api.run("j", "SELECT 1", vec![]).await.unwrap();
    api.rows(&done).await.unwrap();
    let log = log.lock().unwrap();
    let insert: Value = serde_json::from_str(&log[1].2).unwrap();
    assert_eq!(insert["jobReference"]["location"], "asia-south1");
    let reads: Vec<_> = log
        .iter()
        .filter(|r| r.0 == "GET" && r.1 != "/projects/p/datasets/d")
        .collect();
    assert_eq!(reads.len(), 2);
    assert!(
        reads.iter().all(|r| r.3.contains("location=asia-south1")),
        "{reads:?}"
    );
}

#[tokio::test]
async fn a_job_that_fails_transiently_runs_again_under_a_new_id_and_errors_are_never_success() {
    let (base, log) = serve(|method, path, body, _| match (method, path) {
        ("POST", _) => (200, job(&job_id_of(body), "PENDING", None)),
        ("GET", p) if p.ends_with("_merge") => {
            (200, job("x", "DONE", Some(("backendError", "internal"))))
        }
        ("GET", p) if p.ends_with("_r1") => (
            200,
            job(
                "x",
                "DONE",
                Some((
                    "invalidQuery",
                    "Could not serialize access to table p:d.messages due to concurrent update",
                )),
            ),
        ),
        ("GET", _) => (200, job("x", "DONE", None)),
        _ => (404, json!({})),
    })
    .await;
    let done = run_merge(&base).await.unwrap();
    assert_eq!(done.job_id, "run1_merge_r2");
    // Both failures were retried: the transient one and the concurrent-update abort.
    assert_eq!(
        inserted(&log),
        ["run1_merge", "run1_merge_r1", "run1_merge_r2"]
    );

    // A real error is reported, not retried and not success.
    let (base, _) = failing_with("invalidQuery", "Syntax error: Unexpected keyword").await;
    let err = api(&base)
        .await
        .run("j", "SELEC 1", vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Failure::Job { reason, .. } if reason == "invalidQuery"),
        "{err}"
    );
}

#[tokio::test]
async fn results_of_an_incomplete_job_are_not_success_and_pages_are_followed() {
    let (base, _) = serve(|_, _, _, _| {
        (
            200,
            json!({ "jobComplete": false, "jobReference": { "projectId": "p", "jobId": "j" } }),
        )
    })
    .await;
    let done = api::Done {
        job_id: "j".into(),
        bytes_processed: 0,
    };
    assert!(api(&base).await.rows(&done).await.is_err());

    let (base, _) = serve(|_, _, _, log| {
        let rows = json!([{ "f": [{ "v": format!("row{}", log.len()) }, { "v": null }] }]);
        let mut page = json!({ "jobComplete": true, "rows": rows, "totalRows": "3" });
        if log.len() < 2 {
            page["pageToken"] = format!("t{}", log.len()).into();
        }
        (200, page)
    })
    .await;
    let rows = api(&base).await.rows(&done).await.unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Some("row0".into()), None],
            vec![Some("row1".into()), None],
            vec![Some("row2".into()), None]
        ]
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_after_bounded_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = api(&format!("http://127.0.0.1:{port}")).await;
    let err = api.run("j", "SELECT 1", vec![]).await.unwrap_err();
    assert!(matches!(err, Failure::Transport(_)), "{err}");
}

/// A whole run whose MERGE meets the streaming buffer anyway (a wrong write-time
/// column or zone): the run still succeeds, its keys stay pending and its files done.
#[tokio::test]
async fn a_streaming_buffer_refusal_keeps_the_keys_pending_and_the_run_succeeds() {
    let messages = json!({
        "tableReference": { "projectId": "p", "datasetId": "d", "tableId": "messages" },
        "schema": { "fields": [
            { "name": "bsp_message_id", "type": "STRING" }, { "name": "bsp_status", "type": "STRING" },
            { "name": "inserted_at", "type": "DATETIME" }, { "name": "bq_inserted_at", "type": "DATETIME" } ] },
        "timePartitioning": { "type": "MONTH", "field": "inserted_at" },
    });
    let (base, log) = serve(move |method, path, body, _| match (method, path) {
        ("GET", "/projects/p/datasets/d/tables/messages") => (200, messages.clone()),
        ("POST", p) if p.ends_with("/tables") => (200, serde_json::from_str(body).unwrap()),
        ("POST", "/projects/p/jobs") => (200, job(&job_id_of(body), "RUNNING", None)),
        ("POST", UPLOAD) => (200, job(&load_id_of(body), "RUNNING", None)),
        ("GET", p) if p.ends_with("_merge") => (
            200,
            job("x", "DONE", Some(("invalidQuery", "UPDATE or DELETE statement over table p.d.messages would affect rows in the streaming buffer, which is not supported"))),
        ),
        ("GET", p) if p.starts_with("/projects/p/jobs/") => (200, job(p.rsplit('/').next().unwrap(), "DONE", None)),
        ("GET", p) if p.starts_with("/projects/p/queries/") && p.ends_with("_bounds") => {
            // One unmatched key whose status falls in 2025-11-22T01.
            (200, json!({ "jobComplete": true, "rows": [{ "f": [{ "v": "false" }, { "v": "1763773200000" }, { "v": "1" }] }] }))
        }
        ("GET", p) if p.starts_with("/projects/p/queries/") && p.ends_with("_rows") => {
            (200, json!({ "jobComplete": true, "rows": [{ "f": [{ "v": "5" }, { "v": "0" }] }] }))
        }
        ("GET", p) if p.starts_with("/projects/p/queries/") => {
            (200, json!({ "jobComplete": true, "rows": [{ "f": [{ "v": "0" }, { "v": "0" }, { "v": "1" }] }] }))
        }
        _ => (404, json!({ "error": { "code": 404, "message": "no", "errors": [] } })),
    })
    .await;
    let bq = target(&base).await;
    let mut batch = Batch::default();
    batch.resolution.insert(
        "k1",
        crate::resolve::Resolved {
            status: crate::status::Status::Read,
            at_ms: 1_763_773_200_000,
            code: None,
        },
    );
    let now: DateTime<Utc> = "2025-11-22T12:00:00Z".parse().unwrap();
    let ctx = RunContext {
        run_id: "r1".into(),
        label: "r1".into(),
        now,
        pending_ttl: chrono::Duration::days(7),
    };
    let applied = bq.apply(&batch, &ctx).await.unwrap();
    assert_eq!((applied.rows_updated, applied.pending), (0, 1));

    let log = log.lock().unwrap();
    let scripts: Vec<String> = log
        .iter()
        .filter(|r| r.0 == "POST" && r.1 == "/projects/p/jobs")
        .map(|r| serde_json::from_str::<Value>(&r.2).unwrap())
        .filter(|j| {
            j["configuration"]["query"]["query"]
                .as_str()
                .unwrap()
                .contains("BEGIN TRANSACTION")
        })
        .map(|j| {
            j["configuration"]["query"]["query"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(scripts.len(), 2);
    // The MERGE left recent rows out, bounded as the lookback says …
    assert!(
        scripts[0].contains("T.bq_inserted_at < DATETIME '2025-11-22 10:30:00'"),
        "{}",
        scripts[0]
    );
    assert!(
        scripts[0].contains(
            "AND (T.inserted_at >= DATETIME '2025-10-01 00:00:00' AND T.inserted_at < DATETIME '2025-12-01 00:00:00')"
        ),
        "{}",
        scripts[0]
    );
    // … and the fallback keeps pending and the books without touching messages.
    assert!(!scripts[1].contains("`p.d.messages`"), "{}", scripts[1]);
    assert!(scripts[1].contains("bsp_loader_files"));
    // Values travel in load jobs, never in SQL text; the staging tables are
    // in the job's own dataset, none in the organization's.
    assert!(log.iter().all(|r| !r.2.contains("'k1'")));
    let loads: Vec<&Request> = log.iter().filter(|r| r.1 == UPLOAD).collect();
    assert_eq!(
        loads.len(),
        1,
        "empty staging tables need no load job: {loads:?}"
    );
    assert!(
        loads
            .iter()
            .any(|r| r.2.contains(r#""bsp_message_id":"k1""#))
    );
    assert!(
        loads
            .iter()
            .all(|r| r.2.contains(r#""datasetId":"d_bsp_staging""#))
    );
    let created: Vec<&Request> = log
        .iter()
        .filter(|r| r.0 == "POST" && r.1.ends_with("/tables"))
        .collect();
    assert_eq!(created.len(), 4);
    for r in created {
        assert_eq!(r.1, "/projects/p/datasets/d_bsp_staging/tables");
        let table: Value = serde_json::from_str(&r.2).unwrap();
        let expires: i64 = table["expirationTime"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            expires,
            (now + chrono::Duration::days(1)).timestamp_millis(),
            "gone after a day"
        );
    }
}

/// With nothing new and nothing pending, a run reads only the pending table's
/// counts: no staging, no MERGE, no partition scanned.
#[tokio::test]
async fn a_run_with_nothing_to_do_skips_the_merge() {
    // (keys due to be looked for, keys without a row, MERGE scripts run)
    for (due, unmatched, merges) in [("0", "0", 0), ("0", "3", 0), ("2", "2", 1)] {
        let messages = json!({
            "tableReference": { "projectId": "p", "datasetId": "d", "tableId": "messages" },
            "schema": { "fields": [ { "name": "bsp_message_id", "type": "STRING" }, { "name": "bsp_status", "type": "STRING" } ] },
        });
        let (base, log) = serve(move |method, path, body, _| match (method, path) {
            ("GET", "/projects/p/datasets/d/tables/messages") => (200, messages.clone()),
            ("POST", p) if p.ends_with("/tables") => (200, serde_json::from_str(body).unwrap()),
            ("POST", "/projects/p/jobs") => (200, job(&job_id_of(body), "DONE", None)),
            ("POST", UPLOAD) => (200, job(&load_id_of(body), "DONE", None)),
            ("GET", p) if p.starts_with("/projects/p/jobs/") => (200, job(p.rsplit('/').next().unwrap(), "DONE", None)),
            ("GET", p) if p.ends_with("_idle") => {
                (200, json!({ "jobComplete": true, "rows": [{ "f": [{ "v": due }, { "v": "0" }, { "v": unmatched }] }] }))
            }
            ("GET", _) => (200, json!({ "jobComplete": true, "rows": [{ "f": [{ "v": "0" }, { "v": "0" }, { "v": unmatched }] }] })),
            _ => (404, json!({ "error": { "code": 404, "message": "no", "errors": [] } })),
        })
        .await;
        let bq = target(&base).await;
        let ctx = RunContext {
            run_id: "r1".into(),
            label: "r1".into(),
            now: Utc::now(),
            pending_ttl: chrono::Duration::days(7),
        };
        let applied = bq.apply(&Batch::default(), &ctx).await.unwrap();
        assert_eq!(applied.pending, unmatched.parse::<u64>().unwrap());
        let merged = inserted(&log)
            .iter()
            .filter(|j| j.ends_with("_merge"))
            .count();
        assert_eq!(merged, merges, "due {due}, pending {unmatched}");
    }
}

/// `--max-bytes-billed` caps every query job; a job BigQuery refuses for it
/// fails the run with one line that says so.
#[tokio::test]
async fn a_job_over_the_bytes_cap_is_refused_and_says_so_in_one_line() {
    let (base, log) = failing_with(
        "bytesBilledLimitExceeded",
        "Query exceeded limit for bytes billed: 1000000. 10485760 or higher required.",
    )
    .await;
    let mut api = api(&base).await;
    api.max_bytes_billed = Some(1_000_000);
    let err = api
        .run("j", "SELECT 1", vec![])
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.contains("refused: it would bill more than --max-bytes-billed (1000000 bytes)"),
        "{err}"
    );
    let inserts = inserted(&log);
    assert_eq!(inserts.len(), 1, "not retried");
    let body: Value = serde_json::from_str(&log.lock().unwrap()[0].2).unwrap();
    assert_eq!(
        body["configuration"]["query"]["maximumBytesBilled"],
        "1000000"
    );
}

/// A staging dataset made beforehand is used as it is; one in another
/// location than the organization's dataset is refused in one line (the
/// run's script reads both).
#[tokio::test]
async fn a_staging_dataset_made_beforehand_is_checked_not_created() {
    for (staging_location, ok) in [("asia-south1", true), ("US", false)] {
        let (base, log) = serve(move |method, path, _, _| match (method, path) {
            ("GET", "/projects/p/datasets/d") => (200, json!({ "datasetReference": { "projectId": "p", "datasetId": "d" }, "location": "asia-south1" })),
            ("GET", "/projects/p/datasets/d_bsp_staging") => (200, json!({ "datasetReference": { "projectId": "p", "datasetId": "d_bsp_staging" }, "location": staging_location })),
            _ => http_error(403, "accessDenied", "no right to create datasets"),
        })
        .await;
        let mut bq = target(&base).await;
        bq.api.locate("d").await.unwrap();
        let made = bq.create_staging().await;
        assert_eq!(made.is_ok(), ok, "{made:?}");
        if let Err(e) = made {
            let e = e.to_string();
            assert!(
                e.contains("must share a location") && !e.contains('\n'),
                "{e}"
            );
        }
        assert!(
            log.lock().unwrap().iter().all(|r| r.0 == "GET"),
            "nothing created"
        );
    }
}
