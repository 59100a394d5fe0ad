//! Each message's timeline: the earliest time each status was reported, and the
//! code of the earliest failure. Every field is a minimum, so, like the status
//! rule, the answer depends only on the set of callbacks.

use crate::callback::Event;
use crate::status::{STATUSES, Status};

use super::{Observation, Resolved, TIME_LEN, write_key, write_ms};

/// No report of that status yet.
const NEVER: i64 = i64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeline {
    /// Earliest report of each status, by rank − 1 (`NEVER` when none).
    first: [i64; STATUSES.len()],
    /// The code of the earliest failure (ties: the smallest code).
    error_code: Option<i64>,
}

impl Timeline {
    /// A timeline as a store holds it: each status's first report (rank order), if
    /// any, and the earliest failure's code. None when nothing was reported.
    pub fn from_parts(
        times: [Option<i64>; STATUSES.len()],
        error_code: Option<i64>,
    ) -> Option<Self> {
        times.iter().any(Option::is_some).then(|| Timeline {
            first: times.map(|t| t.unwrap_or(NEVER)),
            error_code,
        })
    }

    /// When `status` was first reported.
    pub fn at(&self, status: Status) -> Option<i64> {
        Some(self.first[slot(status)]).filter(|&t| t != NEVER)
    }

    /// The earliest report of any status.
    pub fn first_at(&self) -> i64 {
        self.first.into_iter().min().expect("seven statuses")
    }

    pub fn error_code(&self) -> Option<i64> {
        self.error_code
    }

    /// The status rule read off the timeline: the highest status reported, its
    /// earliest time, and (for `error`) the earliest failure's code.
    pub fn resolved(&self) -> Resolved {
        let (status, at_ms) = STATUSES
            .iter()
            .rev()
            .find_map(|&(_, _, s)| self.at(s).map(|t| (s, t)))
            .expect("a timeline holds at least one report");
        Resolved {
            status,
            at_ms,
            code: (status == Status::Error)
                .then_some(self.error_code)
                .flatten(),
        }
    }
}

fn slot(status: Status) -> usize {
    usize::from(status.rank() - 1)
}

impl Observation for Timeline {
    fn of(event: &Event<'_>) -> Self {
        let mut first = [NEVER; STATUSES.len()];
        first[slot(event.status)] = event.at_ms;
        Timeline {
            first,
            error_code: (event.status == Status::Error)
                .then_some(event.code)
                .flatten(),
        }
    }

    fn absorb(&mut self, other: Self) -> bool {
        let before = *self;
        let err = slot(Status::Error);
        self.error_code = match self.first[err].cmp(&other.first[err]) {
            std::cmp::Ordering::Less => self.error_code,
            std::cmp::Ordering::Greater => other.error_code,
            std::cmp::Ordering::Equal => match (self.error_code, other.error_code) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        };
        for (mine, theirs) in self.first.iter_mut().zip(other.first) {
            *mine = (*mine).min(theirs);
        }
        *self != before
    }
}

/// The field names of `resolve --timeline`, in output order after the key.
pub const FIELDS: [&str; 7] = [
    "enqueued_at",
    "sent_at",
    "error_at",
    "delivered_at",
    "read_at",
    "played_at",
    "deleted_at",
];

/// Appends one `resolve --timeline` line: the key, each status's earliest time
/// (or null), and `error_code`; byte for byte what serde_json would write.
pub fn write_timeline_row(out: &mut Vec<u8>, key: &str, t: &Timeline) {
    write_key(out, key);
    for (field, at) in FIELDS.iter().zip(t.first) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        if at == NEVER {
            out.extend_from_slice(b"null");
        } else {
            let mut time = [0; TIME_LEN];
            write_ms(at, &mut time);
            out.push(b'"');
            out.extend_from_slice(&time);
            out.push(b'"');
        }
    }
    out.extend_from_slice(br#","error_code":"#);
    match t.error_code {
        Some(code) => out.extend_from_slice(code.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}
