//! Gupshup V3: Meta's `{"entry": [{"changes": [{"field", "value": {"statuses": [...]}}]}]}`
//! with Gupshup's `gs_id`. Each status entry stands alone: a bad one is dead-lettered
//! and its siblings still count.

use smallvec::SmallVec;

use super::json::{Error, Once, Reader, Result};
use super::{Event, Reason, Sink, fields, status_event};

/// What the changes of a line hold, in order; most lines hold one status.
pub type Units<'a> = SmallVec<[Unit<'a>; 1]>;

pub enum Unit<'a> {
    /// A change of another field, or inbound messages.
    Skipped,
    /// A status entry: what it holds (see `read_status`) and its text.
    Status(std::result::Result<Option<Event<'a>>, Reason>, &'a str),
    /// A part of the envelope (an entry, a change, a status entry) of no known
    /// shape, or one that yields nothing: dead-lettered alone, with its text.
    Bad(&'a str),
}

#[derive(Default)]
struct StatusEntry<'a> {
    gs_id: Once<&'a str>,
    id: Once<&'a str>,
    status: Once<&'a str>,
    timestamp: Once<&'a str>,
    errors: Once<&'a str>,
    code: Once<&'a str>,
    kind: Once<&'a str>,
}

/// What a change's `value` held.
enum Value {
    Statuses,
    Messages,
    Neither,
}

/// Reads `entry`: an array of `{"changes": [...]}` objects. Each entry and each
/// change stands alone: one of another shape is a `Bad` unit, its siblings count.
pub fn read_entries<'a>(r: &mut Reader<'a, '_>) -> Result<Units<'a>> {
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
fn part<'a>(
    r: &mut Reader<'a, '_>,
    units: &mut Units<'a>,
    read: impl FnOnce(&mut Reader<'a, '_>, &mut Units<'a>) -> Result<()>,
) -> Result<()> {
    let start = units.len();
    let (read, text) = r.lenient(|r| read(r, units))?;
    if read.is_none() || units.len() == start {
        units.truncate(start);
        units.push(Unit::Bad(text));
    }
    Ok(())
}

fn read_change<'a>(r: &mut Reader<'a, '_>, units: &mut Units<'a>) -> Result<()> {
    let start = units.len();
    let (mut field, mut value) = (Once::default(), Once::default());
    r.object(|r, key| match key {
        "field" => field.set(r.nullable()?),
        "value" => value.set(r.or_null(|r| read_value(r, units))?),
        _ => r.value().map(drop),
    })?;
    let is_messages = field
        .get()
        .and_then(|f| fields::text(f))
        .is_some_and(|f| f == "messages");
    if !is_messages {
        units.truncate(start);
        units.push(Unit::Skipped);
        return Ok(());
    }
    match value.into_inner().unwrap_or(Value::Neither) {
        Value::Statuses | Value::Neither => {}
        Value::Messages => units.push(Unit::Skipped),
    }
    Ok(())
}

fn read_value<'a>(r: &mut Reader<'a, '_>, units: &mut Units<'a>) -> Result<Value> {
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
        (Some(()), _) => Value::Statuses,
        (None, Some(_)) => Value::Messages,
        (None, None) => Value::Neither,
    })
}

fn read_status_entry<'a>(r: &mut Reader<'a, '_>, units: &mut Units<'a>) -> Result<()> {
    let (entry, text) = r.lenient(|r| {
        let mut e = StatusEntry::default();
        r.object(|r, key| {
            let slot = match key {
                "gs_id" => &mut e.gs_id,
                "id" => &mut e.id,
                "status" => &mut e.status,
                "timestamp" => &mut e.timestamp,
                "errors" => &mut e.errors,
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

pub fn parse(units: Units<'_>, sink: &mut impl Sink) {
    for unit in units {
        match unit {
            Unit::Skipped => sink.skipped(),
            Unit::Status(outcome, text) => match outcome {
                Ok(Some(event)) => sink.event(event),
                Ok(None) => sink.skipped(),
                Err(reason) => sink.dead_letter(reason, Some(text)),
            },
            Unit::Bad(text) => sink.dead_letter(Reason::UnknownShape, Some(text)),
        }
    }
}

/// What one status entry holds: an event, nothing (a skip), or why it is unusable.
fn read_status<'a>(entry: &StatusEntry<'a>) -> std::result::Result<Option<Event<'a>>, Reason> {
    if entry.status.get().is_none() && entry.kind.get().is_some() {
        return Ok(None); // e.g. {"type": "set-callback"}
    }
    let key = fields::key(&[entry.gs_id.get().copied(), entry.id.get().copied()]);
    let code = || {
        entry
            .errors
            .get()
            .and_then(|e| first_error_code(e))
            .or_else(|| entry.code.get().and_then(|c| fields::code(c)))
    };
    status_event(
        entry.status.get().copied(),
        key,
        entry.timestamp.get().copied(),
        code,
    )
    .map(Some)
}

/// `errors[0].code`, when `errors` is an array whose first element is an object.
fn first_error_code(errors: &str) -> Option<i64> {
    let code = Reader::document(errors, |r| {
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
    });
    code.ok().flatten().and_then(fields::code)
}
