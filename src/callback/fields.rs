//! Reading single JSON values leniently: a wrong type is "missing", never a panic.

use std::borrow::Cow;

/// Earliest accepted time, 2010-01-01T00:00:00Z: no Gupshup callback is older, so an
/// earlier one (a `ts` of "0", a replayed test file) is unusable, never a status time
/// (which would also stretch every partition bound computed from it).
const MIN_MS: u64 = 1_262_304_000_000;
/// Largest accepted time, 9999-12-31T23:59:59.999Z, so output keeps four-digit years.
const MAX_MS: u64 = 253_402_300_799_999;
/// Values at or above this are milliseconds; smaller ones are seconds.
const MS_THRESHOLD: u64 = 100_000_000_000;

use super::cursor::Value;
use super::json::special_byte;
use super::words;

/// The value (JSON text) as a string, if it is one. Inlined: nearly every string
/// has no escapes, and as a call this was mostly saving registers.
#[inline(always)]
pub fn text(raw: &str) -> Option<Cow<'_, str>> {
    match raw.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        // No escapes: the text between the quotes is the string.
        Some(inner) if !has_backslash(inner) => Some(Cow::Borrowed(inner)),
        Some(inner) => unescaped(raw, inner),
        None => None,
    }
}

/// `text` of a string with escapes (`inner`, between the quotes of `raw`).
#[inline(never)]
fn unescaped<'r>(raw: &'r str, inner: &str) -> Option<Cow<'r, str>> {
    unescape(inner)
        .or_else(|| serde_json::from_str(raw).ok())
        .map(Cow::Owned)
}

/// A string's text between its quotes, unescaped, when it holds only one-letter
/// escapes (a wrapper's body as a JSON string: every quote of the callback escaped);
/// None for anything else (`\u`, a stray quote, a control byte), left to serde_json.
fn unescape(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    // Eight bytes at a time to the next escape: a body's are a few bytes apart,
    // too close for memchr's setup to pay.
    while let Some(at) = special_byte(rest.as_bytes()) {
        out.push_str(&rest[..at]);
        let unescaped = match rest.as_bytes().get(at..at + 2)? {
            br#"\""# => '"',
            br"\\" => '\\',
            br"\/" => '/',
            br"\b" => '\u{8}',
            br"\f" => '\u{c}',
            br"\n" => '\n',
            br"\r" => '\r',
            br"\t" => '\t',
            _ => return None,
        };
        out.push(unescaped);
        rest = &rest[at + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// Whether `s` holds a backslash. Values are short (ids of 36 bytes, statuses,
/// digits): eight bytes at a time, the last eight overlapping the one before, so
/// no byte loop ends with a branch that depends on the length.
///
/// (Knowing it from the reader instead, which has seen every string, was tried:
/// a flag beside each value's text made copying values through `Once` a stall
/// that cost 13 %; docs/benchmarks.md.)
fn has_backslash(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some(last) = bytes.len().checked_sub(8) else {
        return bytes.contains(&b'\\');
    };
    let backslashes = |at| words::equal(words::word(bytes, at), b'\\');
    let mut found = backslashes(last);
    for at in (0..last).step_by(8) {
        found |= backslashes(at);
    }
    found != 0
}

/// A value as the text reader keeps it: its JSON text.
impl<'a> Value<'a> for &'a str {
    #[inline(always)]
    fn text(self) -> Option<Cow<'a, str>> {
        text(self)
    }
    fn digits(self) -> Option<u64> {
        digits(self)
    }
    fn integer(self) -> Option<i64> {
        self.parse().ok()
    }
    fn is_object(self) -> bool {
        self.starts_with('{')
    }
    fn source(self) -> Option<&'a str> {
        Some(self)
    }
}

/// The first usable message id: a string, trimmed, not empty.
pub fn key<'r, V: Value<'r>>(candidates: &[Option<V>]) -> Option<Cow<'r, str>> {
    candidates.iter().flatten().find_map(|value| {
        let s = value.text()?;
        // Printable ASCII at both ends (nearly every id): nothing to trim.
        let printable = |b: Option<&u8>| b.is_some_and(|b| (b'!'..=b'~').contains(b));
        if printable(s.as_bytes().first()) && printable(s.as_bytes().last()) {
            return Some(s);
        }
        let trimmed = s.trim();
        if trimmed.is_empty() {
            None
        } else if trimmed.len() == s.len() {
            Some(s)
        } else {
            Some(Cow::Owned(trimmed.to_owned()))
        }
    })
}

/// An epoch time given as a number or a string of digits; seconds or milliseconds.
pub fn epoch_ms<'a>(value: impl Value<'a>) -> Option<i64> {
    let value = match value.text() {
        Some(s) => digits(&s)?,
        None => value.digits()?,
    };
    let ms = if value >= MS_THRESHOLD {
        value
    } else {
        value * 1000
    };
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms as i64)
}

/// `text` as a number when it is digits alone; more digits than a u64 holds is none.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    // Checked and summed in one pass.
    text.bytes().try_fold(0u64, |value, b| {
        let digit = b.wrapping_sub(b'0');
        (digit <= 9).then_some(())?;
        value.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// An integer error code, as a JSON integer or a string of digits.
pub fn code<'a>(value: impl Value<'a>) -> Option<i64> {
    match value.text() {
        Some(s) => s.trim().parse().ok(),
        None => value.integer(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::cursor::Cursor;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn text_reads_a_string_as_serde_json_does(
            valid in r#"([a-z{}:,é ]|\\["\\/bfnrt]){0,40}"#,
            unicode in r#"(\\u00[0-9a-f]{2}|\\ud83d\\ude00){1,2}"#,
            broken in r#"([a-z]|"|\\["\\/bfnrtux]|[\x00-\x1f]){0,6}"#,
            encoded in any::<String>(),
        ) {
            // What the reader hands over: texts with any escapes that it accepts as a
            // value, and strings as serde_json writes them.
            let read = |raw: &str| super::super::json::Reader::document(raw, |r| r.value().map(drop));
            let raws = [
                format!("\"{valid}\""),
                format!("\"{valid}{unicode}\""),
                format!("\"{valid}{broken}\""),
                serde_json::to_string(&encoded).unwrap(),
            ];
            for raw in raws.iter().filter(|raw| read(raw).is_ok()) {
                let expected = serde_json::from_str::<String>(raw).ok();
                prop_assert!(expected.is_some());
                prop_assert_eq!(text(raw).map(Cow::into_owned), expected, "{}", raw);
            }
        }
    }
}
