use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use tracing::info;

use super::window::in_window;
use crate::cli::{BackfillArgs, RunArgs};
use crate::pipeline;
use crate::source::{ObjectRef, Source};
use crate::target::{self, RunContext};

/// The scheduled job: files not done yet.
pub async fn run(args: &RunArgs, run_id: &str) -> Result<()> {
    execute(args, run_id, None).await
}

/// A window of files, whatever the bookkeeping says.
pub async fn backfill(args: &BackfillArgs, run_id: &str) -> Result<()> {
    execute(&args.run, run_id, Some((args.from, args.to))).await
}

async fn execute(
    args: &RunArgs,
    run_id: &str,
    window: Option<(chrono::NaiveDate, chrono::NaiveDate)>,
) -> Result<()> {
    let started = Instant::now();
    let ctx = RunContext {
        run_id: run_id.to_owned(),
        now: args.now.unwrap_or_else(Utc::now),
        pending_ttl: args.pending_ttl,
    };
    let source = Source::open(&args.source.source)?;
    let target = target::open(
        &args.target.target,
        args.target.columns(),
        &args.target.options(),
    )
    .await?;
    target.init(args.target.create_messages).await?;

    let listed = source.list().await?;
    let listed_count = listed.len();
    let todo: Vec<ObjectRef> = match window {
        Some((from, to)) => listed
            .into_iter()
            .filter(|o| in_window(o, from, to))
            .collect(),
        None => {
            let done = target.done().await?;
            listed
                .into_iter()
                .filter(|o| !done.contains(&(o.name.clone(), o.generation.clone())))
                .collect()
        }
    };
    info!(
        listed = listed_count,
        to_read = todo.len(),
        source = source.url(),
        "reading files"
    );

    let progress = Progress::new(todo.len() as u64, window.is_some());
    let batch = pipeline::read(&source, todo, args.source.concurrency, |_| progress.tick()).await?;
    progress.finish();

    let applied = target.apply(&batch, &ctx).await?;
    let c = batch.counts;
    let messages = batch.resolution.len() as u64;
    info!(
        summary = true,
        files = c.files,
        lines = c.lines,
        events = c.events,
        duplicates = c.events - messages,
        skipped = c.skipped,
        dead_lettered = c.dead_lettered + applied.expired,
        messages,
        rows_updated = applied.rows_updated,
        pending = applied.pending,
        expired = applied.expired,
        bytes_read = c.bytes,
        bytes_processed = applied.bytes_processed,
        seconds = started.elapsed().as_secs_f64(),
        "run finished"
    );
    Ok(())
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
