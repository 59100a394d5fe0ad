//! What the callback shapes (`v2`, `v3`, the line) read JSON through, so that one
//! piece of code reads them from either reader: simdjson's tape (`tape`, nearly
//! every line) or the text reader (`json`, the lines simdjson refuses or that need
//! a part's text, such as a dead-lettered V3 entry).

use std::borrow::Cow;

use super::json::Result;

/// A position in one JSON document, read value by value.
pub trait Cursor<'a> {
    /// Where a value is, as the shapes keep it. Reading a line looks at keys and
    /// kinds alone, never at values: a place is interpreted as a value (`Value`)
    /// once the line is read, so every line of one learned shape is read alike
    /// (`tape::Plans` reads each shape once).
    type Place: Copy;

    /// The first byte of the next value as written (`0` for any number).
    fn peek(&mut self) -> Result<u8>;
    /// Skips the next value, giving its place.
    fn value(&mut self) -> Result<Self::Place>;
    /// The next value's place, or None for `null`.
    fn nullable(&mut self) -> Result<Option<Self::Place>>;
    /// Reads an object, calling `field` with each key; `field` must read the value.
    /// Not an object: a shape error.
    fn object(&mut self, field: impl FnMut(&mut Self, &str) -> Result<()>) -> Result<()>;
    /// Reads an array, calling `item` for each element; `item` must read it.
    /// Not an array: a shape error.
    fn array(&mut self, item: impl FnMut(&mut Self) -> Result<()>) -> Result<()>;
    /// Reads the next value with `read`, or None for `null`.
    fn or_null<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>>;
    /// Reads the next value with `read`; if it is of another shape, skips it and
    /// gives None. Gives its place too.
    fn lenient<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<(Option<T>, Self::Place)>;
}

/// One JSON value, read leniently: a wrong type is "missing", never an error.
pub trait Value<'a>: Copy {
    /// The string it is, unescaped.
    fn text(self) -> Option<Cow<'a, str>>;
    /// The number it is, when written as digits alone (no sign, fraction or
    /// exponent) and within a `u64`.
    fn digits(self) -> Option<u64>;
    /// The number it is, when an integer within an `i64`.
    fn integer(self) -> Option<i64>;
    /// Whether it is an object.
    fn is_object(self) -> bool;
    /// Its JSON text, when the reader keeps it (the text reader does, the tape
    /// does not): what a dead letter of a V3 entry holds.
    fn source(self) -> Option<&'a str>;
}
