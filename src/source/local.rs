//! A local folder, listed and read with std::fs. Not through object_store: its
//! local store escapes names a second time on read and hides files whose names
//! end in `#` and digits (its multipart-upload temporaries); a webhook receiver
//! chooses our names, so every file below the root must be read as it is.

use std::collections::HashSet;
use std::fs::Metadata;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use bytes::Bytes;

use super::{Fetched, Location, ObjectRef};

/// Every file below `root` whose name is not before `start` (following links; a
/// dangling link is listed too, and read as unreadable), or only `root/only`.
/// Names are relative, `/`-separated; a name that is not UTF-8 is recorded
/// lossily but read by its real path.
pub fn list(root: &Path, only: Option<&Path>, start: &str) -> Result<Vec<ObjectRef>> {
    let mut objects = Vec::new();
    match only {
        Some(file) => objects.push(object(root.join(file), file.to_string_lossy().into_owned())),
        None => {
            let mut walk = Walk {
                root,
                start,
                seen: HashSet::new(),
                out: &mut objects,
            };
            walk.folder(root)?;
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
    /// The folders visited (by real path), so a link loop ends.
    seen: HashSet<PathBuf>,
    out: &'a mut Vec<ObjectRef>,
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

    fn folder(&mut self, dir: &Path) -> Result<()> {
        let real = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        if !self.seen.insert(real) {
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
            // Follows links; a dangling one is a file that cannot be read.
            if std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                if !self.all_before_start(&name) {
                    self.folder(&path)?;
                }
            } else if name.as_str() >= self.start {
                self.out.push(object(path, name));
            }
        }
        Ok(())
    }
}

/// The listed file; its generation is object_store's ETag scheme (inode, time,
/// size), so files done by earlier versions stay done.
fn object(path: PathBuf, name: String) -> ObjectRef {
    let meta = std::fs::metadata(&path).or_else(|_| std::fs::symlink_metadata(&path));
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

/// The file's bytes; a file that will never be readable (gone, a dangling or
/// looping link, no permission, not a file) is `Unreadable`; other errors fail
/// the run, so a rerun tries again.
pub fn read(path: &Path) -> Result<Fetched> {
    // A FIFO or a device would block or never end.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Ok(Fetched::Unreadable("not a regular file".into()));
    }
    match std::fs::read(path) {
        Ok(body) => Ok(Fetched::Body(Bytes::from(body))),
        Err(e) if is_permanent(&e, path) => Ok(Fetched::Unreadable(e.to_string())),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
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
