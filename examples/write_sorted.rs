//! The end of `resolve`, timed alone: ordering a map of 400 k messages by key and
//! writing its lines (`Fold::write_sorted`), on keys read from an output of `resolve`
//! or, with `phones`, on wamids of 20 k phone numbers (ids that share their first 40
//! bytes in groups: the hardest keys to order). Medians of 11 runs.
//!
//!     cargo run --release --example write_sorted -- (RESOLVE_OUTPUT | phones) [THREADS]

use std::time::Instant;

use bsp_status_loader::resolve::{Resolution, Resolved, write_row};
use bsp_status_loader::status::Status;

fn main() {
    let keys_from = std::env::args()
        .nth(1)
        .expect("usage: write_sorted (FILE | phones) [THREADS]");
    let threads: usize = std::env::args()
        .nth(2)
        .map_or(1, |t| t.parse().expect("a number"));
    // xorshift: the same keys and order every run.
    let mut state = 88_172_645_463_325_252_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut keys: Vec<String> = match keys_from.as_str() {
        "phones" => (0..400_000)
            .map(|_| {
                let phone = 919_000_000_000 + random() % 20_000;
                format!("wamid.HBgMOTE5{phone:012}FQIAERgSQzk4{:016X}", random())
            })
            .collect(),
        file => std::fs::read_to_string(file)
            .expect("a resolve output")
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
            .map(|row| row["bsp_message_id"].as_str().expect("a key").to_owned())
            .collect(),
    };
    keys.sort_unstable();
    keys.dedup();
    // Added in no particular order, as callbacks come.
    for i in (1..keys.len()).rev() {
        keys.swap(i, (random() % (i as u64 + 1)) as usize);
    }
    let mut resolution = Resolution::default();
    for (i, key) in keys.iter().enumerate() {
        let at_ms = 1_700_000_000_000 + i as i64 * 977;
        let resolved = Resolved {
            status: Status::Read,
            at_ms,
            code: None,
        };
        resolution.insert(key, resolved);
    }
    let mut out = Vec::new();
    let mut times: Vec<f64> = (0..11)
        .map(|_| {
            out.clear();
            let started = Instant::now();
            resolution
                .write_sorted(write_row, threads, &mut out)
                .expect("writing to memory");
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{} keys, {} MB written, {threads} thread(s): {:.1} ms",
        keys.len(),
        out.len() >> 20,
        times[5]
    );
}
