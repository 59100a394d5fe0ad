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

/// Reads and resolves `objects`: fetches `concurrency` at a time, and parses them
/// on one worker thread per core, each folding into its own batch (no per-file
/// maps to merge). `on_file` sees each object as it is handed to a worker.
pub async fn read(
    source: &Source,
    objects: Vec<ObjectRef>,
    concurrency: usize,
    mut on_file: impl FnMut(&ObjectRef),
) -> Result<Batch> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (tx, rx) = tokio::sync::mpsc::channel::<(ObjectRef, bytes::Bytes)>(concurrency.max(1));
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut batch = Batch::default();
                // The lock is held only while waiting for the next object.
                while let Some((object, raw)) =
                    { rx.lock().expect("no panics while locked").blocking_recv() }
                {
                    parse_object(&mut batch, object, raw);
                }
                batch
            })
        })
        .collect();

    let mut fetched = futures::stream::iter(objects)
        .map(|object| async move { source.fetch(&object).await.map(|raw| (object, raw)) })
        .buffer_unordered(concurrency.max(1));
    let mut failure = None;
    while let Some(next) = fetched.next().await {
        match next {
            Ok((object, raw)) => {
                on_file(&object);
                // Waits while the workers are busy: at most `concurrency` objects wait in memory.
                if tx.send((object, raw)).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let mut total = Batch::default();
    for handle in handles {
        total.absorb(handle.join().expect("parsing never panics"));
    }
    if let Some(e) = failure {
        return Err(e);
    }
    total
        .dead_letters
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    total.files.sort();
    Ok(total)
}
