//! Source objects → one resolved batch: fetch a bounded number of objects at once,
//! decode and parse each on the blocking pool, fold the per-file results together.

mod file;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use futures::StreamExt;

use crate::batch::{Batch, Counts};
use crate::resolve::spill::Spill;
use crate::source::{Fetched, ObjectRef, Source};

pub use file::{parse_object, unreadable_object};

/// Which batch a callback goes to, by its app.
#[derive(Debug, Clone)]
pub struct Routing {
    /// App → batch index; None for an organization another task handles.
    apps: HashMap<String, Option<usize>>,
    /// Where callbacks of unknown apps (and unreadable lines) go, if this task keeps them.
    unrouted: Option<usize>,
    batches: usize,
    multi: bool,
    /// Keep each message's whole timeline instead of its status alone.
    timelines: bool,
}

impl Routing {
    /// The same routing, keeping timelines (`Batch::timelines`) instead of statuses.
    pub fn with_timelines(mut self) -> Self {
        self.timelines = true;
        self
    }

    /// Everything to one target, whatever the app.
    pub fn single() -> Self {
        Routing {
            apps: HashMap::new(),
            unrouted: Some(0),
            batches: 1,
            multi: false,
            timelines: false,
        }
    }

    /// `orgs[i]` = (its apps, whether this task handles it); batch i is org i's,
    /// and the last batch collects unknown apps when `keep_unrouted`.
    pub fn organizations(orgs: &[(Vec<String>, bool)], keep_unrouted: bool) -> Self {
        let mut apps = HashMap::new();
        let mut index = 0;
        for (names, mine) in orgs {
            let slot = mine.then(|| {
                index += 1;
                index - 1
            });
            for name in names {
                apps.insert(name.clone(), slot);
            }
        }
        let unrouted = keep_unrouted.then_some(index);
        Routing {
            apps,
            unrouted,
            batches: index + usize::from(keep_unrouted),
            multi: true,
            timelines: false,
        }
    }

    fn route(&self, app: Option<&str>) -> Option<usize> {
        if !self.multi {
            return Some(0);
        }
        match app.and_then(|a| self.apps.get(a)) {
            Some(slot) => *slot,
            None => self.unrouted,
        }
    }

    fn is_unrouted(&self, index: usize) -> bool {
        self.multi && self.unrouted == Some(index)
    }
}

/// Everything read from a set of objects: one batch per route, and run totals.
#[derive(Debug, Default)]
pub struct Read {
    pub batches: Vec<Batch>,
    pub counts: Counts,
}

impl Read {
    fn new(routes: usize) -> Self {
        Read {
            batches: (0..routes).map(|_| Batch::default()).collect(),
            counts: Counts::default(),
        }
    }

    fn absorb(&mut self, other: Read) {
        self.counts += other.counts;
        for (mine, theirs) in self.batches.iter_mut().zip(other.batches) {
            mine.absorb(theirs);
        }
    }
}

/// How many local files a worker is handed at once.
const LOCAL_HAND_OVER: usize = 16;

/// Reads and resolves `objects`: fetches `concurrency` at a time, and parses them
/// on one worker thread per core, each folding into its own batch (no per-file
/// maps to merge). `on_file` sees each object as it is handed to a worker.
pub async fn read(
    source: &Source,
    objects: Vec<ObjectRef>,
    concurrency: usize,
    routing: &Routing,
    spill: Option<&Arc<Spill>>,
    mut on_file: impl FnMut(&ObjectRef),
) -> Result<Read> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Work goes to the workers in hand-overs: a bucket's objects are fetched on
    // the async side, `concurrency` requests in flight, and handed over one body
    // at a time; a local folder's are handed over as names, a few at a time, and
    // read by the workers themselves (outside the runtime, whose thread reads
    // bucket bodies): a hand-over per file costs more in thread wake-ups than the read.
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Vec<(ObjectRef, Option<Fetched>)>>(concurrency.max(1));
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    // Set by a worker that could not read a file: the run fails, so everyone stops.
    let failed = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let rx = rx.clone();
            let routing = routing.clone();
            let spill = spill.cloned();
            let source = source.clone();
            let failed = failed.clone();
            std::thread::spawn(move || {
                let mut read = Read::new(routing.batches);
                let mut files = Vec::new();
                let mut scratch = Vec::new();
                let mut writer = spill.as_ref().map(|s| s.writer()).transpose()?;
                // The lock is held only while waiting for the next object.
                while let Some(work) =
                    { rx.lock().expect("no panics while locked").blocking_recv() }
                {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    for (object, raw) in work {
                        let fetched = match raw {
                            Some(fetched) => fetched,
                            None => futures::executor::block_on(source.fetch(&object))
                                .inspect_err(|_| failed.store(true, Ordering::Relaxed))?,
                        };
                        match fetched {
                            Fetched::Body(raw) => {
                                parse_object(&mut read, &routing, &object, &raw, &mut scratch)
                            }
                            Fetched::Unreadable(why) => {
                                unreadable_object(&mut read, &routing, &object, why)
                            }
                        }
                        files.push(object);
                        if let (Some(spill), Some(writer)) = (&spill, &mut writer) {
                            for batch in &mut read.batches {
                                writer.maybe_spill(spill, &mut batch.resolution, false)?;
                            }
                        }
                    }
                }
                // Once anything is on disk, the rest joins it there.
                if let (Some(spill), Some(mut writer)) = (&spill, writer) {
                    if spill.spilled() {
                        for batch in &mut read.batches {
                            writer.maybe_spill(spill, &mut batch.resolution, true)?;
                        }
                    }
                    writer.close()?;
                }
                anyhow::Ok((read, files))
            })
        })
        .collect();

    let mut failure = None;
    if source.is_local() {
        for names in objects.chunks(LOCAL_HAND_OVER) {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            names.iter().for_each(&mut on_file);
            let work = names.iter().map(|o| (o.clone(), None)).collect();
            if tx.send(work).await.is_err() {
                break;
            }
        }
    } else {
        let mut fetched = futures::stream::iter(objects)
            .map(|object| async move { source.fetch(&object).await.map(|raw| (object, raw)) })
            .buffer_unordered(concurrency.max(1));
        while let Some(next) = fetched.next().await {
            match next {
                Ok((object, fetched)) => {
                    on_file(&object);
                    // Waits while the workers are busy: at most `concurrency` bodies wait in memory.
                    if tx.send(vec![(object, Some(fetched))]).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    drop(tx);
    let mut total = Read::new(routing.batches);
    let mut files = Vec::new();
    // Every worker is joined before any error is returned: a worker still running
    // would hold the spill folder past the process's end.
    for handle in handles {
        match handle.join().expect("parsing never panics") {
            Ok((read, read_files)) => {
                total.absorb(read);
                files.extend(read_files);
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    files.sort();
    for batch in &mut total.batches {
        batch
            .dead_letters
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        batch.files = files.clone();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_gone_before_it_is_read_is_one_dead_letter_and_still_done() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..40 {
            std::fs::write(dir.path().join(format!("f{i:02}.ndjson")), "{}\n").unwrap();
        }
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("dangling"))
            .unwrap();
        // A FIFO would block a read forever.
        assert!(
            std::process::Command::new("mkfifo")
                .arg(dir.path().join("fifo"))
                .status()
                .unwrap()
                .success()
        );
        let source = Source::open(dir.path().to_str().unwrap()).unwrap();
        let objects = source.list().await.unwrap();
        assert_eq!(
            objects.len(),
            42,
            "a dangling link and a FIFO are listed too"
        );
        std::fs::remove_file(dir.path().join("f17.ndjson")).unwrap();
        let routing = Routing::single();
        let read = read(&source, objects, 2, &routing, None, |_| {})
            .await
            .unwrap();
        let batch = &read.batches[0];
        assert_eq!(batch.files.len(), 42, "every object is marked done");
        let unreadable: Vec<_> = batch
            .dead_letters
            .iter()
            .filter(|d| d.reason == crate::batch::Reason::UnreadableObject.as_str())
            .map(|d| (d.file.as_str(), d.line))
            .collect();
        assert_eq!(
            unreadable,
            [("dangling", 0), ("f17.ndjson", 0), ("fifo", 0)]
        );
        // The other 39 files' lines are read: `{}` is a dead letter of its own.
        assert_eq!(read.counts.lines, 39);
    }
}
