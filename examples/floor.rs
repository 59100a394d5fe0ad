//! The floor under `resolve`: list a folder as `resolve` does, then read every file,
//! inflate it (the same decoder) and find every line end, on as many threads as
//! `resolve` parses with, parsing nothing (a large file in the same pieces, and
//! reading ahead while reads come from the disk, as `resolve` does). No resolution can be faster than this.
//! `bench/compare.py` times it beside `resolve`.
//!
//!     cargo run --release --example floor -- DIR

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bsp_status_loader::pipeline;
use bsp_status_loader::source::{
    Fetched, Inflating, Source, Text, Waited, decode_part, inflate_file,
};

/// Files read ahead after a read that waited for the disk: a hand-over's most.
const READ_AHEAD: usize = 16;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).expect("usage: floor DIR");
    let source = Source::open(&dir)?;
    // A folder is listed and read with std::fs: no runtime needed.
    let objects = futures::executor::block_on(source.list())?;
    let parts: Vec<_> = (objects.iter())
        .flat_map(|o| o.parts().into_iter().map(move |part| (o, part)))
        .collect();
    let (next, ahead) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let totals = Mutex::new((0u64, 0u64)); // inflated bytes, line ends
    std::thread::scope(|s| {
        for _ in 0..pipeline::workers() {
            s.spawn(|| {
                let (mut bytes, mut ends, mut scratch, mut stretch) =
                    (0, 0, Vec::new(), Vec::new());
                let mut count = |text: &[u8]| {
                    bytes += text.len() as u64;
                    ends += memchr::memchr_iter(b'\n', text).count() as u64;
                };
                while let Some((object, part)) = parts.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let Ok((fetched, waited)) = source.read(object, part) else {
                        continue;
                    };
                    // Files coming from the disk: the next ones are read ahead, as
                    // `resolve` reads a hand-over's, or a floor on a folder not in
                    // the page cache would wait where `resolve` does not.
                    if waited == Waited::Yes {
                        // Each file once: past those read ahead already.
                        let to = next.load(Ordering::Relaxed) + READ_AHEAD;
                        let from = ahead.fetch_max(to, Ordering::Relaxed);
                        let later = parts.get(from..to.min(parts.len()));
                        later
                            .into_iter()
                            .flatten()
                            .for_each(|(o, part)| source.read_ahead(o, part));
                    }
                    match fetched {
                        Fetched::Body(raw) => match decode_part(&raw, part, &mut scratch) {
                            Text::Whole(text) => count(text),
                            Text::Stretches(inflating) => {
                                stretches(inflating, &mut stretch, &mut count)
                            }
                        },
                        Fetched::Gzip(file) => match inflate_file(file) {
                            Ok(inflating) => stretches(inflating, &mut stretch, &mut count),
                            Err(_) => continue,
                        },
                        Fetched::Unreadable(_) => continue,
                    }
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

/// A large gzip file, inflated a stretch at a time as `resolve` does.
fn stretches<R: std::io::BufRead>(
    mut inflating: Inflating<R>,
    stretch: &mut Vec<u8>,
    mut count: impl FnMut(&[u8]),
) {
    while let Ok(Some(_)) = inflating.next_stretch(stretch) {
        count(stretch);
    }
}
