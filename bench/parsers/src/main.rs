//! How fast can a line be *validated*? `resolve`'s reader (which validates every
//! line and extracts a callback's fields) against general JSON parsers that only
//! validate or build a value, one thread, over a callback folder held in memory:
//! rounds in rotating order, medians. `bash scripts/parsers.sh DIR`.

mod extract;
mod structural;

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

fn simdjson_dom(texts: &[Vec<u8>]) -> u64 {
    let mut parser = simdjson_tape::Parser::new(128).expect("memory");
    let mut valid = 0;
    for text in texts {
        let base = text.as_ptr() as usize;
        for (_, line) in lines(text) {
            let start = line.as_ptr() as usize - base;
            valid += u64::from(parser.parse_in(text, start..start + line.len()).is_ok());
        }
    }
    valid
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

fn structural(texts: &[Vec<u8>]) -> u64 {
    let mut tape = structural::Tape::default();
    each_line(texts, |l| structural::valid(l, &mut tape))
}

/// Events the prototype finds (validating each line, then reading it from its tape).
fn structural_events(texts: &[Vec<u8>]) -> u64 {
    let mut tape = structural::Tape::default();
    let mut events = 0;
    let mut count = |key: &[u8], _, at: i64| events += u64::from(!key.is_empty() && at > 0);
    for (_, line) in texts.iter().flat_map(|t| lines(t)) {
        if structural::valid(line, &mut tape) {
            extract::events(line, &tape, &mut count);
        }
    }
    events
}

/// The prototype against serde_json on every line and on damaged copies of lines
/// (a byte dropped, changed or doubled): the same verdict, or the first line where
/// they differ.
fn check(texts: &[Vec<u8>]) {
    let mut tape = structural::Tape::default();
    let (mut seen, mut rng) = (0u64, 0x2545_f491_4f6c_dd1du64);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for (_, line) in texts.iter().flat_map(|t| lines(t)) {
        let mut variants = vec![line.to_vec()];
        for _ in 0..4 {
            let mut v = line.to_vec();
            let at = next() as usize % v.len();
            let pool = b"{}[]:,\\\"0-.eEtfn \t\x01\xc3a";
            let byte = pool[next() as usize % pool.len()];
            match next() % 3 {
                0 => drop(v.remove(at)),
                1 => v[at] = byte,
                _ => v.insert(at, byte),
            }
            variants.push(v);
        }
        for v in variants {
            seen += 1;
            // serde_json does not check the UTF-8 of strings it ignores.
            let theirs = std::str::from_utf8(&v)
                .is_ok_and(|t| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok());
            if structural::valid(&v, &mut tape) != theirs {
                panic!(
                    "differs from serde_json ({theirs}) on: {}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }
    println!("the prototype agrees with serde_json on {seen} lines and damaged lines");
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

    assert!(is_x86_feature_detected!("avx2"), "the prototype needs AVX2");
    if std::env::var_os("CHECK").is_some() {
        check(&texts);
    }
    let runs: [(&str, Run); 7] = [
        ("resolve's reader (validates, extracts)", ours),
        ("serde_json, IgnoredAny (validates)", serde_ignored),
        ("simdjson (C++), DOM tape (validates)", simdjson_dom),
        ("sonic-rs, Value (validates, builds)", sonic_value),
        ("simd-json, tape (validates, builds)", simd_json_tape),
        ("two-stage prototype (validates)", structural),
        (
            "two-stage prototype (validates, extracts)",
            structural_events,
        ),
    ];
    let mut times = vec![Vec::new(); runs.len()];
    let mut counts = vec![0; runs.len()];
    // ONLY=N runs parser N alone (for a profile); its row is the only one meaningful.
    let only: Option<usize> = std::env::var("ONLY")
        .ok()
        .map(|n| n.parse().expect("a number"));
    for round in 0..rounds {
        let order = (0..runs.len()).map(|i| (i + round) % runs.len());
        for i in order.filter(|&i| only.is_none_or(|o| o == i) || i == 0) {
            let start = Instant::now();
            counts[i] = runs[i].1(&texts);
            times[i].push(start.elapsed().as_secs_f64());
        }
    }
    let ours = median(&mut times[0]);
    for (i, (name, _)) in runs.iter().enumerate() {
        if times[i].is_empty() {
            continue;
        }
        let t = median(&mut times[i]);
        let what = if i == 0 || i == 6 {
            "events"
        } else {
            "valid lines"
        };
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
