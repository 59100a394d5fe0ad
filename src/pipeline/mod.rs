//! Source objects → one resolved batch: fetch a bounded number of objects at once,
//! decode and parse each on the blocking pool, fold the per-file results together.

mod file;

use anyhow::Result;
use futures::StreamExt;
use serde::Serialize;

use crate::resolve::Resolution;
use crate::source::{ObjectRef, Source};

pub use file::parse_object;

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

/// Everything read from a set of objects.
#[derive(Debug, Default)]
pub struct Batch {
    pub resolution: Resolution,
    pub counts: Counts,
    pub dead_letters: Vec<DeadLetter>,
    pub files: Vec<ObjectRef>,
}

impl Batch {
    fn absorb(&mut self, other: Batch) {
        self.resolution.merge(other.resolution);
        self.counts += other.counts;
        self.dead_letters.extend(other.dead_letters);
        self.files.extend(other.files);
    }
}

/// Reads and resolves `objects`, `concurrency` at a time; `on_file` sees each
/// finished object (progress reporting).
pub async fn read(
    source: &Source,
    objects: Vec<ObjectRef>,
    concurrency: usize,
    mut on_file: impl FnMut(&ObjectRef),
) -> Result<Batch> {
    let mut results = futures::stream::iter(objects)
        .map(|object| async move {
            let raw = source.fetch(&object).await?;
            let batch = tokio::task::spawn_blocking(move || parse_object(object, raw)).await?;
            anyhow::Ok(batch)
        })
        .buffer_unordered(concurrency.max(1));
    let mut total = Batch::default();
    while let Some(batch) = results.next().await {
        let batch = batch?;
        on_file(&batch.files[0]);
        total.absorb(batch);
    }
    Ok(total)
}
