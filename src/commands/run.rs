//! `run` and `backfill`: one target from the flags, or every organization of a
//! config file, each with its own target; files are read once and routed by app.
//! Every exit, failures included, is summarised in the log and recorded in each
//! target's runs table.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::{DateTime, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::{debug, error, info, warn};

use super::destinations::{Destination, UNROUTED, flag_destination, organizations};
use super::summary::{Outcome, Totals, log_summary};
use super::window::in_window;
use crate::batch::{Batch, Counts};
use crate::cli::{BackfillArgs, RunArgs};
use crate::config::{self, Config};
use crate::error::{self, Step, UsageError, step_of};
use crate::failpoint;
use crate::pipeline::{self, Routing};
use crate::source::{ObjectRef, Source};
use crate::target::{self, Done, RunContext, RunRecord, Target};

/// The scheduled job: files not done yet.
pub async fn run(args: &RunArgs, run_id: &str) -> Result<()> {
    execute(args, run_id, None, usize::MAX).await
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
    execute(
        &args.run,
        run_id,
        Some((args.from, args.to)),
        args.chunk_files.max(1),
    )
    .await
}

async fn execute(
    args: &RunArgs,
    run_id: &str,
    window: Option<(NaiveDate, NaiveDate)>,
    chunk: usize,
) -> Result<()> {
    let label = match window {
        Some((from, to)) => format!("backfill_{}_{}", from.format("%Y%m%d"), to.format("%Y%m%d")),
        None => run_id.to_owned(),
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
    let result = run.go(args, window, chunk).await;
    run.finish(&result).await;
    result
}

/// A destination once opened (or not), and how its part of the run went.
struct Opened {
    name: String,
    /// None when it could not even be opened.
    target: Option<Box<dyn Target>>,
    done: Done,
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
    async fn go(
        &mut self,
        args: &RunArgs,
        window: Option<(NaiveDate, NaiveDate)>,
        chunk: usize,
    ) -> Result<()> {
        let config = args.config.as_deref().map(Config::load).transpose()?;
        let source = Source::open(args.source.url(config.as_ref())?)?;
        let (destinations, routing) = match &config {
            None => (vec![flag_destination(&args.target)?], Routing::single()),
            Some(c) => organizations(&args.target, c, config::cloud_run_task()?, true)?,
        };
        // Targets keep each message's timeline and its status, one read off the other.
        let routing = routing.with_timelines();
        self.multi = config.is_some();

        self.step = Some(Step::Staging);
        for d in destinations {
            let (mut opened, broken) =
                open(&d, args.target.create_messages || d.name == UNROUTED).await;
            debug!(
                destination = d.name,
                done = opened.done.len(),
                "bookkeeping read"
            );
            if let Some(e) = broken {
                opened.failed = Some(Step::Staging);
                self.opened.push(opened);
                // One target: its failure is the run's, exit code included. Many:
                // an organization that cannot start fails alone, at the end.
                if !self.multi {
                    return Err(e);
                }
                error!(organization = d.name, "{e:#}");
                continue;
            }
            self.opened.push(opened);
        }

        self.step = Some(Step::Listing);
        let listed = source.list().await?;
        let listed_count = listed.len();
        let label = self.ctx.label.clone();
        let backfill = window.is_some();
        let needed = |o: &ObjectRef| self.opened.iter().any(|d| d.needs(o, backfill, &label));
        let todo: Vec<ObjectRef> = match window {
            Some((from, to)) => listed
                .into_iter()
                .filter(|o| in_window(o, from, to) && needed(o))
                .collect(),
            None => listed.into_iter().filter(|o| needed(o)).collect(),
        };
        for d in self.opened.iter_mut().filter(|d| d.failed.is_none()) {
            d.backlog = Some(todo.iter().filter(|o| d.needs(o, backfill, &label)).count() as u64);
        }
        info!(
            listed = listed_count,
            to_read = todo.len(),
            source = source.url(),
            "reading files"
        );

        // A backfill commits in chunks, so an interrupted one keeps what it did and
        // memory stays bounded; the resolution is a max, so chunks combine exactly.
        let progress = Progress::new(todo.len() as u64, backfill);
        let mut first_error = None;
        // An empty run still applies once: pending keys are retried every run.
        let chunks: Vec<Vec<ObjectRef>> = if todo.is_empty() {
            vec![vec![]]
        } else {
            todo.chunks(chunk).map(<[ObjectRef]>::to_vec).collect()
        };
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
            let read = pipeline::read(
                &source,
                files,
                args.source.concurrency,
                &routing,
                None,
                |_| progress.tick(),
            )
            .await?;
            let mut read = read;
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
        self.completed = true;

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

/// Opens a destination and reads its bookkeeping; the error, if any, comes apart
/// from the target so that a target that opened can still record the run.
async fn open(d: &Destination, create_messages: bool) -> (Opened, Option<anyhow::Error>) {
    let mut opened = Opened {
        name: d.name.clone(),
        target: None,
        done: Done::new(),
        totals: Totals::default(),
        backlog: None,
        failed: None,
    };
    let target = match target::open(&d.url, d.columns.clone(), &d.options).await {
        Ok(t) => t,
        Err(e) => return (opened, Some(e)),
    };
    let done = match target.init(create_messages).await {
        Ok(()) => target.done().await,
        Err(e) => Err(e),
    };
    opened.target = Some(target);
    match done {
        Ok(done) => {
            opened.done = done;
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
