//! Gupshup V3: Meta's `{"entry": [{"changes": [{"field", "value": {"statuses": [...]}}]}]}`
//! with Gupshup's `gs_id`. Each status entry stands alone: a bad one is dead-lettered
//! and its siblings still count.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Reason, Sink, fields, status_event};

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    changes: Vec<Change<'a>>,
}

#[derive(Deserialize)]
struct Change<'a> {
    #[serde(borrow)]
    field: Option<&'a RawValue>,
    #[serde(borrow)]
    value: Option<Value<'a>>,
}

#[derive(Deserialize)]
struct Value<'a> {
    #[serde(borrow)]
    statuses: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct StatusEntry<'a> {
    #[serde(borrow)]
    gs_id: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    errors: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct FirstError<'a> {
    #[serde(borrow)]
    code: Option<&'a RawValue>,
}

/// Reads `entry`; a structure that is not arrays of objects leaves the line unseen
/// (the caller dead-letters it whole).
pub fn parse(entry: &RawValue, sink: &mut impl Sink) {
    let Ok(entries) = serde_json::from_str::<Vec<Entry>>(entry.get()) else {
        return;
    };
    for change in entries.iter().flat_map(|e| &e.changes) {
        let is_messages = change
            .field
            .and_then(fields::text)
            .is_some_and(|f| f == "messages");
        match (&change.value, is_messages) {
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

fn parse_status(raw: &RawValue, sink: &mut impl Sink) {
    let Ok(entry) = serde_json::from_str::<StatusEntry>(raw.get()) else {
        return sink.dead_letter(Reason::UnknownShape, Some(raw.get()));
    };
    if entry.status.is_none() && entry.kind.is_some() {
        return sink.skipped(); // e.g. {"type": "set-callback"}
    }
    let key = fields::key(&[entry.gs_id, entry.id]);
    let code = || first_error_code(entry.errors).or_else(|| entry.code.and_then(fields::code));
    match status_event(entry.status, key, entry.timestamp, code) {
        Ok(event) => sink.event(event),
        Err(reason) => sink.dead_letter(reason, Some(raw.get())),
    }
}

fn first_error_code(errors: Option<&RawValue>) -> Option<i64> {
    let errors: Vec<FirstError> = serde_json::from_str(errors?.get()).ok()?;
    errors.first()?.code.and_then(fields::code)
}
