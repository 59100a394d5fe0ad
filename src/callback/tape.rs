//! Reading a line from simdjson's tape: simdjson validates the whole line (JSON and
//! UTF-8) in one vectorised pass and writes every value's kind and place, so the
//! shapes find their fields by walking words, skipping what they do not read in
//! one step. `resolve` took 11–14 % less time for it (docs/benchmarks.md, sixth
//! session); the text reader stays for what the tape cannot say. A line shaped
//! like one parsed before gets the same tape without simdjson (`simdjson_tape`'s
//! shapes: the reader's time −13 % on the benchmark folder, eighth session), and
//! its parts are where the first line of its shape had them (`Plans`: −23 %,
//! ninth session).

use std::borrow::Cow;
use std::cell::RefCell;

use simdjson_tape::{Kind, Tape};

use super::Line;
use super::cursor::{Cursor, Value};
use super::json::{Error, MAX_DEPTH, Result};

/// Longest line parsed on the tape: simdjson's memory grows with the longest
/// document, and a hostile line may be hundreds of MB (the text reader needs none).
pub const LONGEST: usize = 256 << 10;

/// Whether a document is for the tape: not too long, and not starting with a byte
/// order mark, which simdjson skips and the text reader (as serde_json) refuses.
fn for_the_tape(json: &[u8]) -> bool {
    json.len() <= LONGEST && !json.starts_with("\u{feff}".as_bytes())
}

thread_local! {
    /// One pair of parsers per thread, reused from file to file (they keep their
    /// memory, their shapes and their plans).
    static PARSERS: RefCell<Option<Parsers>> = const { RefCell::new(None) };
}

struct Parsers {
    line: Reading,
    body: Reading,
}

impl Parsers {
    fn new() -> Option<Parsers> {
        // simdjson's depth counts the document itself; a line it accepts is never
        // too deep for the text reader.
        let new = || {
            Some(Reading {
                parser: simdjson_tape::Parser::new(MAX_DEPTH)?,
                plans: Plans::default(),
            })
        };
        Some(Parsers {
            line: new()?,
            body: new()?,
        })
    }
}

/// A parser and the plans of its shapes (whose numbers are the parser's own).
struct Reading {
    parser: simdjson_tape::Parser,
    plans: Plans,
}

/// simdjson's parsers for the files of one thread: a line's, and a wrapper's body's
/// (a callback inside a JSON string, parsed while the line's tape is being read).
/// Put back for the thread's next file when dropped.
pub struct Lines(Option<Parsers>);

/// The parser for the callback in a wrapper's string `body`.
pub struct Bodies<'p>(&'p mut Reading);

impl Lines {
    pub fn take() -> Lines {
        Lines(PARSERS.take().or_else(Parsers::new))
    }

    /// New parsers, which have learned no shape yet.
    #[cfg(test)]
    pub fn new() -> Lines {
        Lines(Parsers::new())
    }

    /// `text[range]` on the tape, its parser's plans, and the parser for a body in
    /// it; None when simdjson refuses the line, or it is not for the tape.
    pub fn parse<'a>(
        &'a mut self,
        text: &'a [u8],
        range: std::ops::Range<usize>,
    ) -> Option<(Tape<'a>, &'a mut Plans, Bodies<'a>)> {
        if !for_the_tape(&text[range.clone()]) {
            return None;
        }
        let Parsers { line, body } = self.0.as_mut()?;
        let tape = line.parser.parse_in(text, range).ok()?;
        Some((tape, &mut line.plans, Bodies(body)))
    }
}

impl Bodies<'_> {
    /// `body` on the tape, and its parser's plans; None when simdjson refuses it,
    /// or it is not for the tape.
    pub fn parse<'a>(&'a mut self, body: &'a str) -> Option<(Tape<'a>, &'a mut Plans)> {
        if !for_the_tape(body.as_bytes()) {
            return None;
        }
        let Reading { parser, plans } = &mut *self.0;
        Some((parser.parse(body.as_bytes()).ok()?, plans))
    }
}

/// Where reading found a line's parts, for each learned shape it was read from
/// (and where on the tape it began: a wrapper's body is a line of its own). A
/// line of a learned shape has the tape of the line the shape was learned from
/// but for its values, and reading looks at keys and kinds alone, never at values
/// (`Cursor::Place`), so its parts are where they were found before: a line of a
/// shape read before is not read again (docs/benchmarks.md, ninth session).
#[derive(Default)]
pub struct Plans(Vec<Vec<(usize, Line<Place>)>>);

impl Plans {
    /// What reading from `r` found, if a line of its tape's shape was read there.
    pub fn get(&self, r: &TapeReader<'_>) -> Option<&Line<Place>> {
        let plans = self.0.get(r.tape.shape()?)?;
        plans
            .iter()
            .find(|(from, _)| *from == r.at)
            .map(|(_, line)| line)
    }

    /// Keeps what reading from `from` found, when its tape has a learned shape.
    pub fn keep(&mut self, from: &TapeReader<'_>, line: Line<Place>) {
        let Some(shape) = from.tape.shape() else {
            return;
        };
        if self.0.len() <= shape {
            self.0.resize_with(shape + 1, Vec::new);
        }
        self.0[shape].push((from.at, line));
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        PARSERS.set(self.0.take());
    }
}

/// A value's index on a tape: small, as a line holds many (a tape has about a
/// word per byte of its line at most, and a line on the tape is `LONGEST` at most).
pub type Place = u32;

/// A position on a tape.
#[derive(Clone)]
pub struct TapeReader<'a> {
    tape: &'a Tape<'a>,
    at: usize,
}

/// A value on a tape.
#[derive(Clone, Copy)]
pub struct TapeValue<'a> {
    tape: &'a Tape<'a>,
    at: usize,
}

impl<'a> TapeReader<'a> {
    /// The document's value.
    pub fn root(tape: &'a Tape<'a>) -> Self {
        TapeReader::at(TapeValue {
            tape,
            at: Tape::ROOT,
        })
    }

    /// Before `value`.
    pub fn at(value: TapeValue<'a>) -> Self {
        TapeReader {
            tape: value.tape,
            at: value.at,
        }
    }

    /// The value at `place` on this reader's tape.
    pub fn value_at(&self, place: Place) -> TapeValue<'a> {
        TapeValue {
            tape: self.tape,
            at: place as usize,
        }
    }

    fn kind(&self) -> Kind {
        self.tape.kind(self.at)
    }

    /// The items of the container at `at`, if it is of `kind`, each read by `item`
    /// (after the key, for an object).
    #[inline(always)]
    fn items(&mut self, kind: Kind, mut item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        if self.kind() != kind {
            return Err(Error::Shape);
        }
        let end = self.tape.end(self.at);
        self.at += 1;
        while self.at < end {
            item(self)?;
        }
        debug_assert_eq!(self.at, end, "an item read past its container");
        self.at = end + 1;
        Ok(())
    }
}

impl<'a> Cursor<'a> for TapeReader<'a> {
    type Place = Place;

    #[inline(always)]
    fn peek(&mut self) -> Result<u8> {
        Ok(match self.kind() {
            Kind::Int | Kind::UInt | Kind::Float => b'0',
            other => other as u8,
        })
    }

    #[inline(always)]
    fn value(&mut self) -> Result<Place> {
        let at = self.at;
        self.at = self.tape.next(at);
        Ok(at as Place)
    }

    #[inline(always)]
    fn nullable(&mut self) -> Result<Option<Place>> {
        let null = self.kind() == Kind::Null;
        let at = self.value()?;
        Ok((!null).then_some(at))
    }

    #[inline(always)]
    fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> Result<()>) -> Result<()> {
        self.items(Kind::Object, |r| {
            let key = r.tape.str(r.at);
            r.at += 1;
            field(r, key)
        })
    }

    #[inline(always)]
    fn array(&mut self, item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.items(Kind::Array, item)
    }

    #[inline(always)]
    fn or_null<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.kind() == Kind::Null {
            self.at += 1;
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    #[inline(always)]
    fn lenient<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<(Option<T>, Place)> {
        let at = self.at;
        match read(self) {
            Ok(read) => Ok((Some(read), at as Place)),
            Err(Error::Shape) => {
                self.at = self.tape.next(at);
                Ok((None, at as Place))
            }
            Err(e) => Err(e),
        }
    }
}

impl TapeValue<'_> {
    fn kind(self) -> Kind {
        self.tape.kind(self.at)
    }
}

impl<'a> Value<'a> for TapeValue<'a> {
    #[inline(always)]
    fn text(self) -> Option<Cow<'a, str>> {
        (self.kind() == Kind::String).then(|| Cow::Borrowed(self.tape.str(self.at)))
    }

    /// `-0` too, which the tape holds as 0 (the text reader: none); a time of 0 is
    /// refused either way, the only use.
    fn digits(self) -> Option<u64> {
        self.tape.u64(self.at)
    }

    fn integer(self) -> Option<i64> {
        (self.kind() == Kind::Int).then(|| self.tape.i64(self.at))
    }

    fn is_object(self) -> bool {
        self.kind() == Kind::Object
    }

    fn source(self) -> Option<&'a str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line longer than `LONGEST` is left to the text reader (no memory grows with
    /// it); one within is parsed, copied with padding when it ends its text.
    #[test]
    fn a_line_past_the_longest_is_left_to_the_text_reader() {
        let line = |len: usize| format!(r#"{{"a":"{}"}}"#, "x".repeat(len - 8));
        let mut lines = Lines::take();
        let within = line(LONGEST);
        assert_eq!(within.len(), LONGEST);
        assert!(lines.parse(within.as_bytes(), 0..LONGEST).is_some());
        let past = line(LONGEST + 1);
        assert!(lines.parse(past.as_bytes(), 0..past.len()).is_none());
    }
}
