//! One contract for every store, written once and run against each: the rank
//! guard on every copy, pending keys and their time-to-live, matched keys kept,
//! dead letters and files recorded once, an idempotent rerun, and a crash
//! between any two steps. SQLite runs always; BigQuery (bqemulator behind the
//! strict double) with the `emulator-tests` feature. A third store needs its
//! own `Store` and one `contract!` line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// A messages row to seed: (id, key, bsp_status).
type Seed = (i64, Option<&'static str>, Option<&'static str>);
/// A messages row read back: (id, key, bsp_status).
type Row = (i64, Option<String>, Option<String>);

/// What the contract needs of a store: somewhere to write, and a way to look.
trait Store {
    /// A new target whose messages table holds `rows`.
    fn new(rows: &[Seed]) -> Self;
    /// The `--target` URL.
    fn target(&self) -> String;
    /// Appends rows, as Glific does after the callbacks came.
    fn add(&self, rows: &[Seed]);
    /// Every messages row, sorted.
    fn messages(&self) -> Vec<Row>;
    /// The row count of one of the job's own tables.
    fn count(&self, table: &str) -> i64;
    /// The failpoints between the steps of this store's apply.
    const CRASH_POINTS: &'static [&'static str];
}

const K1: &str = "k-0001";
const K2: &str = "k-0002";
const K3: &str = "k-0003";
const K9: &str = "k-0009";
const K10: &str = "k-0010";
/// 2025-11-22T08:26:40Z, the day the seeded rows were inserted.
const TS: i64 = 1_763_800_000;

/// A folder of callback files, each given as its lines.
fn folder(files: &[(&str, Vec<String>)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("bucket");
    for (name, lines) in files {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }
    (dir, src)
}

fn run_on(store: &impl Store, src: &Path, envs: &[(&str, &str)]) -> Output {
    run_into(src, &store.target(), &[], envs)
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

fn row(id: i64, key: &str, status: Option<&str>) -> Row {
    (id, Some(key.to_owned()), status.map(str::to_owned))
}

fn later(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339()
}

fn guard_on_every_copy<S: Store>() {
    let store = S::new(&[
        (1, Some(K1), None),
        (1, Some(K1), Some("enqueued")),
        (2, Some(K2), Some("read")),
        (3, Some(K3), Some("seen")),
    ]);
    let (_dir, src) = folder(&[(
        "2025/11/22/a.ndjson",
        vec![
            v2_line(K1, "delivered", TS, None),
            v2_line(K2, "delivered", TS, None),
            v2_line(K3, "sent", TS, None),
        ],
    )]);
    ok(run_on(&store, &src, &[]));
    assert_eq!(
        store.messages(),
        [
            row(1, K1, Some("delivered")),
            row(1, K1, Some("delivered")),
            row(2, K2, Some("read")),
            row(3, K3, Some("sent")),
        ]
    );
}

fn pending_keys_wait_are_kept_once_matched_and_expire<S: Store>() {
    let store = S::new(&[(1, Some(K1), None)]);
    let (_dir, src) = folder(&[(
        "2025/11/22/a.ndjson",
        vec![
            v2_line(K9, "read", TS, None),
            v2_line(K10, "sent", TS, None),
        ],
    )]);
    ok(run_on(&store, &src, &[]));
    assert_eq!(store.count("bsp_loader_pending"), 2);

    // K9's row arrives; then a second copy of it.
    store.add(&[(9, Some(K9), None)]);
    ok(run_on(&store, &src, &[]));
    store.add(&[(9, Some(K9), Some("sent"))]);
    ok(run_on(&store, &src, &[]));
    let nine: Vec<Row> = store.messages().into_iter().filter(|r| r.0 == 9).collect();
    assert_eq!(nine, [row(9, K9, Some("read")), row(9, K9, Some("read"))]);
    assert_eq!(
        store.count("bsp_loader_pending"),
        2,
        "matched keys are kept"
    );

    // Past the time-to-live: the matched key is dropped, the unmatched one dead-lettered.
    ok(run_on(&store, &src, &[("BSP_NOW", &later(8))]));
    assert_eq!(store.count("bsp_loader_pending"), 0);
    assert_eq!(store.count("bsp_loader_dead_letters"), 1);
}

fn dead_letters_and_files_once_and_a_rerun_changes_nothing<S: Store>() {
    let store = S::new(&[(1, Some(K1), None)]);
    let (_dir, src) = folder(&[
        (
            "2025/11/22/a.ndjson",
            vec![v2_line(K1, "read", TS, None), "{not json".into()],
        ),
        ("2025/11/22/b.ndjson", vec![v2_line(K1, "sent", TS, None)]),
    ]);
    let first = ok(run_on(&store, &src, &[]));
    assert_eq!(summary(&first)["files"], 2);
    let before = store.messages();
    assert_eq!(before, [row(1, K1, Some("read"))]);
    let again = ok(run_on(&store, &src, &[]));
    assert_eq!(summary(&again)["files"], 0);
    assert_eq!(summary(&again)["rows_updated"], 0);
    assert_eq!(store.messages(), before);
    assert_eq!(store.count("bsp_loader_dead_letters"), 1);
    assert_eq!(store.count("bsp_loader_files"), 2);
}

fn a_crash_between_steps_then_a_rerun_converges<S: Store>() {
    let seed = [(1, Some(K1), Some("enqueued")), (2, Some(K2), None)];
    let (_dir, src) = folder(&[(
        "2025/11/22/a.ndjson",
        vec![
            v2_line(K1, "read", TS, None),
            v2_line(K2, "failed", TS, Some(1002)),
            v2_line(K9, "sent", TS, None),
            "[]".into(),
        ],
    )]);
    let clean = S::new(&seed);
    ok(run_on(&clean, &src, &[]));
    let tables = [
        "bsp_loader_pending",
        "bsp_loader_dead_letters",
        "bsp_loader_files",
    ];
    let books = |s: &S| tables.map(|t| s.count(t));
    for point in S::CRASH_POINTS {
        let store = S::new(&seed);
        let crashed = run_on(&store, &src, &[("BSP_FAILPOINT", point)]);
        assert!(!crashed.status.success(), "{point}: the failpoint fired");
        ok(run_on(&store, &src, &[]));
        assert_eq!(store.messages(), clean.messages(), "{point}");
        assert_eq!(books(&store), books(&clean), "{point}");
    }
}

/// The contract's tests for one store.
macro_rules! contract {
    ($name:ident, $store:ty) => {
        mod $name {
            use super::*;

            #[test]
            fn the_guard_holds_on_every_copy() {
                guard_on_every_copy::<$store>();
            }

            #[test]
            fn pending_keys_wait_are_kept_once_matched_and_expire() {
                super::pending_keys_wait_are_kept_once_matched_and_expire::<$store>();
            }

            #[test]
            fn dead_letters_and_files_once_and_a_rerun_changes_nothing() {
                super::dead_letters_and_files_once_and_a_rerun_changes_nothing::<$store>();
            }

            #[test]
            fn a_crash_between_steps_then_a_rerun_converges() {
                super::a_crash_between_steps_then_a_rerun_converges::<$store>();
            }
        }
    };
}

contract!(sqlite, Sqlite);
#[cfg(feature = "emulator-tests")]
contract!(bigquery, bigquery_store::BigQuery);

/// A SQLite file in a folder of its own.
struct Sqlite {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

impl Sqlite {
    fn conn(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).unwrap()
    }
}

impl Store for Sqlite {
    fn new(rows: &[Seed]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let store = Sqlite { _dir: dir, db };
        let init = run(
            &["init", "--target", &store.target(), "--create-messages"],
            &[],
        );
        assert!(init.status.success(), "{}", stderr(&init));
        store.add(rows);
        store
    }

    fn target(&self) -> String {
        format!("sqlite://{}", self.db.display())
    }

    fn add(&self, rows: &[Seed]) {
        let conn = self.conn();
        for (id, key, status) in rows {
            conn.execute(
                "INSERT INTO messages (id, type, flow, status, sender_phone, receiver_phone,
                   contact_phone, inserted_at, bsp_status, bsp_message_id)
                 VALUES (?1, 'text', 'outbound', 'sent', 'x', 'x', 'x', '2025-11-22 06:30:00', ?2, ?3)",
                rusqlite::params![id, status, key],
            )
            .unwrap();
        }
    }

    fn messages(&self) -> Vec<Row> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, bsp_message_id, bsp_status FROM messages ORDER BY id, bsp_status")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn count(&self, table: &str) -> i64 {
        self.conn()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    const CRASH_POINTS: &'static [&'static str] = &["after-update", "before-commit"];
}

#[cfg(feature = "emulator-tests")]
mod bigquery_store {
    use super::*;
    use common::emulators::{Emulators, emulators, unique};

    /// A dataset of its own in bqemulator, behind the strict double.
    pub struct BigQuery {
        emu: Emulators,
        dataset: String,
        runtime: tokio::runtime::Runtime,
    }

    impl Store for BigQuery {
        fn new(rows: &[Seed]) -> Self {
            let store = BigQuery {
                emu: emulators(),
                dataset: unique("conformance"),
                runtime: tokio::runtime::Runtime::new().unwrap(),
            };
            store.runtime.block_on(store.emu.dataset(&store.dataset));
            store.add(rows);
            store
        }

        fn target(&self) -> String {
            format!("bigquery://demo/{}/messages", self.dataset)
        }

        fn add(&self, rows: &[Seed]) {
            let rows: Vec<_> = rows
                .iter()
                .map(|(id, key, status)| {
                    (*id, key.map(str::to_owned), *status, "2025-11-22T06:30:00")
                })
                .collect();
            self.runtime.block_on(self.emu.rows(&self.dataset, &rows));
        }

        fn messages(&self) -> Vec<Row> {
            let sql = format!(
                "SELECT id, bsp_message_id, bsp_status FROM `demo.{}.messages` ORDER BY id, bsp_status",
                self.dataset
            );
            self.runtime
                .block_on(self.emu.query(&sql))
                .into_iter()
                .map(|r| {
                    (
                        r[0].as_deref().unwrap().parse().unwrap(),
                        r[1].clone(),
                        r[2].clone(),
                    )
                })
                .collect()
        }

        fn count(&self, table: &str) -> i64 {
            let sql = format!("SELECT COUNT(*) FROM `demo.{}.{table}`", self.dataset);
            let rows = self.runtime.block_on(self.emu.query(&sql));
            rows[0][0].as_deref().unwrap().parse().unwrap()
        }

        const CRASH_POINTS: &'static [&'static str] = &["after-stage", "after-merge"];
    }
}
