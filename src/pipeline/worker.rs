//! One parsing thread: takes hand-overs until there are none, reads each object
//! (a folder's file itself; a bucket's body arrives fetched), parses it into its
//! own batches, and spills them to disk when they pass their share of the limit.
//! A large gzip object is inflated here a stretch at a time, and the stretches
//! handed on to whichever thread is free.

use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::file::{Stretches, parse_object, parse_stretches, unreadable_object};
use super::pending::{FailOnPanic, Pending};
use super::{ReadResult, Routing};
use crate::resolve::spill::{Spill, SpillWriter};
use crate::source::{self, Fetched, ObjectRef, Part, Source, Waited};

/// Parts of objects handed over at once.
pub(super) type Work = Vec<Item>;

/// A part of an object to parse, with its body when the async side fetched it.
pub(super) struct Item {
    pub object: ObjectRef,
    pub part: Part,
    pub body: Option<Fetched>,
}

impl Item {
    /// A folder's file as the worker reads it: whole, or in pieces.
    pub fn parts_of(object: ObjectRef) -> Vec<Item> {
        let parts = object
            .parts()
            .into_iter()
            .map(|part| (part, None))
            .collect();
        Item::each_part(object, parts)
    }

    /// A bucket's fetched object: whole, or a large plain body in pieces (`source::cut`).
    pub fn fetched(object: ObjectRef, body: Fetched) -> Vec<Item> {
        let parts = match body {
            Fetched::Body(raw) => (source::cut(raw).into_iter())
                .map(|(part, raw)| (part, Some(Fetched::Body(raw))))
                .collect(),
            other => vec![(Part::Whole, Some(other))],
        };
        Item::each_part(object, parts)
    }

    /// An item for each of `object`'s parts, the object moved into the last.
    fn each_part(object: ObjectRef, mut parts: Vec<(Part, Option<Fetched>)>) -> Vec<Item> {
        let (part, body) = parts.pop().expect("an object has a part");
        let mut items: Vec<Item> = (parts.into_iter())
            .map(|(part, body)| Item {
                object: object.clone(),
                part,
                body,
            })
            .collect();
        items.push(Item { object, part, body });
        items
    }

    /// About how many bytes reading it takes.
    pub fn bytes(&self) -> u64 {
        match &self.part {
            Part::Whole => self.object.size,
            Part::Piece(range) => range.end.min(self.object.size).saturating_sub(range.start),
        }
    }
}

/// Shared by the workers; the lock is held only while waiting for the next hand-over.
pub(super) type Queue = Arc<Mutex<tokio::sync::mpsc::Receiver<Work>>>;

pub(super) struct Worker {
    pub queue: Queue,
    /// The queue's other end, to hand a large gzip object's stretches to whichever
    /// worker is free (weak: the queue closes once every hand-over is done, `Pending`).
    pub spare: tokio::sync::mpsc::WeakSender<Work>,
    pub routing: Routing,
    pub source: Source,
    pub spill: Option<Arc<Spill>>,
    /// Hand-overs not yet done; marked failed by a worker that cannot go on.
    pub pending: Arc<Pending>,
}

/// What one worker read: its batches, and the objects it finished.
pub(super) struct Done {
    pub result: ReadResult,
    pub files: Vec<ObjectRef>,
}

impl Worker {
    pub fn spawn(self) -> std::thread::JoinHandle<Result<Done>> {
        std::thread::spawn(move || self.run())
    }

    fn run(self) -> Result<Done> {
        let _unwinding = FailOnPanic(&self.pending);
        self.work().inspect_err(|_| self.pending.fail())
    }

    fn work(&self) -> Result<Done> {
        let mut result = ReadResult::new(self.routing.batches);
        let mut files = Vec::new();
        let mut scratch = Vec::new();
        let mut writer = self.spill.as_ref().map(|s| s.writer()).transpose()?;
        // Whether the last hand-over read a file from the disk: then the next one's
        // files are read ahead. Not always: it opens each file twice, work wasted on
        // files already in the page cache (docs/benchmarks.md, thirteenth and
        // fifteenth sessions).
        // The first hand-over is read ahead: nothing is known yet.
        let mut from_disk = true;
        while let Some(work) = self.next() {
            if std::mem::take(&mut from_disk) {
                let later = work.iter().skip(1).filter(|item| item.body.is_none());
                later.for_each(|item| self.source.read_ahead(&item.object, &item.part));
            }
            for Item { object, part, body } in work {
                let read = (&object, &part, body);
                from_disk |= self.parse(&mut result, read, &mut scratch, &mut writer)?;
                if part.is_first() {
                    files.push(object);
                }
                self.spill_over(&mut writer, &mut result, false)?;
            }
            self.pending.done();
        }
        // Once anything is on disk, the rest joins it there.
        let spilled = self.spill.as_ref().is_some_and(|s| s.spilled());
        self.spill_over(&mut writer, &mut result, spilled)?;
        writer.map(SpillWriter::close).transpose()?;
        Ok(Done { result, files })
    }

    /// The next hand-over; None when there are no more, or another worker failed.
    fn next(&self) -> Option<Work> {
        let work = {
            self.queue
                .lock()
                .expect("no panics while locked")
                .blocking_recv()
        }?;
        (!self.pending.failed()).then_some(work)
    }

    /// Parses a part of an object; a folder's file is read here, outside the
    /// runtime. Returns whether reading it waited for the disk: as the kernel
    /// tells, or where it cannot, as long as such a read takes.
    fn parse(
        &self,
        result: &mut ReadResult,
        (object, part, body): (&ObjectRef, &Part, Option<Fetched>),
        scratch: &mut Vec<u8>,
        writer: &mut Option<SpillWriter>,
    ) -> Result<bool> {
        let (fetched, from_disk) = match body {
            Some(fetched) => (fetched, false),
            None => {
                let started = std::time::Instant::now();
                let (fetched, waited) = self.source.read(object, part)?;
                let from_disk = match waited {
                    Waited::Yes => true,
                    Waited::No => false,
                    Waited::Unknown => slower_than_memory(started.elapsed(), object.size),
                };
                (fetched, from_disk)
            }
        };
        let mut stretches = Handing {
            worker: self,
            object,
            writer,
        };
        let routing = &self.routing;
        match fetched {
            Fetched::Body(raw) => {
                parse_object(result, routing, object, part, &raw, scratch, &mut stretches)?
            }
            Fetched::Gzip(file) => match source::inflate_file(file) {
                Ok(inflating) => {
                    parse_stretches(result, routing, object, inflating, &mut stretches)?
                }
                Err(e) => unreadable_object(result, routing, object, part, e.to_string()),
            },
            Fetched::Unreadable(why) => unreadable_object(result, routing, object, part, why),
        }
        Ok(from_disk)
    }

    /// Writes each batch's map to disk if it is over budget (or `force`).
    fn spill_over(
        &self,
        writer: &mut Option<SpillWriter>,
        result: &mut ReadResult,
        force: bool,
    ) -> Result<()> {
        if let (Some(spill), Some(writer)) = (&self.spill, writer) {
            for batch in &mut result.batches {
                writer.maybe_spill(spill, &mut batch.resolution, force)?;
            }
        }
        Ok(())
    }
}

/// A large gzip object's stretches, from the worker inflating it: each handed to
/// the next worker free if the queue has room; between those parsed here, what
/// passed the memory limit is spilled (the object is one hand-over, of any size).
struct Handing<'w> {
    worker: &'w Worker,
    object: &'w ObjectRef,
    writer: &'w mut Option<SpillWriter>,
}

impl Stretches for Handing<'_> {
    fn offer(&mut self, piece: &Part, text: &mut Vec<u8>) -> bool {
        let Some(Ok(room)) = (self.worker.spare.upgrade()).map(|queue| queue.try_reserve_owned())
        else {
            return false;
        };
        self.worker.pending.given();
        room.send(vec![Item {
            object: self.object.clone(),
            part: piece.clone(),
            body: Some(Fetched::Body(std::mem::take(text).into())),
        }]);
        true
    }

    fn parsed(&mut self, read: &mut ReadResult) -> Result<()> {
        self.worker.spill_over(self.writer, read, false)
    }
}

/// Whether reading `size` bytes in `took` was slower than a copy from the page
/// cache can be: 50 µs (opening, a busy core) plus 2 GB/s. Copies from memory run
/// at several GB/s; a disk, even a fast one, answers in 100 µs or more. Only
/// where the kernel cannot tell: a read descheduled for a moment looks like one
/// from the disk.
fn slower_than_memory(took: std::time::Duration, size: u64) -> bool {
    took.as_nanos() > 50_000 + u128::from(size) / 2
}

#[cfg(test)]
mod tests {
    use super::slower_than_memory;
    use std::time::Duration;

    #[test]
    fn reads_at_page_cache_speed_are_from_memory_and_at_disk_speed_are_not() {
        let us = Duration::from_micros;
        // 100 KB: ~20 µs copied from the page cache, 300 µs or more from a disk.
        assert!(!slower_than_memory(us(20), 100_000));
        assert!(slower_than_memory(us(300), 100_000));
        // 10 MB: ~2 ms from memory, ~15 ms from a disk at 700 MB/s.
        assert!(!slower_than_memory(us(2_000), 10_000_000));
        assert!(slower_than_memory(us(15_000), 10_000_000));
        // An empty file: its open alone.
        assert!(!slower_than_memory(us(10), 0));
    }
}
