//! How fast can a line be *validated*? `resolve`'s reader (which validates every
//! line and extracts a callback's fields) against general JSON parsers that only
//! validate or build a value, one thread, over a callback folder held in memory:
//! rounds in rotating order, medians. `bash scripts/parsers.sh DIR`.

use std::time::Instant;

use bsp_status_loader::callback::{Event, Parser, Reason, Sink};
use bsp_status_loader::source::{decode, lines};

/// Counts events; the reader's work, not a map's.
#[derive(Default)]
struct Count(u64);

impl Sink for Count {
    fn event(&mut self, _: Event<'_>) {
        self.0 += 1;
    }
    fn skipped(&mut self) {}
    fn dead_letter(&mut self, _: Reason, _: Option<&str>) {}
}

type Run = fn(&[Vec<u8>]) -> u64;

/// Events read by `resolve`'s parser.
fn ours(texts: &[Vec<u8>]) -> u64 {
    let mut sink = Count::default();
    for text in texts {
        let mut parser = Parser::new(text);
        for (_, line) in lines(text) {
            parser.parse(line, &mut sink);
        }
    }
    sink.0
}

/// Lines each parser accepts as JSON.
fn each_line(texts: &[Vec<u8>], mut valid: impl FnMut(&[u8]) -> bool) -> u64 {
    let all = texts.iter().flat_map(|t| lines(t));
    all.filter(|(_, line)| valid(line)).count() as u64
}

fn serde_ignored(texts: &[Vec<u8>]) -> u64 {
    each_line(texts, |l| {
        serde_json::from_slice::<serde::de::IgnoredAny>(l).is_ok()
    })
}

fn sonic_value(texts: &[Vec<u8>]) -> u64 {
    each_line(texts, |l| {
        sonic_rs::from_slice::<sonic_rs::Value>(l).is_ok()
    })
}

fn simd_json_tape(texts: &[Vec<u8>]) -> u64 {
    // simd-json parses in place: each line is copied into a buffer first.
    let (mut copy, mut buffers) = (Vec::new(), simd_json::Buffers::default());
    each_line(texts, |l| {
        copy.clear();
        copy.extend_from_slice(l);
        simd_json::to_tape_with_buffers(&mut copy, &mut buffers).is_ok()
    })
}

fn files(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("a folder") {
        let path = entry.expect("an entry").path();
        match path.is_dir() {
            true => files(&path, out),
            false => out.push(std::fs::read(&path).expect("a file")),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: parsers DIR [ROUNDS]");
    let rounds: usize = args.next().map_or(5, |r| r.parse().expect("a number"));
    let mut raw = Vec::new();
    files(dir.as_ref(), &mut raw);
    let mut scratch = Vec::new();
    let texts: Vec<Vec<u8>> = (raw.iter())
        .map(|r| decode(r, &mut scratch).data.to_vec())
        .collect();
    let bytes: usize = texts.iter().map(Vec::len).sum();
    let count = each_line(&texts, |_| true);
    println!(
        "{} files, {} MB, {count} lines",
        texts.len(),
        bytes / 1_000_000
    );

    let runs: [(&str, Run); 4] = [
        ("resolve's reader (validates, extracts)", ours),
        ("serde_json, IgnoredAny (validates)", serde_ignored),
        ("sonic-rs, Value (validates, builds)", sonic_value),
        ("simd-json, tape (validates, builds)", simd_json_tape),
    ];
    let mut times = vec![Vec::new(); runs.len()];
    let mut counts = vec![0; runs.len()];
    for round in 0..rounds {
        for i in (0..runs.len()).map(|i| (i + round) % runs.len()) {
            let start = Instant::now();
            counts[i] = runs[i].1(&texts);
            times[i].push(start.elapsed().as_secs_f64());
        }
    }
    let ours = median(&mut times[0]);
    for (i, (name, _)) in runs.iter().enumerate() {
        let t = median(&mut times[i]);
        let what = if i == 0 { "events" } else { "valid lines" };
        println!(
            "{name:40} {t:6.3} s  {:5.2} x ours  ({} {what})",
            t / ours,
            counts[i]
        );
    }
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
