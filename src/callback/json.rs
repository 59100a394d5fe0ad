//! The JSON reader behind the parser, in one place: sonic-rs (SIMD) with
//! borrowed, lazily read values. Everything else sees only `Raw` and `from_str`.

use std::marker::PhantomData;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

/// An unparsed JSON value borrowed from the line.
#[derive(Debug)]
pub struct Raw<'a>(sonic_rs::LazyValue<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        sonic_rs::LazyValue::deserialize(d).map(Raw)
    }
}

impl Raw<'_> {
    /// The value's JSON text.
    pub fn get(&self) -> &str {
        self.0.as_raw_str()
    }
}

pub type Error = sonic_rs::Error;

pub fn from_str<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, Error> {
    sonic_rs::from_str(text)
}

/// Deepest nesting we parse. sonic-rs recurses without a limit, so deeper text
/// must not reach it (a stack overflow would end the run).
const MAX_DEPTH: usize = 128;

/// Whether `text` nests deeper than `MAX_DEPTH`. Brackets are counted first
/// (cheap, vectorised); only text with many of them is walked.
pub fn too_deep(text: &str) -> bool {
    let brackets = text.bytes().filter(|&b| b == b'[' || b == b'{').count();
    brackets > MAX_DEPTH && max_depth(text.as_bytes()) > MAX_DEPTH
}

/// The deepest nesting of `[` and `{` outside strings.
fn max_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &b in bytes {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, ..) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A JSON text that is valid but of another shape than asked for.
pub fn is_shape_error(e: &Error) -> bool {
    !(e.is_syntax() || e.is_eof())
}

/// `T` when the value is an object, None for any other value (not an error).
#[derive(Debug)]
pub struct IfObject<T>(pub Option<T>);

impl<T> Default for IfObject<T> {
    fn default() -> Self {
        IfObject(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for IfObject<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Any<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Any<T> {
            type Value = IfObject<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| IfObject(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IfObject(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
        }
        d.deserialize_any(Any(PhantomData))
    }
}
