//! Gupshup V3: Meta's `{"entry": [{"changes": [{"field", "value": {"statuses": [...]}}]}]}`
//! with Gupshup's `gs_id`. Each status entry stands alone: a bad one is dead-lettered
//! and its siblings still count.

use smallvec::SmallVec;

use super::cursor::{Cursor, Value};
use super::json::{Error, Once, Result};
use super::{Event, Reason, Sink, fields, status_event};

/// Where the parts of a line's changes are, in order; most lines hold one change
/// with one status. Reading them looks at keys and kinds alone, never at values
/// (`outcomes` does), so every line of one learned shape has the same units.
pub type Units<P> = SmallVec<[Unit<P>; 2]>;

pub enum Unit<P> {
    /// A change, followed by the units of its `statuses` (how many, below). Its
    /// `field` says whether they count (`messages`), and its text is dead-lettered
    /// when they are none.
    Change {
        field: Option<P>,
        holds: Change,
        statuses: usize,
        text: P,
    },
    /// A status entry: its fields, and the entry.
    Status(StatusEntry<P>, P),
    /// A part of the envelope (an entry, a change, a status entry) of no known
    /// shape, or an entry with no change: dead-lettered alone, with its text.
    Bad(P),
}

/// What a line's changes yield, in order (held before any is told: a line the
/// tape cannot tell in full is the text reader's). Batches are short.
pub type Outcomes<'a, V> = SmallVec<[Outcome<'a, V>; 4]>;

/// What one part of a line's changes yields.
pub enum Outcome<'a, V> {
    Event(Event<'a>),
    Skipped,
    /// A dead letter, and the part it is of.
    Dead(Reason, V),
}

impl<'a, V: Value<'a>> Outcome<'a, V> {
    /// Whether it is dead-lettered with its text, and the reader kept none.
    pub fn lacks_text(&self) -> bool {
        matches!(self, Outcome::Dead(_, part) if part.source().is_none())
    }
}

pub struct StatusEntry<P> {
    gs_id: Once<P>,
    id: Once<P>,
    status: Once<P>,
    timestamp: Once<P>,
    /// `errors[0].code`; None when `errors` is of another shape.
    errors: Once<Option<P>>,
    code: Once<P>,
    kind: Once<P>,
}

/// What a change's `value` held.
#[derive(Clone, Copy)]
pub enum Change {
    Statuses,
    Messages,
    Neither,
}

/// Reads `entry`: an array of `{"changes": [...]}` objects. Each entry and each
/// change stands alone: one of another shape is a `Bad` unit, its siblings count.
/// `units` must be empty (a line's `entry` read twice is a shape error anyway).
pub fn read_entries<'a, C: Cursor<'a>>(r: &mut C, units: &mut Units<C::Place>) -> Result<()> {
    r.array(|r| {
        let start = units.len();
        let (read, text) = r.lenient(|r| {
            let mut changes = Once::default();
            r.object(|r, key| match key {
                "changes" => {
                    let read = r.or_null(|r| r.array(|r| read_change(r, units)))?;
                    changes.set(read)
                }
                _ => r.value().map(drop),
            })
        })?;
        if read.is_none() || units.len() == start {
            units.truncate(start);
            units.push(Unit::Bad(text));
        }
        Ok(())
    })
}

/// Reads one change: a `Change` unit before its statuses', or one `Bad` unit.
fn read_change<'a, C: Cursor<'a>>(r: &mut C, units: &mut Units<C::Place>) -> Result<()> {
    let start = units.len();
    let (read, text) = r.lenient(|r| {
        let (mut field, mut value) = (Once::default(), Once::default());
        r.object(|r, key| match key {
            "field" => field.set(r.nullable()?),
            "value" => value.set(r.or_null(|r| read_value(r, units))?),
            _ => r.value().map(drop),
        })?;
        Ok((field.into_inner(), value.into_inner()))
    })?;
    let Some((field, holds)) = read else {
        units.truncate(start);
        units.push(Unit::Bad(text));
        return Ok(());
    };
    let change = Unit::Change {
        field,
        holds: holds.unwrap_or(Change::Neither),
        statuses: units.len() - start,
        text,
    };
    units.insert(start, change);
    Ok(())
}

fn read_value<'a, C: Cursor<'a>>(r: &mut C, units: &mut Units<C::Place>) -> Result<Change> {
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

fn read_status_entry<'a, C: Cursor<'a>>(r: &mut C, units: &mut Units<C::Place>) -> Result<()> {
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
        Some(entry) => Unit::Status(entry, text),
        None => Unit::Bad(text),
    });
    Ok(())
}

/// What the units of a line yield, their places made values by `value`: a change
/// of another field is one skip, one of `messages` its statuses' events (or one
/// skip for inbound messages; a dead letter when it holds neither).
pub fn outcomes<'a, P: Copy, V: Value<'a>>(
    units: &Units<P>,
    value: impl Fn(P) -> V + Copy,
    out: &mut Outcomes<'a, V>,
) {
    let mut at = 0;
    while let Some(unit) = units.get(at) {
        at += 1;
        let Unit::Change {
            field,
            holds,
            statuses,
            text,
        } = unit
        else {
            out.push(outcome(unit, value));
            continue;
        };
        let statuses = &units[at..at + statuses];
        at += statuses.len();
        let field = field.and_then(|f| value(f).text());
        match holds {
            _ if field.is_none_or(|f| f != "messages") => out.push(Outcome::Skipped),
            Change::Messages => out.push(Outcome::Skipped),
            Change::Statuses if !statuses.is_empty() => {
                for status in statuses {
                    out.push(outcome(status, value));
                }
            }
            Change::Statuses | Change::Neither => {
                out.push(Outcome::Dead(Reason::UnknownShape, value(*text)))
            }
        }
    }
}

/// What a status entry or a bad part yields.
fn outcome<'a, P: Copy, V: Value<'a>>(unit: &Unit<P>, value: impl Fn(P) -> V) -> Outcome<'a, V> {
    match unit {
        Unit::Status(entry, text) => match read_status(entry, &value) {
            Ok(Some(event)) => Outcome::Event(event),
            Ok(None) => Outcome::Skipped,
            Err(reason) => Outcome::Dead(reason, value(*text)),
        },
        Unit::Bad(text) | Unit::Change { text, .. } => {
            debug_assert!(matches!(unit, Unit::Bad(_)), "a change within a change");
            Outcome::Dead(Reason::UnknownShape, value(*text))
        }
    }
}

/// Tells the sink what a line's changes yield.
pub fn tell<'a, V: Value<'a>>(outcomes: &mut Outcomes<'a, V>, sink: &mut impl Sink) {
    for outcome in outcomes.drain(..) {
        match outcome {
            Outcome::Event(event) => sink.event(event),
            Outcome::Skipped => sink.skipped(),
            Outcome::Dead(reason, text) => sink.dead_letter(reason, text.source()),
        }
    }
}

/// What one status entry holds: an event, nothing (a skip), or why it is unusable.
fn read_status<'a, P: Copy, V: Value<'a>>(
    entry: &StatusEntry<P>,
    value: impl Fn(P) -> V,
) -> std::result::Result<Option<Event<'a>>, Reason> {
    let get = |field: &Once<P>| field.get().map(|&p| value(p));
    if entry.status.get().is_none() && entry.kind.get().is_some() {
        return Ok(None); // e.g. {"type": "set-callback"}
    }
    let key = fields::key(&[get(&entry.gs_id), get(&entry.id)]);
    let code = || {
        let first = entry.errors.get().copied().flatten();
        (first.map(&value).and_then(fields::code))
            .or_else(|| get(&entry.code).and_then(fields::code))
    };
    status_event(get(&entry.status), key, get(&entry.timestamp), code).map(Some)
}

/// `errors[0].code`: `errors` must be an array whose first element is an object
/// (the code itself may be absent).
fn first_error_code<'a, C: Cursor<'a>>(r: &mut C) -> Result<Option<C::Place>> {
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
