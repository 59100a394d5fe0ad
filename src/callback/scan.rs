//! One vector pass (AVX2) over a line before it is read: where its quotes are, and whether
//! anything in it needs the careful, byte-by-byte path. In a line with no backslash
//! and no control byte (nearly every callback), every quote opens or closes a string
//! and no string needs checking, so the reader finds a string's end with one bit
//! search instead of scanning its bytes.

use smallvec::SmallVec;

/// What one pass over a text found.
pub struct Scan {
    /// Bit `i % 64` of word `i / 64` is set when byte `i` is `"`; read only when
    /// `plain` (elsewhere a quote may be escaped).
    quotes: SmallVec<[u64; 16]>,
    /// No backslash and no byte below 0x20 anywhere.
    pub plain: bool,
    /// Every byte below 0x80.
    pub ascii: bool,
}

/// What a 64-byte block holds: its quotes as bits, whether it has a backslash or a
/// control byte, and whether it has a byte of 0x80 or more.
struct Block {
    quotes: u64,
    special: bool,
    high: bool,
}

impl Scan {
    pub fn new(text: &[u8]) -> Scan {
        let mut scan = Scan {
            quotes: SmallVec::with_capacity(text.len().div_ceil(64)),
            plain: true,
            ascii: true,
        };
        let mut chunks = text.chunks_exact(64);
        for chunk in &mut chunks {
            scan.push(block(chunk.try_into().expect("64 bytes")));
        }
        let rest = chunks.remainder().len();
        if rest > 0 && text.len() >= 64 {
            // The last 64 bytes again, their first bytes already counted: keep the new ones.
            let mut last = block(text[text.len() - 64..].try_into().expect("64 bytes"));
            last.quotes >>= 64 - rest;
            scan.push(last);
        } else if rest > 0 {
            // Padded with spaces: neither quotes nor special.
            let mut short = [b' '; 64];
            short[..rest].copy_from_slice(chunks.remainder());
            scan.push(block(&short));
        }
        scan
    }

    fn push(&mut self, block: Block) {
        self.quotes.push(block.quotes);
        self.plain &= !block.special;
        self.ascii &= !block.high;
    }

    /// The first quote at or after `from`, in a plain text.
    #[inline]
    pub fn next_quote(&self, from: usize) -> Option<usize> {
        let (mut word, bit) = (from / 64, from % 64);
        let mut bits = self.quotes.get(word)? & (u64::MAX << bit);
        while bits == 0 {
            word += 1;
            bits = *self.quotes.get(word)?;
        }
        Some(word * 64 + bits.trailing_zeros() as usize)
    }
}

#[cfg(target_arch = "x86_64")]
fn block(bytes: &[u8; 64]) -> Block {
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { avx2_block(bytes) }
    } else {
        // CPUs before 2013: rare enough that the byte loop will do.
        scalar_block(bytes)
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
    let (mut quotes, mut special, mut all) = (0u64, _mm256_setzero_si256(), _mm256_setzero_si256());
    for (i, part) in bytes.chunks_exact(32).enumerate() {
        // SAFETY: `part` is 32 readable bytes; the load has no alignment requirement.
        let v = unsafe { _mm256_loadu_si256(part.as_ptr().cast()) };
        let q = _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, quote)) as u32;
        quotes |= u64::from(q) << (32 * i);
        let below_space = _mm256_cmpeq_epi8(_mm256_min_epu8(v, control), v);
        special = _mm256_or_si256(
            special,
            _mm256_or_si256(_mm256_cmpeq_epi8(v, backslash), below_space),
        );
        all = _mm256_or_si256(all, v);
    }
    Block {
        quotes,
        special: _mm256_movemask_epi8(special) != 0,
        high: _mm256_movemask_epi8(all) != 0,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn block(bytes: &[u8; 64]) -> Block {
    scalar_block(bytes)
}

fn scalar_block(bytes: &[u8; 64]) -> Block {
    let mut block = Block {
        quotes: 0,
        special: false,
        high: false,
    };
    for (i, &b) in bytes.iter().enumerate() {
        block.quotes |= u64::from(b == b'"') << i;
        block.special |= b == b'\\' || b < 0x20;
        block.high |= b >= 0x80;
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

    proptest! {
        #[test]
        fn the_vector_block_agrees_with_the_byte_loop(bytes in text(64..65), any_bytes in proptest::array::uniform32(any::<u8>())) {
            let mut all: [u8; 64] = bytes.try_into().unwrap();
            let (fast, slow) = (block(&all), scalar_block(&all));
            prop_assert_eq!((fast.quotes, fast.special, fast.high), (slow.quotes, slow.special, slow.high));
            all[..32].copy_from_slice(&any_bytes);
            let (fast, slow) = (block(&all), scalar_block(&all));
            prop_assert_eq!((fast.quotes, fast.special, fast.high), (slow.quotes, slow.special, slow.high));
        }

        #[test]
        fn finds_every_quote_and_flags_what_needs_care(bytes in text(0..300)) {
            let scan = Scan::new(&bytes);
            prop_assert_eq!(scan.plain, !bytes.iter().any(|&b| b == b'\\' || b < 0x20));
            prop_assert_eq!(scan.ascii, bytes.is_ascii());
            if scan.plain {
                for from in 0..=bytes.len() {
                    let naive = bytes[from..].iter().position(|&b| b == b'"').map(|i| from + i);
                    prop_assert_eq!(scan.next_quote(from), naive);
                }
            }
        }
    }
}
