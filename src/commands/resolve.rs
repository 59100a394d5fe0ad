use std::fs::File;
use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::cli::ResolveArgs;
use crate::pipeline::{self, Routing};
use crate::resolve::OutputRow;
use crate::source::Source;

/// Prints the resolution sorted by key; the last stderr line is the summary.
pub async fn resolve(args: &ResolveArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let source = Source::open(args.source.url(None)?)?;
    let objects = source.list().await?;
    debug!(seconds = started.elapsed().as_secs_f64(), "listed");
    let read = pipeline::read(
        &source,
        objects,
        args.source.concurrency,
        &Routing::single(),
        |_| {},
    )
    .await?;
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
    for (key, resolved) in batch.resolution.sorted() {
        serde_json::to_writer(&mut out, &OutputRow::new(key, resolved))?;
        out.write_all(b"\n")?;
    }
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
    let messages = batch.resolution.len() as u64;
    info!(files = c.files, bytes = c.bytes, "resolved");
    let summary = json!({
        "files": c.files, "bytes": c.bytes, "lines": c.lines, "events": c.events,
        "duplicates": c.events - messages, "skipped": c.skipped,
        "dead_lettered": c.dead_lettered, "messages": messages,
    });
    eprintln!("{summary}");
    Ok(())
}
