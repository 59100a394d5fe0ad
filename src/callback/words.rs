//! Eight bytes at a time in a `u64`: the searches over short strings (ids, times,
//! escapes), too short for a vector search to pay its setup. A flag is the high
//! bit of a byte; each test is exact for the lowest flagged byte, and so for
//! whether any byte is flagged (bytes above it may be flagged wrongly).

const ONES: u64 = u64::from_ne_bytes([1; 8]);
const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// The eight bytes of `bytes` from `at`, the first in the lowest byte.
#[inline(always)]
pub fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
}

/// Flags the bytes of `w` below `n` (at most 0x80).
#[inline(always)]
pub fn below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH
}

/// Flags the bytes of `w` equal to `b`.
#[inline(always)]
pub fn equal(w: u64, b: u8) -> u64 {
    below(w ^ (ONES * u64::from(b)), 1)
}

/// Flags the bytes of `w` that are not ASCII digits: below '0' by the
/// subtraction's borrow, above '9' in b - '0' itself or once 0x76 is added.
#[inline(always)]
pub fn not_digit(w: u64) -> u64 {
    let shifted = w.wrapping_sub(ONES * u64::from(b'0'));
    (shifted | shifted.wrapping_add(ONES * 0x76)) & HIGH
}

/// Where the lowest flagged byte is; 8 when none is.
#[inline(always)]
pub fn first(flags: u64) -> usize {
    flags.trailing_zeros() as usize / 8
}
