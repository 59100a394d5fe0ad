//! Gupshup V2: `{"app", "timestamp", "version": 2, "type": "message-event", "payload": {...}}`.

use super::json::{Once, Reader, Result};
use super::{Sink, fields, status_event};

/// Top-level types that share the bucket but are not statuses.
const NOT_STATUSES: [&str; 4] = ["message", "user-event", "billing-event", "system-event"];
/// `payload.type` values of message events that are not statuses.
const NOT_STATUS_EVENTS: [&str; 2] = ["mismatch", "others"];

/// The envelope's `payload`, as JSON texts.
#[derive(Default)]
pub struct Payload<'a> {
    id: Once<&'a str>,
    gs_id: Once<&'a str>,
    kind: Once<&'a str>,
    /// The inner `payload`'s `ts` and `code`; absent when it is not an object.
    inner: Once<Inner<'a>>,
}

#[derive(Default)]
struct Inner<'a> {
    ts: Once<&'a str>,
    code: Once<&'a str>,
}

/// Reads the envelope's `payload`: None when it is not an object.
pub fn read_payload<'a>(r: &mut Reader<'a, '_>) -> Result<Option<Payload<'a>>> {
    if r.peek()? != b'{' {
        return r.value().map(|_| None);
    }
    let mut p = Payload::default();
    r.object(|r, key| match key {
        "id" => p.id.set(r.nullable()?),
        "gsId" => p.gs_id.set(r.nullable()?),
        "type" => p.kind.set(r.nullable()?),
        // An inner payload of another shape simply has no ts and no code; an
        // object with a key twice is unreadable, as everywhere else.
        "payload" => match r.peek()? {
            b'{' => p.inner.set(Some(read_inner(r)?)),
            _ => r.value().and_then(|_| p.inner.set(None)),
        },
        _ => r.value().map(drop),
    })?;
    Ok(Some(p))
}

fn read_inner<'a>(r: &mut Reader<'a, '_>) -> Result<Inner<'a>> {
    let mut inner = Inner::default();
    r.object(|r, key| match key {
        "ts" => inner.ts.set(r.nullable()?),
        "code" => inner.code.set(r.nullable()?),
        _ => r.value().map(drop),
    })?;
    Ok(inner)
}

pub fn parse(
    kind: &str,
    envelope_ts: Option<&str>,
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
    let event_kind = payload.kind.get().and_then(|k| fields::text(k));
    if event_kind.is_some_and(|k| NOT_STATUS_EVENTS.iter().any(|n| n.eq_ignore_ascii_case(&k))) {
        return sink.skipped();
    }
    let inner = payload.inner.get();
    let at = inner.and_then(|i| i.ts.get()).copied().or(envelope_ts);
    let key = fields::key(&[payload.gs_id.get().copied(), payload.id.get().copied()]);
    let code = || {
        inner
            .and_then(|i| i.code.get())
            .and_then(|c| fields::code(c))
    };
    match status_event(payload.kind.get().copied(), key, at, code) {
        Ok(event) => sink.event(event),
        Err(reason) => sink.dead_letter(reason, None),
    }
}
