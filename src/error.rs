//! Exit codes: 2 for usage or configuration errors (said in one line), 1 for the rest.

use std::fmt;

/// A mistake in how the job was called or configured; rerunning won't help.
#[derive(Debug)]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        UsageError(message.into())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error unless the folder `path` would be created in exists: a file the
/// job writes into a missing folder is a typo, not something a rerun fixes.
pub fn require_folder_of(path: &std::path::Path, what: &str) -> Result<(), UsageError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(UsageError::new(format!(
            "{what} {}: the folder {} does not exist",
            path.display(),
            dir.display()
        ))),
        _ => Ok(()),
    }
}

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// The exit code an error deserves.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    if error.chain().any(|e| e.is::<UsageError>()) {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    }
}
