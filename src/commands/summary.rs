//! What a run or backfill says when it ends, whatever the exit: one summary
//! record per organization and one for the run, with the counters, the outcome,
//! the step that failed and whether a rerun is safe.

use std::time::Instant;

use tracing::info;

use crate::batch::{Batch, Counts};
use crate::error::Step;
use crate::logging::json;
use crate::target::Applied;

/// What one destination got over the chunks of a run.
#[derive(Default)]
pub struct Totals {
    pub counts: Counts,
    pub messages: u64,
    pub applied: Applied,
}

impl Totals {
    pub fn add(&mut self, batch: &Batch, a: &Applied) {
        self.counts += batch.counts;
        self.messages += batch.resolution.len() as u64;
        // Pending is a level, not a flow: the last chunk's count is the current one.
        let before = self.applied.pending;
        self.applied += *a;
        self.applied.pending -= before;
    }
}

/// How a run (or one organization's part of it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// None: success.
    pub failed: Option<Option<Step>>,
    /// True unless it was a usage or configuration error (exit 2).
    pub rerun_safe: bool,
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self.failed {
            None => "success",
            Some(_) => "failed",
        }
    }

    pub fn step(&self) -> Option<&'static str> {
        self.failed.flatten().map(Step::as_str)
    }
}

/// One summary record: per organization, or (organization absent) for the run.
/// `lag`: seconds since the last successful run ended, when known.
pub fn log_summary(
    organization: Option<&str>,
    c: &Counts,
    t: &Totals,
    outcome: Outcome,
    lag: Option<i64>,
    started: Instant,
) {
    let (messages, a) = (t.messages, &t.applied);
    info!(
        summary = true,
        organization,
        outcome = outcome.word(),
        failed_step = ?json(&outcome.step()),
        rerun_safe = outcome.rerun_safe,
        lag_seconds = ?json(&lag),
        files = c.files,
        lines = c.lines,
        events = c.events,
        duplicates = c.events.saturating_sub(messages),
        skipped = c.skipped,
        dead_lettered = c.dead_lettered + a.expired,
        messages,
        rows_updated = a.rows_updated,
        pending = a.pending,
        expired = a.expired,
        bytes_read = c.bytes,
        bytes_processed = a.bytes_processed,
        seconds = started.elapsed().as_secs_f64(),
        "{}",
        match (organization.is_some(), outcome.failed.is_some()) {
            (true, false) => "organization finished",
            (true, true) => "organization failed",
            (false, false) => "run finished",
            (false, true) => "run failed",
        }
    );
}
