//! Gupshup V2: `{"app", "timestamp", "version": 2, "type": "message-event", "payload": {...}}`.

use serde::Deserialize;

use super::json::{self, Raw};
use super::{Sink, fields, status_event};

/// Top-level types that share the bucket but are not statuses.
const NOT_STATUSES: [&str; 4] = ["message", "user-event", "billing-event", "system-event"];
/// `payload.type` values of message events that are not statuses.
const NOT_STATUS_EVENTS: [&str; 2] = ["mismatch", "others"];

#[derive(Deserialize)]
pub struct Payload<'a> {
    #[serde(borrow)]
    id: Option<Raw<'a>>,
    #[serde(borrow, rename = "gsId")]
    gs_id: Option<Raw<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Raw<'a>>,
    #[serde(borrow)]
    payload: Option<Raw<'a>>,
}

#[derive(Deserialize, Default)]
struct Inner<'a> {
    #[serde(borrow)]
    ts: Option<Raw<'a>>,
    #[serde(borrow)]
    code: Option<Raw<'a>>,
}

pub fn parse(
    kind: &Raw<'_>,
    envelope_ts: Option<&Raw<'_>>,
    payload: Option<&Payload<'_>>,
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
    let Some(payload) = payload else {
        return;
    };
    let event_kind = payload.kind.as_ref().and_then(fields::text);
    if event_kind.is_some_and(|k| NOT_STATUS_EVENTS.iter().any(|n| n.eq_ignore_ascii_case(&k))) {
        return sink.skipped();
    }
    // A payload.payload that is not an object simply has no ts and no code.
    let inner: Inner = payload
        .payload
        .as_ref()
        .and_then(|p| json::from_str(p.get()).ok())
        .unwrap_or_default();
    let at = inner.ts.as_ref().or(envelope_ts);
    let key = fields::key(&[payload.gs_id.as_ref(), payload.id.as_ref()]);
    let code = || inner.code.as_ref().and_then(fields::code);
    match status_event(payload.kind.as_ref(), key, at, code) {
        Ok(event) => sink.event(event),
        Err(reason) => sink.dead_letter(reason, None),
    }
}
