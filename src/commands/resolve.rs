use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::cli::ResolveArgs;
use crate::error::require_folder_of;
use crate::pipeline::{self, Routing};
use crate::resolve::spill::Spill;
use crate::resolve::{Resolved, write_lines, write_row, write_rows, write_timeline_row};
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
    let source = Source::open(args.source.url(None)?)?;
    let objects = source.list().await?;
    debug!(seconds = started.elapsed().as_secs_f64(), "listed");
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spill = match args.memory_limit {
        Some(mib) => Some(Arc::new(Spill::new((mib as usize) << 20, workers)?)),
        None => None,
    };
    let routing = match args.timeline {
        true => Routing::single().with_timelines(),
        false => Routing::single(),
    };
    let read = pipeline::read(
        &source,
        objects,
        args.source.concurrency,
        &routing,
        spill.as_ref(),
        |_| {},
    )
    .await?;
    let mut read = read;
    if let Some(spill) = spill.as_ref().filter(|s| s.spilled()) {
        // A worker that finished before the first spill kept its map: it joins the disk too.
        let mut writer = spill.writer()?;
        writer.maybe_spill(spill, &mut read.batches[0].resolution, true)?;
        writer.close()?;
    }
    let batch = &read.batches[0];
    debug!(
        seconds = started.elapsed().as_secs_f64(),
        "parsed and resolved"
    );

    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => {
            Box::new(File::create(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 16, &mut out);
    let mut line = Vec::with_capacity(256);
    let mut write = |key: &str, resolved: &Resolved| -> Result<()> {
        line.clear();
        write_row(&mut line, key, resolved);
        Ok(out.write_all(&line)?)
    };
    let spilled = spill.and_then(Arc::into_inner).filter(Spill::spilled);
    let messages = match spilled {
        Some(spill) => spill.finish(&mut write)?,
        None if args.timeline => {
            write_lines(&batch.timelines.sorted(), write_timeline_row, &mut out)?;
            batch.timelines.len() as u64
        }
        None => {
            write_rows(&batch.resolution.sorted(), &mut out)?;
            batch.resolution.len() as u64
        }
    };
    out.flush().context("writing the resolution")?;
    drop(out);
    debug!(seconds = started.elapsed().as_secs_f64(), "written");

    match &args.dead_letters {
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

    let c = read.counts;
    info!(files = c.files, bytes = c.bytes, "resolved");
    let summary = json!({
        "files": c.files, "bytes": c.bytes, "lines": c.lines, "events": c.events,
        "duplicates": c.events - messages, "skipped": c.skipped,
        "dead_lettered": c.dead_lettered, "messages": messages,
    });
    eprintln!("{summary}");
    Ok(())
}
