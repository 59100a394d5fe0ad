//! A prototype of the other design, to measure what it could take: a validator of
//! one line (RFC 8259, nesting up to 128) in two stages, as simdjson. Stage 1 turns
//! every 64 bytes into bitmaps (quotes, backslashes, structural characters,
//! whitespace, control bytes) and, from them, which bytes are inside strings;
//! stage 2 walks the positions where a token starts (a structural character, either
//! quote of a string, a number's or literal's first byte) with a state machine and
//! records where each container ends: a tape `extract.rs` reads the fields from.

use std::arch::x86_64::*;

/// Most containers open at once, as serde_json's default.
const MAX_DEPTH: u32 = 128;

/// A line's tokens: where each starts (a structural character, either quote of a
/// string, the first byte of a number or literal) and, for a container's opening
/// token, the index of its closing one.
#[derive(Default)]
pub struct Tape {
    pub tokens: Vec<u32>,
    pub matches: Vec<u32>,
    stack: Vec<u32>,
}

/// Whether `line` is one JSON document. AVX2 must be there (checked by the caller).
pub fn valid(line: &[u8], tape: &mut Tape) -> bool {
    if !line.is_ascii() && std::str::from_utf8(line).is_err() {
        return false;
    }
    // SAFETY: the caller checked for AVX2.
    let closed = unsafe { tokenize(line, &mut tape.tokens) };
    closed && grammar(line, tape)
}

/// Bitmaps of one 64-byte block: bit i is byte i.
struct Block {
    quote: u64,
    backslash: u64,
    /// `{}[]:,`
    structural: u64,
    whitespace: u64,
    /// Below 0x20 (must not appear in strings).
    control: u64,
}

#[target_feature(enable = "avx2")]
fn classify(bytes: &[u8; 64]) -> Block {
    // SAFETY: two unaligned 32-byte loads within the array.
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_si256(bytes.as_ptr().cast()),
            _mm256_loadu_si256(bytes.as_ptr().add(32).cast()),
        )
    };
    let eq = |b: u8| {
        let v = _mm256_set1_epi8(b as i8);
        let l = _mm256_movemask_epi8(_mm256_cmpeq_epi8(lo, v)) as u32 as u64;
        let h = _mm256_movemask_epi8(_mm256_cmpeq_epi8(hi, v)) as u32 as u64;
        l | h << 32
    };
    // Bytes 0x00..=0x1f: unsigned x < 0x20 as x == min(x, 0x1f).
    let below = |v: __m256i| {
        let m = _mm256_cmpeq_epi8(_mm256_min_epu8(v, _mm256_set1_epi8(0x1f)), v);
        _mm256_movemask_epi8(m) as u32 as u64
    };
    Block {
        quote: eq(b'"'),
        backslash: eq(b'\\'),
        structural: eq(b'{') | eq(b'}') | eq(b'[') | eq(b']') | eq(b':') | eq(b','),
        whitespace: eq(b' ') | eq(b'\t') | eq(b'\n') | eq(b'\r'),
        control: below(lo) | below(hi) << 32,
    }
}

/// Each bit set where an odd number of bits at or below it are set in `x`.
fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
}

/// The bytes escaped by a backslash (simdjson's branchless `find_escaped`);
/// `carry` says whether the previous block's last byte escapes this one's first.
fn escaped(backslash: u64, carry: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*carry;
    let follows = backslash << 1 | *carry;
    let odd_starts = backslash & !EVEN & !follows;
    let (sum, overflow) = odd_starts.overflowing_add(backslash);
    *carry = u64::from(overflow);
    (EVEN ^ (sum << 1)) & follows
}

/// Stage 1: `tokens` gets every position where a token starts. False if a string
/// holds a control byte or is not closed.
#[target_feature(enable = "avx2")]
fn tokenize(line: &[u8], tokens: &mut Vec<u32>) -> bool {
    tokens.clear();
    let (mut in_string, mut escape_carry, mut scalar_carry) = (0u64, 0u64, 0u64);
    let mut any_backslash = false;
    for (n, chunk) in line.chunks(64).enumerate() {
        // The last block padded with spaces; the others read where they are.
        let mut padded = [b' '; 64];
        let b = classify(match chunk.try_into() {
            Ok(whole) => whole,
            Err(_) => {
                padded[..chunk.len()].copy_from_slice(chunk);
                &padded
            }
        });
        let quote = match b.backslash | escape_carry {
            0 => b.quote,
            _ => {
                any_backslash = true;
                b.quote & !escaped(b.backslash, &mut escape_carry)
            }
        };
        // Inside strings: from an opening quote up to, not including, its closing one.
        let inside = prefix_xor(quote) ^ in_string;
        in_string = 0u64.wrapping_sub(inside >> 63);
        if b.control & inside != 0 {
            return false;
        }
        let structural = b.structural & !inside;
        // Numbers and literals: whatever is none of the above, outside strings.
        let scalar = !(b.whitespace | b.structural | quote | inside);
        let scalar_start = scalar & !(scalar << 1 | scalar_carry);
        scalar_carry = scalar >> 63;
        // Both quotes of a string are tokens: its text is between two.
        let mut bits = structural | quote | scalar_start;
        while bits != 0 {
            tokens.push((n * 64) as u32 + bits.trailing_zeros());
            bits &= bits - 1;
        }
    }
    in_string == 0 && (!any_backslash || escapes_valid(line))
}

/// Every backslash in a string starts a valid escape (a line with one is rare).
fn escapes_valid(line: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\\', &line[at..]) {
        let i = at + i;
        match line.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => at = i + 2,
            Some(b'u') => match line.get(i + 2..i + 6) {
                Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => at = i + 6,
                _ => return false,
            },
            _ => return false,
        }
    }
    true
}

/// Stage 2: the tokens make one JSON value; records each container's closing token.
fn grammar(line: &[u8], tape: &mut Tape) -> bool {
    let Tape {
        tokens,
        matches,
        stack,
    } = tape;
    matches.clear();
    matches.resize(tokens.len(), 0);
    stack.clear();
    let byte = |t: usize| tokens.get(t).map(|&at| line[at as usize]);
    // A key: its two quotes and a colon, from token `t`.
    let key =
        |t: usize| byte(t) == Some(b'"') && byte(t + 1) == Some(b'"') && byte(t + 2) == Some(b':');
    let mut t = 0;
    loop {
        // A value at token t.
        match byte(t) {
            Some(open @ (b'{' | b'[')) => {
                if stack.len() >= MAX_DEPTH as usize {
                    return false;
                }
                stack.push(t as u32);
                let close = if open == b'{' { b'}' } else { b']' };
                if byte(t + 1) == Some(close) {
                    stack.pop();
                    matches[t] = (t + 1) as u32;
                    t += 2;
                } else if open == b'{' {
                    if !key(t + 1) {
                        return false;
                    }
                    t += 4;
                    continue;
                } else {
                    t += 1;
                    continue;
                }
            }
            Some(b'"') => t += 2,
            Some(_) => {
                if !scalar(line, tokens[t] as usize) {
                    return false;
                }
                t += 1;
            }
            None => return false,
        }
        // After a value: a comma and the next, closers, or the end.
        loop {
            let Some(&open) = stack.last() else {
                return t == tokens.len();
            };
            let object = byte(open as usize) == Some(b'{');
            match byte(t) {
                Some(b',') if object => {
                    if !key(t + 1) {
                        return false;
                    }
                    t += 4;
                    break;
                }
                Some(b',') => {
                    t += 1;
                    break;
                }
                Some(b'}') if object => {}
                Some(b']') if !object => {}
                _ => return false,
            }
            matches[open as usize] = t as u32;
            stack.pop();
            t += 1;
        }
    }
}

/// The number or literal starting at `at` (up to whitespace, a structural
/// character, a quote or the end) is one.
fn scalar(line: &[u8], at: usize) -> bool {
    let end = line[at..]
        .iter()
        .position(|b| {
            matches!(
                b,
                b' ' | b'\t' | b'\n' | b'\r' | b'{' | b'}' | b'[' | b']' | b':' | b',' | b'"'
            )
        })
        .map_or(line.len(), |n| at + n);
    let text = &line[at..end];
    match text.first() {
        Some(b't') => text == b"true",
        Some(b'f') => text == b"false",
        Some(b'n') => text == b"null",
        Some(_) => number(text),
        // An escaped quote outside a string.
        None => false,
    }
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, exactly.
fn number(text: &[u8]) -> bool {
    let digits = |at: usize| {
        text[at.min(text.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut at = usize::from(text.first() == Some(&b'-'));
    match (text.get(at), digits(at)) {
        (Some(b'0'), _) => at += 1,
        (_, 0) => return false,
        (_, n) => at += n,
    }
    if text.get(at) == Some(&b'.') {
        match digits(at + 1) {
            0 => return false,
            n => at += 1 + n,
        }
    }
    if let Some(b'e' | b'E') = text.get(at) {
        at += 1;
        at += usize::from(matches!(text.get(at), Some(b'+' | b'-')));
        match digits(at) {
            0 => return false,
            n => at += n,
        }
    }
    at == text.len()
}
