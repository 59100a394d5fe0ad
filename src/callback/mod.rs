//! Callback lines → status events. One line may hold one V2 callback, one V3
//! envelope (several statuses), or either wrapped as `{"received_at", "body"}`.
//! Every line ends as events, skips or dead letters: nothing is dropped unseen.

mod cursor;
mod fields;
mod json;
mod scan;
mod tape;
mod v2;
mod v3;
mod words;

use std::borrow::Cow;

use self::cursor::{Cursor, Value};
use self::json::{Error, Once, Reader};
use self::scan::{Scan, Span};
use self::tape::TapeReader;

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

/// A line, read in one pass: where the fields that tell the shapes apart are,
/// V2's payload's and V3's changes'; the wrapper's body is kept as a place.
struct Line<P> {
    app: Once<P>,
    gs_app_id: Once<P>,
    kind: Once<P>,
    timestamp: Once<P>,
    /// V2's payload; None also when it is not an object.
    payload: Once<Option<v2::Payload<P>>>,
    /// V3's `entry`, when it is there and not null: its units are in `units`
    /// (filled in place, as the whole line: they are the largest part).
    entry: Once<()>,
    units: v3::Units<P>,
    body: Once<P>,
}

impl<P> Default for Line<P> {
    fn default() -> Self {
        Line {
            app: Once::default(),
            gs_app_id: Once::default(),
            kind: Once::default(),
            timestamp: Once::default(),
            payload: Once::default(),
            entry: Once::default(),
            units: v3::Units::new(),
            body: Once::default(),
        }
    }
}

/// Reads the next value into `line` (filled in place: a line's parts are too large
/// to move around once per line). False when it is not an object: a shape error
/// once the rest of the document is known to be JSON.
fn read_line<'a, C: Cursor<'a>>(r: &mut C, line: &mut Line<C::Place>) -> Result<bool, Error> {
    if r.peek()? != b'{' {
        return r.value().map(|_| false);
    }
    r.object(|r, key| match key {
        "app" => line.app.set(r.nullable()?),
        "gs_app_id" => line.gs_app_id.set(r.nullable()?),
        "type" => line.kind.set(r.nullable()?),
        "timestamp" => line.timestamp.set(r.nullable()?),
        "payload" => line.payload.set(Some(v2::read_payload(r)?)),
        "entry" => {
            let read = r.or_null(|r| v3::read_entries(r, &mut line.units))?;
            line.entry.set(read)
        }
        "body" => line.body.set(r.nullable()?),
        _ => r.value().map(drop),
    })?;
    Ok(true)
}

/// Parses one line (without its newline). Blank lines must be filtered out before.
pub fn parse_line(line: &[u8], sink: &mut impl Sink) {
    Parser::new(line).parse(line, sink)
}

/// `parse_line` with the text reader alone: what the tape must agree with.
#[cfg(test)]
fn parse_line_text(line: &[u8], sink: &mut impl Sink) {
    parse_scanned(line, Scan::new(line).whole(), sink)
}

/// Parses the lines of one text (a file's). Each line is parsed on simdjson's tape
/// (`tape`) when simdjson accepts it, and by the text reader (`json`) when it does
/// not or the tape declines it; the text reader reads with one scan of the text,
/// made a window at a time (`Scan::window`) when first needed. The scan is kept
/// with the text it is of: what the reader takes on trust from it (where the
/// quotes are, that a line is ASCII) is true of the line it reads.
pub struct Parser<'t> {
    text: &'t [u8],
    scan: Scan,
    tape: tape::Lines,
}

impl<'t> Parser<'t> {
    pub fn new(text: &'t [u8]) -> Self {
        Parser {
            text,
            scan: Scan::default(),
            tape: tape::Lines::take(),
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
                if let Some((tape, plans, mut bodies)) = self.tape.parse(self.text, start..end)
                    && read_tape(TapeReader::root(&tape), plans, Some(&mut bodies), sink).is_ok()
                {
                    return;
                }
                parse_scanned(line, self.scan.window(self.text, start, end), sink)
            }
            _ => Parser::new(line).parse(line, sink),
        }
    }
}

/// The tape could not say what a line yields; nothing was told to the sink.
struct Declined;

/// Reads a line simdjson accepted from its tape and tells the sink what it yields;
/// `plans` are those of the tape's parser; `bodies` parses a wrapper's body given
/// as a string (None: this is a body, not unwrapped again). Declines what only the
/// text reader can tell: lines of no known shape (it says why) and dead-lettered
/// V3 entries (it keeps their text).
fn read_tape<S: Sink>(
    r: TapeReader<'_>,
    plans: &mut tape::Plans,
    bodies: Option<&mut tape::Bodies<'_>>,
    sink: &mut S,
) -> Result<(), Declined> {
    let may_be_wrapped = bodies.is_some();
    let value = |place| r.value_at(place);
    let body = match plans.get(&r) {
        Some(line) => handle(line, value, may_be_wrapped, sink)?,
        None => {
            let mut line = Line::default();
            if read_line(&mut r.clone(), &mut line) != Ok(true) {
                return Err(Declined);
            }
            let told = handle(&line, value, may_be_wrapped, sink);
            plans.keep(&r, line);
            told?
        }
    };
    let Some(body) = body.map(value) else {
        return Ok(());
    };
    if body.is_object() {
        return read_tape(TapeReader::at(body), plans, None, sink);
    }
    // The callback in a string: on a tape of its own, else by the text reader.
    if let (Some(bodies), Some(inner)) = (bodies, body.text())
        && let Some((tape, plans)) = bodies.parse(&inner)
        && read_tape(TapeReader::root(&tape), plans, None, sink).is_ok()
    {
        return Ok(());
    }
    unwrap_string(body, sink);
    Ok(())
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

/// Reads `text` with the text reader and tells the sink what it yields.
fn parse_text<S: Sink>(text: &str, scan: Span<'_>, may_be_wrapped: bool, sink: &mut S) {
    let mut line = Line::default();
    match Reader::scanned(text, scan, |r| read_line(r, &mut line)) {
        Ok(true) => {
            let told = handle(&line, |text| text, may_be_wrapped, sink);
            debug_assert!(told.is_ok(), "the text reader keeps every part's text");
            // The wrapper's body, as an object: read with its part of the line's scan.
            match told {
                Ok(Some(body)) if body.is_object() => {
                    let from = body.as_ptr() as usize - text.as_ptr() as usize;
                    parse_text(body, scan.part(from, from + body.len()), false, sink);
                }
                Ok(Some(body)) => unwrap_string(body, sink),
                Ok(None) | Err(Declined) => {}
            }
        }
        Ok(false) | Err(Error::Shape) => sink.dead_letter(Reason::UnknownShape, None),
        Err(Error::Syntax) => sink.dead_letter(Reason::NotJson, None),
        Err(Error::TooDeep) => sink.dead_letter(Reason::NestedTooDeeply, None),
    }
}

/// Tells the sink what a line read into `line` yields, its places made values by
/// `value`; or gives the place of the receiver's wrapper's `body` when that is
/// the callback, for the caller to read. (`line` by reference: moving it was a
/// sixth of reading a line from the tape.)
fn handle<'a, P: Copy, V: Value<'a>, S: Sink>(
    line: &Line<P>,
    value: impl Fn(P) -> V + Copy,
    may_be_wrapped: bool,
    sink: &mut S,
) -> Result<Option<P>, Declined> {
    let kind = line.kind.get().map(|&k| value(k));
    let v3 = line.entry.get().is_some();
    let mut changes = v3::Outcomes::new();
    if v3 {
        v3::outcomes(&line.units, value, &mut changes);
        if changes.iter().any(v3::Outcome::lacks_text) {
            return Err(Declined);
        }
    }
    if v3 || kind.is_some() {
        let app = line.gs_app_id.get().or(line.app.get());
        sink.app(app.and_then(|&a| value(a).text()).as_deref());
    }
    let mut counter = Counting {
        inner: sink,
        seen: false,
    };
    if v3 {
        v3::tell(&mut changes, &mut counter);
    } else if let Some(kind) = kind {
        let payload = line.payload.get().and_then(Option::as_ref);
        let envelope_ts = line.timestamp.get().map(|&t| value(t));
        v2::parse(kind, envelope_ts, payload, value, &mut counter);
    } else if let (Some(&body), true) = (line.body.get(), may_be_wrapped) {
        return Ok(Some(body));
    }
    if !counter.seen {
        sink.dead_letter(Reason::UnknownShape, None);
    }
    Ok(None)
}

/// The receiver's wrapper with the callback as a JSON string in `body`.
fn unwrap_string<'a>(body: impl Value<'a>, sink: &mut impl Sink) {
    match body.text() {
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
fn status_event<'a, V: Value<'a>>(
    status: Option<V>,
    key: Option<Cow<'a, str>>,
    at: Option<V>,
    code: impl FnOnce() -> Option<i64>,
) -> Result<Event<'a>, Reason> {
    let status = (status.ok_or(Reason::UnknownStatus)?.text())
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
