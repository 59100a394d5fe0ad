//! The binary as a user meets it: output, summary, exit codes, logs, bad files.

mod common;

use std::io::Write;

use common::*;

#[test]
fn resolve_prints_the_expected_resolution_and_summary() {
    let src = fixtures().join("callbacks");
    let out = run(&["resolve", "--source", src.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = std::fs::read_to_string(fixtures().join("expected/resolve.ndjson")).unwrap();
    assert_eq!(stdout(&out), expected);
    let last = stderr(&out).lines().last().unwrap().to_owned();
    let expected_summary =
        std::fs::read_to_string(fixtures().join("expected/summary.json")).unwrap();
    assert_eq!(last, expected_summary.trim_end());
}

#[test]
fn resolve_accepts_file_urls_single_files_and_an_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", fixtures().join("callbacks").display());
    let output = dir.path().join("out.ndjson");
    let dead = dir.path().join("dead.ndjson");
    let out = run(
        &[
            "resolve",
            "--source",
            &url,
            "--output",
            output.to_str().unwrap(),
            "--dead-letters",
            dead.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    let expected = std::fs::read_to_string(fixtures().join("expected/resolve.ndjson")).unwrap();
    assert_eq!(std::fs::read_to_string(&output).unwrap(), expected);
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 12);
    assert!(dead.iter().all(|d| d["file"].is_string()
        && d["line"].as_u64().unwrap() > 0
        && d["reason"].is_string()));
    assert_eq!(dead[1]["raw"], r#"{"app":"DemoAPI","timestamp":"#);

    let one = fixtures().join("callbacks/2025/11/22/05/no-suffix.ndjson");
    let out = run(&["resolve", "--source", one.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 1);
}

#[test]
fn resolve_output_replaces_a_longer_file_and_may_be_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("callbacks");
    let output = dir.path().join("out.ndjson");
    let expected = std::fs::read_to_string(fixtures().join("expected/resolve.ndjson")).unwrap();
    // An older output, longer than this one: none of it may be left behind.
    std::fs::write(&output, "{\"old\":1}\n".repeat(expected.len())).unwrap();
    for output in [output.to_str().unwrap(), "/dev/null"] {
        let args = [
            "resolve",
            "--source",
            src.to_str().unwrap(),
            "--output",
            output,
        ];
        let out = run(&args, &[]);
        assert!(out.status.success(), "{output}: {}", stderr(&out));
    }
    assert_eq!(std::fs::read_to_string(&output).unwrap(), expected);
}

#[test]
fn resolve_output_may_be_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("out.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let src = fixtures().join("callbacks");
    let args = [
        "resolve",
        "--source",
        src.to_str().unwrap(),
        "--output",
        fifo.to_str().unwrap(),
    ];
    let out = run(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = std::fs::read_to_string(fixtures().join("expected/resolve.ndjson")).unwrap();
    assert_eq!(reader.join().unwrap(), expected);
}

#[test]
fn usage_errors_exit_2_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 4] = [
        &["resolve", "--source", "/no/such/folder"],
        &["run", "--source", "/tmp", "--target", "postgres://x"],
        &[
            "run",
            "--source",
            "/tmp",
            "--target",
            "sqlite://x.db",
            "--key-column",
            "a;drop",
        ],
        &["resolve"],
    ];
    for args in cases {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // A run on a target without a messages table says what to do.
    let db = dir.path().join("empty.db");
    let out = run_job(&fixtures().join("callbacks"), &db, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let last: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    assert_eq!(last["severity"], "ERROR");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("--create-messages"),
        "{err}"
    );
    // ... and with the flag it works.
    let out = run_job(
        &fixtures().join("callbacks"),
        &db,
        &["--create-messages"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn every_usage_error_is_one_json_line_and_exit_2() {
    let src = fixtures().join("callbacks");
    let src = src.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/folder");
    let in_missing = |name: &str| missing.join(name).to_str().unwrap().to_owned();
    let (db, db_missing) = (
        format!("sqlite://{}", dir.path().join("x.db").display()),
        format!("sqlite://{}", in_missing("x.db")),
    );
    let (output, dead) = (in_missing("out.ndjson"), in_missing("dead.ndjson"));
    let run_with = |extra: &[&'static str]| {
        let mut args = vec!["run", "--source", src, "--target", db.as_str()];
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<Vec<&str>> = vec![
        run_with(&["--pending-ttl", "100000000d"]),
        run_with(&["--lookback", "999999999999999d"]),
        run_with(&["--pending-ttl", "3651d"]),
        run_with(&["--no-such-flag"]),
        vec![
            "run",
            "--source",
            src,
            "--target",
            &db_missing,
            "--create-messages",
        ],
        vec!["init", "--target", &db_missing, "--create-messages"],
        vec!["resolve", "--source", src, "--output", &output],
        vec!["resolve", "--source", src, "--dead-letters", &dead],
        vec![
            "backfill",
            "--source",
            src,
            "--target",
            &db,
            "--from",
            "2025-11-23",
            "--to",
            "2025-11-22",
        ],
        vec!["backfill", "--source", src, "--target", &db],
        vec!["no-such-command"],
        vec!["resolve", "--source", src, "--memory-limit", "1"],
    ];
    for args in &cases {
        let out = run(args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let records: Vec<serde_json::Value> = err
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|_| panic!("{args:?}: not JSON: {err}"))
            })
            .collect();
        // One error line; a run or backfill that started also says how it ended.
        let (summaries, lines): (Vec<_>, Vec<_>) =
            records.iter().partition(|r| r["summary"] == true);
        assert_eq!(lines.len(), 1, "{args:?}: {err}");
        assert_eq!(lines[0]["severity"], "ERROR", "{args:?}: {err}");
        assert!(summaries.len() <= 1, "{args:?}: {err}");
        for s in summaries {
            assert_eq!(s["outcome"], "failed", "{args:?}: {err}");
            assert_eq!(
                s["rerun_safe"], false,
                "a usage error is not fixed by a rerun"
            );
        }
        assert!(!missing.exists());
    }
    // The flag wins over the environment, and text is one line too.
    let out = run(&["run", "--log-format", "text", "--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(serde_json::from_str::<serde_json::Value>(stderr(&out).trim()).is_err());
    // Help and version are printed as clap prints them.
    let out = run(&["run", "--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("--pending-ttl"));
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).starts_with("bsp-status-loader "));
}

#[test]
fn a_broken_target_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("not-a-db.db");
    std::fs::write(&db, vec![b'x'; 4096]).unwrap();
    let out = run_job(&fixtures().join("callbacks"), &db, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn bad_files_among_good_ones_are_dead_lettered_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    copy_callbacks(
        dir.path(),
        &["2025/11/22/01/v2.ndjson", "2025/11/22/02/v3.ndjson"],
    );
    // A gzip cut in half, after a few good lines.
    let good_line =
        std::fs::read_to_string(fixtures().join("callbacks/2025/11/22/01/v2.ndjson")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for i in 0..3000 {
        writeln!(enc, r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"statuses":[{{"gs_id":"gz-{i}","status":"sent","timestamp":"1763773200"}}]}}}}]}}]}}"#).unwrap();
    }
    let gz = enc.finish().unwrap();
    std::fs::write(dir.path().join("corrupt.ndjson.gz"), &gz[..gz.len() / 2]).unwrap();
    // A binary file.
    let binary: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("image.png"), binary).unwrap();
    // A 5 MB line between two good ones.
    let huge = format!(
        "{}\n{{\"body\":\"{}\"}}\n{}",
        good_line.lines().next().unwrap(),
        "x".repeat(5 << 20),
        good_line.lines().nth(1).unwrap()
    );
    std::fs::write(dir.path().join("huge.ndjson"), huge).unwrap();

    let dead = dir.path().join("dead.ndjson");
    let out = run(
        &[
            "resolve",
            "--source",
            dir.path().to_str().unwrap(),
            "--dead-letters",
            dead.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: serde_json::Value =
        serde_json::from_str(stderr(&out).lines().last().unwrap()).unwrap();
    assert!(summary["dead_lettered"].as_u64().unwrap() >= 3, "{summary}");
    let dead = std::fs::read_to_string(&dead).unwrap();
    assert!(
        dead.contains("corrupt.ndjson.gz") && dead.contains("gzip"),
        "corrupt gzip is recorded"
    );
    assert!(dead.contains("image.png") && dead.contains("huge.ndjson"));
    // The good lines still resolve as they do alone, and the readable part of the gzip counts.
    let out_rows = stdout(&out);
    let expected = std::fs::read_to_string(fixtures().join("expected/resolve.ndjson")).unwrap();
    for key in [
        "6a3c3a52-0001-4a8e-9d41-000000000001",
        "6a3c3a52-0008-4a8e-9d41-000000000008",
    ] {
        let want = expected.lines().find(|l| l.contains(key)).unwrap();
        assert!(out_rows.lines().any(|l| l == want), "{key}");
    }
    assert!(out_rows.contains(r#""bsp_message_id":"gz-0""#));
}

#[test]
fn logs_are_json_with_a_summary_and_no_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let out = run_job(&fixtures().join("callbacks"), &db, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(
            v["severity"].is_string() && v["message"].is_string() && v["run_id"].is_string(),
            "{line}"
        );
    }
    for secret in ["91XXXXXXXX", "91*******78", "hello", "reason text"] {
        assert!(!err.contains(secret), "{secret} leaked into logs");
    }
    let s = summary(&out);
    for field in [
        "files",
        "lines",
        "events",
        "duplicates",
        "skipped",
        "dead_lettered",
        "messages",
        "rows_updated",
        "pending",
        "bytes_processed",
        "seconds",
    ] {
        assert!(!s[field].is_null(), "summary lacks {field}: {s}");
    }
    assert_eq!(s["files"], 6);
    assert_eq!(s["events"], 32);
}

/// As an operator would see it: BigQuery or GCS unreachable ends the run with exit 1
/// and one clear line, within three minutes (retries with backoff first).
#[test]
fn unreachable_services_exit_1_within_three_minutes() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let closed = format!("http://{closed}");
    let src = fixtures().join("callbacks");
    let cases = [
        (
            vec![
                "run",
                "--source",
                src.to_str().unwrap(),
                "--target",
                "bigquery://demo/org1/messages",
            ],
            ("BIGQUERY_EMULATOR_HOST", closed.as_str()),
        ),
        (
            vec!["resolve", "--source", "gs://callbacks/gupshup"],
            ("STORAGE_EMULATOR_HOST", closed.as_str()),
        ),
    ];
    std::thread::scope(|s| {
        for (args, env) in &cases {
            s.spawn(move || {
                let started = std::time::Instant::now();
                let out = run(args, &[*env]);
                assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(180),
                    "{args:?} took {:?}",
                    started.elapsed()
                );
                let last: serde_json::Value =
                    serde_json::from_str(stderr(&out).lines().last().unwrap()).unwrap();
                assert_eq!(last["severity"], "ERROR");
                assert!(
                    !last["message"].as_str().unwrap().contains('\n'),
                    "one line: {last}"
                );
            });
        }
    });
}

#[test]
fn resolve_with_a_memory_limit_spills_and_prints_the_same() {
    let dir = tempfile::tempdir().unwrap();
    // 30 000 messages over 40 files, each with a few statuses in both formats.
    for f in 0..40 {
        let mut text = String::new();
        for i in 0..3000u32 {
            let key = format!("m{:05}", (i * 7 + f * 13) % 30_000);
            let ts = 1_763_773_200 + u64::from(i % 500);
            let status = ["sent", "delivered", "read", "failed"][(i as usize + f as usize) % 4];
            text += &format!(
                r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"statuses":[{{"gs_id":"{key}","status":"{status}","timestamp":"{ts}","errors":[{{"code":{}}}]}}]}}}}]}}]}}"#,
                i % 3
            );
            text.push('\n');
        }
        std::fs::write(dir.path().join(format!("f{f}.ndjson")), text).unwrap();
    }
    let src = dir.path().to_str().unwrap();
    let plain = run(&["resolve", "--source", src], &[]);
    assert!(plain.status.success());
    let limited = run(
        &[
            "resolve",
            "--source",
            src,
            "--memory-limit",
            "48",
            "--spill-worker-budget",
            "200000",
        ],
        &[],
    );
    assert!(limited.status.success(), "{}", stderr(&limited));
    assert!(stderr(&limited).contains("spilled to disk"), "it spilled");
    assert!(!stderr(&plain).contains("spilled to disk"));
    assert!(stdout(&plain).lines().count() > 20_000);
    assert_eq!(stdout(&limited), stdout(&plain));
    assert_eq!(
        stderr(&limited).lines().last(),
        stderr(&plain).lines().last(),
        "the same summary"
    );
    let too_small = run(&["resolve", "--source", src, "--memory-limit", "8"], &[]);
    assert_eq!(too_small.status.code(), Some(2));
}

/// A run that fails (a read error a rerun may not meet: EIO here) exits 1 and
/// leaves no spill folder behind; neither does one that succeeds.
#[test]
fn a_failed_run_with_a_memory_limit_leaves_no_spill_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (src, tmp) = (dir.path().join("src"), dir.path().join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    copy_callbacks(&src, &FIXTURE_FILES);
    let spills = || {
        std::fs::read_dir(&tmp)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("bsp-spill-")
            })
            .count()
    };
    let args = [
        "resolve",
        "--source",
        src.to_str().unwrap(),
        "--memory-limit",
        "48",
        "--spill-worker-budget",
        "1",
    ];
    let envs = [("TMPDIR", tmp.to_str().unwrap())];
    let out = run(&args, &envs);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("spilled to disk"), "{}", stderr(&out));
    assert_eq!(spills(), 0);
    // Reading /proc/self/mem at offset 0 fails with EIO: not a per-file verdict.
    std::os::unix::fs::symlink("/proc/self/mem", src.join("zz-eio")).unwrap();
    let out = run(&args, &envs);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("zz-eio"), "{}", stderr(&out));
    assert_eq!(spills(), 0);
}

#[test]
fn resolve_timeline_prints_each_messages_first_reports_consistent_with_its_status() {
    let src = fixtures().join("callbacks");
    let plain = run(&["resolve", "--source", src.to_str().unwrap()], &[]);
    let timeline = run(
        &["resolve", "--timeline", "--source", src.to_str().unwrap()],
        &[],
    );
    assert!(timeline.status.success(), "{}", stderr(&timeline));
    let parse = |out: &std::process::Output| -> Vec<serde_json::Value> {
        stdout(out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (statuses, timelines) = (parse(&plain), parse(&timeline));
    assert_eq!(statuses.len(), timelines.len());
    let fields = [
        "bsp_message_id",
        "enqueued_at",
        "sent_at",
        "error_at",
        "delivered_at",
        "read_at",
        "played_at",
        "deleted_at",
        "error_code",
    ];
    for (s, t) in statuses.iter().zip(&timelines) {
        assert_eq!(t.as_object().unwrap().len(), fields.len(), "{t}");
        assert!(fields.iter().all(|f| t.get(*f).is_some()), "{t}");
        assert_eq!(s["bsp_message_id"], t["bsp_message_id"], "sorted alike");
        // The winning status's first report is the status time; nothing ranks above it.
        let status = s["bsp_status"].as_str().unwrap();
        assert_eq!(t[format!("{status}_at")], s["status_at"], "{t}");
        let above = fields[1..8]
            .iter()
            .skip_while(|f| **f != format!("{status}_at"))
            .skip(1);
        assert!(above.clone().all(|f| t[*f].is_null()), "{t}");
        if status == "error" {
            assert_eq!(t["error_code"], s["error_code"]);
        }
    }
    // A message that failed (code 470) and was then read keeps both reports.
    let k3 = timelines
        .iter()
        .find(|t| t["bsp_message_id"] == "6a3c3a52-0003-4a8e-9d41-000000000003")
        .unwrap();
    assert_eq!(k3["error_code"], 470, "{k3}");
    assert!(k3["error_at"].is_string());
    // The plain output is unchanged by the flag's existence.
    let expected = std::fs::read_to_string(fixtures().join("expected/resolve.ndjson")).unwrap();
    assert_eq!(stdout(&plain), expected);
}
