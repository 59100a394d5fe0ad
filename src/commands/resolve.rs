//! `resolve`: read and resolve a source, print one line per message sorted by id
//! (statuses, or with `--timeline` timelines), keep dead letters if asked, and end
//! stderr with a JSON summary. Writes no target.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::batch::{Batch, Counts};
use crate::cli::ResolveArgs;
use crate::error::require_folder_of;
use crate::pipeline::{self, ReadResult, Routing};
use crate::resolve::spill::MemoryLimit;
use crate::resolve::{write_row, write_timeline_row};
use crate::source::Source;

/// Prints the resolution sorted by key; the last stderr line is the summary.
pub async fn resolve(args: &ResolveArgs) -> Result<()> {
    let started = std::time::Instant::now();
    for (path, what) in [
        (&args.output, "--output"),
        (&args.dead_letters, "--dead-letters"),
    ] {
        if let Some(path) = path {
            require_folder_of(path, what)?;
        }
    }
    let read = read(args).await?;
    debug!(
        seconds = started.elapsed().as_secs_f64(),
        "parsed and resolved"
    );
    let messages = write_resolution(args, read.spilled, &read.batches[0])?;
    debug!(seconds = started.elapsed().as_secs_f64(), "written");
    keep_dead_letters(args.dead_letters.as_deref(), &read.batches[0])?;
    summarize(read.counts, messages);
    // The process ends with this command: freeing every message's entry, page by
    // page, took 10-20 ms that the kernel does at exit in one go.
    std::mem::forget(read.batches);
    Ok(())
}

/// Lists and reads the source into one batch (statuses or timelines), spilling
/// to disk past `--memory-limit`.
async fn read(args: &ResolveArgs) -> Result<ReadResult> {
    let source = Source::open(args.source.url(None)?)?;
    let objects = source.list().await?;
    debug!(objects = objects.len(), "listed");
    let routing = match args.timeline {
        true => Routing::single().with_timelines(),
        false => Routing::single(),
    };
    let memory = args.memory_limit.map(|mib| MemoryLimit {
        bytes: (mib as usize) << 20,
        worker_budget: args.spill_worker_budget,
    });
    pipeline::read(
        &source,
        objects,
        args.source.concurrency,
        &routing,
        memory,
        |_| {},
    )
    .await
}

/// Writes one line per message, sorted by id, to `--output` or stdout; returns
/// how many.
fn write_resolution(
    args: &ResolveArgs,
    spilled: Option<crate::resolve::spill::Spill>,
    batch: &Batch,
) -> Result<u64> {
    let Some(path) = &args.output else {
        return write_lines(args, spilled, batch, &mut std::io::stdout().lock());
    };
    // Overwritten in place and cut to length at the end: truncating first made
    // ext4 free every cached page of the old output and flush the new ones at
    // close, ~30 ms of a 0.6 s run. A failed write leaves the file empty; a run
    // killed while writing leaves it partly old, as truncating left it partly
    // written: only exit code 0 says the file is whole.
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let regular = file.metadata().context("writing the resolution")?.is_file();
    let messages = write_lines(args, spilled, batch, &mut file);
    if regular {
        // (A pipe or a device has no length to cut, nor a position to ask.)
        match messages {
            Ok(_) => {
                let end = file.stream_position().context("writing the resolution")?;
                file.set_len(end).context("writing the resolution")?;
            }
            // The write's own error is the one to report.
            Err(_) => drop(file.set_len(0)),
        }
    }
    messages
}

/// The lines themselves: spilled state is merged from disk; otherwise the
/// batch's map is sorted.
fn write_lines(
    args: &ResolveArgs,
    spilled: Option<crate::resolve::spill::Spill>,
    batch: &Batch,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 16, out);
    let threads = pipeline::workers();
    let messages = match spilled {
        Some(spill) => {
            let mut line = Vec::with_capacity(256);
            spill.finish(|key, resolved| {
                line.clear();
                write_row(&mut line, key, resolved);
                Ok(out.write_all(&line)?)
            })?
        }
        None if args.timeline => {
            (batch.timelines).write_sorted(write_timeline_row, threads, &mut out)?;
            batch.timelines.len() as u64
        }
        None => {
            (batch.resolution).write_sorted(write_row, threads, &mut out)?;
            batch.resolution.len() as u64
        }
    };
    out.flush().context("writing the resolution")?;
    Ok(messages)
}

/// Dead letters go to `--dead-letters` as JSON lines; without it they are
/// counted, and a warning says how to keep them.
fn keep_dead_letters(path: Option<&Path>, batch: &Batch) -> Result<()> {
    match path {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut w = BufWriter::new(file);
            for d in &batch.dead_letters {
                serde_json::to_writer(&mut w, d)?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
        }
        None if !batch.dead_letters.is_empty() => warn!(
            dead_lettered = batch.dead_letters.len(),
            "dead-lettered records were counted, not kept; pass --dead-letters FILE to keep them"
        ),
        None => {}
    }
    Ok(())
}

/// The last line on stderr: the run's counters as one JSON object.
fn summarize(c: Counts, messages: u64) {
    info!(files = c.files, bytes = c.bytes, "resolved");
    let summary = json!({
        "files": c.files, "bytes": c.bytes, "lines": c.lines, "events": c.events,
        "duplicates": c.events - messages, "skipped": c.skipped,
        "dead_lettered": c.dead_lettered, "messages": messages,
    })
    // Text first: formatted straight into unbuffered stderr, it was a write per token.
    .to_string();
    eprintln!("{summary}");
}
