use std::borrow::Cow;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::status::STATUSES;

fn ev(key: &str, status: Status, at_ms: i64, code: Option<i64>) -> Event<'static> {
    Event {
        key: Cow::Owned(key.to_owned()),
        status,
        at_ms,
        code,
    }
}

fn fold_all<V: Observation>(events: &[Event<'_>]) -> Fold<V> {
    let mut r = Fold::default();
    events.iter().for_each(|e| {
        r.add(e);
    });
    r
}

fn resolve_all(events: &[Event<'_>]) -> Resolution {
    fold_all(events)
}

#[test]
fn highest_rank_wins_whatever_the_order() {
    let events = [
        ev("k", Status::Read, 60_000, None),
        ev("k", Status::Delivered, 90_000, None), // late delivered must not replace read
        ev("k", Status::Sent, 1_000, None),
    ];
    assert_eq!(resolve_all(&events).get("k").unwrap().status, Status::Read);
    let failed_after_delivered = [
        ev("k", Status::Delivered, 5, None),
        ev("k", Status::Error, 9, Some(1)),
    ];
    assert_eq!(
        resolve_all(&failed_after_delivered)
            .get("k")
            .unwrap()
            .status,
        Status::Delivered
    );
}

#[test]
fn status_at_is_the_earliest_time_of_the_winning_status() {
    let events = [
        ev("k", Status::Read, 900, None),
        ev("k", Status::Read, 600, None),
        ev("k", Status::Sent, 1, None),
    ];
    assert_eq!(resolve_all(&events).get("k").unwrap().at_ms, 600);
}

#[test]
fn error_code_is_the_earliest_failures_and_ties_take_the_smallest() {
    let events = [
        ev("k", Status::Error, 50, Some(131047)),
        ev("k", Status::Error, 50, Some(131026)),
        ev("k", Status::Error, 50, None),
        ev("k", Status::Error, 40, None),
        ev("k", Status::Error, 70, Some(1)),
    ];
    let r = *resolve_all(&events).get("k").unwrap();
    assert_eq!((r.at_ms, r.code), (40, None));
    let r = *resolve_all(&events[..3]).get("k").unwrap();
    assert_eq!((r.at_ms, r.code), (50, Some(131026)));
}

#[test]
fn output_rows_are_sorted_by_bytes_and_formatted() {
    let events = [
        ev("b", Status::Sent, 1_763_773_200_123, None),
        ev("B", Status::Error, 0, Some(7)),
        ev("a", Status::Read, 1, None),
    ];
    let mut out = Vec::new();
    resolve_all(&events)
        .write_sorted(write_row, 2, &mut out)
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        [
            r#"{"bsp_message_id":"B","bsp_status":"error","status_at":"1970-01-01T00:00:00.000Z","error_code":7}"#,
            r#"{"bsp_message_id":"a","bsp_status":"read","status_at":"1970-01-01T00:00:00.001Z","error_code":null}"#,
            r#"{"bsp_message_id":"b","bsp_status":"sent","status_at":"2025-11-22T01:00:00.123Z","error_code":null}"#,
            "",
        ]
        .join("\n")
    );
}

proptest! {
    // Large inputs, so rows span several blocks and rounds: few cases.
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn rows_come_out_sorted_by_bytes_in_one_piece(
        keys in proptest::collection::btree_set(
            // Some keys share a long start (as wamids of one phone do), some past
            // the depth where alike keys are compared whole; NULs read as padding.
            (
                prop_oneof![
                    Just(""),
                    Just("wamid.HBgMOTE5"),
                    Just("wamid.HBgMOTE5ODc2NTQzMjEwFQIAERgSQzk4RjE2QjE1REY1RTA2ODUxQUE0REUyAB"),
                ],
                "[a-c\u{0}\u{e9}]{0,10}",
            )
                .prop_map(|(start, end)| format!("{start}{end}")),
            0..60_000,
        )
        // Added in no particular order: in key order, the sort would find them sorted.
        .prop_map(Vec::from_iter)
        .prop_shuffle()
    ) {
        let mut resolution = Resolution::default();
        for key in &keys {
            resolution.add(&ev(key, Status::Read, 1, None));
        }
        let mut out = Vec::new();
        resolution.write_sorted(write_row, 3, &mut out).unwrap();
        let written: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["bsp_message_id"].as_str().unwrap().to_owned())
            .collect();
        let mut sorted = keys;
        sorted.sort_unstable();
        prop_assert_eq!(written, sorted);
    }
}

/// The status rule (highest rank; its earliest time; that time's smallest code) written the plain way, as an oracle.
fn oracle(events: &[Event<'_>]) -> BTreeMap<String, (Status, i64, Option<i64>)> {
    let mut by_key: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    events
        .iter()
        .for_each(|e| by_key.entry(e.key.to_string()).or_default().push(e));
    by_key
        .into_iter()
        .map(|(k, es)| {
            let top = es.iter().map(|e| e.status).max().unwrap();
            let at = es
                .iter()
                .filter(|e| e.status == top)
                .map(|e| e.at_ms)
                .min()
                .unwrap();
            let code = es
                .iter()
                .filter(|e| e.status == top && e.at_ms == at)
                .filter_map(|e| e.code)
                .min();
            (k, (top, at, code))
        })
        .collect()
}

fn as_map(r: &Resolution) -> BTreeMap<String, (Status, i64, Option<i64>)> {
    r.iter()
        .map(|(k, v)| (k.to_owned(), (v.status, v.at_ms, v.code)))
        .collect()
}

pub fn arb_events() -> impl Strategy<Value = Vec<Event<'static>>> {
    let event = (
        0..6u8,
        0..STATUSES.len(),
        0..4i64,
        proptest::option::of(0..3i64),
    )
        .prop_map(|(k, s, t, c)| {
            let status = STATUSES[s].2;
            let code = if status == Status::Error { c } else { None };
            ev(&format!("key-{k}"), status, t * 1000, code)
        });
    proptest::collection::vec(event, 0..40)
}

proptest! {
    #[test]
    fn resolution_matches_the_plain_rules(events in arb_events()) {
        prop_assert_eq!(as_map(&resolve_all(&events)), oracle(&events));
    }

    #[test]
    fn order_batching_and_repetition_do_not_matter(
        events in arb_events(),
        seed in any::<u64>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
        repeats in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let batches = reordered_batches(&events, seed, &cuts, &repeats);
        prop_assert_eq!(merged::<Resolved>(&batches), resolve_all(&events));
        prop_assert_eq!(merged::<Timeline>(&batches), fold_all::<Timeline>(&events));
        // The pipeline's way: every thread's fold merged at once, shards side by side.
        let folds: Vec<Resolution> = batches.iter().map(|b| fold_all(b)).collect();
        let all = Fold::merge_all(folds, 3);
        prop_assert_eq!(as_map(&all), oracle(&events));
        let whole = resolve_all(&events);
        prop_assert_eq!(all.sorted(), whole.sorted());
    }

    #[test]
    fn timelines_match_the_plain_rules_and_give_the_same_status(events in arb_events()) {
        let timelines: Timelines = fold_all(&events);
        prop_assert_eq!(timeline_map(&timelines), timeline_oracle(&events));
        prop_assert_eq!(as_map(&timelines.statuses()), oracle(&events));
    }
}

/// The events repeated, shuffled and cut into batches, as runs and files would.
fn reordered_batches<'a>(
    events: &[Event<'a>],
    seed: u64,
    cuts: &[usize],
    repeats: &[usize],
) -> Vec<Vec<Event<'a>>> {
    let mut shuffled = events.to_vec();
    for r in repeats {
        if !events.is_empty() {
            shuffled.push(events[r % events.len()].clone());
        }
    }
    let mut rng = seed;
    for i in (1..shuffled.len()).rev() {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        shuffled.swap(i, (rng >> 33) as usize % (i + 1));
    }
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (shuffled.len() + 1)).collect();
    bounds.push(0);
    bounds.push(shuffled.len());
    bounds.sort_unstable();
    bounds
        .windows(2)
        .map(|w| shuffled[w[0]..w[1]].to_vec())
        .collect()
}

/// Each batch folded alone, then the folds merged.
fn merged<V: Observation + PartialEq + std::fmt::Debug>(batches: &[Vec<Event<'_>>]) -> Fold<V> {
    let mut merged = Fold::default();
    for batch in batches {
        merged.merge(fold_all::<V>(batch));
    }
    merged
}

/// Per key: the earliest time of each status (by rank − 1), and the smallest
/// code among the failures at the earliest failure time: written plainly.
type TimelineRow = ([Option<i64>; 7], Option<i64>);

fn timeline_oracle(events: &[Event<'_>]) -> BTreeMap<String, TimelineRow> {
    let mut out: BTreeMap<String, TimelineRow> = BTreeMap::new();
    for e in events {
        let row = out.entry(e.key.to_string()).or_default();
        let slot = &mut row.0[usize::from(e.status.rank() - 1)];
        *slot = Some(slot.map_or(e.at_ms, |t| t.min(e.at_ms)));
    }
    for (key, row) in &mut out {
        let first_failure = row.0[usize::from(Status::Error.rank() - 1)];
        row.1 = events
            .iter()
            .filter(|e| {
                *e.key == **key && e.status == Status::Error && Some(e.at_ms) == first_failure
            })
            .filter_map(|e| e.code)
            .min();
    }
    out
}

fn timeline_map(t: &Timelines) -> BTreeMap<String, TimelineRow> {
    t.iter()
        .map(|(k, v)| {
            let times = STATUSES.map(|(_, _, s)| v.at(s));
            (k.to_owned(), (times, v.error_code()))
        })
        .collect()
}

#[test]
fn a_timeline_keeps_every_first_report_and_the_earliest_failures_code() {
    let events = [
        ev("k", Status::Read, 900, None),
        ev("k", Status::Sent, 100, None),
        ev("k", Status::Error, 300, Some(470)),
        ev("k", Status::Error, 200, Some(1008)),
        ev("k", Status::Delivered, 500, None),
        ev("k", Status::Sent, 50, None),
    ];
    let t = *fold_all::<Timeline>(&events).get("k").unwrap();
    assert_eq!(t.at(Status::Sent), Some(50));
    assert_eq!(t.at(Status::Error), Some(200));
    assert_eq!(t.error_code(), Some(1008));
    assert_eq!(t.at(Status::Enqueued), None);
    let mut line = Vec::new();
    write_timeline_row(&mut line, "k", &t);
    let text = String::from_utf8(line.clone()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    let mut want = vec!["bsp_message_id"];
    want.extend(TIMELINE_FIELDS);
    want.push("error_code");
    assert_eq!(
        v.as_object().unwrap().len(),
        want.len(),
        "exactly these fields"
    );
    let at: Vec<usize> = want
        .iter()
        .map(|f| text.find(&format!("\"{f}\":")).unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in this order: {text}");
    assert_eq!(v["sent_at"], "1970-01-01T00:00:00.050Z");
    assert_eq!(v["enqueued_at"], serde_json::Value::Null);
    assert_eq!(v["error_code"], 1008);
}

/// The output row as serde_json writes it: the oracle for `write_row`.
#[derive(serde::Serialize)]
struct OutputRow<'a> {
    bsp_message_id: &'a str,
    bsp_status: &'static str,
    status_at: String,
    error_code: Option<i64>,
}

impl<'a> OutputRow<'a> {
    fn new(key: &'a str, r: &Resolved) -> Self {
        OutputRow {
            bsp_message_id: key,
            bsp_status: r.status.written(),
            status_at: r.status_at(),
            error_code: r.code,
        }
    }
}

proptest! {
    #[test]
    fn written_rows_are_what_serde_json_writes(
        key in "[a-z\"\\\\\u{1}\u{e9}-]{0,12}",
        s in 0..STATUSES.len(),
        at_ms in 0..=253_402_300_799_999i64,
        code in proptest::option::of(any::<i64>()),
    ) {
        let r = Resolved { status: STATUSES[s].2, at_ms, code };
        let mut fast = Vec::new();
        write_row(&mut fast, &key, &r);
        let mut expected = serde_json::to_vec(&OutputRow::new(&key, &r)).unwrap();
        expected.push(b'\n');
        prop_assert_eq!(String::from_utf8(fast).unwrap(), String::from_utf8(expected).unwrap());
        let chrono_text = chrono::DateTime::from_timestamp_millis(at_ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        prop_assert_eq!(r.status_at(), chrono_text);
    }
}
