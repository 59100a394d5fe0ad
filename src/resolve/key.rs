//! A message id as a map key: held inline when short (nearly all are: UUIDs and
//! wamids), so a lookup compares bytes already in the table instead of chasing a
//! pointer, and a new key costs no allocation.

use hashbrown::Equivalent;
use std::hash::{Hash, Hasher};

/// Longest key held inline; the enum then fills 48 bytes, as `Box<str>` and its
/// heap block together would.
const INLINE: usize = 46;

/// A message id. Its representation is private: the only way in is from a
/// `str` (`From<&str>`, `set`), which is what makes `as_str` sound.
#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    /// `len` ≤ `INLINE` bytes of a `str` at the start of `bytes`.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl Key {
    pub fn as_str(&self) -> &str {
        // SAFETY: a key is only made from a `str` (`set`, which `From<&str>`
        // uses; the default is empty), whose bytes it holds unchanged. (Checking again would cost
        // a pass per hash and per row.)
        unsafe { std::str::from_utf8_unchecked(self.as_bytes()) }
    }

    fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// Bytes on the heap besides the table's slot.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Repr::Inline { .. } => 0,
            Repr::Heap(s) => s.len() + 16,
        }
    }
}

impl Default for Key {
    /// The empty key, inline.
    fn default() -> Self {
        Key(Repr::Inline {
            len: 0,
            bytes: [0; INLINE],
        })
    }
}

impl Key {
    /// Makes this key `s`, in place. A new entry's key is set where the entry lives:
    /// built on the stack and moved there, its bytes were stored in pieces and read
    /// back whole, a load the CPU cannot forward (a stall for every new message).
    pub fn set(&mut self, s: &str) {
        if s.len() > INLINE {
            *self = Key(Repr::Heap(s.into()));
            return;
        }
        if let Repr::Heap(_) = self.0 {
            *self = Key::default();
        }
        if let Repr::Inline { len, bytes } = &mut self.0 {
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            *len = s.len() as u8;
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        let mut key = Key::default();
        key.set(s);
        key
    }
}

/// Looked up by `&str`: hashes as its text, and compares bytes (a lookup is the
/// hot path, so no UTF-8 check there).
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl Equivalent<Key> for str {
    fn equivalent(&self, key: &Key) -> bool {
        self.as_bytes() == key.as_bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_inline_long_ones_on_the_heap_and_both_read_back() {
        let short = "wamid.HBgMOTE00001B2345BBAB555BD7B422";
        let long = "x".repeat(INLINE + 1);
        assert!(matches!(Key::from(short).0, Repr::Inline { .. }));
        assert!(matches!(Key::from(&long[..]).0, Repr::Heap(_)));
        assert_eq!(Key::from(short).as_str(), short);
        assert_eq!(Key::from(&long[..]).as_str(), long);
        assert_eq!(Key::from(""), Key::from(""));
        // Set in place over a longer key of either kind, and over a short one.
        let mut key = Key::from(&long[..]);
        for s in [short, "ab", &long[..], "abc"] {
            key.set(s);
            assert_eq!(key.as_str(), s);
            assert_eq!(key, Key::from(s));
        }
        assert_eq!(std::mem::size_of::<Key>(), 48);
    }
}
