//! Object bytes → text lines: gzip recognised by its magic bytes, whatever the name.

use std::io::Read;

use flate2::bufread::GzDecoder;

use super::{Part, inflate};

pub(super) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// No object inflates past this: a gzip bomb is cut off and dead-lettered.
pub const MAX_INFLATED: u64 = 512 << 20;

/// A scratch buffer kept between files is cut back to this, so one large file does
/// not hold its memory for the rest of the run.
const KEEP_SCRATCH: usize = 16 << 20;

/// A decoded object. `error` tells why decoding stopped early; `data` then holds
/// the complete lines before that point.
pub struct Decoded<'a> {
    pub data: &'a [u8],
    pub error: Option<String>,
}

/// Decodes `raw`; gzip inflates into `scratch`, reused from file to file (fresh
/// buffers cost a page fault per 4 KiB).
pub fn decode<'a>(raw: &'a [u8], scratch: &'a mut Vec<u8>) -> Decoded<'a> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Decoded {
            data: raw,
            error: None,
        };
    }
    if scratch.capacity() > KEEP_SCRATCH {
        *scratch = Vec::new();
    }
    scratch.clear();
    let size = trailer_size(raw);
    if size <= MAX_INFLATED as usize && inflate::one_member(raw, size, scratch) {
        return Decoded {
            data: scratch,
            error: None,
        };
    }
    scratch.reserve(
        size.clamp(raw.len(), raw.len().saturating_mul(20))
            .min(MAX_INFLATED as usize)
            + 1,
    );
    let error = match members(raw, scratch) {
        Ok(()) if scratch.len() as u64 > MAX_INFLATED => {
            Some(format!("gzip: inflates past {} MiB", MAX_INFLATED >> 20))
        }
        Ok(()) => None,
        Err(e) => Some(format!("gzip: {e}")),
    };
    if error.is_some() {
        // Keep only whole lines: a cut-off last line is part of the damage.
        let whole = memchr::memrchr(b'\n', scratch).map_or(0, |i| i + 1);
        scratch.truncate(whole);
    }
    Decoded {
        data: scratch,
        error,
    }
}

/// Inflates every gzip member of `raw` into `out`, stopping past `MAX_INFLATED`.
/// Zero bytes after the last member are padding (tape blocks, preallocated
/// files), which gzip(1) ignores too.
fn members(mut rest: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    // Cheap: the first byte of a next member is not zero.
    while !rest.iter().all(|&b| b == 0) {
        let mut member = GzDecoder::new(rest);
        let room = (MAX_INFLATED + 1).saturating_sub(out.len() as u64);
        (&mut member).take(room).read_to_end(out)?;
        if out.len() as u64 > MAX_INFLATED {
            return Ok(());
        }
        rest = member.into_inner();
    }
    Ok(())
}

/// Decodes `part` of an object: as `decode` from a file's start; a later piece
/// starts at any line, which gzip's magic bytes may begin.
pub fn decode_part<'a>(raw: &'a [u8], part: &Part, scratch: &'a mut Vec<u8>) -> Decoded<'a> {
    match part.is_first() {
        true => decode(raw, scratch),
        false => Decoded {
            data: raw,
            error: None,
        },
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
    fn a_gzip_bomb_is_cut_off() {
        // 600 MiB of newlines squeeze into well under a megabyte.
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        let block = vec![b'\n'; 1 << 20];
        for _ in 0..600 {
            enc.write_all(&block).unwrap();
        }
        let mut scratch = Vec::new();
        let bomb = enc.finish().unwrap();
        let d = decode(&bomb, &mut scratch);
        assert!(d.error.unwrap().contains("inflates past"));
        assert!(d.data.len() as u64 <= MAX_INFLATED + 1);
    }

    #[test]
    fn lines_skip_blanks_and_keep_numbers() {
        let got: Vec<_> = lines(b"a\r\n\n  \nb").collect();
        assert_eq!(got, vec![(1, &b"a"[..]), (4, &b"b"[..])]);
    }
}
