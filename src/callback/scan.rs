//! One vector pass (AVX2) over a window of a file before its lines are read: where
//! the quotes are, and where the bytes are that need the careful, byte-by-byte path.
//! In a line with no backslash and no control byte (nearly every callback), every
//! quote opens or closes a string and no string needs checking, so the reader
//! finds a string's end with one bit search instead of scanning its bytes.
//!
//! The pass runs over many lines at once (a window of the file), not line by line:
//! a line's own pass paid its setup and a copy of its result for every line.

/// Bytes scanned at once: enough lines to amortise a pass, little memory (the
/// bitmaps take 3/8 of the window).
#[cfg(not(test))]
const WINDOW: usize = 16 << 10;
/// Small in tests, so that lines cross windows' ends.
#[cfg(test)]
const WINDOW: usize = 200;
/// A longer line is not scanned: its bitmaps would take 3/8 of its size (a hostile
/// file may be one line of hundreds of MB), and it is read the careful way.
const LONGEST: usize = 16 * WINDOW;

/// What one pass over a window of a text found, a bit per byte, 64 bytes a word.
#[derive(Default)]
pub struct Scan {
    /// Where the window starts in the text, and its length.
    base: usize,
    len: usize,
    /// `"` bytes; read only in a plain span (elsewhere a quote may be escaped).
    quotes: Vec<u64>,
    /// Backslashes and bytes below 0x20.
    special: Vec<u64>,
    /// Bytes of 0x80 or more.
    high: Vec<u64>,
}

/// One line (or any part of the text) as the scan saw it.
#[derive(Clone, Copy)]
pub struct Span<'s> {
    quotes: &'s [u64],
    /// Bit offset of the span's first byte in `quotes`, and its length.
    start: usize,
    len: usize,
    /// No backslash and no byte below 0x20 in the span.
    pub plain: bool,
    /// Every byte of the span below 0x80.
    pub ascii: bool,
}

/// What a 64-byte block holds, a bit per byte.
struct Block {
    quotes: u64,
    special: u64,
    high: u64,
}

impl Scan {
    /// The scan of all of `text`.
    pub fn new(text: &[u8]) -> Scan {
        let mut scan = Scan::default();
        scan.fill(text, 0);
        scan
    }

    /// The span of `text[start..end]`, scanning a new window from `start` first when
    /// the current one does not hold it. `text` must be the same from call to call
    /// (`Parser` keeps the two together).
    pub fn window(&mut self, text: &[u8], start: usize, end: usize) -> Span<'_> {
        if end - start > LONGEST {
            return Span::careful(end - start);
        }
        if start < self.base || end > self.base + self.len {
            let to = (start + WINDOW).max(end).min(text.len());
            self.fill(&text[start..to], start);
        }
        self.span(start, end)
    }

    /// The span of the whole scanned text.
    pub fn whole(&self) -> Span<'_> {
        self.span(self.base, self.base + self.len)
    }

    /// The span of `text[start..end]`, which the window holds.
    fn span(&self, start: usize, end: usize) -> Span<'_> {
        let (from, to) = (start - self.base, end - self.base);
        Span {
            quotes: &self.quotes,
            start: from,
            len: to - from,
            plain: !any_in(&self.special, from, to),
            ascii: !any_in(&self.high, from, to),
        }
    }

    /// Scans `window`, which starts at `base` in the text.
    fn fill(&mut self, window: &[u8], base: usize) {
        self.resize(window, base);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.fill_avx2(window) };
        }
        // CPUs without AVX2 (before 2013): rare enough that the byte loop will do.
        // SAFETY: without AVX2.
        unsafe { self.fill_with::<false>(window) };
    }

    /// Room for `window`'s bits.
    fn resize(&mut self, window: &[u8], base: usize) {
        (self.base, self.len) = (base, window.len());
        for bits in [&mut self.quotes, &mut self.special, &mut self.high] {
            bits.clear();
            bits.resize(window.len().div_ceil(64), 0);
        }
    }

    /// `fill_with`, compiled for AVX2 (so that `avx2_block` inlines into its loop).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn fill_avx2(&mut self, window: &[u8]) {
        // SAFETY: we are on a CPU with AVX2 (`fill` checked).
        unsafe { self.fill_with::<true>(window) };
    }

    /// The pass, with `avx2_block` when `AVX2`.
    ///
    /// # Safety
    /// `AVX2` only on a CPU that has it.
    #[inline(always)]
    unsafe fn fill_with<const AVX2: bool>(&mut self, window: &[u8]) {
        let block = |bytes: &[u8; 64]| {
            #[cfg(target_arch = "x86_64")]
            if AVX2 {
                // SAFETY: the caller's promise.
                return unsafe { avx2_block(bytes) };
            }
            scalar_block(bytes)
        };
        // Into words already there: a push's capacity check (and possible call)
        // between blocks kept the vector registers from staying live.
        let words = (self.quotes.iter_mut())
            .zip(self.special.iter_mut())
            .zip(self.high.iter_mut());
        let mut chunks = window.chunks_exact(64);
        let mut padded = [b' '; 64];
        let last = match chunks.remainder() {
            [] => None,
            rest => {
                // Padded with spaces: neither quotes nor special.
                padded[..rest.len()].copy_from_slice(rest);
                Some(&padded)
            }
        };
        let blocks = (&mut chunks).map(|c| c.try_into().expect("64 bytes"));
        for (((quotes, special), high), bytes) in words.zip(blocks.chain(last)) {
            let b = block(bytes);
            (*quotes, *special, *high) = (b.quotes, b.special, b.high);
        }
    }
}

/// Whether any bit in `start..end` of `words` is set.
fn any_in(words: &[u64], start: usize, end: usize) -> bool {
    if start >= end {
        return false;
    }
    let (first, last) = (start / 64, (end - 1) / 64);
    let head = u64::MAX << (start % 64);
    let tail = u64::MAX >> (63 - (end - 1) % 64);
    if first == last {
        return words[first] & head & tail != 0;
    }
    let middle = words[first + 1..last].iter().fold(0, |all, w| all | w);
    (words[first] & head) | middle | (words[last] & tail) != 0
}

impl Span<'_> {
    /// A span of `len` bytes that nothing is known of: read the careful way.
    fn careful(len: usize) -> Self {
        Span {
            quotes: &[],
            start: 0,
            len,
            plain: false,
            ascii: false,
        }
    }

    /// The first quote at or after `from`, in a plain span.
    #[inline(always)]
    pub fn next_quote(&self, from: usize) -> Option<usize> {
        let at = self.start + from;
        let end = self.start + self.len;
        let (mut word, bit) = (at / 64, at % 64);
        // Two words at once: whether a string's end is in the first or the next
        // was a branch that most strings past 32 bytes mispredicted.
        let next = self.quotes.get(word + 1).copied().unwrap_or(0);
        let two = u128::from(self.quotes.get(word)? & (u64::MAX << bit)) | u128::from(next) << 64;
        let mut found = word * 64 + two.trailing_zeros() as usize;
        if two == 0 {
            word += 1;
            let mut bits = 0;
            while bits == 0 {
                word += 1;
                if word * 64 >= end {
                    return None;
                }
                bits = *self.quotes.get(word)?;
            }
            found = word * 64 + bits.trailing_zeros() as usize;
        }
        (found < end).then(|| found - self.start)
    }

    /// The span of `self`'s bytes `from..to`. It says of them what `self` says of
    /// all its bytes: a plain span's parts are plain, and the part of a span that is
    /// not plain takes the careful path even where it need not.
    pub fn part(&self, from: usize, to: usize) -> Span<'_> {
        debug_assert!(from <= to && to <= self.len);
        Span {
            start: self.start + from,
            len: to - from,
            ..*self
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2_block(bytes: &[u8; 64]) -> Block {
    use std::arch::x86_64::*;
    let (quote, backslash, control) = (
        _mm256_set1_epi8(b'"' as i8),
        _mm256_set1_epi8(b'\\' as i8),
        _mm256_set1_epi8(0x1f),
    );
    let mut block = Block {
        quotes: 0,
        special: 0,
        high: 0,
    };
    for (i, part) in bytes.chunks_exact(32).enumerate() {
        // SAFETY: `part` is 32 readable bytes; the load has no alignment requirement.
        let v = unsafe { _mm256_loadu_si256(part.as_ptr().cast()) };
        let below_space = _mm256_cmpeq_epi8(_mm256_min_epu8(v, control), v);
        let special = _mm256_or_si256(_mm256_cmpeq_epi8(v, backslash), below_space);
        // No closure for the three masks: a closure here would not be compiled for
        // AVX2, and its masks were then assembled byte by byte.
        let (q, s, h) = (
            _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, quote)) as u32,
            _mm256_movemask_epi8(special) as u32,
            _mm256_movemask_epi8(v) as u32,
        );
        block.quotes |= u64::from(q) << (32 * i);
        block.special |= u64::from(s) << (32 * i);
        block.high |= u64::from(h) << (32 * i);
    }
    block
}

fn scalar_block(bytes: &[u8; 64]) -> Block {
    let mut block = Block {
        quotes: 0,
        special: 0,
        high: 0,
    };
    for (i, &b) in bytes.iter().enumerate() {
        block.quotes |= u64::from(b == b'"') << i;
        block.special |= u64::from(b == b'\\' || b < 0x20) << i;
        block.high |= u64::from(b >= 0x80) << i;
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Texts that are mostly plain: bytes that need no care (quotes, ASCII and not),
    /// and now and then one that does, so both kinds of text come up at every length.
    fn text(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
        let plain = proptest::sample::select(vec![b'"', b'a', b' ', b'{', 0x7f, 0x80, 0xe9, 0xff]);
        let special = proptest::sample::select(vec![b'\\', 0x00, b'\n', 0x1f]);
        (
            proptest::collection::vec(plain, len),
            proptest::option::of((any::<usize>(), special)),
        )
            .prop_map(|(mut bytes, special)| {
                if let (Some((at, b)), false) = (special, bytes.is_empty()) {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
                bytes
            })
    }

    /// What a span of `bytes` must say, checked byte by byte.
    fn check(span: Span<'_>, bytes: &[u8]) -> Result<(), TestCaseError> {
        prop_assert_eq!(span.plain, !bytes.iter().any(|&b| b == b'\\' || b < 0x20));
        prop_assert_eq!(span.ascii, bytes.is_ascii());
        check_quotes(span, bytes)
    }

    /// Where a plain span's quotes are, checked byte by byte.
    fn check_quotes(span: Span<'_>, bytes: &[u8]) -> Result<(), TestCaseError> {
        if span.plain {
            for from in 0..=bytes.len() {
                let naive = bytes[from..]
                    .iter()
                    .position(|&b| b == b'"')
                    .map(|i| from + i);
                prop_assert_eq!(span.next_quote(from), naive);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn the_vector_pass_agrees_with_the_byte_loop(mut bytes in text(0..200), any_bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            for _ in 0..2 {
                let fast = Scan::new(&bytes);
                let mut slow = Scan::default();
                slow.resize(&bytes, 0);
                // SAFETY: without AVX2.
                unsafe { slow.fill_with::<false>(&bytes) };
                prop_assert_eq!((&fast.quotes, &fast.special, &fast.high), (&slow.quotes, &slow.special, &slow.high));
                bytes.extend_from_slice(&any_bytes);
            }
        }

        #[test]
        fn finds_every_quote_and_flags_what_needs_care(bytes in text(0..300)) {
            check(Scan::new(&bytes).whole(), &bytes)?;
        }

        #[test]
        fn a_line_too_long_to_scan_is_read_the_careful_way(extra in 1..100usize) {
            let text = vec![b'"'; LONGEST + extra];
            let mut scan = Scan::default();
            let span = scan.window(&text, 0, text.len());
            prop_assert!(!span.plain && !span.ascii);
            prop_assert!(scan.quotes.is_empty(), "nothing scanned");
            let span = scan.window(&text, extra, text.len());
            prop_assert!(span.plain, "a line of the longest length is scanned");
        }

        #[test]
        fn a_line_reads_the_same_from_a_window_of_many(
            lines in proptest::collection::vec(text(0..150), 1..12),
            parts in proptest::collection::vec((any::<usize>(), any::<usize>()), 1..4),
        ) {
            let text = lines.join(&b'\n');
            let mut scan = Scan::default();
            let mut start = 0;
            for line in &lines {
                let end = start + line.len();
                let span = scan.window(&text, start, end);
                check(span, line)?;
                // Any part of a line, as a wrapper's body is.
                for &(a, b) in &parts {
                    let (a, b) = (a % (line.len() + 1), b % (line.len() + 1));
                    let (from, to) = (a.min(b), a.max(b));
                    let part = span.part(from, to);
                    prop_assert_eq!((part.plain, part.ascii), (span.plain, span.ascii));
                    check_quotes(part, &line[from..to])?;
                }
                start = end + 1;
            }
        }
    }
}
