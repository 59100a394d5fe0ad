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

/// The step of a run that failed, as the summary and the runs table name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Listing,
    Reading,
    /// Opening or initialising the target, or staging the batch in it.
    Staging,
    Merge,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Listing => "listing",
            Step::Reading => "reading",
            Step::Staging => "staging",
            Step::Merge => "merge",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The step a target tagged its error with (`error.context(Step::Staging)`), if any.
pub fn step_of(error: &anyhow::Error) -> Option<Step> {
    error.downcast_ref::<Step>().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_tagged_step_is_found_under_later_context() {
        let e = Err::<(), _>(anyhow::anyhow!("boom"))
            .context(Step::Staging)
            .context("organization a")
            .unwrap_err();
        assert_eq!(step_of(&e), Some(Step::Staging));
        assert_eq!(step_of(&anyhow::anyhow!("plain")), None);
    }
}
