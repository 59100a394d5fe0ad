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
    /// A status entry that is not a status object.
    NotAnEntry(&'a str),
    /// A `messages` change with neither statuses nor messages.
    Empty,
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

/// Reads `entry`: an array of `{"changes": [...]}` objects.
pub fn read_entries<'a>(r: &mut Reader<'a>) -> Result<Units<'a>> {
    let mut units = Units::new();
    r.array(|r| {
        let mut changes = Once::default();
        r.object(|r, key| match key {
            "changes" => {
                r.array(|r| read_change(r, &mut units))?;
                changes.set(Some(()))
            }
            _ => r.value().map(drop),
        })
    })?;
    Ok(units)
}

fn read_change<'a>(r: &mut Reader<'a>, units: &mut Units<'a>) -> Result<()> {
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
        Value::Statuses => {}
        Value::Messages => units.push(Unit::Skipped),
        Value::Neither => units.push(Unit::Empty),
    }
    Ok(())
}

fn read_value<'a>(r: &mut Reader<'a>, units: &mut Units<'a>) -> Result<Value> {
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

fn read_status_entry<'a>(r: &mut Reader<'a>, units: &mut Units<'a>) -> Result<()> {
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
        None => Unit::NotAnEntry(text),
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
            Unit::NotAnEntry(text) => sink.dead_letter(Reason::UnknownShape, Some(text)),
            Unit::Empty => sink.dead_letter(Reason::UnknownShape, None),
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
