//! simdjson's DOM parser (vendored, C++), one document at a time, and its tape read
//! from Rust: every value of the document in order, one or two 64-bit words each,
//! strings unescaped beside it (<https://github.com/simdjson/simdjson/blob/master/doc/tape.md>).
//! simdjson validates the whole document (RFC 8259, UTF-8) at a few GB/s; the tape
//! is then walked without calls into C++. A document shaped like one parsed before
//! is put on the tape without simdjson (`shapes`).

mod shapes;

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::ops::Range;
use std::ptr::NonNull;

unsafe extern "C" {
    fn simdjson_tape_new(capacity: usize, max_depth: usize) -> *mut c_void;
    fn simdjson_tape_free(parser: *mut c_void);
    fn simdjson_tape_parse(
        parser: *mut c_void,
        json: *const u8,
        len: usize,
        tape: *mut *const u64,
        strings: *mut *const u8,
    ) -> c_int;
    fn simdjson_tape_padding() -> usize;
}

/// Bytes simdjson may read past a document's end (it ignores what they hold).
pub const PADDING: usize = 64;

/// Why a document was refused: simdjson's error code (not JSON, not UTF-8, too deep…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub i32);

/// A parser and the memory it reuses from document to document.
pub struct Parser {
    raw: NonNull<c_void>,
    /// A document with too few bytes after it, copied with padding.
    padded: Vec<u8>,
    shapes: shapes::Shapes,
    /// Whether shapes are learned and matched (off: simdjson parses every document).
    learning: bool,
}

// SAFETY: a simdjson parser is plain memory, used by one thread at a time (`&mut`).
unsafe impl Send for Parser {}

impl Drop for Parser {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `simdjson_tape_new` and is freed once.
        unsafe { simdjson_tape_free(self.raw.as_ptr()) }
    }
}

impl Parser {
    /// A parser refusing documents nested deeper than `max_depth`; None when out of memory.
    pub fn new(max_depth: usize) -> Option<Parser> {
        // SAFETY: plain values in; the bridge checks the allocation.
        debug_assert_eq!(unsafe { simdjson_tape_padding() }, PADDING);
        // Room for 4 kB documents at first; a longer one grows it (and it stays grown).
        let raw = NonNull::new(unsafe { simdjson_tape_new(4 << 10, max_depth) })?;
        Some(Parser {
            raw,
            padded: Vec::new(),
            shapes: shapes::Shapes::default(),
            learning: true,
        })
    }

    /// A parser that hands every document to simdjson: what the shapes are held to.
    pub fn without_shapes(max_depth: usize) -> Option<Parser> {
        let mut parser = Parser::new(max_depth)?;
        parser.learning = false;
        Some(parser)
    }

    /// Parses `text[range]` as one JSON document. The bytes after it in `text` serve
    /// as simdjson's padding when there are enough; else the document is copied.
    pub fn parse_in<'t>(
        &'t mut self,
        text: &'t [u8],
        range: Range<usize>,
    ) -> Result<Tape<'t>, Refused> {
        let len = range.len();
        let padded = if text.len() - range.end >= PADDING {
            &text[range.start..]
        } else {
            self.padded.clear();
            self.padded.extend_from_slice(&text[range]);
            self.padded.resize(len + PADDING, 0);
            &self.padded[..]
        };
        if self.learning
            && let Some(shape) = self.shapes.find(padded, len)
        {
            return Ok(self.shapes.tape(shape, padded));
        }
        let (mut tape, mut strings) = (std::ptr::null(), std::ptr::null());
        // SAFETY: `padded` holds the document's `len` bytes followed by PADDING
        // readable ones (in `text` or in `self.padded`), which outlive the call.
        let error = unsafe {
            simdjson_tape_parse(
                self.raw.as_ptr(),
                padded.as_ptr(),
                len,
                &mut tape,
                &mut strings,
            )
        };
        if error != 0 {
            return Err(Refused(error));
        }
        // SAFETY: on success the tape starts with the root word, whose payload is the
        // index past the last (root) word; both buffers live in the parser until it
        // parses again, which needs `&mut self`, so not while the tape is borrowed.
        let words = unsafe { std::slice::from_raw_parts(tape, (*tape & PAYLOAD) as usize) };
        let tape = Tape {
            words,
            strings,
            document: std::ptr::null(),
            shape: NO_SHAPE,
            parser: PhantomData,
        };
        if self.learning {
            self.shapes.learn(&padded[..len], &tape);
        }
        Ok(tape)
    }

    /// Parses all of `json`.
    pub fn parse<'t>(&'t mut self, json: &'t [u8]) -> Result<Tape<'t>, Refused> {
        self.parse_in(json, 0..json.len())
    }
}

const PAYLOAD: u64 = (1 << 56) - 1;

/// What a value on the tape is. Each is the tag simdjson writes for it (so telling
/// it from a tag is a check, not a search), and for a string, container or literal
/// its first byte as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Object = b'{',
    Array = b'[',
    String = b'"',
    /// An integer that fits an `i64`.
    Int = b'l',
    /// An integer above `i64::MAX` that fits a `u64`.
    UInt = b'u',
    /// Any other number.
    Float = b'd',
    True = b't',
    False = b'f',
    Null = b'n',
}

/// A parsed document: `at` arguments are indices of a value's first word, starting
/// with `Tape::ROOT`. Valid until its parser parses again.
#[derive(Clone, Copy)]
pub struct Tape<'p> {
    words: &'p [u64],
    strings: *const u8,
    /// The document, for strings read where they are written (`IN_DOCUMENT`).
    document: *const u8,
    /// The learned shape the document has (`NO_SHAPE`: simdjson parsed it).
    shape: u32,
    parser: PhantomData<&'p Parser>,
}

const NO_SHAPE: u32 = u32::MAX;

/// The payload bit of a string that has no escape, read where the document has it
/// (not simdjson's: `shapes` writes it): its start in bits 24–54, its length in 0–23.
const IN_DOCUMENT: u64 = 1 << 55;

impl<'p> Tape<'p> {
    /// The document's value.
    pub const ROOT: usize = 1;

    /// The tape of a document of learned shape `shape`, written in Rust: in
    /// simdjson's layout but for strings in `document`.
    fn of_shape(shape: u32, words: &'p [u64], strings: &'p [u8], document: &'p [u8]) -> Tape<'p> {
        Tape {
            words,
            strings: strings.as_ptr(),
            document: document.as_ptr(),
            shape,
            parser: PhantomData,
        }
    }

    /// The learned shape the document has, if it has one: documents of one shape
    /// from one parser have the same tape (kinds, keys, containers, literals and
    /// floats, at the same indices) but for the values of their strings and
    /// integers. A parser's shapes are never forgotten, so the number stays its.
    pub fn shape(&self) -> Option<usize> {
        (self.shape != NO_SHAPE).then_some(self.shape as usize)
    }

    #[inline]
    fn tag(&self, at: usize) -> u8 {
        (self.words[at] >> 56) as u8
    }

    #[inline]
    pub fn kind(&self, at: usize) -> Kind {
        match self.tag(at) {
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b'"' => Kind::String,
            b'l' => Kind::Int,
            b'u' => Kind::UInt,
            b'd' => Kind::Float,
            b't' => Kind::True,
            b'f' => Kind::False,
            b'n' => Kind::Null,
            tag => {
                debug_assert!(false, "not the first word of a value: {tag}");
                Kind::Null
            }
        }
    }

    /// The index just past the value at `at` (its next sibling, or its container's end).
    #[inline]
    pub fn next(&self, at: usize) -> usize {
        match self.tag(at) {
            // A container's word holds the index past its closing word.
            b'{' | b'[' => self.words[at] as u32 as usize,
            b'l' | b'u' | b'd' => at + 2,
            _ => at + 1,
        }
    }

    /// The index of the closing word of the container at `at`: its items (an
    /// object's keys and values, alternating) lie between.
    #[inline]
    pub fn end(&self, at: usize) -> usize {
        self.next(at) - 1
    }

    /// The string at `at`, unescaped.
    #[inline]
    pub fn str(&self, at: usize) -> &'p str {
        debug_assert_eq!(self.tag(at), b'"');
        let word = self.words[at];
        if word & IN_DOCUMENT != 0 {
            let (start, len) = ((word >> 24) & 0x7fff_ffff, word & 0xff_ffff);
            let (start, len) = (start as usize, len as usize);
            // SAFETY: `shapes` wrote this word for bytes of the document it checked
            // to be UTF-8, and the document outlives the tape.
            return unsafe {
                let at = self.document.add(start);
                std::str::from_utf8_unchecked(std::slice::from_raw_parts(at, len))
            };
        }
        let offset = (word & PAYLOAD) as usize;
        // SAFETY: a string's payload is its offset in the string buffer, where a
        // 4-byte little-endian length precedes its bytes; simdjson validated the
        // document's UTF-8 and refuses unpaired surrogates in escapes, so the
        // unescaped bytes are UTF-8.
        unsafe {
            let at = self.strings.add(offset);
            let len = u32::from_le_bytes(at.cast::<[u8; 4]>().read_unaligned()) as usize;
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(at.add(4), len))
        }
    }

    /// The integer at `at` (of kind `Int`).
    #[inline]
    pub fn i64(&self, at: usize) -> i64 {
        debug_assert_eq!(self.tag(at), b'l');
        self.words[at + 1] as i64
    }

    /// The integer at `at` (of kind `Int` or `UInt`), when it is not negative.
    #[inline]
    pub fn u64(&self, at: usize) -> Option<u64> {
        match self.tag(at) {
            b'l' => u64::try_from(self.i64(at)).ok(),
            b'u' => Some(self.words[at + 1]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed<T>(json: &str, read: impl FnOnce(Tape<'_>) -> T) -> T {
        let mut parser = Parser::new(64).unwrap();
        read(parser.parse(json.as_bytes()).unwrap())
    }

    #[test]
    fn walks_an_object_key_by_key() {
        let json = r#" {"a": [1, {"b": null}], "k\u00e9y": "v\"x", "n": -5, "u": 18446744073709551615, "f": 1.5, "t": true} "#;
        parsed(json, |tape| {
            let root = Tape::ROOT;
            assert_eq!(tape.kind(root), Kind::Object);
            let mut at = root + 1;
            let mut seen = Vec::new();
            while at < tape.end(root) {
                let value = tape.next(at);
                seen.push((tape.str(at).to_owned(), tape.kind(value)));
                at = tape.next(value);
            }
            assert_eq!(at, tape.end(root));
            assert_eq!(tape.next(root), tape.end(root) + 1);
            let kinds: Vec<_> = seen.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            assert_eq!(
                kinds,
                [
                    ("a", Kind::Array),
                    ("kéy", Kind::String),
                    ("n", Kind::Int),
                    ("u", Kind::UInt),
                    ("f", Kind::Float),
                    ("t", Kind::True)
                ]
            );
        });
        // JSON's -0 is the integer 0 on the tape (it cannot tell the two apart).
        parsed("-0", |tape| {
            assert_eq!((tape.kind(1), tape.i64(1)), (Kind::Int, 0))
        });
        parsed(r#"["v\"x", -5, 18446744073709551615, 7]"#, |tape| {
            assert_eq!(tape.str(2), "v\"x");
            assert_eq!((tape.i64(3), tape.u64(3)), (-5, None));
            assert_eq!(tape.u64(5), Some(u64::MAX));
            assert_eq!(tape.u64(7), Some(7));
        });
    }

    #[test]
    fn refuses_what_is_not_json() {
        let mut parser = Parser::new(4).unwrap();
        for bad in [
            &b"{\"a\":}"[..],
            b"[1] x",
            b"\"\xff\"",
            b"[[[[1]]]]",
            br#""\ud800""#,
            b"",
        ] {
            assert!(
                parser.parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // simdjson's depth counts the document itself: 4 allows three levels.
        assert!(parser.parse(b"[[[1]]]").is_ok());
        assert!(parser.parse(b"{\"a\":{\"b\":1}}").is_ok());
    }

    #[test]
    fn a_document_at_the_end_of_its_text_is_copied_with_padding() {
        let mut parser = Parser::new(8).unwrap();
        let text = br#"{"a":"bb"}"#;
        let tape = parser.parse_in(text, 5..9).unwrap();
        assert_eq!(tape.str(Tape::ROOT), "bb");
    }
}
