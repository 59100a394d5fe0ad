//! Callback lines → status events. One line may hold one V2 callback, one V3
//! envelope (several statuses), or either wrapped as `{"received_at", "body"}`.
//! Every line ends as events, skips or dead letters: nothing is dropped unseen.

mod fields;
mod json;
mod scan;
mod v2;
mod v3;
mod words;

use std::borrow::Cow;

use self::json::{Error, Once, Reader};
use self::scan::{Scan, Span};

use crate::status::Status;

/// One status change of one message: its key, status, time and error code.
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
    /// Valid JSON, nested deeper than the reader follows.
    NestedTooDeeply,
    UnknownShape,
    UnknownStatus,
    MissingKey,
    BadTimestamp,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotUtf8 => "not UTF-8",
            Reason::NotJson => "not JSON",
            Reason::NestedTooDeeply => "JSON nested too deeply",
            Reason::UnknownShape => "not a known callback shape",
            Reason::UnknownStatus => "unknown or missing status",
            Reason::MissingKey => "missing message id",
            Reason::BadTimestamp => "missing or unusable timestamp",
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

/// A line, read in one pass: the fields that tell the shapes apart (as JSON
/// texts), V2's payload and V3's changes; the wrapper's body is kept as text.
#[derive(Default)]
struct Line<'a> {
    app: Once<&'a str>,
    gs_app_id: Once<&'a str>,
    kind: Once<&'a str>,
    timestamp: Once<&'a str>,
    /// V2's payload; None also when it is not an object.
    payload: Once<Option<v2::Payload<'a>>>,
    entry: Once<v3::Units<'a>>,
    body: Once<&'a str>,
}

/// Reads `text` into `line` (filled in place: a line's parts are too large to move
/// around once per line).
fn read_line<'a>(text: &'a str, scan: Span<'a>, line: &mut Line<'a>) -> Result<(), Error> {
    Reader::scanned(text, scan, |r| {
        if r.peek()? != b'{' {
            // Another kind of value: a shape error if it is valid JSON at all.
            return r.value().map(|_| false);
        }
        r.object(|r, key| match key {
            "app" => line.app.set(r.nullable()?),
            "gs_app_id" => line.gs_app_id.set(r.nullable()?),
            "type" => line.kind.set(r.nullable()?),
            "timestamp" => line.timestamp.set(r.nullable()?),
            "payload" => line.payload.set(Some(v2::read_payload(r)?)),
            "entry" => line.entry.set(r.or_null(v3::read_entries)?),
            "body" => line.body.set(r.nullable()?),
            _ => r.value().map(drop),
        })?;
        Ok(true)
    })?
    .then_some(())
    .ok_or(Error::Shape)
}

/// Parses one line (without its newline). Blank lines must be filtered out before.
pub fn parse_line(line: &[u8], sink: &mut impl Sink) {
    parse_scanned(line, Scan::new(line).whole(), sink)
}

/// Parses the lines of one text (a file's) with one scan of it, made a window at a
/// time (`Scan::window`), instead of one scan per line. The scan is kept with the
/// text it is of: what the reader takes on trust from it (where the quotes are,
/// that a line is ASCII) is true of the line it reads.
pub struct Parser<'t> {
    text: &'t [u8],
    scan: Scan,
}

impl<'t> Parser<'t> {
    pub fn new(text: &'t [u8]) -> Self {
        Parser {
            text,
            scan: Scan::default(),
        }
    }

    /// Parses `line` (without its newline), a part of the text; a line from
    /// elsewhere is scanned on its own. Blank lines must be filtered out before.
    pub fn parse(&mut self, line: &[u8], sink: &mut impl Sink) {
        // Within the text's bytes, `line` is those bytes: no other live slice can
        // overlap them, and the text is borrowed unchanged.
        let start = (line.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        match start.checked_add(line.len()) {
            Some(end) if end <= self.text.len() => {
                parse_scanned(line, self.scan.window(self.text, start, end), sink)
            }
            _ => parse_line(line, sink),
        }
    }
}

/// `parse_line`, with `scan` the line's span.
fn parse_scanned(line: &[u8], scan: Span<'_>, sink: &mut impl Sink) {
    let text = if scan.ascii {
        // SAFETY: every byte is below 0x80, and ASCII is UTF-8.
        unsafe { std::str::from_utf8_unchecked(line) }
    } else {
        match std::str::from_utf8(line) {
            Ok(text) => text,
            Err(_) => return sink.dead_letter(Reason::NotUtf8, None),
        }
    };
    parse_text(text, scan, true, sink);
}

fn parse_text(text: &str, scan: Span<'_>, may_be_wrapped: bool, sink: &mut impl Sink) {
    let mut line = Line::default();
    match read_line(text, scan, &mut line) {
        Ok(()) => handle(line, (text, scan), may_be_wrapped, sink),
        Err(Error::Shape) => sink.dead_letter(Reason::UnknownShape, None),
        Err(Error::Syntax) => sink.dead_letter(Reason::NotJson, None),
        Err(Error::TooDeep) => sink.dead_letter(Reason::NestedTooDeeply, None),
    }
}

/// What a line read into `line` yields; `scanned` is the line's text and span.
fn handle(line: Line<'_>, scanned: (&str, Span<'_>), may_be_wrapped: bool, sink: &mut impl Sink) {
    let kind = line.kind.get();
    let entry = line.entry.into_inner();
    if entry.is_some() || kind.is_some() {
        let app = line
            .gs_app_id
            .get()
            .or(line.app.get())
            .and_then(|a| fields::text(a));
        sink.app(app.as_deref());
    }
    let mut counter = Counting {
        inner: sink,
        seen: false,
    };
    if let Some(units) = entry {
        v3::parse(units, &mut counter);
    } else if let Some(kind) = kind {
        let payload = line.payload.get().and_then(Option::as_ref);
        v2::parse(kind, line.timestamp.get().copied(), payload, &mut counter);
    } else if let (Some(body), true) = (line.body.get(), may_be_wrapped) {
        return unwrap_body(body, scanned, sink);
    }
    if !counter.seen {
        sink.dead_letter(Reason::UnknownShape, None);
    }
}

/// The receiver's wrapper: `body` (a part of the line `text`) is the callback, as an
/// object (read with its part of the line's scan) or as a JSON string.
fn unwrap_body(body: &str, (text, scan): (&str, Span<'_>), sink: &mut impl Sink) {
    if body.starts_with('{') {
        let from = body.as_ptr() as usize - text.as_ptr() as usize;
        return parse_text(body, scan.part(from, from + body.len()), false, sink);
    }
    match fields::text(body) {
        Some(inner) => parse_text(&inner, Scan::new(inner.as_bytes()).whole(), false, sink),
        None => sink.dead_letter(Reason::UnknownShape, None),
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
    status: Option<&str>,
    key: Option<Cow<'a, str>>,
    at: Option<&str>,
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
