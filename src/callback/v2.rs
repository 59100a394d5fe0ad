//! Gupshup V2: `{"app", "timestamp", "version": 2, "type": "message-event", "payload": {...}}`.

use super::cursor::{Cursor, Value};
use super::json::{Once, Result};
use super::{Sink, fields, status_event};

/// Top-level types that share the bucket but are not statuses.
const NOT_STATUSES: [&str; 4] = ["message", "user-event", "billing-event", "system-event"];
/// `payload.type` values of message events that are not statuses.
const NOT_STATUS_EVENTS: [&str; 2] = ["mismatch", "others"];

/// Where the envelope's `payload`'s fields are.
pub struct Payload<P> {
    id: Once<P>,
    gs_id: Once<P>,
    kind: Once<P>,
    /// The inner `payload`'s `ts` and `code`; absent when it is not an object.
    inner: Once<Inner<P>>,
}

struct Inner<P> {
    ts: Once<P>,
    code: Once<P>,
}

/// Reads the envelope's `payload`: None when it is not an object.
pub fn read_payload<'a, C: Cursor<'a>>(r: &mut C) -> Result<Option<Payload<C::Place>>> {
    if r.peek()? != b'{' {
        return r.value().map(|_| None);
    }
    let mut p = Payload {
        id: Once::default(),
        gs_id: Once::default(),
        kind: Once::default(),
        inner: Once::default(),
    };
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

fn read_inner<'a, C: Cursor<'a>>(r: &mut C) -> Result<Inner<C::Place>> {
    let mut inner = Inner {
        ts: Once::default(),
        code: Once::default(),
    };
    r.object(|r, key| match key {
        "ts" => inner.ts.set(r.nullable()?),
        "code" => inner.code.set(r.nullable()?),
        _ => r.value().map(drop),
    })?;
    Ok(inner)
}

/// Tells the sink what a V2 callback yields, its places made values by `value`.
pub fn parse<'a, P: Copy, V: Value<'a>>(
    kind: V,
    envelope_ts: Option<V>,
    payload: Option<&Payload<P>>,
    value: impl Fn(P) -> V,
    sink: &mut impl Sink,
) {
    let Some(kind) = kind.text() else {
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
    let get = |field: &Once<P>| field.get().map(|&p| value(p));
    let event_kind = get(&payload.kind);
    if event_kind
        .and_then(|k| k.text())
        .is_some_and(|k| NOT_STATUS_EVENTS.iter().any(|n| n.eq_ignore_ascii_case(&k)))
    {
        return sink.skipped();
    }
    let inner = payload.inner.get();
    let at = inner.and_then(|i| get(&i.ts)).or(envelope_ts);
    let key = fields::key(&[get(&payload.gs_id), get(&payload.id)]);
    let code = || inner.and_then(|i| get(&i.code)).and_then(fields::code);
    match status_event(event_kind, key, at, code) {
        Ok(event) => sink.event(event),
        Err(reason) => sink.dead_letter(reason, None),
    }
}
