//! What reading a set of objects hands a store: each message's status (and
//! timeline), the counters, the dead letters and the objects read. It sits below
//! both `pipeline`, which makes batches, and `target`, which keeps them, so a
//! store knows nothing of how a batch is made.

use serde::Serialize;

use crate::resolve::{Resolution, Timelines};
use crate::source::ObjectRef;

/// Why a whole object, an app's callbacks or a pending key were not used: the
/// reasons the pipeline and the stores give (a line's own are `callback::Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The file itself could not be read to the end (corrupt gzip and the like).
    UnreadableFile,
    /// The object could not be read at all (gone, a dangling link, no permission).
    UnreadableObject,
    /// A pending key found no row before its time-to-live ended.
    PendingExpired,
    /// The callback's app belongs to no configured organization.
    UnknownApp,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::UnreadableFile => "file unreadable past this line",
            Reason::UnreadableObject => "file could not be read",
            Reason::PendingExpired => "no message row matched before the time-to-live ended",
            Reason::UnknownApp => "no organization is configured for this app",
        }
    }
}

/// A record that could not be used, kept with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub file: String,
    pub line: u64,
    pub reason: &'static str,
    pub raw: String,
}

/// Counters of one run, as the summary reports them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub files: u64,
    pub bytes: u64,
    pub lines: u64,
    pub events: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.lines += o.lines;
        self.events += o.events;
        self.skipped += o.skipped;
        self.dead_lettered += o.dead_lettered;
    }
}

/// What one organization (or the single target) gets from a set of objects.
#[derive(Debug, Default)]
pub struct Batch {
    pub resolution: Resolution,
    /// Each message's timeline, when the routing keeps them (then `resolution`
    /// stays empty until `derive_statuses`).
    pub timelines: Timelines,
    /// Events, skips and dead letters routed here.
    pub counts: Counts,
    pub dead_letters: Vec<DeadLetter>,
    /// Every object read, so each target marks them done.
    pub files: Vec<ObjectRef>,
}

impl Batch {
    /// The status of each message, read off the timelines kept.
    pub fn derive_statuses(&mut self) {
        self.resolution = self.timelines.statuses();
    }

    /// Folds another batch of the same destination in (a worker's share).
    pub fn absorb(&mut self, other: Batch) {
        self.resolution.merge(other.resolution);
        self.timelines.merge(other.timelines);
        self.counts += other.counts;
        self.dead_letters.extend(other.dead_letters);
        self.files.extend(other.files);
    }
}
