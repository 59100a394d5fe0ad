//! A local folder, listed and read with std::fs. Not through object_store: its
//! local store escapes names a second time on read and hides files whose names
//! end in `#` and digits (its multipart-upload temporaries); a webhook receiver
//! chooses our names, so every file below the root must be read as it is.

use std::collections::HashSet;
use std::fs::Metadata;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use bytes::Bytes;

use super::decode::{GZIP_MAGIC, READ_GZIP_AS_INFLATED_FROM};
use super::{Fetched, Location, ObjectRef, Part, line_start};

/// Every file below `root` whose name is not before `start` (following links; a
/// dangling link is listed too, and read as unreadable), or only `root/only`.
/// Names are relative, `/`-separated; a name that is not UTF-8 is recorded
/// lossily but read by its real path.
pub fn list(root: &Path, only: Option<&Path>, start: &str) -> Result<Vec<ObjectRef>> {
    let mut objects = Vec::new();
    match only {
        Some(file) => objects.push(object(
            root.join(file),
            file.to_string_lossy().into_owned(),
            None,
        )),
        None => {
            let meta =
                std::fs::metadata(root).with_context(|| format!("listing {}", root.display()))?;
            let mut walk = Walk {
                root,
                start,
                seen: HashSet::new(),
                out: &mut objects,
            };
            walk.folder(root, identity(root, &meta))?;
        }
    }
    objects.retain(|o| o.name.as_str() >= start);
    Ok(objects)
}

struct Walk<'a> {
    root: &'a Path,
    /// Folders whose every name sorts before it are not entered: with date
    /// folders, a listing from a watermark opens O(new) folders.
    start: &'a str,
    /// The folders visited, so a link loop ends.
    seen: HashSet<Identity>,
    out: &'a mut Vec<ObjectRef>,
}

/// A folder whatever the path it was reached by: its device and inode (no path
/// to resolve, where canonicalizing cost a `readlink` per component and folder).
#[cfg(unix)]
type Identity = (u64, u64);
#[cfg(not(unix))]
type Identity = PathBuf;

#[cfg(unix)]
fn identity(_: &Path, m: &Metadata) -> Identity {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(dir: &Path, _: &Metadata) -> Identity {
    dir.canonicalize().unwrap_or_else(|_| dir.to_owned())
}

impl Walk<'_> {
    fn name(&self, path: &Path) -> String {
        path.strip_prefix(self.root)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Every name below `folder/` sorts before `start`.
    fn all_before_start(&self, folder: &str) -> bool {
        let inside = format!("{folder}/");
        inside.as_str() < self.start && !self.start.starts_with(&inside)
    }

    fn folder(&mut self, dir: &Path, id: Identity) -> Result<()> {
        if !self.seen.insert(id) {
            return Ok(());
        }
        // A folder that cannot be listed fails the run: its files are unknown, so
        // nothing can be dead-lettered for them, and a rerun after the fix reads them.
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            let name = self.name(&path);
            // One stat an entry, relative to the folder; a link is followed.
            let meta = match entry.file_type() {
                Ok(t) if t.is_symlink() => std::fs::metadata(&path),
                _ => entry.metadata(),
            };
            match meta {
                Ok(m) if m.is_dir() && self.all_before_start(&name) => {}
                Ok(m) if m.is_dir() => self.folder(&path, identity(&path, &m))?,
                // A dangling link is a file that cannot be read.
                _ if name.as_str() >= self.start => self.out.push(object(path, name, meta.ok())),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The listed file, from its `meta` when known; its generation is object_store's
/// ETag scheme (inode, time, size), so files done by earlier versions stay done.
fn object(path: PathBuf, name: String, meta: Option<Metadata>) -> ObjectRef {
    let meta = match meta {
        Some(m) => Ok(m),
        None => std::fs::metadata(&path).or_else(|_| std::fs::symlink_metadata(&path)),
    };
    let (generation, size, modified) = match &meta {
        Ok(m) => (
            etag(m),
            m.len(),
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        ),
        Err(_) => ("unreadable".to_owned(), 0, SystemTime::UNIX_EPOCH),
    };
    ObjectRef {
        name,
        generation,
        size,
        last_modified: modified.into(),
        location: Location::File(path),
    }
}

fn etag(m: &Metadata) -> String {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(m);
    #[cfg(not(unix))]
    let inode = 0;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{inode:x}-{mtime:x}-{:x}\"", m.len())
}

/// Asks the kernel to start reading `part` of `path` into the page cache, without
/// waiting: a folder not in the cache is read while earlier files are parsed,
/// more reads in flight than one a thread. Best effort: any error is the later
/// read's to tell.
pub fn read_ahead(path: &Path, part: &Part) {
    #[cfg(target_os = "linux")]
    if let Ok(file) = open_for_reading(path) {
        use std::os::fd::AsRawFd;
        let (from, len) = match part {
            Part::Whole => (0, 0), // 0: to the end
            Part::Piece(range) => (range.start, range.end.saturating_sub(range.start)),
        };
        // A length past i64 (the last piece, open-ended): 0, to the end.
        let (from, len) = (i64::try_from(from), i64::try_from(len).unwrap_or(0));
        if let Ok(from) = from {
            // SAFETY: a valid descriptor, advice on a range; nothing is read.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), from, len, libc::POSIX_FADV_WILLNEED) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (path, part);
}

/// Opens `path` to read, without waiting for a FIFO's writer (non-blocking, which
/// a regular file ignores).
fn open_for_reading(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    options.open(path)
}

/// The bytes of `part` of the file; a file that will never be readable (gone, a
/// dangling or looping link, no permission, not a file) is `Unreadable`; other
/// errors fail the run, so a rerun tries again. Beside them, whether reading
/// waited for the disk (`read_noting_disk`).
pub fn read(path: &Path, part: &Part) -> Result<(Fetched, Waited)> {
    match read_regular(path, part) {
        Ok(Some(read)) => Ok(read),
        // A FIFO or a device would block or never end.
        Ok(None) => Ok((
            Fetched::Unreadable("not a regular file".into()),
            Waited::Unknown,
        )),
        Err(e) if is_permanent(&e, path) => {
            Ok((Fetched::Unreadable(e.to_string()), Waited::Unknown))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether a file's bytes were all in the page cache, as the kernel tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Some of it was read from the disk.
    Yes,
    /// All of it came from the page cache.
    No,
    /// The kernel or the filesystem cannot tell.
    Unknown,
}

/// The bytes of `part` of the file at `path` (a large gzip file's start: the file,
/// to be read as it is inflated), or None when it is not a regular file. Asked of
/// the open file, one path walk a file.
fn read_regular(path: &Path, part: &Part) -> std::io::Result<Option<(Fetched, Waited)>> {
    let mut file = match open_for_reading(path) {
        Ok(file) => file,
        // A socket cannot even be opened.
        Err(_) if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut body = Vec::new();
    let body_of = |bytes, waited| Ok(Some((Fetched::Body(bytes), waited)));
    // A small whole file is not asked: decoding sniffs it.
    let large = meta.len() >= READ_GZIP_AS_INFLATED_FROM;
    let gzip = (large || matches!(part, Part::Piece(_))) && is_gzip(&file)?;
    let range = match part {
        _ if gzip && large && part.is_first() => {
            return Ok(Some((Fetched::Gzip(file), Waited::Unknown)));
        }
        Part::Piece(range) if !gzip => range,
        // Not cut: the first piece is all of it, the others nothing.
        Part::Piece(range) if range.start > 0 => return body_of(Bytes::new(), Waited::No),
        _ => {
            let waited = read_noting_disk(&mut file, meta.len(), u64::MAX, &mut body)?;
            return body_of(Bytes::from(body), waited);
        }
    };
    // From the byte before: a line starts at `range.start` if that byte ends one.
    let from = range.start.saturating_sub(1);
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from))?;
    let wanted = range.end.saturating_sub(from);
    let size = wanted.min(meta.len().saturating_sub(from));
    let waited = read_noting_disk(&mut file, size, wanted, &mut body)?;
    finish_last_line(&mut file, &mut body)?;
    // `body` starts at `from`: the first line in it that starts at `range.start` or later.
    let skip = line_start(&body, (range.start - from) as usize);
    body_of(Bytes::from(body).slice(skip..), waited)
}

/// Reads on until `body` ends with a whole line (or the file ends).
fn finish_last_line(file: &mut std::fs::File, body: &mut Vec<u8>) -> std::io::Result<()> {
    const STEP: usize = 64 << 10;
    let mut from = body.len();
    while !body.ends_with(b"\n") {
        let read = std::io::Read::by_ref(file)
            .take(STEP as u64)
            .read_to_end(body)?;
        if let Some(end) = memchr::memchr(b'\n', &body[from..]) {
            body.truncate(from + end + 1);
        } else if read == 0 {
            break;
        }
        from = body.len();
    }
    Ok(())
}

/// Whether the file starts as gzip does; it is left at its start.
fn is_gzip(mut file: &std::fs::File) -> std::io::Result<bool> {
    let mut magic = Vec::with_capacity(2);
    file.take(2).read_to_end(&mut magic)?;
    std::io::Seek::rewind(&mut file)?;
    Ok(magic == GZIP_MAGIC)
}

/// Reads at most `limit` bytes of `file` (`size` expected) from its position
/// into `body`, and says whether that waited for the disk: its first read is
/// asked not to (`RWF_NOWAIT`), so it stops where the page cache's part of the
/// file does. Timing reads instead took any read a thread was descheduled in
/// for the disk's.
fn read_noting_disk(
    file: &mut std::fs::File,
    size: u64,
    limit: u64,
    body: &mut Vec<u8>,
) -> std::io::Result<Waited> {
    let size_in_memory = usize::try_from(size).unwrap_or(usize::MAX);
    body.try_reserve_exact(size_in_memory)
        .map_err(|e| std::io::Error::new(ErrorKind::OutOfMemory, e))?;
    let waited = first_read_without_waiting(file, size, limit, body)?;
    // The rest, if any (a file that grew, or what the page cache lacked). Not
    // `File::read_to_end`, which asks the file's size and position again first.
    std::io::Read::by_ref(file)
        .take(limit.saturating_sub(body.len() as u64))
        .read_to_end(body)?;
    Ok(waited)
}

#[cfg(target_os = "linux")]
fn first_read_without_waiting(
    file: &std::fs::File,
    size: u64,
    limit: u64,
    body: &mut Vec<u8>,
) -> std::io::Result<Waited> {
    use std::os::fd::AsRawFd;
    let spare = body.spare_capacity_mut();
    let room = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare
            .len()
            .min(usize::try_from(limit).unwrap_or(usize::MAX)),
    };
    // SAFETY: one iovec over `body`'s unused room; at offset -1 the file's own
    // position is read from and moved, so `read_to_end` goes on from there.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &room, 1, -1, libc::RWF_NOWAIT) };
    let Ok(n) = usize::try_from(n) else {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Waited::Yes),
            Some(libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS) => Ok(Waited::Unknown),
            _ => Err(e),
        };
    };
    // SAFETY: the kernel wrote `n` bytes into the room.
    unsafe { body.set_len(body.len() + n) };
    Ok(if n as u64 >= size {
        Waited::No
    } else {
        Waited::Yes
    })
}

#[cfg(not(target_os = "linux"))]
fn first_read_without_waiting(
    _: &std::fs::File,
    _: u64,
    _: u64,
    _: &mut Vec<u8>,
) -> std::io::Result<Waited> {
    Ok(Waited::Unknown)
}

fn is_permanent(e: &std::io::Error, path: &Path) -> bool {
    let kind_says = matches!(
        e.kind(),
        ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::IsADirectory
            | ErrorKind::NotADirectory
            | ErrorKind::InvalidFilename
            | ErrorKind::InvalidInput
            | ErrorKind::InvalidData
            | ErrorKind::FileTooLarge
    );
    // A link that leads nowhere (a loop included) stays that way until someone fixes it.
    kind_says || std::fs::metadata(path).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading ahead never waits and never fails, whatever the name is; what is
    /// read afterwards is the file as it is.
    #[test]
    fn reading_ahead_waits_for_nothing_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.ndjson");
        std::fs::write(&file, "{}\n".repeat(10_000)).unwrap();
        // A FIFO's blocking open would wait for a writer forever.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("socket")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("dangling"))
            .unwrap();
        // On a thread of its own, so a wait is a failure, not a test that never ends.
        let paths: Vec<_> = ["f.ndjson", "fifo", "socket", "dangling", "missing", ""]
            .map(|name| dir.path().join(name))
            .into();
        let (done, returned) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            paths.iter().for_each(|p| read_ahead(p, &Part::Whole));
            done.send(()).unwrap();
        });
        let waited = returned.recv_timeout(std::time::Duration::from_secs(10));
        assert!(waited.is_ok(), "reading ahead waited");
        let (Fetched::Body(body), _) = read(&file, &Part::Whole).unwrap() else {
            panic!("a regular file is readable")
        };
        assert_eq!(&body[..], "{}\n".repeat(10_000).as_bytes());
        assert!(matches!(
            read(&fifo, &Part::Whole).unwrap().0,
            Fetched::Unreadable(_)
        ));
    }

    /// A file dropped from the page cache is read from the disk, and said so;
    /// read again, it comes from the cache. (Asked of the kernel, not timed: a
    /// thread descheduled during a read is not reading from the disk.)
    #[test]
    fn reads_say_whether_they_waited_for_the_disk() {
        use std::os::fd::AsRawFd;
        // Beside the sources, on a disk: a RAM-backed /tmp has nothing to drop.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let path = dir.path().join("f.ndjson");
        let text = "{}\n".repeat(100_000);
        std::fs::write(&path, &text).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        file.sync_all().unwrap();
        // SAFETY: a valid descriptor; advice on the whole file, nothing read.
        let drop_from = |from: usize| {
            // SAFETY: a valid descriptor; advice on a range, nothing read.
            let advice = libc::POSIX_FADV_DONTNEED;
            let dropped = unsafe { libc::posix_fadvise(file.as_raw_fd(), from as i64, 0, advice) };
            assert_eq!(dropped, 0);
        };
        let read_whole = || match read(&path, &Part::Whole).unwrap() {
            (Fetched::Body(body), waited) => {
                assert_eq!(&body[..], text.as_bytes());
                waited
            }
            _ => panic!("a regular file is readable"),
        };
        drop_from(0);
        assert_eq!(read_whole(), Waited::Yes, "none of it cached");
        assert_eq!(read_whole(), Waited::No, "all of it cached");
        drop_from(text.len() / 2);
        assert_eq!(read_whole(), Waited::Yes, "half of it cached");
        // An empty file waits for nothing.
        std::fs::write(&path, "").unwrap();
        assert!(
            matches!(read(&path, &Part::Whole).unwrap(), (Fetched::Body(b), Waited::No) if b.is_empty())
        );
    }

    /// Reads `path` in pieces cut at `cuts` (the last to the file's end).
    fn pieces(path: &Path, cuts: &[u64]) -> Vec<Bytes> {
        let starts = std::iter::once(0).chain(cuts.iter().copied());
        let ends = cuts.iter().copied().chain([u64::MAX]);
        (starts.zip(ends))
            .map(
                |(from, to)| match read(path, &Part::Piece(from..to)).unwrap() {
                    (Fetched::Body(body), _) => body,
                    _ => panic!("a regular file is readable"),
                },
            )
            .collect()
    }

    proptest::proptest! {
        /// Wherever a file is cut, each piece is the lines that start in its range
        /// (so together the file, each byte once).
        #[test]
        fn pieces_are_the_lines_that_start_in_them(
            lines in proptest::collection::vec("[a-z]{0,30}(\r)?", 0..40),
            last_newline: bool,
            cuts in proptest::collection::vec(1u64..1_400, 0..5),
        ) {
            let mut text = lines.join("\n");
            if last_newline {
                text.push('\n');
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f.ndjson");
            std::fs::write(&path, &text).unwrap();
            let mut cuts = cuts;
            cuts.sort();
            cuts.dedup();
            // The first line that starts at `cut` or later (the end if none).
            let line_from = |cut: u64| {
                let starts = (0..text.len()).filter(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n');
                starts.into_iter().find(|&i| i as u64 >= cut).unwrap_or(text.len())
            };
            let bounds: Vec<usize> = std::iter::once(0)
                .chain(cuts.iter().map(|&c| line_from(c)))
                .chain([text.len()])
                .collect();
            let expected: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            let pieces = pieces(&path, &cuts);
            let got: Vec<String> =
                pieces.iter().map(|p| String::from_utf8(p.to_vec()).unwrap()).collect();
            proptest::prop_assert_eq!(got, expected);
        }
    }

    /// Each piece holds exactly the lines that start within its range.
    #[test]
    fn a_piece_holds_the_lines_that_start_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.ndjson");
        std::fs::write(&path, "aaaa\nbbbb\ncccc\ndddd").unwrap();
        // Bytes: a 0-4, b 5-9, c 10-14, d 15-18 (no newline at the end).
        let texts = |cuts: &[u64]| -> Vec<String> {
            let pieces = pieces(&path, cuts);
            pieces
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        };
        assert_eq!(texts(&[5, 10]), ["aaaa\n", "bbbb\n", "cccc\ndddd"]);
        assert_eq!(texts(&[4, 6]), ["aaaa\n", "bbbb\n", "cccc\ndddd"]);
        assert_eq!(texts(&[6, 7]), ["aaaa\nbbbb\n", "", "cccc\ndddd"]);
        assert_eq!(texts(&[1, 2, 17]), ["aaaa\n", "", "bbbb\ncccc\ndddd", ""]);
        assert_eq!(texts(&[16, 100]), ["aaaa\nbbbb\ncccc\ndddd", "", ""]);
    }

    /// A gzip file cannot be cut: its first piece is all of it, the others empty.
    #[test]
    fn a_gzip_file_is_read_whole_by_its_first_piece_and_a_large_one_as_it_is_inflated() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.ndjson.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all("{\"a\":1}\n".repeat(1_000).as_bytes())
            .unwrap();
        let raw = gz.finish().unwrap();
        std::fs::write(&path, &raw).unwrap();
        let pieces = pieces(&path, &[10, 20]);
        assert_eq!(&pieces[0][..], &raw[..]);
        assert!(pieces[1].is_empty() && pieces[2].is_empty());
        // A large one is handed over open, whole or as its first piece, to be read
        // as it is inflated; its later pieces are nothing.
        let text: Vec<u8> = (0..600_000u64)
            .flat_map(|i| format!("{{\"a\":{}}}\n", i * 2_654_435_761 % 1_000_003).into_bytes())
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        let raw = gz.finish().unwrap();
        assert!(raw.len() as u64 >= READ_GZIP_AS_INFLATED_FROM);
        std::fs::write(&path, &raw).unwrap();
        let size = raw.len() as u64;
        for part in [Part::Whole, Part::Piece(0..size / 2)] {
            let (Fetched::Gzip(file), _) = read(&path, &part).unwrap() else {
                panic!("{part:?}: not read as it is inflated")
            };
            let mut inflating = crate::source::inflate_file(file).unwrap();
            let (mut stretch, mut inflated) = (Vec::new(), Vec::new());
            while let Some(next) = inflating.next_stretch(&mut stretch).unwrap() {
                assert_eq!(next.error, None);
                inflated.extend_from_slice(&stretch);
            }
            assert_eq!(inflated, text);
        }
        let (later, _) = read(&path, &Part::Piece(size / 2..u64::MAX)).unwrap();
        assert!(matches!(later, Fetched::Body(b) if b.is_empty()));
    }

    /// A folder reached twice (by its name and by a link) is listed once, and a
    /// link back to an ancestor ends; a dangling link is a file.
    #[test]
    fn links_are_followed_and_loops_end() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/deep")).unwrap();
        std::fs::write(root.join("a/deep/f.ndjson"), "{}\n").unwrap();
        std::fs::write(root.join("top.ndjson"), "{}\n").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("b")).unwrap();
        std::os::unix::fs::symlink(root, root.join("a/deep/up")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        let mut names: Vec<_> = list(root, None, "")
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        names.sort();
        let twice = ["a/deep/f.ndjson", "b/deep/f.ndjson"];
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(
            names.iter().filter(|n| twice.contains(&n.as_str())).count(),
            1
        );
        assert!(names.contains(&"dangling".to_owned()) && names.contains(&"top.ndjson".to_owned()));
    }
}
