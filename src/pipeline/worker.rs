//! One parsing thread: takes hand-overs until there are none, reads each object
//! (a folder's file itself; a bucket's body arrives fetched), parses it into its
//! own batches, and spills them to disk when they pass their share of the limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::file::{parse_object, unreadable_object};
use super::{ReadResult, Routing};
use crate::resolve::spill::{Spill, SpillWriter};
use crate::source::{Fetched, ObjectRef, Source};

/// Objects handed over at once, each with its body when the async side fetched it.
pub(super) type Work = Vec<(ObjectRef, Option<Fetched>)>;
/// Shared by the workers; the lock is held only while waiting for the next hand-over.
pub(super) type Queue = Arc<Mutex<tokio::sync::mpsc::Receiver<Work>>>;

pub(super) struct Worker {
    pub queue: Queue,
    pub routing: Routing,
    pub source: Source,
    pub spill: Option<Arc<Spill>>,
    /// Set by a worker that could not read a file: the run fails, so everyone stops.
    pub failed: Arc<AtomicBool>,
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
        let mut result = ReadResult::new(self.routing.batches);
        let mut files = Vec::new();
        let mut scratch = Vec::new();
        let mut writer = self.spill.as_ref().map(|s| s.writer()).transpose()?;
        while let Some(work) = self.next() {
            for (object, body) in work {
                self.parse(&mut result, &object, body, &mut scratch)?;
                files.push(object);
                self.spill_over(&mut writer, &mut result, false)?;
            }
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
        (!self.failed.load(Ordering::Relaxed)).then_some(work)
    }

    /// Parses one object; a folder's file is read here, outside the runtime.
    fn parse(
        &self,
        result: &mut ReadResult,
        object: &ObjectRef,
        body: Option<Fetched>,
        scratch: &mut Vec<u8>,
    ) -> Result<()> {
        let fetched = match body {
            Some(fetched) => fetched,
            None => futures::executor::block_on(self.source.fetch(object))
                .inspect_err(|_| self.failed.store(true, Ordering::Relaxed))?,
        };
        match fetched {
            Fetched::Body(raw) => parse_object(result, &self.routing, object, &raw, scratch),
            Fetched::Unreadable(why) => unreadable_object(result, &self.routing, object, why),
        }
        Ok(())
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
