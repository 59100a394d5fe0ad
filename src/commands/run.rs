//! `run` and `backfill`: one target from the flags, or every organization of a
//! config file, each with its own target; files are read once and routed by app.
//! A run opens its targets, lists what is new (`listing`), reads it in chunks
//! and applies each chunk to every target, then moves the targets' watermarks.
//! Every exit, failures included, is summarised in the log and recorded in each
//! target's runs table.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::{debug, error, info, warn};

use super::destinations::{Destination, flag_destination, organizations};
use super::listing::{Listing, is_mine};
use super::summary::{Outcome, Totals, log_summary};
use super::window::in_window;
use crate::batch::{Batch, Counts};
use crate::cli::{BackfillArgs, RunArgs};
use crate::config::{self, Config};
use crate::error::{self, Step, UsageError, step_of};
use crate::failpoint;
use crate::pipeline::{self, Routing};
use crate::source::{ObjectRef, Source};
use crate::target::{self, DoneFiles, RunContext, RunRecord, Target, Watermark};

/// The scheduled job: files not done yet.
pub async fn run(args: &RunArgs, run_id: &str) -> Result<()> {
    execute(args, run_id, Mode::Run).await
}

/// A window of files, whatever the bookkeeping says.
pub async fn backfill(args: &BackfillArgs, run_id: &str) -> Result<()> {
    if args.from > args.to {
        return Err(UsageError::new(format!(
            "--from {} is after --to {}: the window would be empty",
            args.from, args.to
        ))
        .into());
    }
    let mode = Mode::Backfill {
        from: args.from,
        to: args.to,
        chunk: args.chunk_files.max(1),
    };
    execute(&args.run, run_id, mode).await
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// What is not done yet, listed from the targets' watermarks, in one chunk.
    Run,
    /// The window's files, listed whole, in chunks of `chunk` files.
    Backfill {
        from: NaiveDate,
        to: NaiveDate,
        chunk: usize,
    },
}

async fn execute(args: &RunArgs, run_id: &str, mode: Mode) -> Result<()> {
    let label = match mode {
        Mode::Backfill { from, to, .. } => {
            format!("backfill_{}_{}", from.format("%Y%m%d"), to.format("%Y%m%d"))
        }
        Mode::Run => run_id.to_owned(),
    };
    let mut run = Run {
        ctx: RunContext {
            run_id: run_id.to_owned(),
            label,
            now: args.now.unwrap_or_else(Utc::now),
            pending_ttl: args.pending_ttl,
        },
        started: Instant::now(),
        multi: false,
        opened: Vec::new(),
        counts: Counts::default(),
        step: None,
        completed: false,
    };
    let result = run.go(args, mode).await;
    run.finish(&result).await;
    result
}

/// A destination once opened (or not), and how its part of the run went.
struct Opened {
    name: String,
    /// None when it could not even be opened.
    target: Option<Box<dyn Target>>,
    /// Its watermark of the source, as read when it was opened.
    watermark: Option<Watermark>,
    done: DoneFiles,
    totals: Totals,
    /// Listed objects it still needs (None before listing, or when it failed to start).
    backlog: Option<u64>,
    /// The step it failed in.
    failed: Option<Step>,
}

impl Opened {
    /// Whether this destination still needs the object: a run skips what is done;
    /// a backfill skips only what this same backfill already did (resuming).
    fn needs(&self, o: &ObjectRef, backfill: bool, label: &str) -> bool {
        if self.failed.is_some() {
            return false;
        }
        match (
            backfill,
            self.done.get(&(o.name.clone(), o.generation.clone())),
        ) {
            (true, Some(done_by)) => done_by != label,
            (_, done) => done.is_none(),
        }
    }

    /// A failure of this destination alone: the run goes on for the others when
    /// there are several; with one, its error is the run's.
    fn fail(&mut self, step: Step, e: anyhow::Error, multi: bool) -> Result<()> {
        self.failed = Some(step);
        if !multi {
            return Err(e);
        }
        error!(organization = self.name, "{e:#}");
        Ok(())
    }
}

/// Everything a run knows at any exit, so that each exit can be summarised.
struct Run {
    ctx: RunContext,
    started: Instant,
    multi: bool,
    opened: Vec<Opened>,
    counts: Counts,
    /// The step under way: an error returned from it failed that step.
    step: Option<Step>,
    /// Every chunk went to every destination still standing.
    completed: bool,
}

impl Run {
    async fn go(&mut self, args: &RunArgs, mode: Mode) -> Result<()> {
        let config = args.config.as_deref().map(Config::load).transpose()?;
        let source = Source::open(args.source.url(config.as_ref())?)?;
        let (destinations, routing) = match &config {
            None => (vec![flag_destination(&args.target)?], Routing::single()),
            Some(c) => organizations(&args.target, c, config::cloud_run_task()?, true)?,
        };
        // Without a config, the tasks of a backfill split the objects instead.
        let task = match (&config, mode) {
            (None, Mode::Backfill { .. }) => config::cloud_run_task()?,
            _ => None,
        };
        // Targets keep each message's timeline and its status, one read off the other.
        let routing = routing.with_timelines();
        self.multi = config.is_some();

        self.step = Some(Step::Staging);
        self.open_all(destinations, args.target.create_messages, source.url())
            .await?;
        let listing = match mode {
            Mode::Run => {
                let marks: Vec<Option<&Watermark>> =
                    self.standing().map(|d| d.watermark.as_ref()).collect();
                Listing::plan(&marks, self.ctx.now)
            }
            Mode::Backfill { .. } => Listing::everything(),
        };
        self.read_bookkeeping(&listing.start).await?;

        self.step = Some(Step::Listing);
        let listed = source.list_from(&listing.start).await?;
        let todo = self.select(&listed, &listing, mode, task);
        let bookkeeping: usize = self.standing().map(|d| d.done.len()).sum();
        info!(
            listed = listed.len(),
            bookkeeping_rows = bookkeeping,
            listed_from = listing.start,
            full_listing = listing.full,
            to_read = todo.len(),
            source = source.url(),
            "reading files"
        );

        let chunk = match mode {
            Mode::Run => usize::MAX,
            Mode::Backfill { chunk, .. } => chunk,
        };
        let first_error = self
            .apply_chunks(&source, todo, chunk, &routing, args.source.concurrency)
            .await?;
        self.completed = true;
        if matches!(mode, Mode::Run) {
            self.advance_watermarks(source.url(), &listing, &listed, args.list_grace)
                .await;
        }
        self.verdict(first_error)
    }

    /// The destinations that have not failed.
    fn standing(&self) -> impl Iterator<Item = &Opened> {
        self.opened.iter().filter(|d| d.failed.is_none())
    }

    /// Opens every destination and reads its watermark of `source`.
    async fn open_all(
        &mut self,
        destinations: Vec<Destination>,
        create_messages: bool,
        source: &str,
    ) -> Result<()> {
        for d in destinations {
            let (mut opened, broken) = open(&d, create_messages || d.unrouted, source).await;
            let broken = broken.map(|e| opened.fail(Step::Staging, e, self.multi));
            self.opened.push(opened);
            broken.transpose()?;
        }
        Ok(())
    }

    /// Each standing destination's files done from `from` on.
    async fn read_bookkeeping(&mut self, from: &str) -> Result<()> {
        for d in self.opened.iter_mut().filter(|d| d.failed.is_none()) {
            let Some(target) = &d.target else { continue };
            match target.done(from).await {
                Ok(done) => {
                    debug!(destination = d.name, done = done.len(), "bookkeeping read");
                    d.done = done;
                }
                Err(e) => d.fail(Step::Staging, e, self.multi)?,
            }
        }
        Ok(())
    }

    /// The listed objects some destination still needs, and each one's backlog.
    fn select(
        &mut self,
        listed: &[ObjectRef],
        listing: &Listing,
        mode: Mode,
        task: Option<(usize, usize)>,
    ) -> Vec<ObjectRef> {
        let label = &self.ctx.label;
        let backfill = matches!(mode, Mode::Backfill { .. });
        let wanted = |o: &&ObjectRef| match mode {
            Mode::Run => !listing.is_forgotten(o),
            Mode::Backfill { from, to, .. } => {
                in_window(o, from, to) && task.is_none_or(|t| is_mine(&o.name, t))
            }
        };
        let todo: Vec<ObjectRef> = listed
            .iter()
            .filter(wanted)
            .filter(|o| self.opened.iter().any(|d| d.needs(o, backfill, label)))
            .cloned()
            .collect();
        for d in self.opened.iter_mut().filter(|d| d.failed.is_none()) {
            d.backlog = Some(todo.iter().filter(|o| d.needs(o, backfill, label)).count() as u64);
        }
        warn_of_late_files(&self.opened, listing, &todo);
        todo
    }

    /// Reads the files chunk by chunk and applies each chunk to every standing
    /// destination. A destination that fails stops taking chunks; the first
    /// such error is returned for the verdict.
    async fn apply_chunks(
        &mut self,
        source: &Source,
        todo: Vec<ObjectRef>,
        chunk: usize,
        routing: &Routing,
        concurrency: usize,
    ) -> Result<Option<anyhow::Error>> {
        // A backfill commits in chunks, so an interrupted one keeps what it did and
        // memory stays bounded; the resolution is a max, so chunks combine exactly.
        let backfill = chunk != usize::MAX;
        let progress = Progress::new(todo.len() as u64, backfill);
        let mut first_error = None;
        // An empty run still applies once: pending keys are retried every run.
        let chunks: Vec<Vec<ObjectRef>> = if todo.is_empty() {
            vec![vec![]]
        } else {
            todo.chunks(chunk).map(<[ObjectRef]>::to_vec).collect()
        };
        let label = self.ctx.label.clone();
        for files in chunks {
            let needed: Vec<u64> = self
                .opened
                .iter()
                .map(|d| {
                    files
                        .iter()
                        .filter(|o| d.needs(o, backfill, &label))
                        .count() as u64
                })
                .collect();
            self.step = Some(Step::Reading);
            let mut read = pipeline::read(source, files, concurrency, routing, None, |_| {
                progress.tick()
            })
            .await?;
            read.batches.iter_mut().for_each(Batch::derive_statuses);
            self.counts += read.counts;
            self.step = Some(Step::Merge);
            let ctx = &self.ctx;
            let applies = self
                .opened
                .iter()
                .zip(read.batches)
                .map(|(d, batch)| async move {
                    let applied = match (&d.target, d.failed) {
                        (Some(t), None) => Some(t.apply(&batch, ctx).await),
                        _ => None,
                    };
                    (batch, applied)
                });
            let results = futures::future::join_all(applies).await;
            for (((batch, applied), d), needed) in
                results.into_iter().zip(&mut self.opened).zip(needed)
            {
                match applied {
                    Some(Ok(a)) => {
                        d.totals.add(&batch, &a);
                        d.backlog = d.backlog.map(|b| b.saturating_sub(needed));
                    }
                    Some(Err(e)) => {
                        d.failed = Some(step_of(&e).unwrap_or(Step::Merge));
                        if self.multi {
                            error!(organization = d.name, "{e:#}");
                        }
                        first_error.get_or_insert(e);
                    }
                    None => {}
                }
            }
            failpoint::hit("after-chunk");
        }
        progress.finish();
        Ok(first_error)
    }

    /// Each destination that did everything it needed records where the next
    /// listing may start. Best effort: a watermark not moved only costs the
    /// next run a longer listing.
    async fn advance_watermarks(
        &self,
        source: &str,
        listing: &Listing,
        listed: &[ObjectRef],
        grace: chrono::Duration,
    ) {
        for d in self.standing() {
            let (Some(target), Some(next)) = (
                &d.target,
                listing.next(d.watermark.as_ref(), listed, self.ctx.now, grace),
            ) else {
                continue;
            };
            if let Err(e) = target.set_watermark(source, &next, self.ctx.now).await {
                warn!(
                    destination = d.name,
                    "the listing watermark could not be recorded: {e:#}"
                );
            }
        }
    }

    /// The run's result: its one target's error, or which organizations failed.
    fn verdict(&self, first_error: Option<anyhow::Error>) -> Result<()> {
        let failed: Vec<&str> = self
            .opened
            .iter()
            .filter(|d| d.failed.is_some())
            .map(|d| d.name.as_str())
            .collect();
        match (failed.len(), first_error) {
            (0, _) => Ok(()),
            (_, Some(e)) if !self.multi => Err(e),
            (n, _) => Err(anyhow!(
                "{n} of {} organizations failed: {}",
                self.opened.len(),
                failed.join(", ")
            )),
        }
    }

    /// Summarises and records the run, whatever its result. Recording is best
    /// effort: a target that cannot take it gets a warning, the run's own error stands.
    async fn finish(&self, result: &Result<()>) {
        let elapsed = chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default();
        let ended_at = self.ctx.now + elapsed;
        let rerun_safe = result
            .as_ref()
            .err()
            .is_none_or(|e| error::exit_code(e) != error::EXIT_USAGE);
        // A run that stopped early failed its step for everyone still standing.
        let stopped = match result {
            Err(e) if !self.completed => Some(step_of(e).or(self.step)),
            _ => None,
        };
        let mut run_total = Totals::default();
        let mut lags = Vec::new();
        for d in &self.opened {
            let outcome = Outcome {
                failed: d.failed.map(Some).or(stopped),
                rerun_safe,
            };
            let lag = self.record(d, outcome, ended_at).await;
            lags.push(lag);
            run_total.messages += d.totals.messages;
            run_total.applied += d.totals.applied;
        }
        let outcome = Outcome {
            failed: result.as_ref().err().map(|e| {
                step_of(e)
                    .or(stopped.flatten())
                    .or_else(|| self.opened.iter().find_map(|d| d.failed))
            }),
            rerun_safe,
        };
        let lag = lags.into_iter().flatten().max();
        log_summary(None, &self.counts, &run_total, outcome, lag, self.started);
    }

    /// One destination's part: recorded in its runs table, and summarised when
    /// there are several. Returns its lag.
    async fn record(&self, d: &Opened, outcome: Outcome, ended_at: DateTime<Utc>) -> Option<i64> {
        let counts = if self.multi {
            d.totals.counts
        } else {
            self.counts
        };
        let record = RunRecord {
            run_id: self.ctx.run_id.clone(),
            started_at: self.ctx.now,
            ended_at,
            outcome: outcome.word(),
            failed_step: outcome.step(),
            backlog: d.backlog,
            files: counts.files,
            lines: counts.lines,
            dead_lettered: counts.dead_lettered + d.totals.applied.expired,
            rows_updated: d.totals.applied.rows_updated,
            pending: d.totals.applied.pending,
            bytes_processed: d.totals.applied.bytes_processed,
        };
        let lag = match &d.target {
            Some(t) => record_and_lag(t.as_ref(), &record, &d.name).await,
            None => None,
        };
        if self.multi {
            log_summary(
                Some(&d.name),
                &counts,
                &d.totals,
                outcome,
                lag,
                self.started,
            );
        }
        lag
    }
}

/// Files a daily full listing found undone below a watermark were written late
/// under old names, past the grace window: they were read a day late.
fn warn_of_late_files(opened: &[Opened], listing: &Listing, todo: &[ObjectRef]) {
    let Some(earliest) = opened
        .iter()
        .filter_map(|d| d.watermark.as_ref())
        .map(|w| w.start.as_str())
        .min()
    else {
        return;
    };
    let late = todo.iter().filter(|o| o.name.as_str() < earliest).count();
    if listing.full && late > 0 {
        warn!(
            late_files = late,
            "files written under names before the listing watermark were found by the daily full \
             listing; if this repeats, raise --list-grace"
        );
    }
}

/// How long recording a run (and reading the lag) may take: never long enough to
/// hold up the report of a run that failed because its target is unwell.
const RECORD_DEADLINE: Duration = Duration::from_secs(30);

/// Records the run in the target, then reads how long ago its last successful
/// run ended (0 when this one succeeded).
async fn record_and_lag(t: &dyn Target, r: &RunRecord, name: &str) -> Option<i64> {
    match tokio::time::timeout(RECORD_DEADLINE, t.record_run(r)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(
            destination = name,
            "the run could not be recorded in the runs table: {e:#}"
        ),
        Err(_) => warn!(
            destination = name,
            "recording the run in the runs table timed out"
        ),
    }
    if r.outcome == "success" {
        return Some(0);
    }
    let health = tokio::time::timeout(RECORD_DEADLINE, t.health(r.ended_at)).await;
    let last: Option<DateTime<Utc>> = health.ok()?.ok()?.last_success?.ended();
    Some((r.ended_at - last?).num_seconds().max(0))
}

/// Opens a destination and reads its watermark of `source`; the error, if any,
/// comes apart from the target so that a target that opened can still record the run.
async fn open(
    d: &Destination,
    create_messages: bool,
    source: &str,
) -> (Opened, Option<anyhow::Error>) {
    let mut opened = Opened {
        name: d.name.clone(),
        target: None,
        watermark: None,
        done: DoneFiles::new(),
        totals: Totals::default(),
        backlog: None,
        failed: None,
    };
    let target = match target::open(&d.url, d.columns.clone(), &d.options).await {
        Ok(t) => t,
        Err(e) => return (opened, Some(e)),
    };
    let watermark = match target.init(create_messages).await {
        Ok(()) => target.watermark(source).await,
        Err(e) => Err(e),
    };
    opened.target = Some(target);
    match watermark {
        Ok(w) => {
            opened.watermark = w;
            (opened, None)
        }
        Err(e) => (opened, Some(e)),
    }
}

/// A bar on a terminal (backfills), else a log record every 30 s.
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: std::cell::Cell<u64>,
    last_log: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total: u64, wanted: bool) -> Self {
        let bar = (wanted && std::io::stderr().is_terminal()).then(|| {
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} files {elapsed_precise} eta {eta}",
                )
                .expect("static template"),
            )
        });
        Progress {
            bar,
            total,
            done: 0.into(),
            last_log: Instant::now().into(),
        }
    }

    fn tick(&self) {
        self.done.set(self.done.get() + 1);
        if let Some(bar) = &self.bar {
            return bar.inc(1);
        }
        if self.last_log.get().elapsed() >= Duration::from_secs(30) {
            self.last_log.set(Instant::now());
            info!(
                files_done = self.done.get(),
                files_total = self.total,
                "progress"
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
