//! Gupshup V3: Meta's `{"entry": [{"changes": [{"field", "value": {"statuses": [...]}}]}]}`
//! with Gupshup's `gs_id`. Each status entry stands alone: a bad one is dead-lettered
//! and its siblings still count.

use serde::Deserialize;

use super::json::{self, Raw};
use super::{Reason, Sink, fields, status_event};

/// `S` is how a status entry is held: `StatusEntry` when the whole line parsed
/// typed (the fast path), `Raw` when entries must be read one by one (a bad one
/// then does not spoil its siblings, and keeps its own text).
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a, S: Deserialize<'de>"))]
pub struct Entry<'a, S> {
    #[serde(borrow, default = "Vec::new")]
    changes: Vec<Change<'a, S>>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a, S: Deserialize<'de>"))]
struct Change<'a, S> {
    #[serde(borrow)]
    field: Option<Raw<'a>>,
    #[serde(borrow)]
    value: Option<Value<'a, S>>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a, S: Deserialize<'de>"))]
struct Value<'a, S> {
    statuses: Option<Vec<S>>,
    #[serde(borrow)]
    messages: Option<Raw<'a>>,
}

#[derive(Deserialize)]
pub struct StatusEntry<'a> {
    #[serde(borrow)]
    gs_id: Option<Raw<'a>>,
    #[serde(borrow)]
    id: Option<Raw<'a>>,
    #[serde(borrow)]
    status: Option<Raw<'a>>,
    #[serde(borrow)]
    timestamp: Option<Raw<'a>>,
    #[serde(borrow)]
    errors: Option<Raw<'a>>,
    #[serde(borrow)]
    code: Option<Raw<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Raw<'a>>,
}

#[derive(Deserialize)]
struct FirstError<'a> {
    #[serde(borrow)]
    code: Option<Raw<'a>>,
}

/// A status entry as the line parse left it.
pub trait StatusItem {
    /// The entry's own text, when it was kept.
    fn raw(&self) -> Option<&str>;
    /// Calls `f` with the typed entry; None when the entry is not a status object.
    fn with<R>(&self, f: impl FnOnce(&StatusEntry<'_>) -> R) -> Option<R>;
}

impl StatusItem for StatusEntry<'_> {
    fn raw(&self) -> Option<&str> {
        None
    }
    fn with<R>(&self, f: impl FnOnce(&StatusEntry<'_>) -> R) -> Option<R> {
        Some(f(self))
    }
}

impl StatusItem for Raw<'_> {
    fn raw(&self) -> Option<&str> {
        Some(self.get())
    }
    fn with<R>(&self, f: impl FnOnce(&StatusEntry<'_>) -> R) -> Option<R> {
        json::from_str::<StatusEntry>(self.get())
            .ok()
            .map(|e| f(&e))
    }
}

/// The status entries of `entries` (in changes whose field is `messages`).
fn statuses<'e, S>(entries: &'e [Entry<'_, S>]) -> impl Iterator<Item = &'e S> {
    entries
        .iter()
        .flat_map(|e| &e.changes)
        .filter(|c| is_messages(c))
        .filter_map(|c| c.value.as_ref()?.statuses.as_ref())
        .flatten()
}

/// Whether every status entry reads cleanly (none would be dead-lettered), so a
/// typed parse of the line can be used as it is.
pub fn all_clean(entries: &[Entry<'_, StatusEntry<'_>>]) -> bool {
    statuses(entries).all(|e| read_status(e).is_ok())
}

fn is_messages<S>(change: &Change<'_, S>) -> bool {
    change
        .field
        .as_ref()
        .and_then(fields::text)
        .is_some_and(|f| f == "messages")
}

/// Reads the changes of `entry`; status entries are read one by one.
pub fn parse<S: StatusItem>(entries: &[Entry<'_, S>], sink: &mut impl Sink) {
    for change in entries.iter().flat_map(|e| &e.changes) {
        match (&change.value, is_messages(change)) {
            (_, false) => sink.skipped(),
            (
                Some(Value {
                    statuses: Some(statuses),
                    ..
                }),
                true,
            ) => statuses.iter().for_each(|s| parse_status(s, sink)),
            (
                Some(Value {
                    messages: Some(_), ..
                }),
                true,
            ) => sink.skipped(),
            (_, true) => sink.dead_letter(Reason::UnknownShape, None),
        }
    }
}

/// What one status entry holds: an event, nothing (a skip), or why it is unusable.
fn read_status<'r>(entry: &'r StatusEntry<'_>) -> Result<Option<super::Event<'r>>, Reason> {
    if entry.status.is_none() && entry.kind.is_some() {
        return Ok(None); // e.g. {"type": "set-callback"}
    }
    let key = fields::key(&[entry.gs_id.as_ref(), entry.id.as_ref()]);
    let code = || {
        first_error_code(entry.errors.as_ref())
            .or_else(|| entry.code.as_ref().and_then(fields::code))
    };
    status_event(entry.status.as_ref(), key, entry.timestamp.as_ref(), code).map(Some)
}

fn parse_status(item: &impl StatusItem, sink: &mut impl Sink) {
    let outcome = item.with(|entry| match read_status(entry) {
        Ok(Some(event)) => {
            sink.event(event);
            Ok(())
        }
        Ok(None) => {
            sink.skipped();
            Ok(())
        }
        Err(reason) => Err(reason),
    });
    match outcome {
        Some(Ok(())) => {}
        Some(Err(reason)) => sink.dead_letter(reason, item.raw()),
        None => sink.dead_letter(Reason::UnknownShape, item.raw()),
    }
}

fn first_error_code(errors: Option<&Raw<'_>>) -> Option<i64> {
    let errors: Vec<FirstError> = json::from_str(errors?.get()).ok()?;
    errors.first()?.code.as_ref().and_then(fields::code)
}
