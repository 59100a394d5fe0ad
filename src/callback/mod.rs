//! Callback lines → status events. One line may hold one V2 callback, one V3
//! envelope (several statuses), or either wrapped as `{"received_at", "body"}`.
//! Every line ends as events, skips or dead letters: nothing is dropped unseen.

mod fields;
mod json;
mod v2;
mod v3;

use std::borrow::Cow;

use serde::Deserialize;

use self::json::Raw;

use crate::status::Status;

/// One status change of one message, as the rules of SPEC §3 read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub key: Cow<'a, str>,
    pub status: Status,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Error code, kept only for `failed` events.
    pub code: Option<i64>,
}

/// Why a line or a status entry could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NotUtf8,
    NotJson,
    UnknownShape,
    UnknownStatus,
    MissingKey,
    BadTimestamp,
    /// The file itself could not be read to the end (corrupt gzip and the like).
    UnreadableFile,
    /// A pending key found no row before its time-to-live ended.
    PendingExpired,
    /// The callback's app belongs to no configured organization.
    UnknownApp,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotUtf8 => "not UTF-8",
            Reason::NotJson => "not JSON",
            Reason::UnknownShape => "not a known callback shape",
            Reason::UnknownStatus => "unknown or missing status",
            Reason::MissingKey => "missing message id",
            Reason::BadTimestamp => "missing or unusable timestamp",
            Reason::UnreadableFile => "file unreadable past this line",
            Reason::PendingExpired => "no message row matched before the time-to-live ended",
            Reason::UnknownApp => "no organization is configured for this app",
        }
    }
}

/// Receives what a line holds. A dead letter names the bad V3 status entry, or
/// `None` when the whole line is bad (the sink holds the line).
pub trait Sink {
    /// The Gupshup app the callback came from (V2 `app`, V3 `gs_app_id`), told
    /// before its events; not told for lines too broken to say.
    fn app(&mut self, _app: Option<&str>) {}
    fn event(&mut self, event: Event<'_>);
    fn skipped(&mut self);
    fn dead_letter(&mut self, reason: Reason, entry: Option<&str>);
}

/// A line, read in one pass: the fields that tell the shapes apart, V2's payload and
/// V3's changes, with status entries held as `S` (see `v3::Entry`); the wrapper's
/// body is read lazily.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a, S: Deserialize<'de>"))]
struct Top<'a, S> {
    #[serde(borrow)]
    app: Option<Raw<'a>>,
    #[serde(borrow)]
    gs_app_id: Option<Raw<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<Raw<'a>>,
    #[serde(borrow)]
    timestamp: Option<Raw<'a>>,
    /// V2's payload; None also when it is not an object.
    #[serde(borrow, default)]
    payload: json::IfObject<v2::Payload<'a>>,
    entry: Option<Vec<v3::Entry<'a, S>>>,
    #[serde(borrow)]
    body: Option<Raw<'a>>,
}

/// Parses one line (without its newline). Blank lines must be filtered out before.
pub fn parse_line(line: &[u8], sink: &mut impl Sink) {
    let Ok(text) = std::str::from_utf8(line) else {
        return sink.dead_letter(Reason::NotUtf8, None);
    };
    parse_text(text, true, sink);
}

fn parse_text(text: &str, may_be_wrapped: bool, sink: &mut impl Sink) {
    if json::too_deep(text) {
        return sink.dead_letter(Reason::NotJson, None);
    }
    // Fast path: everything typed in one pass, usable when no status entry is bad.
    if let Ok(top) = json::from_str::<Top<v3::StatusEntry>>(text)
        && top.entry.as_deref().is_none_or(v3::all_clean)
    {
        return handle(&top, may_be_wrapped, sink);
    }
    let top: Top<Raw> = match json::from_str(text) {
        Ok(top) => top,
        Err(e) if json::is_shape_error(&e) => return sink.dead_letter(Reason::UnknownShape, None),
        Err(_) => return sink.dead_letter(Reason::NotJson, None),
    };
    handle(&top, may_be_wrapped, sink);
}

fn handle<S: v3::StatusItem>(top: &Top<'_, S>, may_be_wrapped: bool, sink: &mut impl Sink) {
    if top.entry.is_some() || top.kind.is_some() {
        let app = top
            .gs_app_id
            .as_ref()
            .or(top.app.as_ref())
            .and_then(fields::text);
        sink.app(app.as_deref());
    }
    let mut counter = Counting {
        inner: sink,
        seen: false,
    };
    if let Some(entry) = &top.entry {
        v3::parse(entry, &mut counter);
    } else if let Some(kind) = &top.kind {
        v2::parse(
            kind,
            top.timestamp.as_ref(),
            top.payload.0.as_ref(),
            &mut counter,
        );
    } else if let (Some(body), true) = (&top.body, may_be_wrapped) {
        return unwrap_body(body, sink);
    }
    if !counter.seen {
        sink.dead_letter(Reason::UnknownShape, None);
    }
}

/// The receiver's wrapper: `body` is the callback, as an object or as a JSON string.
fn unwrap_body(body: &Raw<'_>, sink: &mut impl Sink) {
    if let Some(inner) = fields::text(body) {
        parse_text(&inner, false, sink)
    } else if body.get().starts_with('{') {
        parse_text(body.get(), false, sink)
    } else {
        sink.dead_letter(Reason::UnknownShape, None)
    }
}

/// Notes whether a line produced anything, so an empty shape is dead-lettered.
struct Counting<'s, S: Sink> {
    inner: &'s mut S,
    seen: bool,
}

impl<S: Sink> Sink for Counting<'_, S> {
    fn event(&mut self, event: Event<'_>) {
        self.seen = true;
        self.inner.event(event)
    }
    fn skipped(&mut self) {
        self.seen = true;
        self.inner.skipped()
    }
    fn dead_letter(&mut self, reason: Reason, entry: Option<&str>) {
        self.seen = true;
        self.inner.dead_letter(reason, entry)
    }
}

/// What a status entry yields once its fields are read.
fn status_event<'a>(
    status: Option<&Raw<'_>>,
    key: Option<Cow<'a, str>>,
    at: Option<&Raw<'_>>,
    code: impl FnOnce() -> Option<i64>,
) -> Result<Event<'a>, Reason> {
    let status = fields::text(status.ok_or(Reason::UnknownStatus)?)
        .and_then(|w| Status::from_callback(&w))
        .ok_or(Reason::UnknownStatus)?;
    let key = key.ok_or(Reason::MissingKey)?;
    let at_ms = at.and_then(fields::epoch_ms).ok_or(Reason::BadTimestamp)?;
    let code = if status == Status::Error {
        code()
    } else {
        None
    };
    Ok(Event {
        key,
        status,
        at_ms,
        code,
    })
}

#[cfg(test)]
mod tests;
