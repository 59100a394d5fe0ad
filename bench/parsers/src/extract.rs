//! Prototype extraction over a validated tape: the fields `resolve` reads from V2 and
//! V3 lines and wrappers, as events. Not the product's rules in full (no checks for
//! keys held twice, no trimming, no error codes, no apps): an estimate of the work
//! the other design would do per line, to set against the budget.

use bsp_status_loader::status::Status;

use crate::structural::{Tape, valid};

struct Doc<'a> {
    line: &'a [u8],
    tape: &'a Tape,
}

impl<'a> Doc<'a> {
    fn byte(&self, t: usize) -> u8 {
        self.line[self.tape.tokens[t] as usize]
    }

    /// The token after the value at token `t`.
    fn after(&self, t: usize) -> usize {
        match self.byte(t) {
            b'{' | b'[' => self.tape.matches[t] as usize + 1,
            b'"' => t + 2,
            _ => t + 1,
        }
    }

    /// A string's text between its quotes; a scalar's up to the next token.
    fn text(&self, t: usize) -> &'a [u8] {
        let at = self.tape.tokens[t] as usize;
        let next = self
            .tape
            .tokens
            .get(t + 1)
            .map_or(self.line.len(), |&e| e as usize);
        match self.byte(t) {
            b'"' => &self.line[at + 1..next],
            _ => self.line[at..next].trim_ascii_end(),
        }
    }

    /// Each field of the object at token `t`, as (key, the value's token).
    fn fields(&self, t: usize, mut field: impl FnMut(&'a [u8], usize)) {
        if self.byte(t) != b'{' {
            return;
        }
        let (end, mut k) = (self.tape.matches[t] as usize, t + 1);
        while k < end {
            field(self.text(k), k + 3);
            k = self.after(k + 3) + 1;
        }
    }

    /// Each item of the array at token `t`, as its token.
    fn items(&self, t: usize, mut item: impl FnMut(usize)) {
        if self.byte(t) != b'[' {
            return;
        }
        let (end, mut v) = (self.tape.matches[t] as usize, t + 1);
        while v < end {
            item(v);
            v = self.after(v) + 1;
        }
    }

    fn status(&self, t: Option<usize>) -> Option<Status> {
        let word = std::str::from_utf8(self.text(t?)).ok()?;
        Status::from_callback(word)
    }

    fn ms(&self, t: Option<usize>) -> Option<i64> {
        let digits = self.text(t?);
        let n = digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit()
                .then(|| n.checked_mul(10)?.checked_add(i64::from(d - b'0')))
                .flatten()
        })?;
        Some(if n < 100_000_000_000 { n * 1000 } else { n })
    }
}

/// Calls `event` with each status event of a line.
pub fn events(line: &[u8], tape: &Tape, event: &mut impl FnMut(&[u8], Status, i64)) {
    from(&Doc { line, tape }, 0, true, event)
}

fn from(
    doc: &Doc<'_>,
    root: usize,
    may_be_wrapped: bool,
    event: &mut impl FnMut(&[u8], Status, i64),
) {
    let (mut kind, mut payload, mut entry, mut body, mut ts) = (None, None, None, None, None);
    doc.fields(root, |key, v| match key {
        b"type" => kind = Some(v),
        b"payload" => payload = Some(v),
        b"entry" => entry = Some(v),
        b"body" => body = Some(v),
        b"timestamp" => ts = Some(v),
        _ => {}
    });
    if let Some(entry) = entry {
        v3(doc, entry, event);
    } else if let (Some(kind), Some(payload)) = (kind, payload) {
        if doc.text(kind).eq_ignore_ascii_case(b"message-event") {
            v2(doc, payload, ts, event);
        }
    } else if let (Some(body), true) = (body, may_be_wrapped) {
        if doc.byte(body) == b'{' {
            return from(doc, body, false, event);
        }
        // A body as a JSON string: unescaped, then read as a line of its own.
        let raw = &doc.line[doc.tape.tokens[body] as usize..=doc.tape.tokens[body + 1] as usize];
        let Ok(inner) = serde_json::from_slice::<String>(raw) else {
            return;
        };
        let mut tape = Tape::default();
        if valid(inner.as_bytes(), &mut tape) {
            from(
                &Doc {
                    line: inner.as_bytes(),
                    tape: &tape,
                },
                0,
                false,
                event,
            );
        }
    }
}

fn v2(
    doc: &Doc<'_>,
    payload: usize,
    ts: Option<usize>,
    event: &mut impl FnMut(&[u8], Status, i64),
) {
    let (mut id, mut gs_id, mut kind, mut at) = (None, None, None, ts);
    doc.fields(payload, |key, v| match key {
        b"id" => id = Some(v),
        b"gsId" => gs_id = Some(v),
        b"type" => kind = Some(v),
        b"payload" => doc.fields(v, |key, v| {
            if key == b"ts" {
                at = Some(v)
            }
        }),
        _ => {}
    });
    if let (Some(key), Some(status), Some(ms)) = (gs_id.or(id), doc.status(kind), doc.ms(at)) {
        event(doc.text(key), status, ms);
    }
}

fn v3(doc: &Doc<'_>, entry: usize, event: &mut impl FnMut(&[u8], Status, i64)) {
    doc.items(entry, |e| {
        doc.fields(e, |key, changes| {
            if key != b"changes" {
                return;
            }
            doc.items(changes, |change| {
                doc.fields(change, |key, value| {
                    if key != b"value" {
                        return;
                    }
                    doc.fields(value, |key, statuses| {
                        if key == b"statuses" {
                            doc.items(statuses, |s| status_entry(doc, s, event));
                        }
                    })
                })
            })
        })
    })
}

fn status_entry(doc: &Doc<'_>, entry: usize, event: &mut impl FnMut(&[u8], Status, i64)) {
    let (mut id, mut gs_id, mut status, mut at) = (None, None, None, None);
    doc.fields(entry, |key, v| match key {
        b"id" => id = Some(v),
        b"gs_id" => gs_id = Some(v),
        b"status" => status = Some(v),
        b"timestamp" => at = Some(v),
        _ => {}
    });
    if let (Some(key), Some(status), Some(ms)) = (gs_id.or(id), doc.status(status), doc.ms(at)) {
        event(doc.text(key), status, ms);
    }
}
