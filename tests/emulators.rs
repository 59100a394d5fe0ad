//! End to end against real emulators: fake-gcs-server as the bucket and
//! bqemulator as BigQuery, both started by scripts/test.sh (feature
//! `emulator-tests`). Glific-shaped, MONTH-partitioned messages with copies and
//! pre-set statuses; runs with late rows and late files; crashes between steps.
#![cfg(feature = "emulator-tests")]

mod common;

use common::emulators::*;
use common::*;
use serde_json::{Value, json};

/// A bucket with every fixture file, and the statuses and bookkeeping of a clean
/// run over them: what every crashed, faulty or overlapping run must end with.
async fn bucket_and_reference(
    emu: &Emulators,
    prefix: &str,
) -> (
    String,
    Vec<(String, Option<String>)>,
    Vec<Vec<Option<String>>>,
) {
    let bucket = unique(prefix).replace('_', "-");
    emu.bucket(&bucket).await;
    emu.upload(&bucket, &FIXTURE_FILES).await;
    let clean = unique("clean");
    emu.dataset(&clean).await;
    emu.rows(&clean, &seed()).await;
    let out = bq_run(&bucket, &clean, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    (
        bucket,
        emu.statuses(&clean).await,
        emu.bookkeeping(&clean).await,
    )
}

/// The rows of fixtures/messages.sql, plus a row far older than the lookback.
fn seed() -> Vec<(i64, Option<String>, Option<&'static str>, &'static str)> {
    let day = "2025-11-22T06:30:00";
    vec![
        (1, Some(K(1)), Some("enqueued"), day),
        (1, Some(K(1)), Some("delivered"), day),
        (2, Some(K(2)), None, day),
        (3, Some(K(3)), Some("read"), day),
        (6, Some(K(6)), Some("seen"), day),
        (7, Some(K(7)), Some("sent"), day),
        (8, Some(K(8)), Some("delivered"), day),
        (9, Some(K(9)), None, day),
        (13, Some(K(13)), None, day),
        (13, Some(K(13)), Some("sent"), day),
        (14, Some(K(14)), None, day),
        (50, None, Some("delivered"), day),
        (10, Some(K(10)), None, "2024-01-15T10:00:00"),
    ]
}

/// `init` of the dataset's messages table; must succeed.
fn bq_init(dataset: &str) {
    let init = run(
        &[
            "init",
            "--target",
            &format!("bigquery://demo/{dataset}/messages"),
        ],
        &[],
    );
    assert!(init.status.success(), "{}", stderr(&init));
}

fn bq_run(bucket: &str, dataset: &str, envs: &[(&str, &str)]) -> std::process::Output {
    run(
        &[
            "run",
            "--source",
            &format!("gs://{bucket}/gupshup"),
            "--target",
            &format!("bigquery://demo/{dataset}/messages"),
        ],
        envs,
    )
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_with_late_rows_and_late_files_converge_and_a_quiet_run_changes_nothing() {
    let emu = emulators();
    let (bucket, dataset) = (unique("cb").replace('_', "-"), unique("org"));
    emu.bucket(&bucket).await;
    emu.dataset(&dataset).await;
    emu.rows(&dataset, &seed()).await;
    emu.upload(&bucket, &FIXTURE_FILES[..2]).await;

    bq_init(&dataset);
    let first = bq_run(&bucket, &dataset, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(summary(&first)["files"], 2);

    // Late files, late rows for pending keys, and a late copy of message 1.
    emu.upload(&bucket, &FIXTURE_FILES[2..]).await;
    let day = "2025-11-22T07:00:00";
    emu.rows(
        &dataset,
        &[
            (4, Some(K(4)), None, day),
            (12, Some(K(12)), None, day),
            (1, Some(K(1)), Some("enqueued"), day),
        ],
    )
    .await;
    let second = bq_run(&bucket, &dataset, &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    let s = summary(&second);
    assert_eq!(s["files"], 4, "only new files are read");
    // Still pending: K10 (its row is older than the lookback), K11 and K5 (no row),
    // and the fallback key.
    assert_eq!(s["pending"], 4);

    let statuses = emu.statuses(&dataset).await;
    let of = |id: &str| {
        statuses
            .iter()
            .filter(|r| r.0 == id)
            .map(|r| r.1.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        of("1"),
        [some("read"), some("read"), some("read")],
        "every copy, never backwards"
    );
    assert_eq!(of("2"), [some("error")]);
    assert_eq!(of("3"), [some("read")]);
    assert_eq!(of("4"), [some("read")]);
    assert_eq!(of("6"), [some("delivered")]);
    assert_eq!(of("8"), [some("delivered")]);
    assert_eq!(
        of("10"),
        [None],
        "outside the lookback: left alone, key stays pending"
    );
    assert_eq!(of("12"), [some("delivered")]);
    assert_eq!(of("13"), [some("read"), some("read")]);
    assert_eq!(of("50"), [some("delivered")]);
    let errors = emu
        .query(&format!(
            "SELECT errors FROM `demo.{dataset}.messages` WHERE id = 2"
        ))
        .await;
    let note: Value = serde_json::from_str(errors[0][0].as_deref().unwrap()).unwrap();
    assert_eq!(note["code"], 1008);

    // The same rows as the SQLite target gives for the same history.
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "INSERT INTO messages (id, bsp_message_id) VALUES (4, '{}'), (12, '{}');
             INSERT INTO messages (id, bsp_status, bsp_message_id) VALUES (1, 'enqueued', '{}'), (10, NULL, 'outside-lookback');",
            K(4), K(12), K(1)
        ))
        .unwrap();
    let local = run_job(&fixtures().join("callbacks"), &db, &[], &[]);
    assert!(local.status.success());
    let mut sqlite: Vec<(String, Option<String>)> = messages(&db)
        .into_iter()
        .map(|r| (r.0.to_string(), r.2))
        .collect();
    sqlite.sort();
    let mut bigquery = statuses.clone();
    bigquery.sort();
    assert_eq!(bigquery, sqlite);

    let dead = emu
        .query(&format!(
            "SELECT COUNT(*) FROM `demo.{dataset}.bsp_loader_dead_letters`"
        ))
        .await;
    assert_eq!(dead[0][0].as_deref(), Some("12"));

    let third = bq_run(&bucket, &dataset, &[]);
    assert!(third.status.success());
    assert_eq!(
        (
            summary(&third)["files"].clone(),
            summary(&third)["rows_updated"].clone()
        ),
        (0.into(), 0.into())
    );
    assert_eq!(emu.statuses(&dataset).await, statuses);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_once_on_one_target_converge_without_double_records() {
    let emu = emulators();
    let (bucket, want, want_counts) = bucket_and_reference(&emu, "overlap").await;

    let dataset = unique("overlap");
    emu.dataset(&dataset).await;
    emu.rows(&dataset, &seed()).await;
    bq_init(&dataset);
    let (source, target) = (
        format!("gs://{bucket}/gupshup"),
        format!("bigquery://demo/{dataset}/messages"),
    );
    let (a, b) = run_twice_at_once(&["run", "--source", &source, "--target", &target], &[]);
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        stderr(&a),
        stderr(&b)
    );
    assert_eq!(emu.statuses(&dataset).await, want);
    assert_eq!(emu.bookkeeping(&dataset).await, want_counts);
}

/// A fault-injecting TCP proxy in front of an emulator: the first `fail_first`
/// connections get `503`; `down()` then cuts every connection and refuses new
/// ones until `up()`.
struct FaultyProxy {
    addr: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FaultyProxy {
    async fn start(upstream: &str, fail_first: usize) -> FaultyProxy {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let up = std::sync::Arc::new(AtomicBool::new(true));
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let flag = up.clone();
        tokio::spawn(async move {
            loop {
                let (mut client, _) = listener.accept().await.unwrap();
                let (upstream, up, seen) = (upstream.clone(), flag.clone(), seen.clone());
                tokio::spawn(async move {
                    if !up.load(Ordering::SeqCst) {
                        return; // dropped: the client sees a reset
                    }
                    if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                        let mut buf = [0u8; 4096];
                        let _ = client.read(&mut buf).await;
                        let body = r#"{"error":{"code":503,"message":"injected","errors":[{"reason":"backendError"}]}}"#;
                        let reply = format!(
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(reply.as_bytes()).await;
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    // Forward until either side closes, or the proxy goes down.
                    let cut = async {
                        while up.load(Ordering::SeqCst) {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        FaultyProxy { addr, up }
    }

    fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_5xx_are_retried_and_a_service_dying_mid_run_then_a_rerun_converges() {
    let emu = emulators();
    let (bucket, want, _) = bucket_and_reference(&emu, "faults").await;

    // BigQuery answers 503 to its first connections: the run retries and succeeds (GCS's
    // own faults: `gcs_5xx_are_retried`).
    let bq = FaultyProxy::start(&emu.bq, 3).await;
    let dataset = unique("faulty");
    emu.dataset(&dataset).await;
    emu.rows(&dataset, &seed()).await;
    let envs = [("BIGQUERY_EMULATOR_HOST", bq.addr.as_str())];
    let out = bq_run(&bucket, &dataset, &envs);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("retrying"),
        "the faults were met and retried"
    );
    assert_eq!(emu.statuses(&dataset).await, want);

    // BigQuery dies in the middle of a run: exit 1, one clear line; back up, a rerun converges.
    let dataset = unique("dying");
    emu.dataset(&dataset).await;
    emu.rows(&dataset, &seed()).await;
    let bq = FaultyProxy::start(&emu.bq, 0).await;
    let envs = [("BIGQUERY_EMULATOR_HOST", bq.addr.as_str())];
    let target = format!("bigquery://demo/{dataset}/messages");
    assert!(run(&["init", "--target", &target], &envs).status.success());
    let mut child = std::process::Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "run",
            "--source",
            &format!("gs://{bucket}/gupshup"),
            "--target",
            &target,
        ])
        .envs(envs)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    bq.down();
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        (status, err)
    });
    let (status, err) = status.await.unwrap();
    bq.up();
    if status.success() {
        // The run beat the outage; the rerun below must still change nothing.
        eprintln!("run finished before the outage");
    } else {
        assert_eq!(status.code(), Some(1), "{err}");
        let last: Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
        assert_eq!(last["severity"], "ERROR");
    }
    let rerun = run(
        &[
            "run",
            "--source",
            &format!("gs://{bucket}/gupshup"),
            "--target",
            &target,
        ],
        &envs,
    );
    assert!(rerun.status.success(), "{}", stderr(&rerun));
    assert_eq!(emu.statuses(&dataset).await, want);
}

/// The reference statuses and bookkeeping of a clean run into a new dataset
/// seeded like the others.
async fn seeded(emu: &Emulators, prefix: &str, location: &str) -> String {
    let dataset = unique(prefix);
    emu.dataset_in(&dataset, location).await;
    emu.rows(&dataset, &seed()).await;
    dataset
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_of_several_chunks_applies_every_chunk() {
    let emu = emulators();
    let (bucket, want, want_counts) = bucket_and_reference(&emu, "chunks").await;
    let dataset = seeded(&emu, "chunked", "US").await;
    let out = run(
        &[
            "backfill",
            "--source",
            &format!("gs://{bucket}/gupshup"),
            "--target",
            &format!("bigquery://demo/{dataset}/messages"),
            "--from",
            "2025-11-22",
            "--to",
            "2025-11-22",
            "--chunk-files",
            "2",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.statuses(&dataset).await, want);
    assert_eq!(emu.bookkeeping(&dataset).await, want_counts);
    let merges = emu.jobs_with(&dataset, "BEGIN TRANSACTION").await;
    assert_eq!(merges.len(), 3, "one script per chunk: {merges:#?}");
    assert!(merges.iter().all(|j| j["outcome"] == "ran"), "{merges:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_organizations_in_one_project_are_both_applied_by_one_run() {
    const V2_APP: &str = "DemoAPI";
    const V3_APP: &str = "82ed52f4-30c0-4f12-81b4-e7ad07bd41de";
    let emu = emulators();
    let bucket = unique("two-orgs").replace('_', "-");
    emu.bucket(&bucket).await;
    emu.upload(&bucket, &FIXTURE_FILES).await;
    let dir = tempfile::tempdir().unwrap();
    let config = |orgs: &[(&str, &str)]| {
        let mut text = format!(
            "unrouted_target = \"sqlite://{}\"\n",
            dir.path()
                .join(format!("{}.db", unique("unrouted")))
                .display()
        );
        for (dataset, app) in orgs {
            text += &format!(
                "[[organization]]\nname = \"{dataset}\"\napps = [\"{app}\"]\ntarget = \"bigquery://demo/{dataset}/messages\"\n"
            );
        }
        let path = dir.path().join(format!("{}.toml", unique("orgs")));
        std::fs::write(&path, text).unwrap();
        path
    };
    let run_config = |config: &std::path::Path| {
        run(
            &[
                "run",
                "--source",
                &format!("gs://{bucket}/gupshup"),
                "--config",
                config.to_str().unwrap(),
            ],
            &[],
        )
    };
    // Each organization alone: the reference.
    let mut want = vec![];
    for app in [V2_APP, V3_APP] {
        let alone = seeded(&emu, "alone", "US").await;
        let out = run_config(&config(&[(&alone, app)]));
        assert!(out.status.success(), "{}", stderr(&out));
        want.push(emu.statuses(&alone).await);
    }
    assert_ne!(want[0], want[1], "the apps reach different messages");
    // Both in one project, one run.
    let (a, b) = (
        seeded(&emu, "org_a", "US").await,
        seeded(&emu, "org_b", "US").await,
    );
    let out = run_config(&config(&[(&a, V2_APP), (&b, V3_APP)]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.statuses(&a).await, want[0]);
    assert_eq!(emu.statuses(&b).await, want[1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_first_answer_lost_in_asia_south1_still_gives_the_right_rows() {
    let emu = emulators();
    let (bucket, want, want_counts) = bucket_and_reference(&emu, "lost").await;
    let dataset = seeded(&emu, "mumbai", "asia-south1").await;
    emu.rules(&dataset, json!({ "lose_insert_answers": "first" }))
        .await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.statuses(&dataset).await, want);
    assert_eq!(emu.bookkeeping(&dataset).await, want_counts);
    let jobs = emu.jobs(&dataset).await;
    assert!(
        jobs.iter().any(|j| j["outcome"] == "lost_answer"),
        "answers were lost: {jobs:#?}"
    );
    assert!(
        jobs.iter().all(|j| j["location"] == "asia-south1"),
        "{jobs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_aborted_for_a_concurrent_update_is_rerun_and_converges() {
    let emu = emulators();
    let (bucket, want, want_counts) = bucket_and_reference(&emu, "abort").await;
    let dataset = seeded(&emu, "aborted", "US").await;
    bq_init(&dataset);
    emu.rules(&dataset, json!({ "abort_scripts": 2 })).await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.statuses(&dataset).await, want);
    assert_eq!(emu.bookkeeping(&dataset).await, want_counts);
    let aborted = emu
        .jobs(&dataset)
        .await
        .into_iter()
        .filter(|j| j["outcome"] == "aborted")
        .count();
    assert_eq!(aborted, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_held_twice_in_the_pending_table_still_merges() {
    let emu = emulators();
    let (bucket, want, _) = bucket_and_reference(&emu, "twice").await;
    let dataset = seeded(&emu, "twice", "US").await;
    let first = bq_run(&bucket, &dataset, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    // Every pending key twice (as a re-sent insert that ran twice would leave it);
    // keys still without a row make the next run MERGE again.
    let pending = format!("`demo.{dataset}.bsp_loader_pending`");
    emu.query(&format!("INSERT INTO {pending} SELECT * FROM {pending}"))
        .await;
    emu.rows(&dataset, &[(5, Some(K(5)), None, "2025-11-22T07:00:00")])
        .await;
    let second = bq_run(&bucket, &dataset, &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    let (mut want, mut got) = (want, emu.statuses(&dataset).await);
    want.push(("5".into(), some("deleted")));
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

/// The status `resolve` gives key `K(n)` over every fixture.
fn resolved(n: u32) -> Option<String> {
    let text = std::fs::read_to_string(fixtures().join("expected/resolve.ndjson")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["bsp_message_id"] == K(n))
        .and_then(|v| v["bsp_status"].as_str().map(str::to_owned))
}

/// Glific streams fresh copies of messages 1 and 3 ten minutes before a run at
/// 12:00 UTC in Kolkata (17:30 local): the run leaves them alone and updates the
/// settled rows; two hours later, the buffer flushed, the copies are corrected.
async fn fresh_copies_wait_for_the_buffer(partitioned: bool, write_time: bool) {
    let emu = emulators();
    let bucket = unique("buffer").replace('_', "-");
    emu.bucket(&bucket).await;
    emu.upload(&bucket, &FIXTURE_FILES).await;
    let source = format!("gs://{bucket}/gupshup");
    let run_at = |dataset: &str, now: &str| {
        let target = format!("bigquery://demo/{dataset}/messages");
        run(
            &["run", "--source", &source, "--target", &target],
            &[("BSP_NOW", now), ("BSP_TIMEZONE", "Asia/Kolkata")],
        )
    };
    // The seed, settled, in a dataset of this shape.
    let settled = |dataset: String| {
        let emu = &emu;
        async move {
            emu.dataset_shaped(&dataset, "asia-south1", partitioned, write_time)
                .await;
            let rows = seed()
                .iter()
                .map(|(id, key, status, at)| {
                    message_row(*id, key.as_deref(), *status, at, write_time.then_some(*at))
                })
                .collect();
            emu.stream(&dataset, rows).await;
            emu.flush(&dataset).await;
            dataset
        }
    };
    let reference = settled(unique("settled")).await;
    assert!(run_at(&reference, "2025-11-22T12:00:00Z").status.success());
    let want = emu.statuses(&reference).await;

    let dataset = settled(unique("buffered")).await;
    let (day, fresh_at) = (
        "2025-11-22T06:30:00",
        write_time.then_some("2025-11-22T17:20:00"),
    );
    emu.stream(
        &dataset,
        vec![
            message_row(1, Some(&K(1)), Some("enqueued"), day, fresh_at),
            message_row(3, Some(&K(3)), None, day, fresh_at),
        ],
    )
    .await;
    let first = run_at(&dataset, "2025-11-22T12:00:00Z");
    assert!(first.status.success(), "{}", stderr(&first));
    let warnings = stderr(&first)
        .lines()
        .filter(|l| l.contains("\"severity\":\"WARNING\""))
        .count();
    let mut expected = want.clone();
    if !write_time {
        // BigQuery refused the MERGE: nothing changed yet, one warning said so.
        assert_eq!(warnings, 1, "{}", stderr(&first));
        expected = seed()
            .iter()
            .map(|(id, _, status, _)| (id.to_string(), status.map(str::to_owned)))
            .collect();
    }
    expected.extend([("1".into(), some("enqueued")), ("3".into(), None)]);
    expected.sort();
    let mut got = emu.statuses(&dataset).await;
    got.sort();
    assert_eq!(
        got, expected,
        "settled rows updated, fresh copies untouched"
    );

    emu.flush(&dataset).await;
    let later = run_at(&dataset, "2025-11-22T14:00:00Z");
    assert!(later.status.success(), "{}", stderr(&later));
    let mut expected = want.clone();
    // A copy with no status of its own takes the resolved one, whatever older copies hold.
    expected.extend([("1".into(), resolved(1)), ("3".into(), resolved(3))]);
    expected.sort();
    let mut got = emu.statuses(&dataset).await;
    got.sort();
    assert_eq!(got, expected, "the copies are corrected once settled");
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_copies_in_the_streaming_buffer_are_left_alone_then_corrected() {
    fresh_copies_wait_for_the_buffer(true, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_copies_in_an_unpartitioned_table_are_left_alone_then_corrected() {
    fresh_copies_wait_for_the_buffer(false, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_without_a_write_time_column_never_fails_for_the_buffer() {
    fresh_copies_wait_for_the_buffer(true, false).await;
}

/// The WARNING records of a run's log.
fn warnings(out: &std::process::Output) -> Vec<Value> {
    stderr(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["severity"] == "WARNING")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_without_keys_skip_the_merge_with_one_warning() {
    let emu = emulators();
    let bucket = unique("nokeys").replace('_', "-");
    emu.bucket(&bucket).await;
    emu.upload(&bucket, &FIXTURE_FILES).await;
    let dataset = unique("nokeys");
    emu.dataset(&dataset).await;
    // Glific's rows as streamed today: no Gupshup id.
    let rows: Vec<_> = seed()
        .into_iter()
        .map(|(id, _, s, at)| (id, None, s, at))
        .collect();
    emu.rows(&dataset, &rows).await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warned = warnings(&out);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    let waiting = summary(&out)["pending"].as_u64().unwrap();
    assert!(waiting > 0);
    assert_eq!(
        warned[0]["keys_waiting"].as_u64(),
        Some(waiting),
        "{warned:#?}"
    );
    let merges = emu
        .jobs_with(&dataset, &format!("MERGE `demo.{dataset}.messages`"))
        .await
        .len();
    assert_eq!(merges, 0, "no MERGE that can match nothing");
    assert_eq!(
        emu.bookkeeping(&dataset).await[0][0].as_deref(),
        Some("6"),
        "files done"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn write_times_in_the_future_warn_of_a_wrong_time_zone() {
    let emu = emulators();
    let bucket = unique("future").replace('_', "-");
    emu.bucket(&bucket).await;
    emu.upload(&bucket, &FIXTURE_FILES[..1]).await;
    let dataset = unique("future");
    emu.dataset(&dataset).await;
    // Written at 17:20 Kolkata time; the run, told nothing of the zone, reads it as UTC.
    let day = "2025-11-22T06:30:00";
    emu.stream(
        &dataset,
        vec![message_row(
            1,
            Some(&K(1)),
            None,
            day,
            Some("2025-11-22T17:20:00"),
        )],
    )
    .await;
    emu.flush(&dataset).await;
    let out = bq_run(&bucket, &dataset, &[("BSP_NOW", "2025-11-22T12:00:00Z")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warned = warnings(&out);
    assert!(
        warned
            .iter()
            .any(|w| w["message"].as_str().unwrap().contains("time zone")),
        "{warned:#?}"
    );
    let right = bq_run(
        &bucket,
        &dataset,
        &[
            ("BSP_NOW", "2025-11-22T12:00:00Z"),
            ("BSP_TIMEZONE", "Asia/Kolkata"),
        ],
    );
    assert!(right.status.success());
    assert!(
        warnings(&right)
            .iter()
            .all(|w| !w["message"].as_str().unwrap().contains("time zone"))
    );
}

/// Object names a webhook receiver might write into a bucket: spaces, `#`, `?`,
/// `%`, backslashes, non-ASCII, control characters, empty, `.` and `..`
/// segments (`a//b`, `./x`, a trailing `/`), in nested folders: every UTF-8
/// name GCS accepts (no CR or LF, at most 1024 bytes). Generated, so each run
/// of the suite tries the same varied set (a fixed seed) without hand-picking.
fn hostile_names(count: usize) -> Vec<String> {
    use proptest::strategy::{Strategy, ValueTree};
    let segment = proptest::prop_oneof![
        proptest::string::string_regex(
            r"[a-zA-Z0-9 #?%\\éñ日_.+=@&'()\[\]{}~\t\x01\x1f\x7f\u{80}-]{0,12}"
        )
        .unwrap(),
        proptest::strategy::Just(".".to_owned()),
        proptest::strategy::Just("..".to_owned()),
    ];
    let name = proptest::collection::vec(segment, 1..4).prop_map(|parts| parts.join("/"));
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut names = std::collections::BTreeSet::new();
    while names.len() < count {
        names.insert(name.new_tree(&mut runner).unwrap().current());
    }
    // The ones that broke reads or the listing before, always among them
    // ("" is the object `in/` itself).
    for fixed in [
        "café 1#2?.ndjson",
        "100%/a\\b.ndjson",
        "x#17",
        "日本/ä ö.ndjson",
        "a//b.ndjson",
        "./x",
        "../y",
        "c/./d",
        "..",
        "tab\there\u{1}",
        "e/",
        "/lead",
        "",
        &"日".repeat(340),
    ] {
        names.insert(fixed.to_owned());
    }
    names.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_object_name_in_a_bucket_is_read_and_marked_done() {
    let emu = emulators();
    let bucket = unique("names").replace('_', "-");
    emu.bucket(&bucket).await;
    let names = hostile_names(60);
    for (i, name) in names.iter().enumerate() {
        let line = v2_line(&format!("name-{i}"), "delivered", 1_763_773_200, None);
        emu.put(&bucket, &format!("in/{name}"), line).await;
    }
    let source = format!("gs://{bucket}/in");
    let resolved = run(&["resolve", "--source", &source], &[]);
    assert!(resolved.status.success(), "{}", stderr(&resolved));
    assert_eq!(
        stdout(&resolved).lines().count(),
        names.len(),
        "every object's callback"
    );

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let target = format!("sqlite://{}", db.display());
    let args = [
        "run",
        "--source",
        &source,
        "--target",
        &target,
        "--create-messages",
    ];
    let first = run(&args, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(summary(&first)["files"], names.len());
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM bsp_loader_files"),
        names.len() as i64
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM bsp_loader_pending"),
        names.len() as i64
    );
    let again = run(&args, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(summary(&again)["files"], 0, "all marked done");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_forty_days_after_the_first_report_updates_the_one_timeline_row() {
    let emu = emulators();
    let bucket = unique("timeline").replace('_', "-");
    emu.bucket(&bucket).await;
    let dataset = seeded(&emu, "timeline", "US").await;
    let first = 1_763_773_200; // 2025-11-22T01:00:00Z
    emu.put(
        &bucket,
        "gupshup/a.ndjson",
        format!(
            "{}\n{}\n",
            v2_line(&K(1), "enqueued", first, None),
            v2_line(&K(1), "sent", first + 5, None)
        ),
    )
    .await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    emu.put(
        &bucket,
        "gupshup/b.ndjson",
        v2_line(&K(1), "read", first + 40 * 86_400, None),
    )
    .await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = emu
        .query(&format!(
            "SELECT COUNT(*), UNIX_SECONDS(MIN(enqueued_at)), UNIX_SECONDS(MIN(sent_at)), UNIX_SECONDS(MIN(read_at)), UNIX_SECONDS(MIN(first_at)) \
             FROM `demo.{dataset}.bsp_message_timeline` WHERE bsp_message_id = '{}'",
            K(1)
        ))
        .await;
    let want: Vec<Option<String>> = [
        "1",
        &first.to_string(),
        &(first + 5).to_string(),
        &(first + 40 * 86_400).to_string(),
        &first.to_string(),
    ]
    .iter()
    .map(|s| Some(s.to_string()))
    .collect();
    assert_eq!(rows[0], want, "one row, every first report");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_report_of_known_timelines_is_what_was_worked_out_by_hand() {
    let emu = emulators();
    let bucket = emu.funnel_bucket().await;
    let dataset = seeded(&emu, "funnel", "US").await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = report_of_day(
        &format!("bigquery://demo/{dataset}/messages"),
        "2025-11-22",
        &[],
    );
    assert!(report.status.success(), "{}", stderr(&report));
    let got: Value = serde_json::from_str(stdout(&report).trim()).unwrap();
    assert_eq!(got, funnel_expected());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_delivery_views_select_counts_each_glific_message_once_per_day_and_flow() {
    use bsp_status_loader::target::views::{Dialect, ViewNames, delivery_daily_sql};
    let emu = emulators();
    let bucket = emu.funnel_bucket().await;
    let dataset = unique("view");
    emu.dataset(&dataset).await;
    emu.query(&view_seed_sql(&format!("`demo.{dataset}.messages`")))
        .await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // bqemulator has no views: the view's own SELECT is run as a query.
    let names = ViewNames {
        messages: "messages",
        key: "bsp_message_id",
        streamed_at: Some("bq_inserted_at"),
    };
    let dialect = Dialect::BigQuery {
        project: "demo",
        dataset: &dataset,
    };
    let select = delivery_daily_sql(dialect, &names, chrono_tz::Tz::UTC);
    let rows = emu
        .query(&format!("SELECT * FROM ({select}) ORDER BY flow_name"))
        .await;
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.into_iter().map(|c| c.unwrap_or_default()).collect())
        .collect();
    assert_eq!(rows, view_expected());
}

/// Between listing and reading, one object is deleted and another rewritten:
/// neither listed generation can be read any more, so each is `Unreadable` (a
/// dead letter, marked done), whatever its name; the new generation is listed
/// by the next run.
#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_object_gone_since_the_listing_is_unreadable() {
    use bsp_status_loader::source::{Fetched, Source};
    let emu = emulators();
    let bucket = unique("gone").replace('_', "-");
    emu.bucket(&bucket).await;
    let put = |name: &'static str, body: &'static str| emu.put(&bucket, name, body);
    put("in/a//deleted", "1").await;
    put("in/./rewritten", "1").await;
    put("in/kept", "1").await;
    let source = Source::open(&format!("gs://{bucket}/in")).unwrap();
    let listed = source.list().await.unwrap();
    assert_eq!(listed.len(), 3);

    let mut url = reqwest::Url::parse(&format!("{}/storage/v1/b/{bucket}/o", emu.gcs)).unwrap();
    url.path_segments_mut().unwrap().push("in/a//deleted");
    assert!(
        emu.http
            .delete(url)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    put("in/./rewritten", "2").await;

    for object in &listed {
        let fetched = source.fetch(object).await.unwrap();
        match object.name.as_str() {
            "in/kept" => assert!(matches!(fetched, Fetched::Body(b) if &b[..] == b"1")),
            _ => assert!(matches!(fetched, Fetched::Unreadable(_)), "{object:?}"),
        }
    }
    let again = source.list().await.unwrap();
    assert_eq!(again.len(), 2);
    let rewritten = again.iter().find(|o| o.name == "in/./rewritten").unwrap();
    assert!(!listed.contains(rewritten), "a new generation");
    assert!(matches!(source.fetch(rewritten).await.unwrap(), Fetched::Body(b) if &b[..] == b"2"));
}

/// GCS answers 503 to its first connections: listing and reading retry, and the
/// result is the one without faults.
#[tokio::test(flavor = "multi_thread")]
async fn gcs_5xx_are_retried() {
    let emu = emulators();
    let bucket = unique("gcs-faults").replace('_', "-");
    emu.bucket(&bucket).await;
    emu.upload(&bucket, &FIXTURE_FILES).await;
    let source = format!("gs://{bucket}/gupshup");
    let clean = run(&["resolve", "--source", &source], &[]);
    assert!(clean.status.success(), "{}", stderr(&clean));

    let gcs = FaultyProxy::start(&emu.gcs, 3).await;
    let faulty = run(
        &["resolve", "--source", &source],
        &[("STORAGE_EMULATOR_HOST", gcs.addr.as_str())],
    );
    assert!(faulty.status.success(), "{}", stderr(&faulty));
    assert!(stderr(&faulty).contains("GCS call failed; retrying"));
    assert_eq!(stdout(&faulty), stdout(&clean));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_on_bigquery_reads_the_runs_the_job_recorded_and_alerts_past_the_max_lag() {
    let emu = emulators();
    let bucket = unique("status").replace('_', "-");
    emu.bucket(&bucket).await;
    emu.upload(&bucket, &FIXTURE_FILES).await;
    let dataset = seeded(&emu, "status", "asia-south1").await;
    let ok = bq_run(&bucket, &dataset, &[("BSP_NOW", "2025-11-22T12:00:00Z")]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let target = format!("bigquery://demo/{dataset}/messages");
    let status = |now: &str, extra: &[&str]| {
        let mut args = vec!["status", "--target", &target];
        args.extend_from_slice(extra);
        let out = run(&args, &[("BSP_NOW", now)]);
        let json: Value = serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
        (out.status.code(), json)
    };
    let (code, fresh) = status("2025-11-22T12:10:00Z", &["--max-lag", "1h"]);
    assert_eq!(code, Some(0), "{fresh}");
    assert_eq!(fresh["last_run"]["outcome"], "success", "{fresh}");
    assert!(fresh["pending"]["total"].as_u64().unwrap() > 0, "{fresh}");
    let (code, stale) = status("2025-11-22T15:00:00Z", &["--max-lag", "1h"]);
    assert_eq!(code, Some(1), "{stale}");
    assert!(stale["lag_seconds"].as_f64().unwrap() > 3600.0, "{stale}");
    // The runs INSERT went in as its own job, with values as parameters only.
    let records = emu.jobs_with(&dataset, "INSERT INTO `demo").await;
    assert!(
        records
            .iter()
            .any(|j| j["query"].as_str().unwrap().contains("bsp_loader_runs")
                && j["outcome"] == "ran"),
        "{records:#?}"
    );
}

// Listing from a watermark, and backfills split across tasks (cost issue).

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_run_on_a_bucket_lists_only_from_the_watermark() {
    let emu = emulators();
    let (bucket, want, _) = bucket_and_reference(&emu, "mark").await;
    let dataset = seeded(&emu, "marked", "US").await;
    // Hours later, every object is older than the grace window.
    let later = (chrono::Utc::now() + chrono::Duration::hours(3)).to_rfc3339();
    let first = bq_run(&bucket, &dataset, &[("BSP_NOW", &later)]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(emu.statuses(&dataset).await, want);
    let listed = |out: &std::process::Output| {
        stderr(out)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "reading files")
            .map(|v| (v["listed"].clone(), v["to_read"].clone()))
            .unwrap_or_else(|| panic!("{}", stderr(out)))
    };
    assert_eq!(listed(&first), (json!(6), json!(6)));

    let quiet = bq_run(&bucket, &dataset, &[("BSP_NOW", &later)]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert_eq!(listed(&quiet), (json!(1), json!(0)), "only the last name");
    let reads = emu.jobs_with(&dataset, "object_name >= @from").await;
    assert_eq!(reads.len(), 2, "{reads:#?}");
    assert_eq!(emu.statuses(&dataset).await, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_backfill_tasks_at_once_give_the_table_of_one_backfill() {
    let emu = emulators();
    let (bucket, want, want_counts) = bucket_and_reference(&emu, "tasks").await;
    let dataset = seeded(&emu, "tasks", "US").await;
    let source = format!("gs://{bucket}/gupshup");
    let target = format!("bigquery://demo/{dataset}/messages");
    let args = [
        "backfill",
        "--source",
        &source,
        "--target",
        &target,
        "--from",
        "2025-11-22",
        "--to",
        "2025-11-22",
    ];
    let tasks: Vec<std::process::Child> = (0..3)
        .map(|i| {
            std::process::Command::new(BIN)
                .args(args)
                .env("BSP_LOG_FORMAT", "json")
                .env("CLOUD_RUN_TASK_INDEX", i.to_string())
                .env("CLOUD_RUN_TASK_COUNT", "3")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut read = 0;
    for task in tasks {
        let out = task.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let record = stderr(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "reading files")
            .unwrap();
        read += record["to_read"].as_u64().unwrap();
    }
    assert_eq!(read, 6, "every file read by exactly one task");
    assert_eq!(emu.statuses(&dataset).await, want);
    assert_eq!(emu.bookkeeping(&dataset).await, want_counts);
}

// ---- Cost (issue 13): staging by load jobs, MERGE bounds from the keys merged,
// the hourly retry of old keys, and init upgrading the previous release's tables.

impl Emulators {
    /// A GET on the BigQuery API (through the double).
    async fn bq_get(&self, path: &str) -> Value {
        let resp = self.http.get(self.bq_url(path)).send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// A table's column names, as its metadata lists them.
    async fn column_names(&self, dataset: &str, table: &str) -> Vec<String> {
        let t = self
            .bq_get(&format!("/datasets/{dataset}/tables/{table}"))
            .await;
        t["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The texts of the run scripts the double saw for a dataset, in order.
    async fn scripts(&self, dataset: &str) -> Vec<String> {
        self.jobs_with(dataset, "BEGIN TRANSACTION")
            .await
            .iter()
            .map(|j| j["query"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// Column names of a schema file.
fn schema_names(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("..").join(path)).unwrap();
    let fields: Vec<Value> = serde_json::from_str(&text).unwrap();
    fields
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Every `T.inserted_at >= DATETIME '…'` lower bound a script names, sorted, unique.
fn lower_bounds(script: &str) -> Vec<String> {
    let mut found: Vec<String> = script
        .split("T.inserted_at >= DATETIME '")
        .skip(1)
        .map(|rest| rest[..19].to_owned())
        .collect();
    found.sort();
    found.dedup();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn init_upgrades_the_previous_releases_bigquery_tables_and_runs_go_on() {
    let emu = emulators();
    let (bucket, want, _) = bucket_and_reference(&emu, "upgrade").await;
    let dataset = seeded(&emu, "previous", "US").await;
    for (table, file) in [
        ("bsp_loader_pending", "pending"),
        ("bsp_loader_files", "files"),
    ] {
        let fields: Value = serde_json::from_str(
            &std::fs::read_to_string(
                fixtures().join(format!("../tests/previous_release/{file}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        emu.post(
            emu.bq_url(&format!("/datasets/{dataset}/tables")),
            json!({
                "tableReference": { "projectId": "demo", "datasetId": dataset, "tableId": table },
                "schema": { "fields": fields },
            }),
        )
        .await;
    }
    emu.query(&format!(
        "INSERT INTO `demo.{dataset}.bsp_loader_files` (object_name, generation, run_id, processed_at) \
         VALUES ('old/object', 'g1', 'backfill_20250101_20250102', TIMESTAMP '2025-01-03 00:00:00+00')"
    ))
    .await;
    bq_init(&dataset);
    bq_init(&dataset);
    assert_eq!(
        emu.column_names(&dataset, "bsp_loader_files").await,
        schema_names("schemas/files.json")
    );
    assert_eq!(
        emu.column_names(&dataset, "bsp_loader_pending").await,
        schema_names("schemas/pending.json")
    );
    assert_eq!(
        emu.query(&format!(
            "SELECT done_by FROM `demo.{dataset}.bsp_loader_files` WHERE object_name = 'old/object'"
        ))
        .await,
        [[some("backfill_20250101_20250102")]],
        "the label kept under its new name"
    );
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.statuses(&dataset).await, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_stages_by_a_few_load_jobs_in_its_own_dataset_and_leaves_nothing_in_the_organizations()
 {
    let emu = emulators();
    let (bucket, want, want_counts) = bucket_and_reference(&emu, "loads").await;
    let dataset = seeded(&emu, "loaded", "US").await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.statuses(&dataset).await, want);
    assert_eq!(emu.bookkeeping(&dataset).await, want_counts);

    let staging = format!("{dataset}_bsp_staging");
    let mut loads = emu.jobs(&staging).await;
    loads.retain(|j| j["kind"] == "load");
    assert!(
        !loads.is_empty() && loads.len() <= 4,
        "one load per staged table at most: {loads:#?}"
    );
    assert!(loads.iter().all(|j| j["outcome"] == "ran"));
    let queries = emu.jobs(&dataset).await;
    assert!(
        queries
            .iter()
            .all(|j| !j["query"].as_str().unwrap_or("").contains("UNNEST(@rows)")),
        "no DML staging: {queries:#?}"
    );
    // The run's query jobs on the batch: the bounds, the rows check, the script.
    let steps: Vec<&str> = queries
        .iter()
        .filter_map(|j| {
            j["job_id"]
                .as_str()?
                .rsplit_once("_0_")
                .map(|(_, step)| step)
        })
        .filter(|step| !step.starts_with("stage_"))
        .collect();
    assert_eq!(steps, ["bounds", "rows", "merge"], "{queries:#?}");

    let tables = emu.bq_get(&format!("/datasets/{dataset}/tables")).await;
    let names: Vec<&str> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tableReference"]["tableId"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| *n == "messages"
            || n.starts_with("bsp_loader_")
            || *n == "bsp_message_timeline"),
        "only messages and the job's own tables: {names:?}"
    );
    // (bqemulator keeps no expirationTime: the recorded-answer test checks it.)
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_load_answers_in_asia_south1_still_stage_once() {
    let emu = emulators();
    let (bucket, want, want_counts) = bucket_and_reference(&emu, "lostloads").await;
    let dataset = seeded(&emu, "mumbai_loads", "asia-south1").await;
    bq_init(&dataset);
    let staging = format!("{dataset}_bsp_staging");
    let made = emu.bq_get(&format!("/datasets/{staging}")).await;
    assert_eq!(
        made["location"], "asia-south1",
        "init made it beside the dataset"
    );
    emu.rules(&staging, json!({ "lose_insert_answers": "first" }))
        .await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(emu.statuses(&dataset).await, want);
    assert_eq!(emu.bookkeeping(&dataset).await, want_counts);
    let mut loads = emu.jobs(&staging).await;
    loads.retain(|j| j["kind"] == "load");
    let outcomes: Vec<&str> = loads
        .iter()
        .map(|j| j["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes
            .chunks(2)
            .all(|p| p == ["lost_answer", "duplicate"]),
        "each load ran once, its retry answered 409 and was followed: {loads:#?}"
    );
    assert!(loads.iter().all(|j| j["location"] == "asia-south1"));
}

/// June rows, then statuses in June; later a read in September and one odd
/// status time from 2011: the second MERGE reads June (where the rows were
/// found) and the odd key's own months, nothing in between and nothing after.
#[tokio::test(flavor = "multi_thread")]
async fn a_matched_key_later_reads_only_its_rows_partition_and_an_odd_time_only_its_own() {
    let emu = emulators();
    let bucket = unique("bounds").replace('_', "-");
    emu.bucket(&bucket).await;
    let dataset = unique("bounds");
    emu.dataset(&dataset).await;
    let june = "2025-06-10T10:00:00";
    emu.rows(
        &dataset,
        &[(1, Some(K(1)), None, june), (2, Some(K(2)), None, june)],
    )
    .await;
    let june_ts = 1_749_549_900; // 2025-06-10T10:05:00Z
    emu.put(
        &bucket,
        "gupshup/2025/06/10/a.ndjson",
        format!(
            "{}\n{}\n",
            v2_line(&K(1), "sent", june_ts, None),
            v2_line(&K(2), "delivered", june_ts, None)
        ),
    )
    .await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let found = emu
        .query(&format!(
            "SELECT bsp_message_id, UNIX_MILLIS(partition_at) FROM `demo.{dataset}.bsp_loader_pending` ORDER BY 1"
        ))
        .await;
    let june_ms = Some("1749549600000".to_owned()); // 2025-06-10T10:00:00 (the row's inserted_at)
    assert_eq!(
        found,
        [[some(&K(1)), june_ms.clone()], [some(&K(2)), june_ms]],
        "matched keys remember their row's partition value"
    );

    let september_ts = 1_756_717_200; // 2025-09-01T09:00:00Z
    let odd_ts = 1_305_000_000; // 2011-05-10T04:00:00Z
    emu.put(
        &bucket,
        "gupshup/2025/09/01/b.ndjson",
        format!(
            "{}\n{}\n",
            v2_line(&K(1), "read", september_ts, None),
            v2_line("no-row-key", "sent", odd_ts, None)
        ),
    )
    .await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        emu.statuses(&dataset).await,
        [("1".into(), some("read")), ("2".into(), some("delivered"))]
    );
    let scripts = emu.scripts(&dataset).await;
    let last = scripts.last().unwrap();
    assert_eq!(
        lower_bounds(last),
        ["2011-04-01 00:00:00", "2025-06-01 00:00:00"],
        "{last}"
    );
    assert!(last.contains(
        "T.inserted_at >= DATETIME '2025-06-01 00:00:00' AND T.inserted_at < DATETIME '2025-07-01 00:00:00'"
    ));
    assert!(last.contains(
        "T.inserted_at >= DATETIME '2011-04-01 00:00:00' AND T.inserted_at < DATETIME '2011-06-01 00:00:00'"
    ));
    let logged = stderr(&out);
    assert!(
        logged.contains("2011-04-01..2011-06-01, 2025-06-01..2025-07-01"),
        "the partitions read are logged: {logged}"
    );
}

/// A key still without a row, first seen over a day ago, is looked for in the
/// first run of each clock hour only; a quiet run in between merges nothing.
#[tokio::test(flavor = "multi_thread")]
async fn keys_without_a_row_older_than_a_day_are_looked_for_once_per_clock_hour() {
    let emu = emulators();
    let bucket = unique("hourly").replace('_', "-");
    emu.bucket(&bucket).await;
    let dataset = unique("hourly");
    emu.dataset(&dataset).await;
    emu.put(
        &bucket,
        "gupshup/a.ndjson",
        v2_line("no-row-yet", "sent", 1_763_773_200, None),
    )
    .await;
    let out = bq_run(&bucket, &dataset, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let merges = || async { emu.scripts(&dataset).await.len() };
    assert_eq!(merges().await, 1);
    // Not just before an hour turns, so "this hour" stays this hour.
    while chrono::Utc::now().format("%M:%S").to_string().as_str() >= "59:30" {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    let age = |tried: &str| {
        format!(
            "UPDATE `demo.{dataset}.bsp_loader_pending` SET first_seen_at = TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 2 DAY), \
             last_tried_at = {tried} WHERE TRUE"
        )
    };
    emu.query(&age("TIMESTAMP_TRUNC(CURRENT_TIMESTAMP(), HOUR)"))
        .await;
    let quiet = bq_run(&bucket, &dataset, &[]);
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert_eq!(merges().await, 1, "tried this hour already: no MERGE");
    assert_eq!(summary(&quiet)["pending"], 1, "still counted as pending");

    emu.query(&age(
        "TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 61 MINUTE)",
    ))
    .await;
    let hourly = bq_run(&bucket, &dataset, &[]);
    assert!(hourly.status.success(), "{}", stderr(&hourly));
    assert_eq!(merges().await, 2, "due again in a new hour");
    let tried = emu
        .query(&format!(
            "SELECT COUNTIF(last_tried_at >= TIMESTAMP_TRUNC(CURRENT_TIMESTAMP(), HOUR)) FROM `demo.{dataset}.bsp_loader_pending`"
        ))
        .await;
    assert_eq!(tried, [[some("1")]]);
    let again = bq_run(&bucket, &dataset, &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(merges().await, 2, "not again within the hour");
}

/// Large objects in a bucket are read as the same file in a folder: a plain one
/// cut into pieces parsed on every core (each the lines that start in it), a gzip
/// one inflated a stretch at a time; the same resolutions, counts, dead letters
/// (line numbers within the object) and files.
#[tokio::test(flavor = "multi_thread")]
async fn large_bucket_objects_are_read_as_the_same_files_in_a_folder() {
    use bsp_status_loader::pipeline::{Routing, read};
    use bsp_status_loader::source::{PIECE_BYTES, Source};
    use std::io::Write;
    let emu = emulators();
    let bucket = unique("large").replace('_', "-");
    emu.bucket(&bucket).await;
    let mut text = Vec::new();
    for i in 0..120_000u64 {
        let line = match i {
            _ if i % 1009 == 0 => "{}".to_owned(),
            _ => format!(
                r#"{{"app":"a","timestamp":{i},"version":2,"type":"message-event","payload":{{"id":"m{}","type":"{}","payload":{{"ts":{}}},"note":"{}"}}}}"#,
                i % 40_000,
                ["enqueued", "sent", "delivered", "read", "failed"][i as usize % 5],
                1_700_000_000 + i % 7_777,
                "x".repeat(i as usize % 50)
            ),
        };
        text.extend(line.into_bytes());
        text.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    assert!(text.len() as u64 > 2 * PIECE_BYTES, "cut into pieces");
    let mut zipped = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    zipped.write_all(&text).unwrap();
    let zipped = zipped.finish().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [("large.ndjson", &text), ("large.ndjson.gz", &zipped)] {
        std::fs::write(dir.path().join(name), body).unwrap();
        emu.put(&bucket, &format!("in/{name}"), body.clone()).await;
    }
    let routing = Routing::single();
    let resolve = |url: String| {
        let routing = routing.clone();
        async move {
            let source = Source::open(&url).unwrap();
            let objects = source.list().await.unwrap();
            read(&source, objects, 4, &routing, None, |_| {})
                .await
                .unwrap()
        }
    };
    let folder = resolve(dir.path().to_str().unwrap().to_owned()).await;
    let bucket = resolve(format!("gs://{bucket}/in")).await;
    assert_eq!(bucket.counts, folder.counts);
    assert_eq!(folder.counts.files, 2);
    let (got, want) = (&bucket.batches[0], &folder.batches[0]);
    assert_eq!(got.counts, want.counts);
    assert_eq!(got.resolution, want.resolution);
    assert_eq!(got.dead_letters.len(), 2 * 119);
    let lines = |b: &bsp_status_loader::batch::Batch| {
        (b.dead_letters.iter())
            .map(|d| (d.file.rsplit('/').next().unwrap().to_owned(), d.line))
            .collect::<Vec<_>>()
    };
    assert_eq!(lines(got), lines(want));
    assert_eq!(got.files.len(), 2);
}
