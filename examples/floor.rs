//! The floor under `resolve`: list a folder as `resolve` does, then read every file,
//! inflate it (the same decoder) and find every line end, on as many threads as
//! `resolve` parses with, parsing nothing. No resolution can be faster than this.
//! `bench/compare.py` times it beside `resolve`.
//!
//!     cargo run --release --example floor -- DIR

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bsp_status_loader::pipeline;
use bsp_status_loader::source::{Fetched, Source, decode};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).expect("usage: floor DIR");
    let source = Source::open(&dir)?;
    // A folder is listed and read with std::fs: no runtime needed.
    let objects = futures::executor::block_on(source.list())?;
    let next = AtomicUsize::new(0);
    let totals = Mutex::new((0u64, 0u64)); // inflated bytes, line ends
    std::thread::scope(|s| {
        for _ in 0..pipeline::workers() {
            s.spawn(|| {
                let (mut bytes, mut ends, mut scratch) = (0, 0, Vec::new());
                while let Some(object) = objects.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let Ok(Fetched::Body(raw)) = futures::executor::block_on(source.fetch(object))
                    else {
                        continue;
                    };
                    let text = decode(&raw, &mut scratch).data;
                    bytes += text.len() as u64;
                    ends += memchr::memchr_iter(b'\n', text).count() as u64;
                }
                let mut t = totals.lock().expect("no panics while locked");
                t.0 += bytes;
                t.1 += ends;
            });
        }
    });
    let (bytes, ends) = totals.into_inner().expect("no panics while locked");
    println!(
        "{{\"files\":{},\"text_bytes\":{bytes},\"line_ends\":{ends}}}",
        objects.len()
    );
    Ok(())
}
