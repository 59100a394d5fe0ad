//! Watching the job: the runs table (failed runs included), `status`, and the
//! summary every exit of a run logs.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const T0: &str = "2026-03-01T10:00:00Z";

fn status(target: &Path, extra: &[&str], now: &str) -> (Option<i32>, Value) {
    let target = format!("sqlite://{}", target.display());
    let mut args = vec!["status", "--target", &target];
    args.extend_from_slice(extra);
    let out = run(&args, &[("BSP_NOW", now)]);
    let json = serde_json::from_str(stdout(&out).trim()).unwrap_or(Value::Null);
    (out.status.code(), json)
}

fn runs(db: &Path) -> Vec<(String, Option<String>, Option<i64>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT outcome, failed_step, backlog FROM bsp_loader_runs ORDER BY ended_at")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Makes every later `run` fail in the merge step on this SQLite target.
fn break_merge(db: &Path) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_books BEFORE INSERT ON bsp_loader_files
             BEGIN SELECT RAISE(ABORT, 'the books are closed'); END;",
        )
        .unwrap();
}

#[test]
fn a_target_of_the_previous_release_gains_the_runs_and_timeline_tables_from_init_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let target = format!("sqlite://{}", db.display());
    let previous = |db: &Path| {
        assert!(run(&["init", "--target", &target], &[]).status.success());
        rusqlite::Connection::open(db)
            .unwrap()
            .execute_batch("DROP TABLE bsp_loader_runs; DROP TABLE bsp_message_timeline")
            .unwrap();
    };
    let has_runs = |db: &Path| {
        count(
            db,
            "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('bsp_loader_runs', 'bsp_message_timeline')",
        ) == 2
    };
    previous(&db);
    assert!(!has_runs(&db));
    assert!(run(&["init", "--target", &target], &[]).status.success());
    assert!(has_runs(&db), "init creates it");

    previous(&db);
    let out = run_job(&fixtures().join("callbacks"), &db, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        runs(&db),
        [("success".into(), None, Some(0))],
        "run creates and fills it"
    );
    assert!(count(&db, "SELECT COUNT(*) FROM bsp_message_timeline") > 0);
}

#[test]
fn status_reports_the_lag_backlog_pending_keys_dead_letters_and_last_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let (code, _) = status(&db, &[], T0);
    assert_eq!(code, Some(1), "no successful run yet");

    let out = run_job(&fixtures().join("callbacks"), &db, &[], &[("BSP_NOW", T0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = summary(&out);

    let (code, st) = status(&db, &[], "2026-03-01T12:00:00Z");
    assert_eq!(code, Some(0), "{st}");
    let lag = st["lag_seconds"].as_i64().unwrap();
    assert!(
        (7_190..=7_200).contains(&lag),
        "two hours after the run: {st}"
    );
    assert_eq!(st["healthy"], true);
    assert_eq!(st["backlog"], 0);
    assert_eq!(st["files_24h"], 6);
    let pending = s["pending"].as_u64().unwrap();
    assert!(pending > 0, "the fixtures leave keys without rows: {s}");
    assert_eq!(st["pending"]["total"], pending);
    assert_eq!(st["pending"]["under_1h"], 0, "first seen two hours ago");
    assert_eq!(st["pending"]["under_1d"], pending);
    assert_eq!(st["pending"]["under_7d"], pending);
    assert_eq!(st["expired_24h"], 0);
    let dead: u64 = st["dead_letters_24h"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(dead, s["dead_lettered"].as_u64().unwrap());
    assert_eq!(st["dead_letters_24h"]["not JSON"], 1);
    assert_eq!(st["last_run"]["run_id"], s["run_id"]);
    assert_eq!(st["last_run"]["outcome"], "success");
    assert!(st["last_run"]["failed_step"].is_null());
    assert_eq!(st["last_run"]["bytes_processed"], 0);
    assert_eq!(st["bytes_processed"], 0, "SQLite costs nothing");

    // The lag against --max-lag, and a day later the 24-hour counts are empty.
    assert_eq!(
        status(&db, &["--max-lag", "1h"], "2026-03-01T12:00:00Z").0,
        Some(1)
    );
    assert_eq!(
        status(&db, &["--max-lag", "3h"], "2026-03-01T12:00:00Z").0,
        Some(0)
    );
    let (_, later) = status(&db, &[], "2026-03-03T12:00:00Z");
    assert_eq!(later["files_24h"], 0);
    assert_eq!(later["dead_letters_24h"], serde_json::json!({}));
    // Usage errors: exit 2.
    assert_eq!(status(&db, &["--max-lag", "soon"], T0).0, Some(2));
    assert_eq!(status(&dir.path().join("none.db"), &[], T0).0, Some(2));
    assert!(
        !dir.path().join("none.db").exists(),
        "status creates nothing"
    );
    // On a terminal's behalf: a table.
    let text = run(
        &[
            "--log-format",
            "text",
            "status",
            "--target",
            &format!("sqlite://{}", db.display()),
        ],
        &[("BSP_NOW", "2026-03-01T12:00:00Z")],
    );
    assert!(stdout(&text).starts_with("TARGET"), "{}", stdout(&text));
    assert!(stdout(&text).contains("1h 59m") || stdout(&text).contains("2h 00m"));
}

#[test]
fn a_failed_run_is_summarised_recorded_and_shown_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    assert!(
        run(
            &["init", "--target", &format!("sqlite://{}", db.display())],
            &[]
        )
        .status
        .success()
    );
    break_merge(&db);
    let out = run_job(&fixtures().join("callbacks"), &db, &[], &[("BSP_NOW", T0)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = summaries(&out);
    assert_eq!(all.len(), 1, "one summary: {all:?}");
    let s = &all[0];
    assert_eq!(s["outcome"], "failed");
    assert_eq!(s["failed_step"], "merge");
    assert_eq!(s["rerun_safe"], true);
    assert_eq!(s["files"], 6);
    assert!(s["lag_seconds"].is_null(), "never succeeded: {s}");
    assert_eq!(
        runs(&db),
        [("failed".into(), Some("merge".into()), Some(6))],
        "recorded outside the rolled-back transaction, with the files left undone"
    );
    let (code, st) = status(&db, &[], "2026-03-01T10:30:00Z");
    assert_eq!(code, Some(1));
    assert_eq!(st["last_run"]["outcome"], "failed");
    assert_eq!(st["last_run"]["failed_step"], "merge");
    assert!(st["lag_seconds"].is_null() && st["last_success_at"].is_null());

    // A later success ends the lag, and says so.
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let success = run_job(&gone, &db, &[], &[("BSP_NOW", T0)]);
    assert!(success.status.success(), "{}", stderr(&success));
    assert_eq!(summary(&success)["outcome"], "success");
    assert_eq!(summary(&success)["failed_step"], Value::Null);
    assert_eq!(summary(&success)["lag_seconds"], 0);
}

#[test]
fn organization_summaries_carry_their_own_files_lines_bytes_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    copy_callbacks(&src, &FIXTURE_FILES[..2]);
    let (a, b, config) = two_organizations(dir.path());
    let go = |now: &str| run_orgs(&src, &config, &[("BSP_NOW", now)]);
    let out = go(T0);
    assert!(out.status.success(), "{}", stderr(&out));
    let all = summaries(&out);
    let by = |name: &str| {
        all.iter()
            .find(|s| s["organization"] == name)
            .unwrap_or_else(|| panic!("no summary of {name}: {all:?}"))
            .clone()
    };
    let (v2, v3, run_total) = (by("v2-org"), by("v3-org"), all.last().unwrap().clone());
    for org in [&v2, &v3] {
        assert_eq!(org["files"], 1, "one file holds its app's lines: {org}");
        assert!(org["lines"].as_u64().unwrap() > 0, "{org}");
        assert!(org["bytes_read"].as_u64().unwrap() > 0, "{org}");
        assert_eq!(org["outcome"], "success");
        assert_eq!(org["lag_seconds"], 0);
    }
    let lines = |s: &Value| s["lines"].as_u64().unwrap();
    assert!(lines(&v2) + lines(&v3) <= lines(&run_total));
    assert_eq!(run_total["files"], 2);

    // An hour later one organization's merge fails: it says so, with its lag.
    break_merge(&a);
    copy_callbacks(&src, &FIXTURE_FILES[2..3]);
    let out = go("2026-03-01T11:00:00Z");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let all = summaries(&out);
    let failed = all.iter().find(|s| s["organization"] == "v2-org").unwrap();
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert_eq!(failed["failed_step"], "merge");
    assert_eq!(failed["rerun_safe"], true);
    let lag = failed["lag_seconds"].as_i64().unwrap();
    assert!((3_590..=3_600).contains(&lag), "{failed}");
    let fine = all.iter().find(|s| s["organization"] == "v3-org").unwrap();
    assert_eq!(fine["outcome"], "success");
    let total = all.last().unwrap();
    assert_eq!(total["outcome"], "failed");
    assert_eq!(total["failed_step"], "merge");
    assert_eq!(runs(&a).last().unwrap().0, "failed");
    assert_eq!(runs(&b).last().unwrap().0, "success");

    // status --config: one object, every organization, unhealthy past --max-lag.
    let out = run(
        &[
            "status",
            "--config",
            config.to_str().unwrap(),
            "--max-lag",
            "30m",
        ],
        &[("BSP_NOW", "2026-03-01T11:10:00Z")],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let st: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(st["healthy"], false);
    let orgs = st["organizations"].as_array().unwrap();
    assert_eq!(orgs.len(), 2);
    assert_eq!(orgs[0]["organization"], "v2-org");
    assert_eq!(orgs[0]["healthy"], false);
    assert_eq!(orgs[0]["last_run"]["outcome"], "failed");
    assert_eq!(orgs[1]["healthy"], true);
}
