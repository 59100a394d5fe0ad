//! Object bytes → text lines: gzip recognised by its magic bytes, whatever the name.
//! A small gzip object is inflated whole; a large one a stretch of whole lines at a
//! time (`Inflating`), so no object is held inflated and its stretches can be
//! parsed on every thread.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use flate2::bufread::GzDecoder;

use super::{Part, inflate};

pub(super) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// A gzip bomb is cut off and dead-lettered: an object that inflates past this
/// and past `MAX_RATIO` times its own size (callbacks inflate 5–20 times; deflate
/// can reach a thousand).
#[cfg(not(test))]
pub const MAX_INFLATED: u64 = 512 << 20;
/// Small in tests, so that files past it are small too.
#[cfg(test)]
pub const MAX_INFLATED: u64 = 4 << 20;
const MAX_RATIO: u64 = 100;

/// A gzip object whose trailer gives this size or more is inflated a stretch at a
/// time, of about `STRETCH` bytes (whole lines); smaller, whole, with libdeflate.
/// Streaming zlib-rs into a buffer kept warm is as fast as libdeflate into a fresh
/// one of the whole size (docs/benchmarks.md, seventeenth session).
#[cfg(not(test))]
const INFLATE_WHOLE_BELOW: usize = 2 * super::PIECE_BYTES as usize;
#[cfg(not(test))]
const STRETCH: usize = super::PIECE_BYTES as usize;
/// Small in tests, so that a file of a few MB is many stretches.
#[cfg(test)]
const INFLATE_WHOLE_BELOW: usize = 1 << 20;
#[cfg(test)]
const STRETCH: usize = 256 << 10;

/// A folder's gzip file of this many bytes or more is read as it is inflated, not
/// read whole first (`local::read`); it is read this much at a time.
#[cfg(not(test))]
pub const READ_GZIP_AS_INFLATED_FROM: u64 = super::PIECE_BYTES;
#[cfg(test)]
pub const READ_GZIP_AS_INFLATED_FROM: u64 = 256 << 10;
const READ_BUFFER: usize = 256 << 10;

/// A scratch buffer kept between files is cut back to this, so one large file does
/// not hold its memory for the rest of the run.
const KEEP_SCRATCH: usize = 16 << 20;

/// A decoded object, all at once. `error` tells why decoding stopped early; `data`
/// then holds the complete lines before that point.
pub struct Decoded<'a> {
    pub data: &'a [u8],
    pub error: Option<String>,
}

/// An object's text, as `decode_part` gives it.
pub enum Text<'a> {
    /// All of it at once: a plain object (or a later piece of a file), or a small
    /// gzip object inflated whole.
    Whole(&'a [u8]),
    /// A gzip object to inflate a stretch at a time.
    Stretches(Inflating<&'a [u8]>),
}

/// Decodes `part` of an object: as `decode` from a file's start; a later piece
/// starts at any line, which gzip's magic bytes may begin.
pub fn decode_part<'a>(raw: &'a [u8], part: &Part, scratch: &'a mut Vec<u8>) -> Text<'a> {
    match kind(raw, part, scratch) {
        Kind::Plain => Text::Whole(raw),
        Kind::Inflated => Text::Whole(scratch),
        Kind::Large => Text::Stretches(Inflating::new(raw, raw.len() as u64)),
    }
}

/// All of an object's text at once (a large one's stretches joined in `scratch`).
pub fn decode<'a>(raw: &'a [u8], scratch: &'a mut Vec<u8>) -> Decoded<'a> {
    let mut inflating = match kind(raw, &Part::Whole, scratch) {
        Kind::Plain => {
            return Decoded {
                data: raw,
                error: None,
            };
        }
        Kind::Inflated => {
            return Decoded {
                data: scratch,
                error: None,
            };
        }
        Kind::Large => Inflating::new(raw, raw.len() as u64),
    };
    let (mut stretch, mut error) = (Vec::new(), None);
    let read = "bytes in memory are read without I/O errors";
    while let Some(next) = inflating.next_stretch(&mut stretch).expect(read) {
        scratch.extend_from_slice(&stretch);
        error = next.error;
    }
    Decoded {
        data: scratch,
        error,
    }
}

/// What a part's bytes are.
enum Kind {
    Plain,
    /// A small gzip object, now inflated in the scratch buffer.
    Inflated,
    /// A gzip object to inflate a stretch at a time: large, of several members, or
    /// with a trailer that lies.
    Large,
}

/// What `part` of an object is; a small gzip object is inflated into `scratch`,
/// reused from file to file (fresh buffers cost a page fault per 4 KiB).
fn kind(raw: &[u8], part: &Part, scratch: &mut Vec<u8>) -> Kind {
    if !part.is_first() || !raw.starts_with(&GZIP_MAGIC) {
        return Kind::Plain;
    }
    if scratch.capacity() > KEEP_SCRATCH {
        *scratch = Vec::new();
    }
    scratch.clear();
    let size = trailer_size(raw);
    match size < INFLATE_WHOLE_BELOW && inflate::one_member(raw, size, scratch) {
        true => Kind::Inflated,
        false => Kind::Large,
    }
}

/// A folder's large gzip file (`Fetched::Gzip`), read as it is inflated.
pub fn inflate_file(file: File) -> std::io::Result<Inflating<BufReader<File>>> {
    let size = file.metadata()?.len();
    Ok(Inflating::new(
        BufReader::with_capacity(READ_BUFFER, file),
        size,
    ))
}

/// Where a stretch of an object's text starts in it, and why inflating stopped
/// after it, if it stopped early.
pub struct Stretch {
    pub start: u64,
    pub error: Option<String>,
}

/// A gzip object being inflated a stretch of whole lines at a time, every member
/// in turn, from its bytes in memory or a file read as it goes (`R`). Zero bytes
/// after the last member are padding (tape blocks, preallocated files), which
/// gzip(1) ignores too.
pub struct Inflating<R> {
    raw_len: u64,
    /// The members not yet begun (None while one is being inflated), and that one.
    rest: Option<R>,
    member: Option<Box<GzDecoder<R>>>,
    /// Where the next stretch starts in the text, and the part of a line inflated
    /// past the last stretch's end, which begins it.
    start: u64,
    tail: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Inflating<R> {
    /// Inflates `raw`, an object of `raw_len` bytes.
    pub fn new(raw: R, raw_len: u64) -> Self {
        Inflating {
            raw_len,
            rest: Some(raw),
            member: None,
            start: 0,
            tail: Vec::new(),
            done: false,
        }
    }

    /// Inflates the next stretch into `text` (what it held is dropped): whole lines,
    /// but for the last one's, which may lack its line end. An object yields one
    /// stretch at least (empty, if it inflates to nothing); None after the last.
    /// Damage ends the last stretch (its `error`); a file that cannot be read (an
    /// I/O error, which a rerun may not meet) is `Err`.
    pub fn next_stretch(&mut self, text: &mut Vec<u8>) -> std::io::Result<Option<Stretch>> {
        if self.done {
            return Ok(None);
        }
        text.clear();
        text.append(&mut self.tail);
        let error = loop {
            match self.inflate(text) {
                // The reader's own (a file's), passed on as it is by the decoder.
                Err(e) if e.raw_os_error().is_some() => {
                    self.done = true;
                    return Err(e);
                }
                Err(e) => break Some(format!("gzip: {e}")),
                Ok(false) => break None,
                Ok(true) if self.start + text.len() as u64 > self.most() => {
                    break Some(format!("gzip: inflates past {} MiB", self.most() >> 20));
                }
                // Up to a stretch's size (a file of many small members takes many
                // turns: not looked through each time), and on to a line's end.
                Ok(true) if text.len() < STRETCH => {}
                Ok(true) => {
                    if let Some(end) = memchr::memrchr(b'\n', text) {
                        self.tail.extend_from_slice(&text[end + 1..]);
                        text.truncate(end + 1);
                        return Ok(Some(self.stretch(text, None)));
                    }
                }
            }
        };
        self.done = true;
        if error.is_some() {
            // Keep only whole lines (a cut-off last line is part of the damage), and
            // none past the most.
            text.truncate((self.most() - self.start) as usize);
            let whole = memchr::memrchr(b'\n', text).map_or(0, |i| i + 1);
            text.truncate(whole);
        }
        Ok(Some(self.stretch(text, error)))
    }

    /// The stretch `text` is, the next one starting after it.
    fn stretch(&mut self, text: &[u8], error: Option<String>) -> Stretch {
        let start = self.start;
        self.start += text.len() as u64;
        Stretch { start, error }
    }

    /// The most bytes this object may inflate to.
    fn most(&self) -> u64 {
        MAX_INFLATED.max(self.raw_len.saturating_mul(MAX_RATIO))
    }

    /// Appends what inflates next to `text`: false once every member is read.
    fn inflate(&mut self, text: &mut Vec<u8>) -> std::io::Result<bool> {
        let member = match (&mut self.member, self.rest.take()) {
            (Some(member), _) => member,
            (None, Some(mut rest)) => match past_padding(&mut rest)? {
                true => self.member.insert(Box::new(GzDecoder::new(rest))),
                false => return Ok(false),
            },
            (None, None) => return Ok(false),
        };
        // A stretch's worth; a line longer than that, as much again each time (so
        // looking for its end reads it a bounded number of times).
        let want = STRETCH
            .saturating_sub(text.len())
            .max(text.len())
            .max(64 << 10);
        text.reserve(want);
        let read = member.take(want as u64).read_to_end(text)?;
        if read < want {
            // The member's end: its trailer is checked; the next one follows.
            let member = self.member.take().expect("being read");
            self.rest = Some(member.into_inner());
        }
        Ok(true)
    }
}

/// Whether another member follows in `rest`: false at its end, or after zero bytes
/// up to it (padding); zero bytes before anything else are damage.
fn past_padding(rest: &mut impl BufRead) -> std::io::Result<bool> {
    let mut padded = false;
    loop {
        let buf = rest.fill_buf()?;
        let (len, zeros) = (buf.len(), buf.iter().take_while(|&&b| b == 0).count());
        if len == 0 {
            return Ok(false);
        }
        if zeros < len {
            if padded || zeros > 0 {
                let what = "bytes after zero padding, not a gzip member";
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, what));
            }
            return Ok(true);
        }
        rest.consume(zeros);
        padded = true;
    }
}

/// gzip's trailer holds the inflated size (mod 2^32) of the last member: exact for
/// a file of one member, and otherwise a first guess at the capacity.
fn trailer_size(raw: &[u8]) -> usize {
    let trailer = raw.len().checked_sub(4).map(|i| &raw[i..]);
    trailer.map_or(0, |t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize)
}

/// Non-blank lines with their 1-based line numbers, without `\n` or `\r\n`.
pub fn lines(data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', data)
        .chain(std::iter::once(data.len()))
        .map(move |end| {
            let line = &data[start..end];
            start = end + 1;
            line
        })
        .enumerate()
        .map(|(i, line)| (i as u64 + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_is_recognised_by_magic_and_members_are_concatenated() {
        let mut two = gzip(b"a\n");
        two.extend(gzip(b"b\n"));
        let mut scratch = Vec::new();
        let d = decode(&two, &mut scratch);
        assert_eq!(d.data, b"a\nb\n");
        assert!(d.error.is_none());
        let plain = decode(b"{}\n", &mut scratch);
        assert_eq!(plain.data, b"{}\n");
        // Many small members (a receiver appending to a file), several stretches long.
        let lines: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("{i:01000}\n").into_bytes())
            .collect();
        let many: Vec<u8> = lines.iter().flat_map(|l| gzip(l)).collect();
        let d = decode(&many, &mut scratch);
        assert_eq!(d.error, None);
        assert_eq!(d.data, lines.concat());
    }

    #[test]
    fn every_member_counts_even_a_repeated_one_and_a_lying_trailer_is_survived() {
        let body = b"{\"a\":1}\n".repeat(1000);
        let mut scratch = Vec::new();
        let one = gzip(&body);
        assert_eq!(decode(&one, &mut scratch).data, &body[..]);
        // The same member twice: the fast path must not stop after the first.
        let twice = [one.clone(), one.clone()].concat();
        assert_eq!(
            decode(&twice, &mut scratch).data,
            &[&body[..], &body[..]].concat()[..]
        );
        // A trailer claiming fewer bytes than there are.
        let mut lying = one.clone();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&10u32.to_le_bytes());
        let d = decode(&lying, &mut scratch);
        assert!(
            d.error.is_some(),
            "the streaming decoder checks the trailer"
        );
        assert!(body.starts_with(d.data));
    }

    #[test]
    fn zero_padding_after_the_last_member_is_ignored_as_gzip_does() {
        let mut scratch = Vec::new();
        for members in [1, 2] {
            let mut padded: Vec<u8> = (0..members).flat_map(|_| gzip(b"a\n")).collect();
            padded.extend([0u8; 512]);
            let d = decode(&padded, &mut scratch);
            assert_eq!(d.error, None);
            assert_eq!(d.data, b"a\n".repeat(members));
        }
        // Anything else after the last member is still damage.
        let mut junk = gzip(b"a\n");
        junk.extend(b"\0\0x");
        assert!(decode(&junk, &mut scratch).error.is_some());
    }

    #[test]
    fn truncated_gzip_keeps_whole_lines_and_reports() {
        let body: Vec<u8> = (0..2000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut gz = gzip(&body);
        gz.truncate(gz.len() / 2);
        let mut scratch = Vec::new();
        let d = decode(&gz, &mut scratch);
        assert!(d.error.is_some());
        assert!(d.data.ends_with(b"\n"));
        assert!(body.starts_with(d.data));
    }

    #[test]
    fn a_gzip_bomb_is_cut_off_and_a_large_file_is_not() {
        // 64 MiB of newlines squeeze into 64 kB: a thousand times its size.
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        let block = vec![b'\n'; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&block).unwrap();
        }
        let mut scratch = Vec::new();
        let bomb = enc.finish().unwrap();
        let d = decode(&bomb, &mut scratch);
        assert!(d.error.unwrap().contains("inflates past"));
        let most = MAX_INFLATED.max(bomb.len() as u64 * MAX_RATIO);
        assert!(d.data.len() as u64 <= most, "{} bytes", d.data.len());
        // Callbacks inflate a few times their size: past `MAX_INFLATED` is fine.
        let body: Vec<u8> = (0..MAX_INFLATED / 20)
            .flat_map(|i| format!("{{\"id\":\"{:x}\"}}\n", i * 2_654_435_761).into_bytes())
            .collect();
        assert!(body.len() as u64 > MAX_INFLATED);
        let zipped = gzip(&body);
        let d = decode(&zipped, &mut scratch);
        assert_eq!(d.error, None);
        assert_eq!(d.data, &body[..]);
    }

    /// A large object is inflated a stretch of whole lines at a time; together they
    /// are its text, a line longer than a stretch whole in one of them.
    #[test]
    fn a_large_object_is_stretches_of_whole_lines_that_make_its_text() {
        let mut body = Vec::new();
        for i in 0..200_000u64 {
            let pad = if i == 70_000 {
                3 * STRETCH
            } else {
                (i % 37) as usize
            };
            body.extend(format!("{i} {}\n", "x".repeat(pad)).into_bytes());
        }
        body.extend(b"no line end");
        let raw = gzip(&body);
        let mut scratch = Vec::new();
        let Text::Stretches(mut inflating) = decode_part(&raw, &Part::Whole, &mut scratch) else {
            panic!("a large object is inflated in stretches")
        };
        let (mut text, mut joined, mut count) = (Vec::new(), Vec::new(), 0);
        while let Some(stretch) = inflating.next_stretch(&mut text).unwrap() {
            assert_eq!(stretch.start, joined.len() as u64);
            assert_eq!(stretch.error, None);
            if joined.len() + text.len() < body.len() {
                assert!(text.ends_with(b"\n"), "whole lines");
                assert!(text.len() > STRETCH / 2, "{} bytes", text.len());
            }
            joined.extend_from_slice(&text);
            count += 1;
        }
        assert_eq!(joined, body);
        assert!(count > 4, "{count} stretches");
        // A small one, and a later piece of a file (any bytes), are one text.
        assert!(matches!(
            decode_part(&gzip(b"a\n"), &Part::Whole, &mut Vec::new()),
            Text::Whole(b"a\n")
        ));
        let later = Part::Piece(8..16);
        assert!(matches!(decode_part(&raw, &later, &mut Vec::new()), Text::Whole(r) if r == raw));
    }

    /// A file that cannot be read on (an I/O error) is an error for the run, which a
    /// rerun retries, not the object's damage (a dead letter for good).
    #[test]
    fn an_io_error_while_inflating_is_not_damage() {
        struct Failing<'a>(&'a [u8]);
        impl Read for Failing<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                match self.0.is_empty() {
                    true => Err(std::io::Error::from_raw_os_error(5)), // EIO
                    false => self.0.read(buf),
                }
            }
        }
        let text: Vec<u8> = (0..100_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let zipped = gzip(&text);
        let half = &zipped[..zipped.len() / 2];
        let mut failing = Inflating::new(BufReader::new(Failing(half)), zipped.len() as u64);
        let mut stretch = Vec::new();
        let failed = loop {
            match failing.next_stretch(&mut stretch) {
                Ok(Some(next)) => assert_eq!(next.error, None),
                Ok(None) => panic!("ended without an error"),
                Err(e) => break e,
            }
        };
        assert_eq!(failed.raw_os_error(), Some(5));
        assert!(failing.next_stretch(&mut stretch).unwrap().is_none());
        // The same bytes cut short in memory: damage, the last stretch's error.
        let mut cut = Inflating::new(half, zipped.len() as u64);
        let mut errors = Vec::new();
        while let Some(next) = cut.next_stretch(&mut stretch).unwrap() {
            errors.push(next.error);
        }
        assert!(errors.last().unwrap().is_some());
    }

    #[test]
    fn lines_skip_blanks_and_keep_numbers() {
        let got: Vec<_> = lines(b"a\r\n\n  \nb").collect();
        assert_eq!(got, vec![(1, &b"a"[..]), (4, &b"b"[..])]);
    }
}
