//! The JSON reader behind the parser: one validating pass over borrowed text that
//! hands out only the fields a callback shape asks for and checks that everything
//! else is well-formed JSON (RFC 8259). No allocation except for an escaped key.
//!
//! Hand-written because the job is mostly this loop: a general parser spends its
//! time building or dispatching values we then throw away.

use super::cursor::Cursor;
use super::scan::{Scan, Span};
use super::words;

/// Deepest nesting read; deeper text is refused, so no input can exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// Why a text could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Not JSON.
    Syntax,
    /// JSON, but nested deeper than `MAX_DEPTH`.
    TooDeep,
    /// Valid JSON so far, but not of the shape asked for.
    Shape,
}

pub type Result<T> = std::result::Result<T, Error>;

/// A cursor over one JSON text.
pub struct Reader<'a, 's> {
    text: &'a str,
    pos: usize,
    depth: usize,
    scan: Span<'s>,
}

impl<'a, 's> Reader<'a, 's> {
    /// Reads `text` as one JSON document with `read`; only whitespace may follow.
    #[cfg(test)]
    pub fn document<T>(
        text: &'a str,
        read: impl for<'t> FnOnce(&mut Reader<'a, 't>) -> Result<T>,
    ) -> Result<T> {
        Reader::scanned(text, Scan::new(text.as_bytes()).whole(), read)
    }

    /// `document`, with `text`'s scan already made.
    pub fn scanned<T>(
        text: &'a str,
        scan: Span<'s>,
        read: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let mut reader = Reader {
            text,
            pos: 0,
            depth: 0,
            scan,
        };
        let value = match read(&mut reader) {
            // Past the guard, tell deep JSON from broken text without recursion.
            Err(Error::TooDeep) if !well_formed(text) => return Err(Error::Syntax),
            other => other?,
        };
        reader.skip_whitespace();
        if reader.pos == text.len() {
            Ok(value)
        } else {
            Err(Error::Syntax)
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The text from `start` (a position the reader has been at) to where it is.
    #[inline(always)]
    fn since(&self, start: usize) -> &'a str {
        debug_assert!(start <= self.pos && self.text.is_char_boundary(start));
        debug_assert!(self.text.is_char_boundary(self.pos));
        // SAFETY: the reader only ever stands at 0, at the end, or just past an
        // ASCII byte (whitespace, punctuation, a string's closing quote, the last
        // digit or letter of a number or literal), so on char boundaries; and it
        // stands within the text. Checked slicing was a quarter of `value`'s time.
        unsafe { self.text.get_unchecked(start..self.pos) }
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    #[inline]
    fn eat(&mut self, byte: u8) -> Result<()> {
        if self.peek()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(Error::Syntax)
        }
    }

    /// Skips the object or array at `pos`, checking it.
    #[inline(never)]
    fn container(&mut self) -> Result<()> {
        match self.bytes()[self.pos] {
            b'{' => self.object(|r, _| r.value().map(drop)),
            _ => self.array(|r| r.value().map(drop)),
        }
    }

    fn nest(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Error::TooDeep)
        } else {
            Ok(())
        }
    }

    /// `open`, items separated by commas, `close`; another first byte is a shape error.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        if self.peek()? != open {
            return Err(Error::Shape);
        }
        self.pos += 1;
        self.nest()?;
        // Empty; else items, each reading its own first byte.
        if self.peek()? != close {
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.pos += 1,
                    b if b == close => break,
                    _ => return Err(Error::Syntax),
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.bytes()[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Error::Syntax)
        }
    }

    /// A string at `pos` (a quote): its text with the quotes, and whether it holds
    /// escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<(&'a str, bool)> {
        if self.scan.plain {
            // No escapes and no control bytes anywhere: the next quote closes it.
            let start = self.pos;
            let end = self.scan.next_quote(start + 1).ok_or(Error::Syntax)?;
            self.pos = end + 1;
            Ok((self.since(start), false))
        } else {
            self.checked_string()
        }
    }

    /// `string`, byte by byte: in a text with backslashes or control bytes.
    #[inline(never)]
    fn checked_string(&mut self) -> Result<(&'a str, bool)> {
        let bytes = self.bytes();
        let start = self.pos;
        let mut at = start + 1;
        let mut escaped = false;
        loop {
            at += special_byte(&bytes[at..]).ok_or(Error::Syntax)?;
            match bytes[at] {
                b'"' => {
                    self.pos = at + 1;
                    return Ok((self.since(start), escaped));
                }
                b'\\' => escaped = true,
                // Control characters must be escaped inside strings.
                _ => return Err(Error::Syntax),
            }
            match bytes.get(at + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at += 2,
                Some(b'u') => {
                    let hex = bytes.get(at + 2..at + 6).ok_or(Error::Syntax)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(Error::Syntax);
                    }
                    at += 6;
                }
                _ => return Err(Error::Syntax),
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<()> {
        let bytes = self.bytes();
        let digits = |at: usize| digit_run(&bytes[at..]);
        let mut at = self.pos + usize::from(bytes[self.pos] == b'-');
        match (bytes.get(at), digits(at)) {
            (Some(b'0'), _) => at += 1,
            (_, 0) => return Err(Error::Syntax),
            (_, n) => at += n,
        }
        if bytes.get(at) == Some(&b'.') {
            match digits(at + 1) {
                0 => return Err(Error::Syntax),
                n => at += 1 + n,
            }
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            at += 1;
            at += usize::from(matches!(bytes.get(at), Some(b'+' | b'-')));
            match digits(at) {
                0 => return Err(Error::Syntax),
                n => at += n,
            }
        }
        self.pos = at;
        Ok(())
    }
}

impl<'a> Cursor<'a> for Reader<'a, '_> {
    type Place = &'a str;

    #[inline]
    fn peek(&mut self) -> Result<u8> {
        self.skip_whitespace();
        self.bytes().get(self.pos).copied().ok_or(Error::Syntax)
    }

    /// Skips the next value, checking it; returns its text. Inlined for scalars,
    /// nearly every value read: as a call, saving and restoring registers had cost
    /// more than reading a string.
    #[inline(always)]
    fn value(&mut self) -> Result<&'a str> {
        let first = self.peek()?;
        let start = self.pos;
        match first {
            b'"' => drop(self.string()?),
            b'{' | b'[' => self.container()?,
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            _ => self.number()?,
        }
        Ok(self.since(start))
    }

    #[inline(always)]
    fn nullable(&mut self) -> Result<Option<&'a str>> {
        let text = self.value()?;
        Ok((text != "null").then_some(text))
    }

    fn or_null<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null").map(|()| None)
        } else {
            read(self).map(Some)
        }
    }

    /// Reads the next value with `read`; if it is of another shape, skips it and
    /// gives None with its text. Returns the value's text too.
    fn lenient<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<(Option<T>, &'a str)> {
        let start = {
            self.peek()?;
            self.pos
        };
        let depth = self.depth;
        match read(self) {
            Ok(value) => Ok((Some(value), self.since(start))),
            Err(Error::Shape) => {
                (self.pos, self.depth) = (start, depth);
                self.value().map(|text| (None, text))
            }
            Err(e) => Err(e),
        }
    }

    fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> Result<()>) -> Result<()> {
        self.sequence(b'{', b'}', |r| {
            if r.peek()? != b'"' {
                return Err(Error::Syntax);
            }
            let (raw, escaped) = r.string()?;
            r.eat(b':')?;
            let key = &raw[1..raw.len() - 1];
            if escaped {
                let key: String = serde_json::from_str(raw).map_err(|_| Error::Syntax)?;
                field(r, &key)
            } else {
                field(r, key)
            }
        })
    }

    fn array(&mut self, item: impl FnMut(&mut Self) -> Result<()>) -> Result<()> {
        self.sequence(b'[', b']', item)
    }
}

/// Whether `text` is one JSON document, however deeply nested: the containers
/// are tracked on a stack instead of the call stack.
fn well_formed(text: &str) -> bool {
    let scan = Scan::new(text.as_bytes());
    let mut r = Reader {
        text,
        pos: 0,
        depth: 0,
        scan: scan.whole(),
    };
    let mut closers = Vec::new();
    // An object's key and colon, before its value.
    let key =
        |r: &mut Reader<'_, '_>| r.peek() == Ok(b'"') && r.string().is_ok() && r.eat(b':').is_ok();
    loop {
        // A value: open a container, or read a scalar.
        match r.peek() {
            Ok(open @ (b'[' | b'{')) => {
                r.pos += 1;
                let close = if open == b'[' { b']' } else { b'}' };
                if r.peek() == Ok(close) {
                    r.pos += 1;
                } else {
                    closers.push(close);
                    if close == b'}' && !key(&mut r) {
                        return false;
                    }
                    continue;
                }
            }
            Ok(_) => {
                if r.value().is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
        // After a value: a comma and the next, or closers, or the end.
        loop {
            let Some(&close) = closers.last() else {
                r.skip_whitespace();
                return r.pos == text.len();
            };
            match r.peek() {
                Ok(b',') => {
                    r.pos += 1;
                    if close == b'}' && !key(&mut r) {
                        return false;
                    }
                    break;
                }
                Ok(b) if b == close => {
                    r.pos += 1;
                    closers.pop();
                }
                _ => return false,
            }
        }
    }
}

/// Where the first `"`, `\\` or control character of `bytes` is. Eight bytes at a
/// time: strings here are short, too short for a SIMD search to pay its setup.
pub fn special_byte(bytes: &[u8]) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let w = words::word(chunk, 0);
        let hits = words::equal(w, b'"') | words::equal(w, b'\\') | words::below(w, 0x20);
        if hits != 0 {
            return Some(offset + words::first(hits));
        }
        offset += 8;
    }
    let rest = chunks.remainder();
    rest.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| offset + i)
}

/// How many ASCII digits `bytes` starts with. Eight bytes at a time: times are
/// 10–13 digits, which a byte loop ends with a mispredicted branch each.
fn digit_run(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(8);
    let mut count = 0;
    for chunk in &mut chunks {
        let not_digit = words::not_digit(words::word(chunk, 0));
        if not_digit != 0 {
            return count + words::first(not_digit);
        }
        count += 8;
    }
    count
        + chunks
            .remainder()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
}

/// A field an object may hold once: `null` reads as absent, and a second
/// occurrence makes the object unreadable (a shape error), so a line never means
/// two things.
pub struct Once<T>(Option<Option<T>>);

impl<T> Default for Once<T> {
    fn default() -> Self {
        Once(None)
    }
}

impl<T> Once<T> {
    pub fn set(&mut self, value: Option<T>) -> Result<()> {
        match self.0.replace(value) {
            Some(_) => Err(Error::Shape),
            None => Ok(()),
        }
    }

    pub fn get(&self) -> Option<&T> {
        self.0.as_ref().and_then(Option::as_ref)
    }

    pub fn into_inner(self) -> Option<T> {
        self.0.flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(text: &str) -> bool {
        Reader::document(text, |r| r.value().map(drop)).is_ok()
    }

    #[test]
    fn accepts_what_serde_json_accepts_and_refuses_the_rest() {
        let samples = [
            r#"{"a":[1,-2.5e+3,0,true,false,null,"x\"\\\/\b\f\n\r\tA"],"b":{}}"#,
            " [ ] ",
            "\"\u{e9}\"",
            "-0.0E-0",
            "{\"a\":1,}",
            "[1,]",
            "01",
            "1.",
            "-",
            "1e",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"a\u{1}\"",
            "{\"a\" 1}",
            "{a:1}",
            "tru",
            "nul",
            "[1 2]",
            "{} {}",
            "\"abc",
            "",
            "{\"a\":}",
        ];
        for s in samples {
            let expected = serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok();
            assert_eq!(valid(s), expected, "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn special_byte_finds_the_first_quote_backslash_or_control(
            bytes in proptest::collection::vec(proptest::sample::select(
                vec![b'"', b'\\', 0x00, 0x1f, 0x20, b'a', 0x7f, 0x80, 0xa0, 0xdf, 0xff]), 0..40)
        ) {
            let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            proptest::prop_assert_eq!(special_byte(&bytes), naive);
        }
    }

    proptest::proptest! {
        #[test]
        fn digit_run_counts_the_leading_digits(
            bytes in proptest::collection::vec(proptest::sample::select(
                vec![b'0', b'5', b'9', b'/', b':', b'.', b'e', 0x00, 0x7f, 0x80, 0xb0, 0xff]), 0..40)
        ) {
            let naive = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            proptest::prop_assert_eq!(digit_run(&bytes), naive);
        }
    }

    /// JSON texts, valid by construction.
    fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            r#""([a-z\u{e9} ]|\\[nt"\\/]|\\u00[0-9a-fA-F]{2}){0,6}""#,
            r"-?(0|[1-9][0-9]{0,3})(\.[0-9]{1,3})?([eE][+-]?[0-9]{1,2})?",
            Just("true".to_owned()),
            Just("false".to_owned()),
            Just("null".to_owned()),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(" , "))),
                proptest::collection::vec(("[a-z]{0,3}", inner), 0..4).prop_map(|fields| {
                    let fields: Vec<_> =
                        fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn validity_agrees_with_serde_json(
            text in json_text(),
            cut in proptest::option::of((proptest::prelude::any::<usize>(), r#"[\[\]{}:,"\\ 0-9.eE+tn\u{1}-]?"#)),
        ) {
            // Valid texts, and texts one edit away from valid.
            let mut text = text;
            if let Some((at, insert)) = cut {
                let at = at % (text.len() + 1);
                let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
                let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                text.replace_range(at..end, &insert);
            }
            let expected = serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok();
            proptest::prop_assert_eq!(valid(&text), expected, "{}", text);
            // The check used past the depth guard agrees too.
            proptest::prop_assert_eq!(well_formed(&text), expected, "{}", text);
            // What simdjson accepts, the text reader does (the tape answers only then),
            // but for a leading byte order mark, which simdjson skips (`tape` leaves
            // such lines to the text reader).
            let mut simdjson = simdjson_tape::Parser::new(MAX_DEPTH).unwrap();
            if !text.starts_with('\u{feff}') && simdjson.parse(text.as_bytes()).is_ok() {
                proptest::prop_assert!(expected, "simdjson accepts {}", text);
            }
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(valid(&ok));
        assert_eq!(
            Reader::document(&deep, |r| r.value().map(drop)),
            Err(Error::TooDeep)
        );
        let broken = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH));
        assert_eq!(
            Reader::document(&broken, |r| r.value().map(drop)),
            Err(Error::Syntax)
        );
    }

    #[test]
    fn a_field_twice_is_a_shape_error_and_null_is_absent() {
        let read = |text| {
            Reader::document(text, |r| {
                let mut a = Once::default();
                r.object(|r, key| match key {
                    "a" => a.set(r.nullable()?),
                    _ => r.value().map(drop),
                })?;
                Ok(a.into_inner())
            })
        };
        assert_eq!(read(r#"{"a":1,"b":2}"#), Ok(Some("1")));
        assert_eq!(read(r#"{"\u0061":null}"#), Ok(None));
        assert_eq!(read(r#"{"a":1,"a":1}"#), Err(Error::Shape));
        assert_eq!(read(r#"[1]"#), Err(Error::Shape));
    }

    #[test]
    fn lenient_skips_a_value_of_another_shape() {
        let got = Reader::document(r#"[[1,{"x":2}],{"k":3}]"#, |r| {
            let mut seen = Vec::new();
            r.array(|r| {
                let (read, text) = r.lenient(|r| r.object(|r, _| r.value().map(drop)))?;
                seen.push((read.is_some(), text.to_owned()));
                Ok(())
            })?;
            Ok(seen)
        });
        assert_eq!(
            got,
            Ok(vec![
                (false, r#"[1,{"x":2}]"#.to_owned()),
                (true, r#"{"k":3}"#.to_owned())
            ])
        );
    }
}
