//! Listing from a watermark (SQLite target, local folder): a quiet run lists
//! only names from where the last run safely ended, a daily full listing finds
//! files written late under old names, and old bookkeeping is forgotten.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use common::*;

/// Writes one V2 callback file, last modified `age` before `now`.
fn put(src: &Path, name: &str, id: &str, now: SystemTime, age: Duration) {
    let path = src.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, v2_line(id, "read", 1_763_800_000, None) + "\n").unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(now - age).unwrap();
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `reading files` record of a run.
fn reading(out: &std::process::Output) -> serde_json::Value {
    stderr(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "reading files" || v["message"] == "reading files")
        .unwrap_or_else(|| panic!("no listing record in {}", stderr(out)))
}

fn field(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v.get("fields")
        .and_then(|f| f.get(name))
        .or_else(|| v.get(name))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

fn run_at(src: &Path, db: &Path, at: SystemTime) -> std::process::Output {
    let out = run_job(
        src,
        db,
        &["--create-messages"],
        &[("BSP_NOW", &rfc3339(at))],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

fn seen(db: &Path, id: &str) -> bool {
    count(
        db,
        &format!("SELECT COUNT(*) FROM bsp_loader_pending WHERE bsp_message_id = '{id}'"),
    ) == 1
}

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn a_quiet_run_lists_from_the_watermark_and_a_daily_full_listing_finds_late_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bucket");
    let db = dir.path().join("t.db");
    let now = SystemTime::now();
    for (hour, age) in [("01", 5), ("02", 4), ("03", 3), ("04", 1), ("05", 0)] {
        let name = format!("p/2026/11/20/{hour}/a.ndjson");
        put(&src, &name, &format!("m{hour}"), now, HOUR * age);
    }
    let first = run_at(&src, &db, now);
    assert_eq!(field(&reading(&first), "listed"), 5);
    assert_eq!(field(&reading(&first), "full_listing"), true);

    // Written since: one under a new name, one late under an old one.
    put(&src, "p/2026/11/20/06/a.ndjson", "m06", now, Duration::ZERO);
    put(
        &src,
        "p/2026/11/20/01/late.ndjson",
        "late",
        now,
        Duration::ZERO,
    );
    let second = run_at(&src, &db, now + HOUR / 6);
    let listing = reading(&second);
    // From 03 (the last name older than the 2 h grace): 03, 04, 05, 06.
    assert_eq!(field(&listing, "listed_from"), "p/2026/11/20/03/a.ndjson");
    assert_eq!(field(&listing, "listed"), 4);
    assert_eq!(field(&listing, "bookkeeping_rows"), 3, "03, 04 and 05 only");
    assert_eq!(field(&listing, "to_read"), 1);
    assert!(seen(&db, "m06"));
    assert!(
        !seen(&db, "late"),
        "not listed until the daily full listing"
    );

    let third = run_at(&src, &db, now + HOUR * 25);
    let listing = reading(&third);
    assert_eq!(field(&listing, "full_listing"), true);
    assert_eq!(field(&listing, "to_read"), 1);
    assert!(seen(&db, "late"));
    assert!(stderr(&third).contains("late_files"), "{}", stderr(&third));
}

#[test]
fn files_done_long_ago_are_forgotten_and_not_read_again_but_a_rewrite_is() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bucket");
    let db = dir.path().join("t.db");
    let now = SystemTime::now();
    put(&src, "p/2026/11/01/a.ndjson", "a", now, HOUR * 30);
    put(&src, "p/2026/11/02/b.ndjson", "b", now, HOUR * 30);
    run_at(&src, &db, now);
    let files = "SELECT COUNT(*) FROM bsp_loader_files";
    assert_eq!(count(&db, files), 2);

    // Nine days on, the daily full listing forgets files done more than 7 days ago…
    let later = now + HOUR * 24 * 9;
    let out = run_at(&src, &db, later);
    assert_eq!(field(&reading(&out), "to_read"), 0);
    assert_eq!(count(&db, files), 0, "forgotten");
    // …and takes their objects, older than that, as done.
    let out = run_at(&src, &db, later + HOUR * 25);
    assert_eq!(field(&reading(&out), "full_listing"), true);
    assert_eq!(field(&reading(&out), "to_read"), 0);

    // A new generation is read again: under an old name, by the next full listing.
    put(&src, "p/2026/11/01/a.ndjson", "a2", later, Duration::ZERO);
    let out = run_at(&src, &db, later + HOUR * 26);
    assert_eq!(field(&reading(&out), "to_read"), 0);
    let out = run_at(&src, &db, later + HOUR * 50);
    assert_eq!(field(&reading(&out), "to_read"), 1);
    assert!(seen(&db, "a2"));
}

#[test]
fn init_adds_the_watermarks_table_to_a_target_made_by_the_previous_release() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bucket");
    let db = dir.path().join("t.db");
    let now = SystemTime::now();
    put(&src, "p/1.ndjson", "one", now, HOUR * 5);
    run_at(&src, &db, now);
    // The previous release had no watermarks table.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE bsp_loader_watermarks")
        .unwrap();
    put(&src, "p/2.ndjson", "two", now, HOUR * 5);
    let out = run_at(&src, &db, now + HOUR);
    assert_eq!(field(&reading(&out), "to_read"), 1);
    assert!(seen(&db, "two"));
    let marks = "SELECT COUNT(*) FROM bsp_loader_watermarks WHERE start = 'p/2.ndjson'";
    assert_eq!(count(&db, marks), 1);
}
