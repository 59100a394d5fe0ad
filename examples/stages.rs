//! Where a core's time goes, stage by stage, on one thread: inflate, parse, and
//! fold into the map, each timed alone over a callback folder held in memory.
//! `cargo run --release --example stages -- DIR` (e.g. a folder from `generate`).

use std::time::Instant;

use bsp_status_loader::callback::{Event, Parser, Reason, Sink};
use bsp_status_loader::resolve::Resolution;
use bsp_status_loader::source::{decode, lines};

/// Counts what the parser hands out and optionally folds events into a map.
#[derive(Default)]
struct Counter {
    events: u64,
    resolution: Option<Resolution>,
}

impl Sink for Counter {
    fn event(&mut self, event: Event<'_>) {
        self.events += 1;
        if let Some(r) = &mut self.resolution {
            r.add(&event);
        }
    }
    fn skipped(&mut self) {}
    fn dead_letter(&mut self, _: Reason, _: Option<&str>) {}
}

fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("a folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(std::fs::read(&path).expect("a file"));
        }
    }
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: stages DIR");
    let mut raw = Vec::new();
    files(dir.as_ref(), &mut raw);

    let mut scratch = Vec::new();
    let start = Instant::now();
    let inflated: usize = raw.iter().map(|r| decode(r, &mut scratch).data.len()).sum();
    let inflate = start.elapsed().as_secs_f64();
    let texts: Vec<Vec<u8>> = raw
        .iter()
        .map(|r| decode(r, &mut scratch).data.to_vec())
        .collect();
    let bytes: usize = texts.iter().map(Vec::len).sum();
    let line_count = texts.iter().flat_map(|t| lines(t)).count();

    let parse = |fold: bool| {
        let mut sink = Counter {
            resolution: fold.then(Resolution::default),
            ..Counter::default()
        };
        let start = Instant::now();
        for text in &texts {
            let mut parser = Parser::new(text);
            for (_, line) in lines(text) {
                parser.parse(line, &mut sink);
            }
        }
        (start.elapsed().as_secs_f64(), sink.events)
    };
    let (parsing, events) = parse(false);
    let (folding, _) = parse(true);
    let mb = bytes as f64 / 1e6;
    println!(
        "{} files, {mb:.0} MB of NDJSON, {line_count} lines, {events} events",
        raw.len()
    );
    println!(
        "decode (gzip inflated)    {inflate:6.3} s  {:5.0} MB/s",
        inflated as f64 / 1e6 / inflate
    );
    println!(
        "parse                     {parsing:6.3} s  {:5.0} MB/s",
        mb / parsing
    );
    println!(
        "parse + fold into the map {folding:6.3} s  {:5.0} MB/s",
        mb / folding
    );
}
