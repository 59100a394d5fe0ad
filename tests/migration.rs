//! `init` upgrades the job's tables as the previous release (commit f70c4d4)
//! made them: the files table's `run_id` becomes `done_by`, the pending table
//! gains `partition_at` and `last_tried_at`; rows survive and runs go on.
//! The previous release's schemas are kept in tests/previous_release/.

mod common;

use std::path::Path;

use common::*;

/// The job's tables as the previous release's `init` created them in SQLite.
const PREVIOUS_SQLITE: &str = r#"
CREATE TABLE "bsp_loader_pending" ("bsp_message_id" TEXT NOT NULL, "bsp_status" TEXT NOT NULL,
  "status_at" TEXT NOT NULL, "error_code" INTEGER, "errors_note" TEXT, "first_seen_at" TEXT NOT NULL,
  "matched_at" TEXT, PRIMARY KEY (bsp_message_id));
CREATE TABLE "bsp_loader_files" ("object_name" TEXT NOT NULL, "generation" TEXT NOT NULL,
  "run_id" TEXT NOT NULL, "processed_at" TEXT NOT NULL, PRIMARY KEY (object_name, generation));
INSERT INTO bsp_loader_pending VALUES ('old-key', 'sent', '2025-11-22T00:00:00.000Z', NULL, NULL,
  '2025-11-22T00:00:00.000Z', NULL);
INSERT INTO bsp_loader_files VALUES ('2025/11/22/01/v2.ndjson', 'g-old', 'backfill_x', '2025-11-22T00:00:00.000Z');
"#;

fn columns(db: &Path, table: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The column names of a schema file, in order.
fn schema(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let fields: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    fields
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_previous_releases_sqlite_tables_are_the_ones_kept_in_tests() {
    // So the SQL above stays the previous release's shape.
    assert_eq!(
        schema("tests/previous_release/files.json"),
        ["object_name", "generation", "run_id", "processed_at"]
    );
    assert_eq!(
        schema("tests/previous_release/pending.json").len() + 2,
        schema("schemas/pending.json").len()
    );
}

#[test]
fn init_upgrades_the_previous_releases_sqlite_tables_and_runs_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(PREVIOUS_SQLITE)
        .unwrap();
    let target = format!("sqlite://{}", db.display());
    init_twice(&target);
    assert_eq!(
        columns(&db, "bsp_loader_files"),
        schema("schemas/files.json")
    );
    assert_eq!(
        columns(&db, "bsp_loader_pending"),
        schema("schemas/pending.json")
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM bsp_loader_files WHERE done_by = 'backfill_x'"
        ),
        1,
        "the old label kept under its new name"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM bsp_loader_pending WHERE bsp_message_id = 'old-key' AND last_tried_at IS NULL"
        ),
        1
    );

    let out = run_job(&fixtures().join("callbacks"), &db, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM bsp_loader_files WHERE done_by IS NOT NULL"
        ) > 1
    );
    assert!(count(&db, "SELECT COUNT(*) FROM bsp_loader_pending") > 1);
}
