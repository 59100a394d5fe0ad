//! Gupshup V2: `{"app", "timestamp", "version": 2, "type": "message-event", "payload": {...}}`.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Sink, fields, status_event};

/// Top-level types that share the bucket but are not statuses.
const NOT_STATUSES: [&str; 4] = ["message", "user-event", "billing-event", "system-event"];
/// `payload.type` values of message events that are not statuses.
const NOT_STATUS_EVENTS: [&str; 2] = ["mismatch", "others"];

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow, rename = "gsId")]
    gs_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct Inner<'a> {
    #[serde(borrow)]
    ts: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<&'a RawValue>,
}

pub fn parse(
    kind: &RawValue,
    envelope_ts: Option<&RawValue>,
    payload: Option<&RawValue>,
    sink: &mut impl Sink,
) {
    let Some(kind) = fields::text(kind) else {
        return;
    };
    if NOT_STATUSES.iter().any(|k| k.eq_ignore_ascii_case(&kind)) {
        return sink.skipped();
    }
    if !kind.eq_ignore_ascii_case("message-event") {
        return;
    }
    let Some(payload) = payload.and_then(|p| serde_json::from_str::<Payload>(p.get()).ok()) else {
        return;
    };
    let event_kind = payload.kind.and_then(fields::text);
    if event_kind.is_some_and(|k| NOT_STATUS_EVENTS.iter().any(|n| n.eq_ignore_ascii_case(&k))) {
        return sink.skipped();
    }
    // A payload.payload that is not an object simply has no ts and no code.
    let inner: Inner = payload
        .payload
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let at = inner.ts.or(envelope_ts);
    let key = fields::key(&[payload.gs_id, payload.id]);
    match status_event(payload.kind, key, at, || inner.code.and_then(fields::code)) {
        Ok(event) => sink.event(event),
        Err(reason) => sink.dead_letter(reason, None),
    }
}
