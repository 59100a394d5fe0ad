//! Applying batches to the SQLite target in any order gives the table that
//! applying all of them at once gives, and no row ever moves backwards.

use std::borrow::Cow;

use bsp_status_loader::batch::Batch;
use bsp_status_loader::callback::Event;
use bsp_status_loader::resolve::{Resolution, Timelines};
use bsp_status_loader::status::{STATUSES, Status};
use bsp_status_loader::target::{Columns, RunContext, Sqlite, Target, TimelineRow};
use proptest::prelude::*;

const INITIAL: [Option<&str>; 5] = [
    None,
    Some("seen"),
    Some("sent"),
    Some("delivered"),
    Some("read"),
];

fn target(rows: &[(u8, usize)]) -> Sqlite {
    let t = Sqlite::open(":memory:", Columns::default()).unwrap();
    block_on(t.init(true)).unwrap();
    t.with_connection(|c| {
        for (key, initial) in rows {
            c.execute(
                "INSERT INTO messages (id, bsp_message_id, bsp_status) VALUES (?1, ?2, ?3)",
                rusqlite::params![*key as i64, format!("k{key}"), INITIAL[*initial]],
            )
            .unwrap();
        }
    });
    t
}

fn table(t: &Sqlite) -> Vec<(String, Option<String>)> {
    t.with_connection(|c| {
        let mut s = c
            .prepare("SELECT bsp_message_id, bsp_status FROM messages ORDER BY rowid")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    })
}

/// The pending table as (key, status, status_at, error_code), by key.
fn pending(t: &Sqlite) -> Vec<(String, String, String, Option<i64>)> {
    t.with_connection(|c| {
        let mut s = c
            .prepare("SELECT bsp_message_id, bsp_status, status_at, error_code FROM bsp_loader_pending ORDER BY 1")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))).unwrap().map(Result::unwrap).collect()
    })
}

fn rank(s: &Option<String>) -> u8 {
    s.as_deref()
        .and_then(Status::from_written)
        .map_or(0, Status::rank)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn batch(events: &[(u8, usize, i64)]) -> Batch {
    let (mut resolution, mut timelines) = (Resolution::default(), Timelines::default());
    for &(k, s, t) in events {
        let status = STATUSES[s].2;
        let code = (status == Status::Error).then_some(t % 2);
        let event = Event {
            key: Cow::Owned(format!("k{k}")),
            status,
            at_ms: t * 1000,
            code,
        };
        resolution.add(&event);
        timelines.add(&event);
    }
    Batch {
        resolution,
        timelines,
        ..Batch::default()
    }
}

/// The timeline table, every column as text, by key.
fn timeline(t: &Sqlite) -> Vec<Vec<Option<String>>> {
    t.with_connection(|c| {
        let mut s = c
            .prepare("SELECT * FROM bsp_message_timeline ORDER BY bsp_message_id")
            .unwrap();
        let n = s.column_count();
        s.query_map([], |r| {
            (0..n)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                        rusqlite::types::Value::Null => None,
                        rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                        rusqlite::types::Value::Text(t) => Some(t),
                        other => Some(format!("{other:?}")),
                    })
                })
                .collect()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    })
}

/// The in-memory timelines of a batch as the table would hold them.
fn timeline_rows(b: &Batch) -> Vec<Vec<Option<String>>> {
    b.timelines
        .sorted()
        .into_iter()
        .map(|(k, t)| {
            let row = TimelineRow::new(k, &t);
            let mut cells = vec![Some(row.key.to_owned()), Some(row.first_at)];
            cells.extend(row.times);
            cells.push(row.error_code.map(|c| c.to_string()));
            cells
        })
        .collect()
}

fn ctx() -> RunContext {
    RunContext {
        run_id: "prop".into(),
        label: "prop".into(),
        now: chrono::Utc::now(),
        pending_ttl: chrono::Duration::days(7),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn batches_in_any_order_equal_all_at_once(
        rows in proptest::collection::vec((0..6u8, 0..INITIAL.len()), 0..10),
        batches in proptest::collection::vec(
            proptest::collection::vec((0..8u8, 0..STATUSES.len(), 0..3i64), 0..8), 1..5),
        order in any::<u64>(),
    ) {
        let all: Vec<_> = batches.iter().flatten().copied().collect();
        let once = target(&rows);
        block_on(once.apply(&batch(&all), &ctx())).unwrap();

        let stepwise = target(&rows);
        let mut order_rng = order;
        let mut remaining: Vec<_> = batches.clone();
        let mut before = table(&stepwise);
        while !remaining.is_empty() {
            order_rng = order_rng.wrapping_mul(6364136223846793005).wrapping_add(1);
            let next = remaining.remove((order_rng >> 33) as usize % remaining.len());
            block_on(stepwise.apply(&batch(&next), &ctx())).unwrap();
            let after = table(&stepwise);
            for (b, a) in before.iter().zip(&after) {
                prop_assert!(rank(&a.1) >= rank(&b.1), "{b:?} moved back to {a:?}");
            }
            before = after;
        }
        prop_assert_eq!(table(&stepwise), table(&once));
        // Timelines: each field a minimum, whatever the order and batching.
        prop_assert_eq!(timeline(&stepwise), timeline(&once));
        prop_assert_eq!(timeline(&once), timeline_rows(&batch(&all)));
        // The fold inside the database agrees with the in-memory resolution.
        let want: Vec<_> = batch(&all)
            .resolution
            .sorted()
            .into_iter()
            .map(|(k, r)| (k.to_owned(), r.status.written().to_owned(), r.status_at(), r.code))
            .collect();
        prop_assert_eq!(pending(&stepwise), want);
        // And each row holds the higher of its initial status and the resolution.
        let resolved = batch(&all).resolution;
        for (key, status) in table(&once) {
            let want = resolved.get(&key).map_or(0, |r| r.status.rank());
            prop_assert!(rank(&status) >= want);
        }
    }
}

/// Every messages row with its `errors` note, by rowid.
fn table_with_notes(t: &Sqlite) -> Vec<(String, Option<String>, Option<String>)> {
    t.with_connection(|c| {
        let mut s = c
            .prepare("SELECT bsp_message_id, bsp_status, errors FROM messages ORDER BY rowid")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    })
}

/// A batch of failure reports (key, time, code).
fn failures(reports: &[(u8, i64, i64)]) -> Batch {
    let mut resolution = Resolution::default();
    for &(k, t, code) in reports {
        resolution.add(&Event {
            key: Cow::Owned(format!("k{k}")),
            status: Status::Error,
            at_ms: t * 1000,
            code: Some(code),
        });
    }
    Batch {
        resolution,
        ..Batch::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The note (code, time) depends only on the set of failure reports: an
    /// earlier report arriving in a later run rewrites it.
    #[test]
    fn the_errors_note_does_not_depend_on_batching(
        reports in proptest::collection::vec((0..4u8, 0..5i64, 0..4i64), 1..12),
        split in proptest::collection::vec(0..4usize, 12),
    ) {
        let rows: Vec<(u8, usize)> = (0..4).map(|k| (k, 0)).collect();
        let once = target(&rows);
        block_on(once.apply(&failures(&reports), &ctx())).unwrap();

        let runs = target(&rows);
        for run in 0..4 {
            let part: Vec<_> = reports
                .iter()
                .zip(&split)
                .filter(|(_, r)| **r == run)
                .map(|(e, _)| *e)
                .collect();
            block_on(runs.apply(&failures(&part), &ctx())).unwrap();
        }
        prop_assert_eq!(table_with_notes(&runs), table_with_notes(&once));
    }
}
