//! The embedded target end to end: the guard, copies, pending keys and their
//! time-to-live, bookkeeping across runs, crashes, and order independence.

mod common;

use std::path::Path;

use common::*;

const K1: &str = "6a3c3a52-0001-4a8e-9d41-000000000001";
const K4: &str = "6a3c3a52-0004-4a8e-9d41-000000000004";
const K12: &str = "6a3c3a52-0012-4a8e-9d41-000000000012";

fn status_of(db: &Path, id: i64) -> Vec<Option<String>> {
    messages(db)
        .into_iter()
        .filter(|r| r.0 == id)
        .map(|r| r.2)
        .collect()
}

#[test]
fn a_run_applies_the_rules_under_the_guard_to_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let out = run_job(&fixtures().join("callbacks"), &db, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        status_of(&db, 1),
        [some("read"), some("read")],
        "both copies, never backwards"
    );
    assert_eq!(status_of(&db, 2), [some("error")]);
    assert_eq!(
        status_of(&db, 3),
        [some("read")],
        "a failure never undoes read"
    );
    assert_eq!(
        status_of(&db, 6),
        [some("delivered")],
        "unknown current values rank 0"
    );
    assert_eq!(status_of(&db, 7), [some("read")]);
    assert_eq!(status_of(&db, 8), [some("delivered")]);
    assert_eq!(status_of(&db, 9), [some("error")]);
    assert_eq!(status_of(&db, 13), [some("read"), some("read")]);
    assert_eq!(status_of(&db, 14), [some("sent")]);
    assert_eq!(
        status_of(&db, 50),
        [some("delivered")],
        "rows without a key are untouched"
    );

    let errors: Vec<_> = messages(&db)
        .into_iter()
        .filter(|r| r.0 == 2)
        .map(|r| r.3)
        .collect();
    let note: serde_json::Value = serde_json::from_str(errors[0].as_deref().unwrap()).unwrap();
    assert_eq!(note["code"], 1008);
    assert_eq!(note["status_at"], "2025-11-22T01:05:00.456Z");

    let s = summary(&out);
    assert_eq!(s["rows_updated"], 9);
    assert_eq!(s["pending"], 6);
    assert_eq!(s["dead_lettered"], 12);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM bsp_loader_dead_letters"),
        12
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM bsp_loader_files"), 6);
}

#[test]
fn later_runs_read_only_new_files_and_match_late_rows_and_a_quiet_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bucket");
    let db = seeded_db(dir.path());
    copy_callbacks(&src, &FIXTURE_FILES[..2]);
    let first = run_job(&src, &db, &[], &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(summary(&first)["files"], 2);

    // Files and rows arrive between runs: rows for pending keys, and a late copy of K1.
    copy_callbacks(&src, &FIXTURE_FILES[2..]);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO messages (id, type, flow, status, bsp_message_id) VALUES
           (4, 'text', 'outbound', 'sent', '{K4}'), (12, 'text', 'outbound', 'sent', '{K12}');
         INSERT INTO messages (id, type, flow, status, bsp_status, bsp_message_id) VALUES
           (1, 'text', 'outbound', 'sent', 'enqueued', '{K1}');"
    ))
    .unwrap();
    drop(conn);
    let second = run_job(&src, &db, &[], &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(summary(&second)["files"], 4, "only the new files are read");
    assert_eq!(status_of(&db, 4), [Some("read".to_owned())]);
    assert_eq!(status_of(&db, 12), [Some("delivered".to_owned())]);
    assert_eq!(status_of(&db, 1), vec![Some("read".to_owned()); 3]);

    // The same table a single run over everything gives.
    let all = tempfile::tempdir().unwrap();
    let all_db = seeded_db(all.path());
    rusqlite::Connection::open(&all_db)
        .unwrap()
        .execute_batch(&format!(
            "INSERT INTO messages (id, type, flow, status, bsp_message_id) VALUES
               (4, 'text', 'outbound', 'sent', '{K4}'), (12, 'text', 'outbound', 'sent', '{K12}');
             INSERT INTO messages (id, type, flow, status, bsp_status, bsp_message_id) VALUES
               (1, 'text', 'outbound', 'sent', 'enqueued', '{K1}');"
        ))
        .unwrap();
    assert!(run_job(&src, &all_db, &[], &[]).status.success());
    assert_eq!(messages(&db), messages(&all_db));

    let before = messages(&db);
    let third = run_job(&src, &db, &[], &[]);
    assert!(third.status.success());
    assert_eq!(summary(&third)["files"], 0);
    assert_eq!(summary(&third)["rows_updated"], 0);
    assert_eq!(messages(&db), before);
}

#[test]
fn pending_keys_expire_after_their_time_to_live_counted_from_first_sight() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let src = fixtures().join("callbacks");
    let first = run_job(&src, &db, &["--now", "2030-01-01T00:00:00Z"], &[]);
    assert_eq!(summary(&first)["pending"], 6);
    // Six days on: still pending (the events are from 2025, but the clock starts at first sight).
    let later = run_job(&src, &db, &["--now", "2030-01-07T00:00:00Z"], &[]);
    assert_eq!(
        (
            summary(&later)["pending"].clone(),
            summary(&later)["expired"].clone()
        ),
        (6.into(), 0.into())
    );
    let expired = run_job(&src, &db, &["--now", "2030-01-08T00:00:01Z"], &[]);
    assert_eq!(
        (
            summary(&expired)["pending"].clone(),
            summary(&expired)["expired"].clone()
        ),
        (0.into(), 6.into())
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM bsp_loader_dead_letters WHERE reason LIKE 'no message row%'"
        ),
        6
    );
    // A shorter time-to-live can be chosen.
    let dir2 = tempfile::tempdir().unwrap();
    let db2 = seeded_db(dir2.path());
    run_job(&src, &db2, &["--now", "2030-01-01T00:00:00Z"], &[]);
    let short = run_job(
        &src,
        &db2,
        &["--now", "2030-01-01T02:00:00Z", "--pending-ttl", "1h"],
        &[],
    );
    assert_eq!(summary(&short)["expired"], 6);
}

#[test]
fn init_is_safe_to_repeat_and_adds_the_key_column() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE messages (id INTEGER, bsp_status TEXT); INSERT INTO messages VALUES (1, 'sent');")
        .unwrap();
    let target = format!("sqlite://{}", db.display());
    init_twice(&target);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = 'bsp_message_id'"
        ),
        1
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM messages"), 1);
}

#[test]
fn two_runs_at_once_on_one_target_neither_double_apply_nor_lose_anything() {
    let src = fixtures().join("callbacks");
    let clean = tempfile::tempdir().unwrap();
    let clean_db = seeded_db(clean.path());
    assert!(run_job(&src, &clean_db, &[], &[]).status.success());

    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let db = seeded_db(dir.path());
        let target = format!("sqlite://{}", db.display());
        let args = [
            "run",
            "--source",
            src.to_str().unwrap(),
            "--target",
            &target,
        ];
        let (a, b) = run_twice_at_once(&args, &[]);
        assert!(
            a.status.success() && b.status.success(),
            "{}{}",
            stderr(&a),
            stderr(&b)
        );
        assert_eq!(messages(&db), messages(&clean_db));
        for table in [
            "bsp_loader_files",
            "bsp_loader_pending",
            "bsp_loader_dead_letters",
        ] {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            assert_eq!(count(&db, &sql), count(&clean_db, &sql), "{table}");
        }
    }
}

#[test]
fn backfill_reprocesses_its_window_and_resumes_after_an_interruption() {
    let src = fixtures().join("callbacks");
    let clean = tempfile::tempdir().unwrap();
    let clean_db = seeded_db(clean.path());
    assert!(run_job(&src, &clean_db, &[], &[]).status.success());

    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let target = format!("sqlite://{}", db.display());
    let backfill = |from: &str, to: &str, envs: &[(&str, &str)]| {
        let args = [
            "backfill",
            "--source",
            src.to_str().unwrap(),
            "--target",
            &target,
            "--from",
            from,
            "--to",
            to,
            "--chunk-files",
            "2",
        ];
        run(&args, envs)
    };
    // Killed after its first chunk of two files: those stay done.
    let crashed = backfill(
        "2025-11-22",
        "2025-11-22",
        &[("BSP_FAILPOINT", "after-chunk")],
    );
    assert!(!crashed.status.success());
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM bsp_loader_files WHERE done_by = 'backfill_20251122_20251122'"
        ),
        2
    );
    // Run again, it reads only the rest.
    let resumed = backfill("2025-11-22", "2025-11-22", &[]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(summary(&resumed)["files"], 4);
    assert_eq!(messages(&db), messages(&clean_db));

    // A backfill reprocesses its window whatever the bookkeeping says, changes nothing
    // that is right already, and keeps no dead letter twice; done, it is done.
    let month = backfill("2025-11-01", "2025-11-30", &[]);
    assert!(month.status.success());
    let s = summary(&month);
    assert_eq!(
        (s["files"].clone(), s["rows_updated"].clone()),
        (6.into(), 0.into())
    );
    let again = summary(&backfill("2025-11-01", "2025-11-30", &[]));
    assert_eq!(again["files"], 0, "this backfill already did them");
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM bsp_loader_dead_letters"),
        12
    );
    assert_eq!(messages(&db), messages(&clean_db));
    // Outside the window: nothing.
    assert_eq!(
        summary(&backfill("2025-12-01", "2025-12-31", &[]))["files"],
        0
    );
}

#[test]
fn a_rewritten_file_replaces_its_dead_letters_instead_of_adding_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let src = dir.path().join("callbacks");
    std::fs::create_dir(&src).unwrap();
    let file = src.join("a.ndjson");
    std::fs::write(&file, "not json\n{\"also\":\"not a callback\"}\n").unwrap();
    let out = run_job(&src, &db, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dead = "SELECT COUNT(*) FROM bsp_loader_dead_letters WHERE file = 'a.ndjson'";
    assert_eq!(count(&db, dead), 2);
    // A new generation: longer, so size and time both tell it apart.
    std::fs::write(&file, "still not json at all\n").unwrap();
    let out = run_job(&src, &db, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary(&out)["files"], 1, "the new generation is read");
    assert_eq!(count(&db, dead), 1, "its one dead letter replaces the two");
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM bsp_loader_dead_letters WHERE line = 1 AND raw = 'still not json at all'"
        ),
        1
    );
}

#[test]
fn column_names_match_case_insensitively_as_sqlite_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let target = format!("sqlite://{}", db.display());
    let flags = [
        "--key-column",
        "BSP_Message_ID",
        "--status-column",
        "Bsp_Status",
        "--errors-column",
        "ERRORS",
    ];
    let mut args = vec!["init", "--target", &target];
    args.extend(flags);
    let out = run(&args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let src = fixtures().join("callbacks");
    let out = run_job(&src, &db, &flags, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The errors column was found under its other spelling: failures get their note.
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM messages WHERE bsp_status = 'error' AND errors LIKE '%bsp-status-loader%'"
        ) > 0
    );
}
