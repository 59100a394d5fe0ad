//! Documents shaped like one parsed before, put on the tape without simdjson.
//!
//! Callbacks come from a few serializers, so most lines differ from an earlier one
//! only in the values of their strings and integers. A *shape* is such a line with
//! those values taken out: its keys, punctuation, spacing and literals (`true`,
//! `null`), byte for byte. A document that has a learned shape's bytes around values
//! that are valid where they stand is JSON, and its tape is the shape's tape with its
//! values written in, so it needs no parse: a string value must hold no escape, no
//! control byte and only UTF-8; an integer must be `0` or at most 18 digits without
//! a leading zero, with an optional minus (no `-0`, which simdjson makes 0). Anything
//! else is simdjson's to parse, and it learns the shape of what it accepts.
//!
//! A shape is matched as a program: its stretches of bytes in order, each compared
//! sixteen bytes at a time and followed by a value (or the end), so matching walks
//! one array front to back. Shapes that begin alike are linked where they part: when
//! a document leaves a shape at its `i`-th stretch, the next shape with the same
//! first `i` stretches is tried from there, so no stretch is compared twice. A
//! matched string is read where the document has it, not copied (`IN_DOCUMENT`).
//! Measured in docs/benchmarks.md (issue #14, eighth session).

use super::Tape;

/// Shapes learned at most, and their bytes at most, per parser: a run of lines that
/// are all shaped differently stops learning instead of growing.
const MAX_SHAPES: usize = 256;
const MAX_BYTES: usize = 1 << 20;

/// Past the first shapes, one document in this many that has no shape is learned:
/// a common shape soon comes again, and learning a rare one costs more than it saves.
const EAGER: usize = 32;
const LEARN_ONE_IN: usize = 16;

/// Shapes tried at most in one place (and so learned at most there), and in all
/// for one document: lines of ever new shapes cost simdjson's parse and a little.
const MAX_ALIKE: usize = 16;
const MAX_TRIES: usize = 32;

/// Shapes pay when most documents have one: a miss costs a partial match before
/// simdjson's parse, a match saves the parse and (with the reader's plans) the
/// reading of keys. Measured (docs/benchmarks.md, ninth session): on the second
/// benchmark folder (86 % matched) resting below 9 in 10 cost 9 % of `resolve`'s
/// time against never resting, and on lines each of a new shape never resting cost
/// 60 %; so when fewer than half of a window's documents match, the next `REST`
/// go to simdjson alone.
const WINDOW: u32 = 4096;
const REST: u32 = 1 << 16;

/// Documents longer than this go to simdjson, unlearned. Long callbacks are those
/// with many values (a Cloud API batch of statuses with their pricing, an inbound
/// message beside them) and the most kinds of them, so they match least often and
/// cost the most to try; simdjson's parse takes them at about the same cost a
/// byte as a match. Measured (docs/benchmarks.md, eleventh session): on the second
/// benchmark folder (a third of its lines past 600 bytes) 800 was 3–6 % faster than
/// no bound, 600 and 1,000 less; the first folder has almost no line that long.
const MAX_LEN: usize = 800;

/// An integer value: at most this many digits always fits an `i64`.
const MAX_DIGITS: usize = 18;

/// Sixteen bytes of a stretch, or a stretch's header: its length (bytes 0–3), what
/// follows it (4), which bytes of its last block are its own (6–7) and which of
/// its first 32 (8–11).
#[derive(Clone, Copy, PartialEq)]
#[repr(align(16))]
struct Block([u8; 16]);

/// No next shape.
const NONE: u32 = u32::MAX;

/// The learned shapes of one parser; the first is where matching starts.
pub(crate) struct Shapes {
    shapes: Vec<Shape>,
    bytes: usize,
    /// Documents not learned since the last one was.
    unlearned: usize,
    /// Documents looked for and found in this window; documents left to rest.
    looked: u32,
    found: u32,
    resting: u32,
    /// The tape words of the values of the document last matched, in order; room
    /// for the most values a shape has.
    values: Vec<u64>,
    /// Whether to compare 32 bytes at a time (AVX2, when the CPU has it).
    wide: bool,
}

impl Default for Shapes {
    fn default() -> Self {
        Shapes {
            shapes: Vec::new(),
            bytes: 0,
            unlearned: 0,
            looked: 0,
            found: 0,
            resting: 0,
            values: Vec::new(),
            #[cfg(target_arch = "x86_64")]
            wide: is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            wide: false,
        }
    }
}

/// A learned document: how to match it, and its tape, into which a match writes
/// its values.
struct Shape {
    /// Each stretch: a header, then its bytes sixteen to a block.
    program: Vec<Block>,
    /// Where each stretch starts in `program`.
    starts: Vec<u32>,
    /// For each stretch, the next shape with the same stretches before it (NONE).
    others: Vec<u32>,
    /// simdjson's tape of the learned document, its keys' strings in `strings`.
    words: Vec<u64>,
    /// The keys' strings, as simdjson's string buffer holds them.
    strings: Vec<u8>,
    /// The index of each value's word on the tape, in order: a string's first,
    /// an integer's second (the first is its tag).
    slots: Vec<u32>,
}

/// What follows a stretch of a shape's bytes.
#[derive(Clone, Copy, PartialEq)]
#[repr(u8)]
enum Then {
    String = STRING,
    Integer = INTEGER,
    End = 2,
}

const STRING: u8 = 0;
const INTEGER: u8 = 1;

impl Shapes {
    /// The shape `doc[..len]` has, if one was learned; its values are then kept for
    /// `tape`. `doc` holds at least `PADDING` bytes after the document.
    pub(crate) fn find(&mut self, doc: &[u8], len: usize) -> Option<usize> {
        // Every read stays within the padding (the `scan` module's contract); a
        // string's start and length fit its tape word (24 bits each) below `MAX_LEN`.
        const { assert!(MAX_LEN < 1 << 24) };
        if doc.len() < len + super::PADDING || len > MAX_LEN {
            return None;
        }
        if self.resting > 0 {
            self.resting -= 1;
            return None;
        }
        self.looked += 1;
        if self.looked == WINDOW {
            if self.found < WINDOW / 2 {
                self.resting = REST;
            }
            (self.looked, self.found) = (0, 0);
        }
        #[cfg(target_arch = "x86_64")]
        if self.wide {
            // SAFETY: the CPU has AVX2 (`wide`).
            return unsafe { self.match_wide(doc, len) };
        }
        self.match_program::<false>(doc, len)
    }

    /// `match_program` with AVX2: half the compares, and half the masks to merge.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn match_wide(&mut self, doc: &[u8], len: usize) -> Option<usize> {
        self.match_program::<true>(doc, len)
    }

    /// The shape `doc[..len]` has (see `find`); `WIDE`: with AVX2, only called
    /// where the CPU has it.
    #[inline(always)]
    fn match_program<const WIDE: bool>(&mut self, doc: &[u8], len: usize) -> Option<usize> {
        let mut id = 0;
        let mut shape = self.shapes.first()?;
        self.values.clear();
        // Known to be this long, so reads before `len` need no bounds check.
        let doc = &doc[..len + super::PADDING];
        let (mut at, mut k, mut tries) = (0, 0, 0);
        'stretches: loop {
            'failed: {
                // SAFETY (here and below): `k` is the index of a stretch's header,
                // which is followed by its blocks (one at least: a stretch is never
                // empty in JSON) and one more (`outline` ends every program with an
                // empty block). Unchecked: the checks cost 3 % of `resolve`'s
                // instructions (docs/benchmarks.md, tenth session).
                let Block(header) = unsafe { *shape.program.get_unchecked(k) };
                let stretch = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
                let blocks = stretch.div_ceil(16);
                debug_assert!(k + 1 + blocks.max(2) <= shape.program.len());
                let after = at + stretch;
                if after > len {
                    break 'failed;
                }
                // The first 32 bytes at once (most stretches are shorter), then the rest.
                let program = &shape.program;
                let first =
                    scan::equal32::<WIDE>(doc, at, unsafe { program.get_unchecked(k + 1..k + 3) });
                let mut missing = !first & u32::from_le_bytes(header[8..12].try_into().unwrap());
                if blocks > 2 {
                    let last = u16::from_le_bytes([header[6], header[7]]) as u32;
                    for i in 2..blocks {
                        let wanted = if i + 1 == blocks { last } else { 0xffff };
                        missing |= !scan::equal(doc, at + 16 * i, unsafe {
                            &program.get_unchecked(k + 1 + i).0
                        }) & wanted;
                    }
                }
                if missing != 0 {
                    break 'failed;
                }
                let value = match header[4] {
                    STRING => match string_end::<WIDE>(doc, len, after) {
                        // (A start and a length below 2^24: see `find`.)
                        Some(end) => (end, in_document(after, end - after)),
                        None => break 'failed,
                    },
                    INTEGER => match integer(doc, len, after) {
                        Some((value, end)) => (end, value as u64),
                        None => break 'failed,
                    },
                    _ if after == len => {
                        self.found += 1;
                        return Some(id);
                    }
                    _ => break 'failed,
                };
                // SAFETY: the values so far are the current shape's first ones, and
                // `values` has room for all of the shape's (`learn` made it).
                debug_assert!(self.values.len() < self.values.capacity());
                unsafe {
                    let n = self.values.len();
                    self.values.as_mut_ptr().add(n).write(value.1);
                    self.values.set_len(n + 1);
                }
                at = value.0;
                k += 1 + blocks;
                continue 'stretches;
            }
            // Another shape alike so far, from this stretch on.
            tries += 1;
            if tries == MAX_TRIES {
                return None;
            }
            let i = self.values.len();
            id = shape.others[i] as usize;
            shape = self.shapes.get(id)?;
            k = shape.starts[i] as usize;
        }
    }

    /// The tape of the document `find` matched to `shape`: its strings are read
    /// where `doc` has them.
    pub(crate) fn tape<'a>(&'a mut self, id: usize, doc: &'a [u8]) -> Tape<'a> {
        let shape = &mut self.shapes[id];
        debug_assert_eq!(shape.slots.len(), self.values.len());
        for (&at, &word) in shape.slots.iter().zip(&self.values) {
            // SAFETY: `outline` took each slot from the shape's tape, `words`.
            debug_assert!((at as usize) < shape.words.len());
            unsafe { *shape.words.get_unchecked_mut(at as usize) = word };
        }
        Tape::of_shape(id as u32, &shape.words, &shape.strings, doc)
    }

    /// Learns the shape of `doc`, an object simdjson put on `tape`, unless its values
    /// cannot all be written in (a string with an escape, a number not an `i64`
    /// written plainly) or enough shapes are known.
    pub(crate) fn learn(&mut self, doc: &[u8], tape: &Tape<'_>) {
        if doc.len() > MAX_LEN
            || self.shapes.len() >= MAX_SHAPES
            || self.bytes >= MAX_BYTES
            || self.resting > 0
        {
            return;
        }
        if self.shapes.len() >= EAGER && self.unlearned < LEARN_ONE_IN - 1 {
            self.unlearned += 1;
            return;
        }
        self.unlearned = 0;
        let Some(mut shape) = outline(doc, tape) else {
            return;
        };
        let id = self.shapes.len() as u32;
        // Linked after the last shape alike so far where they part.
        let (mut alike, mut i, mut there) = (0, 0, 0);
        while let Some(known) = self.shapes.get(alike) {
            if i == shape.starts.len() {
                return; // known already
            }
            if known.stretch(i) == shape.stretch(i) {
                (i, there) = (i + 1, 0);
                continue;
            }
            there += 1;
            match known.others[i] {
                _ if there == MAX_ALIKE => return,
                NONE => {
                    self.shapes[alike].others[i] = id;
                    break;
                }
                other => alike = other as usize,
            }
        }
        shape.others.resize(shape.starts.len(), NONE);
        self.bytes +=
            size_of_val(&shape.program[..]) + size_of_val(&shape.words[..]) + shape.strings.len();
        // Room for its values, so matching never grows `values` (see there).
        self.values.clear();
        self.values.reserve(shape.slots.len());
        self.shapes.push(shape);
    }
}

impl Shape {
    /// The `i`-th stretch of the program, header and blocks.
    fn stretch(&self, i: usize) -> &[Block] {
        let start = self.starts[i] as usize;
        let Block(header) = self.program[start];
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        &self.program[start..start + 1 + len.div_ceil(16)]
    }

    /// Appends a stretch of bytes and what follows it to the program.
    fn push_stretch(&mut self, bytes: &[u8], then: Then) {
        // Matching reads a stretch's first block unchecked: JSON has punctuation
        // between any two values, and an object's end after the last.
        assert!(!bytes.is_empty(), "an empty stretch");
        self.starts.push(self.program.len() as u32);
        let mut header = [0; 16];
        header[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        header[4] = then as u8;
        let last = match bytes.len() % 16 {
            0 => 0xffff,
            tail => (1u16 << tail) - 1,
        };
        header[6..8].copy_from_slice(&last.to_le_bytes());
        let first = match bytes.len() {
            32.. => u32::MAX,
            n => (1u32 << n) - 1,
        };
        header[8..12].copy_from_slice(&first.to_le_bytes());
        self.program.push(Block(header));
        for chunk in bytes.chunks(16) {
            let mut block = [0; 16];
            block[..chunk.len()].copy_from_slice(chunk);
            self.program.push(Block(block));
        }
    }
}

/// The index of the closing quote of the string value whose contents start at
/// `at`; None if the contents hold an escape or a control byte, are not UTF-8, or
/// the document ends first.
#[inline(always)]
fn string_end<const WIDE: bool>(doc: &[u8], len: usize, at: usize) -> Option<usize> {
    let mut from = at;
    let mut ascii = true;
    loop {
        // 64 bytes at once: nearly every value ends within them.
        let (mut flags, mut quotes) = (0, 0);
        for i in 0..2 {
            let (special, quote) = scan::special32::<WIDE>(doc, from + 32 * i);
            flags |= u64::from(special) << (32 * i);
            quotes |= u64::from(quote) << (32 * i);
        }
        if flags == 0 {
            from += 64;
            if from >= len {
                return None;
            }
            continue;
        }
        let end = from + flags.trailing_zeros() as usize;
        if end >= len {
            return None;
        }
        if quotes & flags & flags.wrapping_neg() != 0 {
            return (ascii || std::str::from_utf8(&doc[at..end]).is_ok()).then_some(end);
        }
        if doc[end] < 0x80 {
            return None; // a backslash or a control byte
        }
        // Validated as a whole once the end is found; look on for it.
        ascii = false;
        from = end + 1;
    }
}

/// Sixteen bytes of a document at a time, a bit for each (lowest first). The
/// document must have sixteen readable bytes from where it is read.
mod scan {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn load(doc: &[u8], at: usize) -> __m128i {
        // Checked by the tests: every read is within the document and its padding.
        debug_assert!(at + 16 <= doc.len());
        // SAFETY: the caller's document has sixteen bytes from `at` (the module's
        // contract), read unaligned; SSE2 is part of x86-64.
        unsafe { _mm_loadu_si128(doc.as_ptr().add(at).cast()) }
    }

    /// The bytes at `at` equal to `block`'s.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn equal(doc: &[u8], at: usize, block: &[u8; 16]) -> u32 {
        let block = load(block, 0);
        // SAFETY: SSE2 is part of x86-64.
        unsafe { _mm_movemask_epi8(_mm_cmpeq_epi8(load(doc, at), block)) as u32 }
    }

    /// `equal` of the 32 bytes at `at` and `blocks`' (two); with AVX2 if `WIDE`.
    #[inline(always)]
    pub fn equal32<const WIDE: bool>(doc: &[u8], at: usize, blocks: &[super::Block]) -> u32 {
        #[cfg(target_arch = "x86_64")]
        if WIDE {
            // SAFETY: `WIDE` code runs only where the CPU has AVX2.
            return unsafe { wide::equal(doc, at, blocks) };
        }
        equal(doc, at, &blocks[0].0) | equal(doc, at + 16, &blocks[1].0) << 16
    }

    /// `special` of the 32 bytes at `at`; with AVX2 if `WIDE`.
    #[inline(always)]
    pub fn special32<const WIDE: bool>(doc: &[u8], at: usize) -> (u32, u32) {
        #[cfg(target_arch = "x86_64")]
        if WIDE {
            // SAFETY: `WIDE` code runs only where the CPU has AVX2.
            return unsafe { wide::special(doc, at) };
        }
        let ((a, p), (b, q)) = (special(doc, at), special(doc, at + 16));
        (a | b << 16, p | q << 16)
    }

    /// The same, 32 bytes at a time.
    #[cfg(target_arch = "x86_64")]
    mod wide {
        use std::arch::x86_64::*;

        #[inline]
        #[target_feature(enable = "avx2")]
        fn load(bytes: &[u8], at: usize) -> __m256i {
            // Checked by the tests: every read is within the document and its padding.
            debug_assert!(at + 32 <= bytes.len());
            // SAFETY: the caller's document has 32 bytes from `at` (the module's
            // contract), read unaligned.
            unsafe { _mm256_loadu_si256(bytes.as_ptr().add(at).cast()) }
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        pub fn equal(doc: &[u8], at: usize, blocks: &[super::super::Block]) -> u32 {
            // Two blocks, one after the other in the program.
            let blocks = &blocks[..2];
            // SAFETY: `blocks` are 32 bytes (two `Block`s of 16, no padding between).
            let block = unsafe { _mm256_loadu_si256(blocks.as_ptr().cast()) };
            _mm256_movemask_epi8(_mm256_cmpeq_epi8(load(doc, at), block)) as u32
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        pub fn special(doc: &[u8], at: usize) -> (u32, u32) {
            let bytes = load(doc, at);
            let quote = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b'"' as i8));
            let backslash = _mm256_cmpeq_epi8(bytes, _mm256_set1_epi8(b'\\' as i8));
            // Signed: bytes from 0x80 are negative, so below 0x20 too.
            let below = _mm256_cmpgt_epi8(_mm256_set1_epi8(0x20), bytes);
            let special = _mm256_or_si256(_mm256_or_si256(quote, backslash), below);
            (
                _mm256_movemask_epi8(special) as u32,
                _mm256_movemask_epi8(quote) as u32,
            )
        }
    }

    /// The bytes at `at` a string value cannot hold plainly: a quote, a backslash,
    /// a control byte, and bytes of multi-byte UTF-8 (checked apart); and the quotes.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn special(doc: &[u8], at: usize) -> (u32, u32) {
        let bytes = load(doc, at);
        // SAFETY: SSE2 is part of x86-64.
        unsafe {
            let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
            // Signed: bytes from 0x80 are negative, so below 0x20 too.
            let below = _mm_cmplt_epi8(bytes, _mm_set1_epi8(0x20));
            let special = _mm_or_si128(_mm_or_si128(quote, backslash), below);
            (
                _mm_movemask_epi8(special) as u32,
                _mm_movemask_epi8(quote) as u32,
            )
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn equal(doc: &[u8], at: usize, block: &[u8; 16]) -> u32 {
        flags(doc, at, |i, byte| byte == block[i])
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub fn special(doc: &[u8], at: usize) -> (u32, u32) {
        let special = |_, byte| matches!(byte, b'"' | b'\\' | ..0x20 | 0x80..);
        (
            flags(doc, at, special),
            flags(doc, at, |_, byte| byte == b'"'),
        )
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn flags(doc: &[u8], at: usize, flag: impl Fn(usize, u8) -> bool) -> u32 {
        (0..16).fold(0, |flags, i| flags | (flag(i, doc[at + i]) as u32) << i)
    }
}

/// The integer at `at` and the index after it; None unless written plainly (see
/// the module's comment).
#[inline(always)]
fn integer(doc: &[u8], len: usize, at: usize) -> Option<(i64, usize)> {
    let negative = doc[at] == b'-';
    let first = at + negative as usize;
    let mut end = first;
    let mut value: i64 = 0;
    while end < len && doc[end].is_ascii_digit() {
        if end - first == MAX_DIGITS {
            return None;
        }
        value = value * 10 + (doc[end] - b'0') as i64;
        end += 1;
    }
    match (end - first, doc.get(first)) {
        (0, _) => None,
        // A leading zero, and -0 (the tape's 0, not a shape's `-` and digits).
        (n, Some(b'0')) if n > 1 || negative => None,
        _ => Some((if negative { -value } else { value }, end)),
    }
}

/// Whether `number` is an integer `integer` reads.
fn plain_integer(number: &[u8]) -> bool {
    let mut padded = number.to_vec();
    padded.resize(number.len() + 8, b' ');
    integer(&padded, number.len(), 0).is_some_and(|(_, end)| end == number.len())
}

fn string_word(payload: u64) -> u64 {
    (u64::from(b'"') << 56) | payload
}

/// The tape word of a string read where the document has it: `len` bytes from `start`.
#[inline(always)]
fn in_document(start: usize, len: usize) -> u64 {
    string_word(super::IN_DOCUMENT | (start as u64) << 24 | len as u64)
}

/// Appends a string as simdjson's string buffer holds it: its length (4 bytes,
/// little-endian), its bytes, a NUL.
fn push_string(strings: &mut Vec<u8>, text: &[u8]) {
    strings.extend_from_slice(&(text.len() as u32).to_le_bytes());
    strings.extend_from_slice(text);
    strings.push(0);
}

/// The index of the quote closing the string whose contents start at `at`.
fn quote_end(doc: &[u8], mut at: usize) -> Option<usize> {
    loop {
        match *doc.get(at)? {
            b'"' => return Some(at),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// The shape of `doc`, read from the document and simdjson's tape of it together;
/// None when a value could not be written in (see `learn`) or `doc` is not an object.
fn outline(doc: &[u8], tape: &Tape<'_>) -> Option<Shape> {
    if doc.first() != Some(&b'{') {
        return None;
    }
    let mut shape = Shape {
        program: Vec::new(),
        starts: Vec::new(),
        others: Vec::new(),
        words: Vec::new(),
        strings: Vec::new(),
        slots: Vec::new(),
    };
    // Where each key's string is in `strings`, to be written into the words last.
    let mut keys = Vec::new();
    // Whether each open container is an object, and whether a key comes next.
    let mut objects = Vec::new();
    let mut key_next = false;
    let (mut from, mut at, mut t) = (0, 0, Tape::ROOT);
    while at < doc.len() {
        if t >= tape.words.len() {
            debug_assert!(false, "the outline and the tape part");
            return None;
        }
        match doc[at] {
            b' ' | b'\t' | b'\n' | b'\r' | b':' => {}
            b',' => key_next = objects.last() == Some(&true),
            open @ (b'{' | b'[') => {
                if tape.tag(t) != open {
                    return None;
                }
                objects.push(open == b'{');
                key_next = open == b'{';
                t += 1;
            }
            close @ (b'}' | b']') => {
                if tape.tag(t) != close {
                    return None;
                }
                objects.pop();
                t += 1;
            }
            b'"' if tape.tag(t) != b'"' => return None,
            b'"' if key_next => {
                // A key stays in the stretch; its tape string moves to the keys.
                at = quote_end(doc, at + 1)?;
                keys.push((t, shape.strings.len()));
                push_string(&mut shape.strings, tape.str(t).as_bytes());
                key_next = false;
                t += 1;
            }
            b'"' => {
                let end = at
                    + 1
                    + doc[at + 1..]
                        .iter()
                        .position(|&b| b == b'"' || b == b'\\')?;
                if doc[end] == b'\\' {
                    return None;
                }
                shape.push_stretch(&doc[from..at + 1], Then::String);
                shape.slots.push(t as u32);
                from = end;
                t += 1;
                at = end;
            }
            b'-' | b'0'..=b'9' => {
                let end = at
                    + doc[at..]
                        .iter()
                        .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                        .unwrap_or(doc.len() - at);
                if tape.tag(t) != b'l' || !plain_integer(&doc[at..end]) {
                    return None;
                }
                shape.push_stretch(&doc[from..at], Then::Integer);
                shape.slots.push(t as u32 + 1);
                from = end;
                t += 2;
                at = end;
                continue;
            }
            literal @ (b't' | b'f' | b'n') => {
                if tape.tag(t) != literal {
                    return None;
                }
                t += 1;
                at += if literal == b'f' { 5 } else { 4 };
                continue;
            }
            _ => return None,
        }
        at += 1;
    }
    // Read in step with the tape to its last (root) word, or not learned.
    if t + 1 != tape.words.len() {
        debug_assert!(false, "the outline and the tape part");
        return None;
    }
    shape.push_stretch(&doc[from..], Then::End);
    // Read past the last stretch's blocks (masked), as past every other's.
    shape.program.push(Block([0; 16]));
    shape.words = tape.words.to_vec();
    for (t, offset) in keys {
        shape.words[t] = string_word(offset as u64);
    }
    Some(shape)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{PADDING, Parser};

    /// A tape's words, each string as its text (the buffers' layouts may differ).
    fn decoded(tape: &Tape<'_>) -> Vec<(u8, u64, Option<String>)> {
        let mut items = Vec::new();
        let mut at = 0;
        while at < tape.words.len() {
            let tag = tape.tag(at);
            items.push(match tag {
                b'"' => (tag, 0, Some(tape.str(at).to_owned())),
                b'l' | b'u' | b'd' => {
                    at += 1;
                    (tag, tape.words[at], None)
                }
                _ => (tag, tape.words[at] & crate::PAYLOAD, None),
            });
            at += 1;
        }
        items
    }

    /// simdjson's tape of `doc`, decoded; None when it refuses it.
    fn simdjson(doc: &[u8]) -> Option<Vec<(u8, u64, Option<String>)>> {
        let mut parser = Parser::without_shapes(64).unwrap();
        parser.parse(doc).ok().map(|tape| decoded(&tape))
    }

    /// What `shapes` make of `doc`: its tape when it has a learned shape (which
    /// must be simdjson's), else None after learning it when simdjson accepts it.
    fn through(shapes: &mut Shapes, doc: &[u8]) -> Option<Vec<(u8, u64, Option<String>)>> {
        let mut padded = doc.to_vec();
        padded.resize(doc.len() + PADDING, b'"');
        let expected = simdjson(doc);
        match shapes.find(&padded, doc.len()) {
            Some(shape) => {
                let tape = shapes.tape(shape, &padded);
                assert_eq!(tape.shape(), Some(shape));
                let tape = decoded(&tape);
                assert_eq!(
                    Some(&tape),
                    expected.as_ref(),
                    "{}",
                    String::from_utf8_lossy(doc)
                );
                Some(tape)
            }
            None => {
                let mut parser = Parser::without_shapes(64).unwrap();
                if let Ok(tape) = parser.parse(doc) {
                    assert_eq!(tape.shape(), None);
                    shapes.learn(doc, &tape);
                }
                None
            }
        }
    }

    #[test]
    fn a_document_shaped_like_one_before_gets_simdjsons_tape() {
        // 16 bytes at a time, and 32 where the CPU can.
        for wide in [false, Shapes::default().wide] {
            documents_shaped_like_one_before(Shapes {
                wide,
                ..Shapes::default()
            });
        }
    }

    fn documents_shaped_like_one_before(mut shapes: Shapes) {
        let first = br#"{"app":"Demo","ts":1763942086505,"p":{"id":"wamid.1","n":null,"ok":true,"l":[1,"x",-7]}}"#;
        assert!(through(&mut shapes, first).is_none());
        for same_shape in [
            "{\"app\":\"Other app\",\"ts\":0,\"p\":{\"id\":\"\",\"n\":null,\"ok\":true,\"l\":[99,\"y\u{7f}z\",-123456789012345678]}}".as_bytes(),
            "{\"app\":\"caf\u{e9} \u{1F600}\",\"ts\":5,\"p\":{\"id\":\"w\",\"n\":null,\"ok\":true,\"l\":[1,\"x\",2]}}".as_bytes(),
        ] {
            assert!(through(&mut shapes, same_shape).is_some());
        }
        // Values the shape cannot take go to simdjson, which says what they are.
        for other in [
            &br#"{"app":"a\"b","ts":1,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}"#[..],
            br#"{"app":"a\u0041","ts":1,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}"#,
            b"{\"app\":\"a\x01\",\"ts\":1,\"p\":{\"id\":\"w\",\"n\":null,\"ok\":true,\"l\":[1,\"x\",2]}}",
            b"{\"app\":\"a\xff\",\"ts\":1,\"p\":{\"id\":\"w\",\"n\":null,\"ok\":true,\"l\":[1,\"x\",2]}}",
            br#"{"app":"a","ts":-0,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}"#,
            br#"{"app":"a","ts":01,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}"#,
            br#"{"app":"a","ts":1.5,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}"#,
            br#"{"app":"a","ts":1e3,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}"#,
            br#"{"app":"a","ts":1234567890123456789,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}"#,
            br#"{"app":"a","ts":99999999999999999999,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}"#,
            br#"{"app":null,"ts":1,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}"#,
            br#"{"app":"a","ts":1,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}} "#,
            br#"{"app":"a","ts":1,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}}x"#,
            br#"{"app":"a","ts":1,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2]}"#,
            br#"{"app":"a","ts":1,"p":{"id":"w","n":null,"ok":true,"l":[1,"x",2"#,
        ] {
            assert!(
                through(&mut shapes, other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    /// A document past `MAX_LEN` is neither matched, though its shape is known, nor
    /// learned.
    #[test]
    fn documents_past_the_longest_go_to_simdjson() {
        let doc = |len: usize| format!(r#"{{"a":"{}","b":1}}"#, "x".repeat(len - 14));
        let (longest, past) = (doc(MAX_LEN), doc(MAX_LEN + 1));
        assert_eq!((longest.len(), past.len()), (MAX_LEN, MAX_LEN + 1));
        let mut shapes = Shapes::default();
        assert!(through(&mut shapes, longest.as_bytes()).is_none());
        assert!(through(&mut shapes, longest.as_bytes()).is_some());
        assert!(through(&mut shapes, past.as_bytes()).is_none());
        let mut shapes = Shapes::default();
        through(&mut shapes, past.as_bytes());
        assert!(shapes.shapes.is_empty());
    }

    /// When fewer than half the documents of a window have a shape, shapes rest:
    /// the next `REST` documents go to simdjson, then shapes are looked for again.
    #[test]
    fn shapes_rest_while_too_few_documents_have_one() {
        let mut shapes = Shapes::default();
        let padded = |doc: &[u8]| {
            let mut padded = doc.to_vec();
            padded.resize(doc.len() + PADDING, 0);
            padded
        };
        let shaped = br#"{"a":1}"#;
        assert!(through(&mut shapes, shaped).is_none());
        let (shaped, other) = (padded(shaped), padded(br#"{"b":"\n"}"#));
        let find = |shapes: &mut Shapes, doc: &[u8]| shapes.find(doc, doc.len() - PADDING);
        // 45 in 100 found: the window closes with too few.
        for i in 1..WINDOW {
            let doc = if i % 100 < 45 { &shaped } else { &other };
            assert_eq!(find(&mut shapes, doc).is_some(), i % 100 < 45);
        }
        for _ in 0..REST {
            assert!(find(&mut shapes, &shaped).is_none());
        }
        assert!(find(&mut shapes, &shaped).is_some());
        // A window with 55 in 100 found keeps them on.
        for i in 2..=WINDOW {
            let doc = if i % 100 < 55 { &shaped } else { &other };
            find(&mut shapes, doc);
        }
        assert!(find(&mut shapes, &shaped).is_some());
    }

    /// A document's structure, its values left out.
    #[derive(Debug, Clone)]
    enum Outline {
        Object(Vec<(String, Outline)>),
        Array(Vec<Outline>),
        Value,
        Literal(&'static str),
    }

    fn outline_strategy() -> impl Strategy<Value = Outline> {
        let leaf = prop_oneof![
            3 => Just(Outline::Value),
            1 => prop_oneof![Just("true"), Just("false"), Just("null")].prop_map(Outline::Literal),
        ];
        let tree = leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(("[a-c]{1,2}|k\\\\\"", inner.clone()), 0..4)
                    .prop_map(Outline::Object),
                prop::collection::vec(inner, 0..4).prop_map(Outline::Array),
            ]
        });
        prop::collection::vec(("[a-c]{1,2}", tree), 1..5).prop_map(Outline::Object)
    }

    /// A value as written: plain ones a shape takes, and ones it must leave to simdjson.
    fn value_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-zé😀 .:-]{0,20}".prop_map(|s| format!("\"{s}\"")),
            4 => any::<i64>().prop_map(|n| n.to_string()),
            2 => any::<u64>().prop_map(|n| n.to_string()),
            2 => (0u64..1000).prop_map(|n| n.to_string()),
            1 => prop_oneof![
                Just("\"a\\\"b\""), Just("\"\\u00e9\""), Just("\"\\\\\""), Just("\"a\u{1}b\""),
                Just("\"\u{7f}\""), Just("-0"), Just("007"), Just("0"), Just("-"), Just("1.5"),
                Just("1e3"), Just("-1E-2"), Just("12345678901234567890"), Just("999999999999999999"),
                Just("-999999999999999999"), Just("1234567890123456789"), Just("\"\""),
                Just("null"), Just("[]"), Just("{}"), Just("\"unterminated"), Just("tru"),
            ]
            .prop_map(str::to_owned),
        ]
    }

    fn render(
        outline: &Outline,
        spaced: bool,
        values: &mut impl Iterator<Item = String>,
        out: &mut String,
    ) {
        let (colon, comma) = if spaced { (": ", ", ") } else { (":", ",") };
        match outline {
            Outline::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(comma);
                    }
                    out.push_str(&format!("\"{key}\"{colon}"));
                    render(value, spaced, values, out);
                }
                out.push('}');
            }
            Outline::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(comma);
                    }
                    render(item, spaced, values, out);
                }
                out.push(']');
            }
            Outline::Value => out.push_str(&values.next().unwrap()),
            Outline::Literal(literal) => out.push_str(literal),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Documents of a few outlines, with any values and damaged: whatever the
        /// shapes put on the tape is simdjson's tape (`through` checks), and a second
        /// document with the values of one they learned is theirs.
        #[test]
        fn shapes_give_simdjsons_tape_or_nothing(
            outlines in prop::collection::vec((outline_strategy(), any::<bool>()), 1..4),
            values in prop::collection::vec(value_strategy(), 1..64),
            picks in prop::collection::vec((0usize..4, 0usize..64, any::<prop::sample::Index>(), any::<u8>()), 1..24),
        ) {
            let mut docs: Vec<Vec<u8>> = Vec::new();
            for (outline, offset, damage, byte) in picks {
                let (outline, spaced) = &outlines[outline % outlines.len()];
                let mut cycled = values.iter().cycle().skip(offset).cloned();
                let mut doc = String::new();
                render(outline, *spaced, &mut cycled, &mut doc);
                let mut doc = doc.into_bytes();
                if byte % 4 == 0 {
                    let at = damage.index(doc.len());
                    doc[at] = byte;
                }
                docs.push(doc);
            }
            // 16 bytes at a time, and 32 where the CPU can.
            for wide in [false, Shapes::default().wide] {
                let mut shapes = Shapes { wide, ..Shapes::default() };
                for doc in &docs {
                    through(&mut shapes, doc);
                }
                // Each learned document again: now its shape's, with its own values.
                let mut parser = Parser::without_shapes(64).unwrap();
                for doc in &docs {
                    let learnable = parser.parse(doc).is_ok_and(|tape| outline(doc, &tape).is_some());
                    let again = through(&mut shapes, doc);
                    prop_assert_eq!(again.is_some(), learnable, "{}", String::from_utf8_lossy(doc));
                }
            }
        }
    }
}
