//! Gupshup V3: Meta's `{"entry": [{"changes": [{"field", "value": {"statuses": [...]}}]}]}`
//! with Gupshup's `gs_id`. Each status entry stands alone: a bad one is dead-lettered
//! and its siblings still count.

use smallvec::SmallVec;

use super::cursor::{Cursor, Value};
use super::json::{Error, Once, Result};
use super::{Event, Reason, Sink, fields, status_event};

/// What the changes of a line hold, in order; most lines hold one status.
pub type Units<'a, V> = SmallVec<[Unit<'a, V>; 1]>;

pub enum Unit<'a, V> {
    /// A change of another field, or inbound messages.
    Skipped,
    /// A status entry: what it holds (see `read_status`) and the entry.
    Status(std::result::Result<Option<Event<'a>>, Reason>, V),
    /// A part of the envelope (an entry, a change, a status entry) of no known
    /// shape, or one that yields nothing: dead-lettered alone, with its text.
    Bad(V),
}

impl<'a, V: Value<'a>> Unit<'a, V> {
    /// Whether it is dead-lettered with its text, and the reader kept none.
    pub fn lacks_text(&self) -> bool {
        match self {
            Unit::Status(Err(_), part) | Unit::Bad(part) => part.source().is_none(),
            Unit::Status(Ok(_), _) | Unit::Skipped => false,
        }
    }
}

struct StatusEntry<V> {
    gs_id: Once<V>,
    id: Once<V>,
    status: Once<V>,
    timestamp: Once<V>,
    /// `errors[0].code`; None when `errors` is of another shape.
    errors: Once<Option<V>>,
    code: Once<V>,
    kind: Once<V>,
}

/// What a change's `value` held.
enum Change {
    Statuses,
    Messages,
    Neither,
}

/// Reads `entry`: an array of `{"changes": [...]}` objects. Each entry and each
/// change stands alone: one of another shape is a `Bad` unit, its siblings count.
pub fn read_entries<'a, C: Cursor<'a>>(r: &mut C) -> Result<Units<'a, C::Value>> {
    let mut units = Units::new();
    r.array(|r| {
        part(r, &mut units, |r, units| {
            let mut changes = Once::default();
            r.object(|r, key| match key {
                "changes" => changes.set(r.or_null(|r| r.array(|r| part(r, units, read_change)))?),
                _ => r.value().map(drop),
            })
        })
    })?;
    Ok(units)
}

/// Reads one part of the envelope with `read`; if it is of another shape or adds
/// no unit, whatever it added is dropped and it becomes one `Bad` unit.
fn part<'a, C: Cursor<'a>>(
    r: &mut C,
    units: &mut Units<'a, C::Value>,
    read: impl FnOnce(&mut C, &mut Units<'a, C::Value>) -> Result<()>,
) -> Result<()> {
    let start = units.len();
    let (read, text) = r.lenient(|r| read(r, units))?;
    if read.is_none() || units.len() == start {
        units.truncate(start);
        units.push(Unit::Bad(text));
    }
    Ok(())
}

fn read_change<'a, C: Cursor<'a>>(r: &mut C, units: &mut Units<'a, C::Value>) -> Result<()> {
    let start = units.len();
    let (mut field, mut value) = (Once::default(), Once::default());
    r.object(|r, key| match key {
        "field" => field.set(r.nullable()?),
        "value" => value.set(r.or_null(|r| read_value(r, units))?),
        _ => r.value().map(drop),
    })?;
    let is_messages = field
        .get()
        .and_then(|f| f.text())
        .is_some_and(|f| f == "messages");
    if !is_messages {
        units.truncate(start);
        units.push(Unit::Skipped);
        return Ok(());
    }
    match value.into_inner().unwrap_or(Change::Neither) {
        Change::Statuses | Change::Neither => {}
        Change::Messages => units.push(Unit::Skipped),
    }
    Ok(())
}

fn read_value<'a, C: Cursor<'a>>(r: &mut C, units: &mut Units<'a, C::Value>) -> Result<Change> {
    let (mut statuses, mut messages) = (Once::default(), Once::default());
    r.object(|r, key| match key {
        "statuses" => {
            let read = r.or_null(|r| r.array(|r| read_status_entry(r, units)))?;
            statuses.set(read)
        }
        "messages" => messages.set(r.nullable()?),
        _ => r.value().map(drop),
    })?;
    Ok(match (statuses.get(), messages.get()) {
        (Some(()), _) => Change::Statuses,
        (None, Some(_)) => Change::Messages,
        (None, None) => Change::Neither,
    })
}

fn read_status_entry<'a, C: Cursor<'a>>(r: &mut C, units: &mut Units<'a, C::Value>) -> Result<()> {
    let (entry, text) = r.lenient(|r| {
        let mut e = StatusEntry {
            gs_id: Once::default(),
            id: Once::default(),
            status: Once::default(),
            timestamp: Once::default(),
            errors: Once::default(),
            code: Once::default(),
            kind: Once::default(),
        };
        r.object(|r, key| {
            let slot = match key {
                "gs_id" => &mut e.gs_id,
                "id" => &mut e.id,
                "status" => &mut e.status,
                "timestamp" => &mut e.timestamp,
                "errors" => {
                    let first =
                        r.or_null(|r| r.lenient(first_error_code).map(|(c, _)| c.flatten()))?;
                    return e.errors.set(first);
                }
                "code" => &mut e.code,
                "type" => &mut e.kind,
                _ => return r.value().map(drop),
            };
            slot.set(r.nullable()?)
        })?;
        Ok(e)
    })?;
    units.push(match entry {
        Some(entry) => Unit::Status(read_status(&entry), text),
        None => Unit::Bad(text),
    });
    Ok(())
}

pub fn parse<'a, V: Value<'a>>(units: Units<'a, V>, sink: &mut impl Sink) {
    for unit in units {
        match unit {
            Unit::Skipped => sink.skipped(),
            Unit::Status(outcome, text) => match outcome {
                Ok(Some(event)) => sink.event(event),
                Ok(None) => sink.skipped(),
                Err(reason) => sink.dead_letter(reason, text.source()),
            },
            Unit::Bad(text) => sink.dead_letter(Reason::UnknownShape, text.source()),
        }
    }
}

/// What one status entry holds: an event, nothing (a skip), or why it is unusable.
fn read_status<'a, V: Value<'a>>(
    entry: &StatusEntry<V>,
) -> std::result::Result<Option<Event<'a>>, Reason> {
    if entry.status.get().is_none() && entry.kind.get().is_some() {
        return Ok(None); // e.g. {"type": "set-callback"}
    }
    let key = fields::key(&[entry.gs_id.get().copied(), entry.id.get().copied()]);
    let code = || {
        entry
            .errors
            .get()
            .and_then(|&c| fields::code(c?))
            .or_else(|| entry.code.get().and_then(|&c| fields::code(c)))
    };
    status_event(
        entry.status.get().copied(),
        key,
        entry.timestamp.get().copied(),
        code,
    )
    .map(Some)
}

/// `errors[0].code`: `errors` must be an array whose first element is an object
/// (the code itself may be absent).
fn first_error_code<'a, C: Cursor<'a>>(r: &mut C) -> Result<Option<C::Value>> {
    let mut first = None;
    r.array(|r| {
        if first.is_some() {
            return r.value().map(drop);
        }
        let mut code = Once::default();
        r.object(|r, key| match key {
            "code" => code.set(r.nullable()?),
            _ => r.value().map(drop),
        })?;
        first = Some(code.into_inner());
        Ok(())
    })?;
    first.ok_or(Error::Shape)
}
