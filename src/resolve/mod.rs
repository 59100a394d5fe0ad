//! Events → one status per message. The rule is a max over a total order, so the
//! answer does not depend on order, batching or repetition.

use std::cmp::Ordering;

use chrono::{DateTime, Datelike, Timelike};

use crate::callback::Event;
use crate::status::Status;

/// What a message resolves to: the highest status, the earliest time of it, and
/// (for `error`) that event's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub status: Status,
    pub at_ms: i64,
    pub code: Option<i64>,
}

/// What is kept per message while events are folded in: the status rule
/// (`Resolved`) or the whole timeline (`Timeline`).
pub trait Observation: Copy {
    fn of(event: &Event<'_>) -> Self;

    /// Folds another observation of the same message in. Commutative, associative
    /// and idempotent; returns whether `self` changed.
    fn absorb(&mut self, other: Self) -> bool;
}

impl Observation for Resolved {
    fn of(event: &Event<'_>) -> Self {
        Resolved {
            status: event.status,
            at_ms: event.at_ms,
            code: event.code,
        }
    }

    fn absorb(&mut self, other: Resolved) -> bool {
        let before = *self;
        // Greater: a higher status, or the same status seen earlier.
        let order = other
            .status
            .cmp(&self.status)
            .then(self.at_ms.cmp(&other.at_ms));
        match order {
            Ordering::Greater => *self = other,
            Ordering::Less => {}
            Ordering::Equal => {
                self.code = match (self.code, other.code) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        }
        *self != before
    }
}

impl Resolved {
    /// `status_at` as `resolve` prints it: UTC, milliseconds, `Z`.
    pub fn status_at(&self) -> String {
        format_ms(self.at_ms)
    }
}

/// The order `Resolved::absorb` keeps, best first, as data for stores that fold
/// inside the database (they write it in their SQL; the SQLite property tests
/// check the two agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// The higher status rank wins.
    RankDescending,
    /// Then the earlier time.
    TimeAscending,
    /// Then the smaller error code; a code beats none.
    CodeAscendingNullsLast,
}

/// Compared in this order: the first that differs decides.
pub const BEST_FIRST: [Criterion; 3] = [
    Criterion::RankDescending,
    Criterion::TimeAscending,
    Criterion::CodeAscendingNullsLast,
];

/// An epoch time in milliseconds as RFC 3339 UTC with milliseconds and `Z`;
/// fixed width for years 1970..=9999, so such texts sort as times.
pub fn format_ms(ms: i64) -> String {
    let mut text = [0; TIME_LEN];
    write_ms(ms, &mut text);
    String::from_utf8(text.to_vec()).expect("digits and punctuation")
}

/// Length of `format_ms`'s text: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const TIME_LEN: usize = 24;

/// `format_ms` without allocating: the output loop writes hundreds of thousands.
fn write_ms(ms: i64, out: &mut [u8; TIME_LEN]) {
    let t = DateTime::from_timestamp_millis(ms).expect("times are bounded to years 1970..=9999");
    let (year, ms) = (t.year() as u32, t.timestamp_subsec_millis());
    let pairs = [
        year / 100,
        year % 100,
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms / 10,
    ];
    // Where each pair of digits goes in `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    let at = [0, 2, 5, 8, 11, 14, 17, 20];
    *out = *b"0000-00-00T00:00:00.000Z";
    for (value, at) in pairs.into_iter().zip(at) {
        out[at] = b'0' + (value / 10 % 10) as u8;
        out[at + 1] = b'0' + (value % 10) as u8;
    }
    out[22] = b'0' + (ms % 10) as u8;
}

/// The status of each message.
pub type Resolution = Fold<Resolved>;
/// The timeline of each message.
pub type Timelines = Fold<Timeline>;

/// Appends one output line of `resolve` for `key` to `out`: `{"bsp_message_id",
/// "bsp_status", "status_at", "error_code"}`, byte for byte what serde_json would
/// write for such a struct, without its per-field work (a test holds the two equal).
pub fn write_row(out: &mut Vec<u8>, key: &str, r: &Resolved) {
    write_key(out, key);
    out.extend_from_slice(br#","bsp_status":""#);
    out.extend_from_slice(r.status.written().as_bytes());
    out.extend_from_slice(br#"","status_at":""#);
    let mut time = [0; TIME_LEN];
    write_ms(r.at_ms, &mut time);
    out.extend_from_slice(&time);
    out.extend_from_slice(br#"","error_code":"#);
    match r.code {
        Some(code) => out.extend_from_slice(code.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}

/// Opens an output line: `{"bsp_message_id":"<key, JSON-escaped>"`.
fn write_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(br#"{"bsp_message_id":"#);
    // No early exit: a loop over every byte becomes vector code (keys are short).
    if key.bytes().fold(false, |seen, b| {
        seen | (b == b'"') | (b == b'\\') | (b < 0x20)
    }) {
        serde_json::to_writer(&mut *out, key).expect("writing to memory");
    } else {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.push(b'"');
    }
}

mod fold;
mod index;
mod key;
pub mod spill;
mod timeline;

pub use fold::{Fold, Prepared};
pub use key::Key;
pub use timeline::{FIELDS as TIMELINE_FIELDS, Timeline, write_timeline_row};

#[cfg(test)]
mod tests;
