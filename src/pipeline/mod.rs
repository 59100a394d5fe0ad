//! Source objects → one resolved batch per route: one parsing thread per core
//! (`workers`), each folding whole objects into its own batches; the batches are
//! joined when every object is read. A folder's files are handed over as names and
//! read by the threads themselves (read ahead while they come from the disk, not
//! the page cache; a large one in pieces, `source::Part`); a bucket's are fetched
//! on the async side,
//! `concurrency` requests in flight, and handed over as bodies, in listing order.

mod file;
mod pending;
mod pieces;
mod routing;
mod worker;

use std::sync::Arc;

use anyhow::Result;
use futures::StreamExt;
use tracing::{debug, info};

use crate::batch::{Batch, Counts};
use crate::resolve::Fold;
use crate::resolve::spill::{MemoryLimit, Spill};
use crate::source::{ObjectRef, Source};
use pending::Pending;
use pieces::PieceRead;
use worker::{Done, Item, Work, Worker};

pub use file::{Alone, Stretches, parse_object, unreadable_object};
pub use routing::Routing;

/// Parsing threads: one per core. The one place the number is decided: the
/// default `--concurrency`, the spill budget and output formatting follow it.
pub fn workers() -> usize {
    // Asked once: each answer reads the cgroup's CPU quota from files, and the
    // hand-overs' sizes ask at every hand-over.
    static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WORKERS.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Everything read from a set of objects: one batch per route, and run totals.
#[derive(Debug, Default)]
pub struct ReadResult {
    pub batches: Vec<Batch>,
    pub counts: Counts,
    /// With a memory limit that was passed: every batch's resolution is on disk
    /// here (the batches' own maps are empty), to be merged sorted by `Spill::finish`.
    pub spilled: Option<Spill>,
    /// Pieces of large files read, until the join numbers their dead letters.
    pieces: Vec<PieceRead>,
}

impl ReadResult {
    fn new(routes: usize) -> Self {
        ReadResult {
            batches: (0..routes).map(|_| Batch::default()).collect(),
            counts: Counts::default(),
            spilled: None,
            pieces: Vec::new(),
        }
    }

    fn absorb(&mut self, other: ReadResult) {
        self.counts += other.counts;
        self.pieces.extend(other.pieces);
        for (mine, theirs) in self.batches.iter_mut().zip(other.batches) {
            mine.absorb(theirs);
        }
    }
}

/// Most files handed over at once.
const HAND_OVER: usize = 16;
/// Most bytes handed over at once (a large file's piece is this much alone).
const HAND_OVER_BYTES: u64 = crate::source::PIECE_BYTES;

/// Files in the next hand-over, with `left` still to hand: a share of what is left,
/// so no worker idles at the end while another still has a queue of files (a
/// hand-over per file would cost more in wake-ups than the read).
fn hand_over_size(left: usize) -> usize {
    (left / (4 * workers())).clamp(1, HAND_OVER)
}

/// Reads and resolves `objects` on `workers()` threads, each folding into its own
/// batches (no per-file maps to merge). A bucket's objects are fetched
/// `concurrency` at a time. With `memory`, state past the limit goes to disk
/// (`ReadResult::spilled`). `on_file` sees each object as it is handed to a worker.
pub async fn read(
    source: &Source,
    objects: Vec<ObjectRef>,
    concurrency: usize,
    routing: &Routing,
    memory: Option<MemoryLimit>,
    on_file: impl FnMut(&ObjectRef),
) -> Result<ReadResult> {
    let spill = memory
        .map(|limit| Spill::new(limit, workers()).map(Arc::new))
        .transpose()?;
    // One hand-over waiting per worker: enough to keep them busy, and it bounds the
    // bodies held in memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Work>(workers());
    let queue = Arc::new(std::sync::Mutex::new(rx));
    let spare = tx.downgrade();
    let pending = Arc::new(Pending::default());
    let handles: Vec<_> = (0..workers())
        .map(|_| {
            Worker {
                queue: queue.clone(),
                spare: spare.clone(),
                routing: routing.clone(),
                source: source.clone(),
                spill: spill.clone(),
                pending: pending.clone(),
            }
            .spawn()
        })
        .collect();
    let fed = match source.is_local() {
        true => hand_over_names(objects, &tx, &pending, on_file).await,
        false => hand_over_bodies(source, objects, concurrency, &tx, &pending, on_file).await,
    };
    if fed.is_ok() {
        pending.settled().await;
    }
    drop(tx);
    // Every worker is joined before any error is returned: a worker still running
    // would hold the spill folder past the process's end.
    let joined = join(handles, routing);
    fed?;
    let mut result = joined?;
    if let Some(spill) = spill {
        result.spilled = spill_rest(spill, &mut result)?;
    }
    Ok(result)
}

/// A folder: names in listing order (by name, so mostly by time: a message's
/// callbacks meet in one worker's map while its entry is still in cache), a
/// large file's in pieces, each a hand-over of its own.
async fn hand_over_names(
    objects: Vec<ObjectRef>,
    tx: &tokio::sync::mpsc::Sender<Work>,
    pending: &Pending,
    mut on_file: impl FnMut(&ObjectRef),
) -> Result<()> {
    let items: Vec<Item> = objects.into_iter().flat_map(Item::parts_of).collect();
    let (mut left, mut items) = (items.len(), items.into_iter());
    while left > 0 && !pending.failed() {
        let (size, mut bytes, mut work) = (hand_over_size(left), 0, Vec::new());
        while work.len() < size && bytes < HAND_OVER_BYTES {
            let Some(item) = items.next() else { break };
            if item.part.is_first() {
                on_file(&item.object);
            }
            bytes += item.bytes();
            work.push(item);
        }
        left -= work.len();
        if !give(tx, pending, work).await {
            break;
        }
    }
    Ok(())
}

/// A bucket: bodies fetched `concurrency` at a time, handed over in listing order
/// and, like a folder's names, in runs of consecutive files (out of order, or one by
/// one, every worker's map would see every message: twice the entries, and cache
/// misses where a folder has hits); a large plain body in pieces, as a folder's file.
async fn hand_over_bodies(
    source: &Source,
    objects: Vec<ObjectRef>,
    concurrency: usize,
    tx: &tokio::sync::mpsc::Sender<Work>,
    pending: &Pending,
    mut on_file: impl FnMut(&ObjectRef),
) -> Result<()> {
    let mut left = objects.len();
    let mut fetched = futures::stream::iter(objects)
        .map(|object| async move { source.fetch(&object).await.map(|raw| (object, raw)) })
        .buffered(concurrency.max(1));
    let (mut work, mut bytes, mut size) = (Vec::new(), 0, hand_over_size(left));
    while let Some(next) = fetched.next().await {
        let (object, body) = next?;
        on_file(&object);
        left -= 1;
        for item in Item::fetched(object, body) {
            bytes += item.bytes();
            work.push(item);
            if work.len() >= size || bytes >= HAND_OVER_BYTES {
                // Waits while the workers are busy, which bounds the bodies in memory.
                if !give(tx, pending, std::mem::take(&mut work)).await {
                    return Ok(());
                }
                (bytes, size) = (0, hand_over_size(left));
            }
        }
    }
    if !work.is_empty() {
        give(tx, pending, work).await;
    }
    Ok(())
}

/// Queues a hand-over, counted as pending; false if no worker is left to take it.
async fn give(tx: &tokio::sync::mpsc::Sender<Work>, pending: &Pending, work: Work) -> bool {
    pending.given();
    let queued = tx.send(work).await.is_ok();
    if !queued {
        pending.done();
    }
    queued
}

/// Joins every worker and folds their batches into one per route (the maps
/// shard by shard on every core); every batch lists every object read, dead
/// letters in file and line order.
fn join(
    handles: Vec<std::thread::JoinHandle<Result<Done>>>,
    routing: &Routing,
) -> Result<ReadResult> {
    let mut done = Vec::new();
    let mut failure = None;
    for handle in handles {
        match handle.join().expect("parsing never panics") {
            Ok(worker) => done.push(worker),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    debug!("every object read; merging the workers' batches");
    let mut total = ReadResult::new(routing.batches);
    for (i, batch) in total.batches.iter_mut().enumerate() {
        let theirs = done.iter_mut().map(|d| &mut d.result.batches[i]);
        let (resolutions, timelines): (Vec<_>, Vec<_>) = theirs
            .map(|b| {
                (
                    std::mem::take(&mut b.resolution),
                    std::mem::take(&mut b.timelines),
                )
            })
            .unzip();
        batch.resolution = Fold::merge_all(resolutions, workers());
        batch.timelines = Fold::merge_all(timelines, workers());
    }
    let mut files = Vec::new();
    for worker in done {
        total.absorb(worker.result);
        files.extend(worker.files);
    }
    let pieces = std::mem::take(&mut total.pieces);
    pieces::join(&mut total, pieces);
    files.sort();
    for batch in &mut total.batches {
        batch
            .dead_letters
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        batch.files = files.clone();
    }
    Ok(total)
}

/// Once anything went to disk, all of it does: a worker that finished before the
/// first spill kept its map, which the join folded into the batches.
fn spill_rest(spill: Arc<Spill>, result: &mut ReadResult) -> Result<Option<Spill>> {
    let spill = Arc::into_inner(spill).expect("every worker is joined");
    if !spill.spilled() {
        return Ok(None);
    }
    let mut writer = spill.writer()?;
    for batch in &mut result.batches {
        writer.maybe_spill(&spill, &mut batch.resolution, true)?;
    }
    writer.close()?;
    info!("state passed the memory limit and was spilled to disk");
    Ok(Some(spill))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Fetched, Part};
    use file::parse_object;

    #[tokio::test]
    async fn bodies_are_handed_over_in_listing_order_in_runs_of_consecutive_files() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..100 {
            let name = dir.path().join(format!("f{i:03}.ndjson"));
            std::fs::write(name, format!("{i}\n").repeat(i % 7 + 1)).unwrap();
        }
        // Any source's bodies go this way; a folder's makes the test need no server.
        let source = Source::open(dir.path().to_str().unwrap()).unwrap();
        let objects = source.list().await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1000);
        let mut announced = Vec::new();
        // Many requests in flight, so bodies would arrive out of order if let.
        hand_over_bodies(
            &source,
            objects.clone(),
            64,
            &tx,
            &Pending::default(),
            |o| announced.push(o.name.clone()),
        )
        .await
        .unwrap();
        drop(tx);
        let mut handed = Vec::new();
        let mut sizes = Vec::new();
        while let Some(work) = rx.recv().await {
            sizes.push(work.len());
            for Item { object, body, .. } in work {
                let Some(Fetched::Body(body)) = body else {
                    panic!("{} arrived without its body", object.name)
                };
                assert_eq!(body.len() as u64, object.size, "{}", object.name);
                handed.push(object.name);
            }
        }
        let listed: Vec<_> = objects.into_iter().map(|o| o.name).collect();
        assert_eq!(handed, listed, "every file once, in listing order");
        assert_eq!(announced, listed);
        assert!(
            sizes.iter().all(|&n| (1..=HAND_OVER).contains(&n)),
            "{sizes:?}"
        );
        assert!(sizes[0] > 1, "runs, not single files: {sizes:?}");
        assert_eq!(sizes.last(), Some(&1), "the tail one by one: {sizes:?}");
    }

    /// `n` callback lines of two organizations ("b" only near the end) and unknown
    /// apps, with dead letters, blank lines and CRLF, and a line that starts with
    /// gzip's magic bytes (not gzip) once `magic_at` bytes are written.
    fn callbacks(n: usize, magic_at: u64) -> Vec<u8> {
        let (mut text, mut magic) = (Vec::new(), false);
        for i in 0..n {
            let app = match i {
                _ if i % 997 == 0 => "nobody's",
                _ if i > n - 500 => "b",
                _ => "a",
            };
            let status = ["enqueued", "sent", "delivered", "read", "failed"][i % 5];
            let line = match i {
                _ if i % 1009 == 0 => "{}".to_owned(),
                _ if i % 1013 == 0 => String::new(),
                _ => format!(
                    r#"{{"app":"{app}","timestamp":{i},"version":2,"type":"message-event","payload":{{"id":"m{}","type":"{status}","payload":{{"ts":{}}},"note":"{}"}}}}"#,
                    i % 40_000,
                    1_700_000_000 + i % 7_777,
                    "x".repeat(i % 50)
                ),
            };
            if !magic && text.len() as u64 >= magic_at {
                text.extend_from_slice(b"\x1f\x8b not gzip\n");
                magic = true;
            }
            text.extend_from_slice(line.as_bytes());
            text.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
        }
        text
    }

    /// Routes organizations "a" and "b" (and unknown apps to a batch of their own).
    fn two_organizations() -> Routing {
        let apps = |names: &[&str]| names.iter().map(|&a| a.to_owned()).collect();
        Routing::organizations(&[(apps(&["a"]), true), (apps(&["b"]), true)], true)
    }

    /// A file large enough to be read in pieces on several threads resolves,
    /// counts and dead-letters (line numbers too) as it does read whole: an
    /// organization whose lines are all in its last piece counts it once, and
    /// dead letters in every piece are numbered within the file.
    #[tokio::test]
    async fn a_large_file_read_in_pieces_is_read_as_a_whole_one() {
        let dir = tempfile::tempdir().unwrap();
        let n = 110_000;
        // A piece that starts with gzip's magic bytes is not taken for gzip: the
        // second piece's first line.
        let text = callbacks(n, crate::source::PIECE_BYTES);
        std::fs::write(dir.path().join("large.ndjson"), &text).unwrap();
        let source = Source::open(dir.path().to_str().unwrap()).unwrap();
        let objects = source.list().await.unwrap();
        assert!(objects[0].parts().len() >= 3, "read in pieces");
        let routing = two_organizations();
        let mut whole = ReadResult::new(routing.batches);
        let (body, _) = source.read(&objects[0], &Part::Whole).unwrap();
        let Fetched::Body(body) = body else {
            panic!("readable")
        };
        parse_object(
            &mut whole,
            &routing,
            &objects[0],
            &Part::Whole,
            &body,
            &mut Vec::new(),
            &mut file::Alone,
        )
        .unwrap();
        let read = read(&source, objects, 2, &routing, None, |_| {})
            .await
            .unwrap();
        assert_eq!(read.counts, whole.counts);
        assert_eq!(read.counts.files, 1);
        for (got, want) in read.batches.iter().zip(&whole.batches) {
            assert_eq!(got.counts, want.counts);
            assert_eq!(got.dead_letters, want.dead_letters);
            assert_eq!(got.resolution, want.resolution);
            assert_eq!(got.files.len(), 1, "the file once");
        }
        let letters = |b: &Batch| b.dead_letters.iter().map(|d| d.line).max();
        assert!(
            letters(&read.batches[2]) > Some(n as u64 * 9 / 10),
            "numbered within the file"
        );
        assert_eq!(read.batches[1].counts.files, 1);
    }

    /// A gzip file that inflates past what one buffer holds (`MAX_INFLATED`, small in
    /// tests) is inflated a stretch of lines at a time, the stretches parsed on every
    /// thread: it resolves, counts and dead-letters (line numbers too) as the same
    /// text unzipped. Cut short, it keeps its whole lines and says on which line the
    /// damage starts.
    #[tokio::test]
    async fn a_large_gzip_file_is_read_as_the_same_text_unzipped() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let text = callbacks(110_000, 1 << 20);
        assert!(text.len() as u64 > crate::source::MAX_INFLATED);
        let mut zipped = GzEncoder::new(Vec::new(), Compression::fast());
        zipped.write_all(&text).unwrap();
        let zipped = zipped.finish().unwrap();
        assert!(zipped.len() as u64 >= 2 * crate::source::READ_GZIP_AS_INFLATED_FROM);
        let cut = &zipped[..zipped.len() / 2];
        let routing = two_organizations();
        let read_one = |body: &[u8]| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("large.ndjson"), body).unwrap();
            let routing = routing.clone();
            async move {
                let source = Source::open(dir.path().to_str().unwrap()).unwrap();
                let objects = source.list().await.unwrap();
                read(&source, objects, 2, &routing, None, |_| {})
                    .await
                    .unwrap()
            }
        };
        let want = read_one(&text).await;
        let mut got = read_one(&zipped).await;
        assert_eq!(got.counts.bytes, zipped.len() as u64);
        got.counts.bytes = want.counts.bytes;
        assert_eq!(got.counts, want.counts);
        for (got, want) in got.batches.iter().zip(&want.batches) {
            assert_eq!(got.counts.lines, want.counts.lines);
            assert_eq!(got.counts.files, want.counts.files);
            assert_eq!(got.dead_letters, want.dead_letters);
            assert_eq!(got.resolution, want.resolution);
            assert_eq!(got.files.len(), 1, "the file once");
        }
        let damaged = read_one(cut).await;
        let mut inflated = Vec::new();
        let whole_lines = crate::source::decode(cut, &mut inflated);
        assert!(whole_lines.error.is_some());
        let lines = memchr::memchr_iter(b'\n', whole_lines.data).count() as u64;
        assert!(lines > 10_000, "{lines} lines before the damage");
        let damage: Vec<_> = (damaged.batches.iter().flat_map(|b| &b.dead_letters))
            .filter(|d| d.reason == crate::batch::Reason::UnreadableFile.as_str())
            .map(|d| d.line)
            .collect();
        assert_eq!(damage, [lines + 1]);
        // Its whole lines are read as the same lines unzipped.
        let prefix = read_one(whole_lines.data).await;
        assert_eq!(damaged.counts.events, prefix.counts.events);
        for (got, want) in damaged.batches.iter().zip(&prefix.batches) {
            assert_eq!(got.resolution, want.resolution);
        }
    }

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
        // A socket cannot even be opened.
        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("socket")).unwrap();
        let large = vec![b'\n'; 3 * crate::source::PIECE_BYTES as usize];
        std::fs::write(dir.path().join("large.ndjson"), large).unwrap();
        let source = Source::open(dir.path().to_str().unwrap()).unwrap();
        let objects = source.list().await.unwrap();
        assert_eq!(
            objects.len(),
            44,
            "a dangling link, a FIFO and a socket are listed too"
        );
        std::fs::remove_file(dir.path().join("f17.ndjson")).unwrap();
        // A large file gone too: one dead letter, not one for each of its pieces.
        let large = objects.iter().find(|o| o.name == "large.ndjson").unwrap();
        assert_eq!(large.parts().len(), 3);
        std::fs::remove_file(dir.path().join("large.ndjson")).unwrap();
        let routing = Routing::single();
        let read = read(&source, objects, 2, &routing, None, |_| {})
            .await
            .unwrap();
        let batch = &read.batches[0];
        assert_eq!(batch.files.len(), 44, "every object is marked done");
        let unreadable: Vec<_> = batch
            .dead_letters
            .iter()
            .filter(|d| d.reason == crate::batch::Reason::UnreadableObject.as_str())
            .map(|d| (d.file.as_str(), d.line))
            .collect();
        assert_eq!(
            unreadable,
            [
                ("dangling", 0),
                ("f17.ndjson", 0),
                ("fifo", 0),
                ("large.ndjson", 0),
                ("socket", 0)
            ]
        );
        assert_eq!(
            (read.counts.dead_lettered, batch.counts.dead_lettered),
            (44, 44)
        );
        // The other 39 files' lines are read: `{}` is a dead letter of its own.
        assert_eq!(read.counts.lines, 39);
    }
}
