//! `run` and `backfill`: one target from the flags, or every organization of a
//! config file, each with its own target; files are read once and routed by app.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::{NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::{debug, error, info};

use super::destination::Destination;
use super::window::in_window;
use crate::cli::{BackfillArgs, RunArgs};
use crate::config::{self, Config};
use crate::error::UsageError;
use crate::failpoint;
use crate::pipeline::{self, Batch, Counts, Routing};
use crate::source::{ObjectRef, Source};
use crate::target::{self, Applied, Done, RunContext, Target};

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

/// A destination once opened and ready (or why it is not).
struct Opened {
    name: String,
    target: Result<Box<dyn Target>>,
    done: Done,
}

async fn execute(
    args: &RunArgs,
    run_id: &str,
    window: Option<(NaiveDate, NaiveDate)>,
    chunk: usize,
) -> Result<()> {
    let started = Instant::now();
    let label = match window {
        Some((from, to)) => format!("backfill_{}_{}", from.format("%Y%m%d"), to.format("%Y%m%d")),
        None => run_id.to_owned(),
    };
    let ctx = RunContext {
        run_id: run_id.to_owned(),
        label,
        now: args.now.unwrap_or_else(Utc::now),
        pending_ttl: args.pending_ttl,
    };
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let source = Source::open(args.source.url(config.as_ref())?)?;
    let (destinations, routing) = match &config {
        None => (
            vec![Destination::of_flags(&args.target)?],
            Routing::single().with_timelines(),
        ),
        Some(config) => organizations(args, config)?,
    };
    let multi = config.is_some();

    let mut opened = Vec::new();
    for d in destinations {
        let target = open(&d, args.target.create_messages || d.name == UNROUTED).await;
        let done = match &target {
            Ok(t) => t.done().await,
            Err(_) => Ok(Done::new()),
        };
        let (target, done) = match (target, done, multi) {
            (Ok(t), Ok(done), _) => (Ok(t), done),
            // One target: its failure is the run's, exit code included.
            (Err(e), _, false) | (_, Err(e), false) => return Err(e),
            // Many: an organization that cannot start fails alone, at the end.
            (Err(e), _, true) | (_, Err(e), true) => (Err(e), Done::new()),
        };
        debug!(destination = d.name, done = done.len(), "bookkeeping read");
        opened.push(Opened {
            name: d.name,
            target,
            done,
        });
    }

    let listed = source.list().await?;
    let listed_count = listed.len();
    // A file is read while any destination still needs it: a run skips what is
    // done; a backfill skips only what this same backfill already did (resuming).
    let needed = |o: &ObjectRef| {
        let id = (o.name.clone(), o.generation.clone());
        opened.iter().any(|d| match (window, d.done.get(&id)) {
            _ if d.target.is_err() => false,
            (Some(_), Some(label)) => *label != ctx.label,
            (_, done) => done.is_none(),
        })
    };
    let todo: Vec<ObjectRef> = match window {
        Some((from, to)) => listed
            .into_iter()
            .filter(|o| in_window(o, from, to) && needed(o))
            .collect(),
        None => listed.into_iter().filter(|o| needed(o)).collect(),
    };
    info!(
        listed = listed_count,
        to_read = todo.len(),
        source = source.url(),
        "reading files"
    );

    // A backfill commits in chunks, so an interrupted one keeps what it did and
    // memory stays bounded; the resolution is a max, so chunks combine exactly.
    let progress = Progress::new(todo.len() as u64, window.is_some());
    let mut totals: Vec<Totals> = opened.iter().map(|_| Totals::default()).collect();
    let mut run_counts = Counts::default();
    let mut failed: Vec<String> = Vec::new();
    let mut first_error = None;
    // An empty run still applies once: pending keys are retried every run.
    let chunks: Vec<Vec<ObjectRef>> = if todo.is_empty() {
        vec![vec![]]
    } else {
        todo.chunks(chunk).map(<[ObjectRef]>::to_vec).collect()
    };
    for files in chunks {
        let read = pipeline::read(
            &source,
            files,
            args.source.concurrency,
            &routing,
            None,
            |_| progress.tick(),
        )
        .await?;
        run_counts += read.counts;
        // Targets keep each message's timeline and its status, one read off the other.
        let mut read = read;
        read.batches.iter_mut().for_each(Batch::derive_statuses);
        let applies = opened.iter().zip(read.batches).map(|(d, batch)| {
            let ctx = &ctx;
            let skip = failed.contains(&d.name);
            async move {
                let applied = match &d.target {
                    Ok(_) if skip => Err(anyhow!("failed in an earlier chunk")),
                    Ok(t) => t.apply(&batch, ctx).await,
                    Err(e) => Err(anyhow!("{e:#}")),
                };
                (batch, applied)
            }
        });
        let results = futures::future::join_all(applies).await;
        for ((batch, applied), (d, total)) in
            results.into_iter().zip(opened.iter().zip(&mut totals))
        {
            match applied {
                Ok(a) => total.add(&batch, &a),
                Err(e) if !failed.contains(&d.name) => {
                    if multi {
                        error!(organization = d.name, "{e:#}");
                    }
                    failed.push(d.name.clone());
                    first_error.get_or_insert(e);
                }
                Err(_) => {}
            }
        }
        failpoint::hit("after-chunk");
    }
    progress.finish();

    let mut run_total = Totals::default();
    for (d, total) in opened.iter().zip(&totals) {
        if multi && !failed.contains(&d.name) {
            log_summary(Some(&d.name), &total.counts, total, started);
        }
        run_total.messages += total.messages;
        run_total.applied += total.applied;
    }
    log_summary(None, &run_counts, &run_total, started);
    match (failed.len(), multi) {
        (0, _) => Ok(()),
        (_, false) => Err(first_error.expect("a failure was recorded")),
        (n, true) => Err(anyhow!(
            "{n} of {} organizations failed: {}",
            opened.len(),
            failed.join(", ")
        )),
    }
}

const UNROUTED: &str = "(unrouted)";

/// What one destination got over the chunks of a run.
#[derive(Default)]
struct Totals {
    counts: Counts,
    messages: u64,
    applied: Applied,
}

impl Totals {
    fn add(&mut self, batch: &Batch, a: &Applied) {
        self.counts += batch.counts;
        self.messages += batch.resolution.len() as u64;
        // Pending is a level, not a flow: the last chunk's count is the current one.
        let before = self.applied.pending;
        self.applied += *a;
        self.applied.pending -= before;
    }
}

/// The organizations this task handles (then the unrouted target, on task 0), and
/// the routing of apps to them.
fn organizations(args: &RunArgs, config: &Config) -> Result<(Vec<Destination>, Routing)> {
    let task = config::cloud_run_task()?;
    let mine = config.mine(task);
    let keep_unrouted = task.is_none_or(|(index, _)| index == 0);
    let mut destinations = Vec::new();
    for (org, _) in config.organizations.iter().zip(&mine).filter(|(_, m)| **m) {
        destinations.push(Destination::of_organization(org, &args.target)?);
    }
    if keep_unrouted {
        destinations.push(Destination {
            name: UNROUTED.into(),
            url: config.unrouted_target.clone(),
            columns: args.target.columns(),
            options: args.target.options(),
        });
    }
    let orgs: Vec<(Vec<String>, bool)> = config
        .organizations
        .iter()
        .zip(mine)
        .map(|(o, m)| (o.apps.clone(), m))
        .collect();
    let routing = Routing::organizations(&orgs, keep_unrouted).with_timelines();
    Ok((destinations, routing))
}

async fn open(d: &Destination, create_messages: bool) -> Result<Box<dyn Target>> {
    let target = target::open(&d.url, d.columns.clone(), &d.options).await?;
    target.init(create_messages).await?;
    Ok(target)
}

/// One summary record: per organization, or (organization absent) for the run.
fn log_summary(organization: Option<&str>, c: &Counts, t: &Totals, started: Instant) {
    let (messages, a) = (t.messages, &t.applied);
    let fields = (
        c.files,
        c.lines,
        c.events,
        c.events.saturating_sub(messages),
        c.skipped,
    );
    info!(
        summary = true,
        organization,
        files = fields.0,
        lines = fields.1,
        events = fields.2,
        duplicates = fields.3,
        skipped = fields.4,
        dead_lettered = c.dead_lettered + a.expired,
        messages,
        rows_updated = a.rows_updated,
        pending = a.pending,
        expired = a.expired,
        bytes_read = c.bytes,
        bytes_processed = a.bytes_processed,
        seconds = started.elapsed().as_secs_f64(),
        "{}",
        if organization.is_some() {
            "organization finished"
        } else {
            "run finished"
        }
    );
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
