//! Where callback files come from: a local folder or `gs://BUCKET/PREFIX`.
//! Listing is recursive; bodies are fetched whole, a bounded number at a time
//! (see `pipeline`), except a folder's large files, read in pieces (`Part`); a
//! large gzip object is inflated a stretch at a time (`decode`).

mod decode;
mod gcs;
mod inflate;
mod local;

use std::ops::Range;
use std::path::PathBuf;

use anyhow::{Context, Result};
use bytes::Bytes;

use crate::error::UsageError;

pub use decode::{
    Decoded, Inflating, MAX_INFLATED, READ_GZIP_AS_INFLATED_FROM, Stretch, Text, decode,
    decode_part, inflate_file, lines,
};
pub use local::Waited;

/// One object to read, identified by name and generation (or its nearest
/// equivalent: the ETag, else size and time), so a rewritten file is read again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub name: String,
    pub generation: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// Where to read it: what the listing gave beside the name.
    pub location: Location,
}

/// What of an object one reader takes. A folder's large plain file is read in
/// pieces, each by whichever thread is free, so one file is parsed on every core
/// and no thread holds all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Whole,
    /// The lines that start within these bytes, the last one read to its end.
    /// A gzip file cannot be cut: its first piece is all of it, the rest empty.
    Piece(Range<u64>),
}

impl Part {
    /// Whether this part stands for the object in counts and lists (one part does).
    pub fn is_first(&self) -> bool {
        match self {
            Part::Whole => true,
            Part::Piece(range) => range.start == 0,
        }
    }
}

/// A folder's file of two pieces or more is read in pieces of this many bytes:
/// a hand-over's worth (see `pipeline`), so the threads share it evenly.
pub const PIECE_BYTES: u64 = 8 << 20;

impl ObjectRef {
    /// The parts to read this object in: a folder's file in pieces once it has
    /// two, anything else whole (a bucket's object arrives whole, and is `cut`).
    /// The last piece runs to the file's end, wherever that is when it is read.
    pub fn parts(&self) -> Vec<Part> {
        match self.location {
            Location::File(_) if in_pieces(self.size) => {
                pieces(self.size).map(Part::Piece).collect()
            }
            _ => vec![Part::Whole],
        }
    }
}

/// Whether an object of `size` bytes is read in pieces: once it has two.
fn in_pieces(size: u64) -> bool {
    size >= 2 * PIECE_BYTES
}

/// The pieces of an object of `size` bytes: from 0, `PIECE_BYTES` each, the last
/// open-ended.
fn pieces(size: u64) -> impl Iterator<Item = Range<u64>> {
    let starts = (0..size).step_by(PIECE_BYTES as usize);
    let ends = starts.clone().skip(1).chain([u64::MAX]);
    starts.zip(ends).map(|(s, e)| s..e)
}

/// Where the first line of `text` that starts at or after `at` starts (its end if
/// none does): a line starts at 0 and after each line end.
fn line_start(text: &[u8], at: usize) -> usize {
    match at.min(text.len()) {
        0 => 0,
        at => memchr::memchr(b'\n', &text[at - 1..]).map_or(text.len(), |i| at + i),
    }
}

/// A fetched body in the parts a folder's file of its size is read in, so a large
/// bucket object is parsed on every core too: a plain one of two pieces or more as
/// the lines that start in each piece's range (slices of the same bytes); anything
/// else whole (gzip is inflated a stretch at a time instead, see `decode`).
pub fn cut(body: Bytes) -> Vec<(Part, Bytes)> {
    let size = body.len() as u64;
    if !in_pieces(size) || body.starts_with(&decode::GZIP_MAGIC) {
        return vec![(Part::Whole, body)];
    }
    let line_start = |at: u64| line_start(&body, usize::try_from(at).unwrap_or(usize::MAX));
    pieces(size)
        .map(|range| {
            let lines = body.slice(line_start(range.start)..line_start(range.end));
            (Part::Piece(range), lines)
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Location {
    /// Object `name` at GCS's generation number: the listed bytes, not newer ones.
    Bucket { generation: String },
    /// The real path (a name that is not UTF-8 is lossy, its path is not).
    File(PathBuf),
}

/// An object's body, or why it will never be readable (it is dead-lettered and
/// marked done). Errors a rerun may not meet (timeouts, 5xx) are `Err` instead.
#[derive(Debug)]
pub enum Fetched {
    Body(Bytes),
    /// A folder's large gzip file, open at its start: inflated as it is read
    /// (`decode::inflate_file`), never held in memory whole.
    Gzip(std::fs::File),
    Unreadable(String),
}

#[derive(Debug, Clone)]
enum Store {
    Bucket(gcs::Bucket),
    Folder {
        root: PathBuf,
        /// A single file given as the source: list only it.
        only: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct Source {
    store: Store,
    url: String,
}

impl Source {
    /// `gs://BUCKET/PREFIX`, `file:///abs/dir` or a plain path (folder or file).
    pub fn open(url: &str) -> Result<Source> {
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(UsageError::new(format!("source {url:?} names no bucket")).into());
            }
            return Ok(Source {
                store: Store::Bucket(gcs::Bucket::open(bucket, prefix.trim_matches('/'))?),
                url: url.into(),
            });
        }
        let path = match url.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None if url.contains("://") => {
                return Err(UsageError::new(format!(
                    "source {url:?}: use gs://BUCKET/PREFIX, file:///DIR or a path"
                ))
                .into());
            }
            None => PathBuf::from(url),
        };
        let path = path
            .canonicalize()
            .map_err(|e| UsageError::new(format!("source {}: {e}", path.display())))?;
        let (root, only) = if path.is_file() {
            let name = path.file_name().map(PathBuf::from);
            (path.parent().map(PathBuf::from).unwrap_or_default(), name)
        } else {
            (path, None)
        };
        Ok(Source {
            store: Store::Folder { root, only },
            url: url.into(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A folder on this machine (not a bucket).
    pub fn is_local(&self) -> bool {
        matches!(self.store, Store::Folder { .. })
    }

    /// Every object below the prefix, sorted by name.
    pub async fn list(&self) -> Result<Vec<ObjectRef>> {
        self.list_from("").await
    }

    /// Every object below the prefix whose name is not before `start`, sorted
    /// by name: only those are asked for (GCS `startOffset`; a folder skips the
    /// subfolders that sort before it).
    pub async fn list_from(&self, start: &str) -> Result<Vec<ObjectRef>> {
        let mut objects = match &self.store {
            Store::Folder { root, only } => local::list(root, only.as_deref(), start)
                .with_context(|| format!("listing {}", self.url))?,
            Store::Bucket(bucket) => bucket
                .list(start)
                .await
                .with_context(|| format!("listing {}", self.url))?,
        };
        objects.sort();
        Ok(objects)
    }

    /// Starts reading a part of a folder's file into the page cache without
    /// waiting, so a folder not in the cache is read while earlier files are
    /// parsed (no-op for a bucket's objects, which arrive fetched).
    pub fn read_ahead(&self, object: &ObjectRef, part: &Part) {
        if let Location::File(path) = &object.location {
            local::read_ahead(path, part);
        }
    }

    /// A part of a folder's file, read on this thread, and whether that waited
    /// for the disk (a bucket's object: `fetch`, whole, which never tells).
    pub fn read(&self, object: &ObjectRef, part: &Part) -> Result<(Fetched, Waited)> {
        match &object.location {
            Location::File(path) => local::read(path, part),
            Location::Bucket { .. } => {
                futures::executor::block_on(self.fetch(object)).map(|f| (f, Waited::Unknown))
            }
        }
    }

    pub async fn fetch(&self, object: &ObjectRef) -> Result<Fetched> {
        match (&self.store, &object.location) {
            (_, Location::File(path)) => {
                local::read(path, &Part::Whole).map(|(fetched, _)| fetched)
            }
            (Store::Bucket(bucket), Location::Bucket { generation }) => {
                bucket.fetch(&object.name, generation).await
            }
            (Store::Folder { .. }, Location::Bucket { .. }) => {
                anyhow::bail!("{:?}: a bucket object in a folder source", object.name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(size: u64, location: Location) -> ObjectRef {
        ObjectRef {
            name: "f".into(),
            generation: String::new(),
            size,
            last_modified: chrono::Utc::now(),
            location,
        }
    }

    /// A folder's file is cut once it has two pieces, into ranges that follow
    /// each other from 0, the last open to wherever the file then ends; a
    /// bucket's object is never cut.
    #[test]
    fn large_folder_files_are_cut_into_pieces_that_cover_them() {
        let file = || Location::File("f".into());
        assert_eq!(object(2 * PIECE_BYTES - 1, file()).parts(), [Part::Whole]);
        let parts = object(2 * PIECE_BYTES, file()).parts();
        assert_eq!(
            parts,
            [
                Part::Piece(0..PIECE_BYTES),
                Part::Piece(PIECE_BYTES..u64::MAX)
            ]
        );
        let parts = object(5 * PIECE_BYTES + 1, file()).parts();
        assert_eq!(parts.len(), 6);
        let mut expected_start = 0;
        for part in &parts {
            let Part::Piece(range) = part else {
                panic!("{part:?}")
            };
            assert_eq!(range.start, expected_start);
            expected_start = range.end;
        }
        assert_eq!(expected_start, u64::MAX);
        assert_eq!(parts.iter().filter(|p| p.is_first()).count(), 1);
        let bucket = Location::Bucket {
            generation: "1".into(),
        };
        assert_eq!(object(100 * PIECE_BYTES, bucket).parts(), [Part::Whole]);
    }

    /// A large plain body is cut as a folder's file of its size is read: each
    /// piece the lines that start in its range, together the whole body; a
    /// small or gzip body is whole.
    #[test]
    fn a_large_fetched_body_is_cut_into_the_lines_that_start_in_each_piece() {
        let mut body = Vec::new();
        let mut i = 0u64;
        while body.len() < 3 * PIECE_BYTES as usize + 100 {
            let pad = (i * 7919 % 300) as usize;
            body.extend(format!("{i} {}\n", "x".repeat(pad)).into_bytes());
            i += 1;
        }
        // A line that ends exactly at a piece's end: the next one starts the next piece.
        let at = 2 * PIECE_BYTES as usize;
        body[at - 1] = b'\n';
        let parts = cut(Bytes::from(body.clone()));
        let size = body.len() as u64;
        let object = object(size, Location::File("f".into()));
        let expected: Vec<Part> = object.parts();
        assert_eq!(
            parts.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            expected
        );
        let starts_in = |range: &std::ops::Range<u64>| -> Vec<u8> {
            // The oracle: each line kept by the piece its first byte is in.
            let mut out = Vec::new();
            let mut start = 0;
            for line in body.split_inclusive(|&b| b == b'\n') {
                if range.contains(&start) {
                    out.extend_from_slice(line);
                }
                start += line.len() as u64;
            }
            out
        };
        for (part, lines) in &parts {
            let Part::Piece(range) = part else {
                panic!("{part:?}")
            };
            assert_eq!(&lines[..], &starts_in(range)[..], "{range:?}");
        }
        assert_eq!(
            parts
                .iter()
                .flat_map(|(_, l)| l.to_vec())
                .collect::<Vec<_>>(),
            body
        );
        let small = Bytes::from(vec![b'\n'; 2 * PIECE_BYTES as usize - 1]);
        assert!(matches!(&cut(small)[..], [(Part::Whole, _)]));
        let mut gzip = vec![0u8; 3 * PIECE_BYTES as usize];
        gzip[..2].copy_from_slice(&decode::GZIP_MAGIC);
        assert!(matches!(&cut(Bytes::from(gzip))[..], [(Part::Whole, _)]));
    }
}
