//! Writes a realistic callback folder of any size, deterministic by seed:
//! both formats, both timestamp kinds, twins (an app subscribed to V2 and V3),
//! retried duplicates, late and reordered events, wrappers, skipped noise, and
//! half the files gzip. The yardstick for `bench/compare.py`.
//!
//!     cargo run --release --example generate -- OUT_DIR [MESSAGES] [SEED]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// splitmix64: small, fast and deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

const BASE_S: u64 = 1_761_955_200; // 2025-11-01T00:00:00Z
const CODES: [u64; 6] = [131047, 131026, 131049, 470, 1002, 1008];

struct Line {
    arrival_s: u64,
    text: String,
}

fn v2(
    app: &str,
    kind: &str,
    id: &str,
    gs_id: Option<&str>,
    envelope_ms: u64,
    inner: String,
) -> String {
    let gs = gs_id
        .map(|g| format!(r#","gsId":"{g}""#))
        .unwrap_or_default();
    format!(
        r#"{{"app":"{app}","timestamp":{envelope_ms},"version":2,"type":"message-event","payload":{{"id":"{id}"{gs},"type":"{kind}","destination":"91XXXXXXXX{:02}","payload":{inner}}}}}"#,
        envelope_ms % 100
    )
}

fn v3(status: &str, gs_id: &str, wamid: &str, timestamp: String, extra: &str) -> String {
    let metadata = if status == "enqueued" {
        String::new()
    } else {
        r#""metadata":{"display_phone_number":"9****8","phone_number_id":"158072934066266"},"#
            .to_owned()
    };
    format!(
        r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp",{metadata}"statuses":[{{"gs_id":"{gs_id}","id":"{wamid}","recipient_id":"91*******78","status":"{status}","timestamp":{timestamp}{extra}}}]}}}}],"id":"112535025189792"}}],"gs_app_id":"82ed52f4-30c0-4f12-81b4-e7ad07bd41de","object":"whatsapp_business_account"}}"#
    )
}

/// The callbacks of one message, each with its arrival time.
fn message(rng: &mut Rng, index: u64, messages: u64, out: &mut Vec<Line>) {
    let key = rng.uuid();
    let wamid = format!("wamid.HBgMOTE{:024X}", rng.next() as u128 * 7919);
    // Spread sends over ~30 days.
    let t0_ms = (BASE_S + index * 30 * 86_400 / messages.max(1)) * 1000 + rng.below(1000);
    let mut events: Vec<(&str, u64, Option<u64>)> = vec![("enqueued", t0_ms, None)];
    let sent = t0_ms + 1000 + rng.below(5000);
    if rng.chance(6) {
        events.push((
            "failed",
            sent + rng.below(3000),
            Some(CODES[rng.below(6) as usize]),
        ));
    } else {
        events.push(("sent", sent, None));
        let delivered = sent + 1000 + rng.below(60_000);
        if rng.chance(85) {
            events.push(("delivered", delivered, None));
        }
        if rng.chance(55) {
            events.push(("read", delivered + rng.below(3_600_000), None));
        }
    }
    let format = rng.below(10); // 0..4 V2, 5..8 V3, 9 both (twins)
    for &(status, at_ms, code) in &events {
        let mut texts = vec![];
        if format <= 4 || format == 9 {
            let s = at_ms / 1000;
            let text = match (status, code) {
                ("enqueued", _) => v2(
                    "DemoAPI",
                    status,
                    &key,
                    None,
                    at_ms,
                    r#"{"whatsappMessageId":"gBEGkYaYVSEEAgkD7bRi9syGnBk","type":"session"}"#
                        .into(),
                ),
                ("failed", Some(c)) => v2(
                    "DemoAPI",
                    status,
                    &wamid,
                    Some(&key),
                    at_ms,
                    format!(r#"{{"code":{c},"reason":"Message failed"}}"#),
                ),
                _ if rng.chance(50) => v2(
                    "DemoAPI",
                    status,
                    &wamid,
                    Some(&key),
                    at_ms + 400,
                    format!(r#"{{"ts":{s}}}"#),
                ),
                _ => v2(
                    "DemoAPI",
                    status,
                    &wamid,
                    Some(&key),
                    at_ms + 400,
                    format!(r#"{{"ts":"{s}"}}"#),
                ),
            };
            texts.push(text);
        }
        if format >= 5 {
            let timestamp = if status == "enqueued" {
                at_ms.to_string()
            } else {
                format!("\"{}\"", at_ms / 1000)
            };
            let extra = match code {
                Some(c) => format!(
                    r#","errors":[{{"code":{c},"href":"https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/","title":"Message failed to send"}}]"#
                ),
                None => String::new(),
            };
            texts.push(v3(status, &key, &wamid, timestamp, &extra));
        }
        for text in texts {
            // Usually seconds late, sometimes hours (reordering across files), sometimes twice.
            let delay = if rng.chance(3) {
                3600 + rng.below(6 * 3600)
            } else {
                rng.below(120)
            };
            let copies = if rng.chance(8) { 2 } else { 1 };
            for _ in 0..copies {
                let wrapped = match rng.below(20) {
                    0 => format!(r#"{{"received_at":"2025-11-01T00:00:00Z","body":{text}}}"#),
                    1 => format!(
                        r#"{{"received_at":"2025-11-01T00:00:00Z","body":{}}}"#,
                        serde_json::to_string(&text).unwrap()
                    ),
                    _ => text.clone(),
                };
                out.push(Line {
                    arrival_s: at_ms / 1000 + delay,
                    text: wrapped,
                });
            }
        }
    }
    if rng.chance(3) {
        let noise = r#"{"app":"DemoAPI","timestamp":1761955200000,"version":2,"type":"billing-event","payload":{"deductions":{"type":"marketing","model":"CBP","source":"whatsapp","billable":true},"references":{"id":"x","gsId":"y","conversationId":"z","destination":"91XXXXXXXX10"}}}"#;
        out.push(Line {
            arrival_s: t0_ms / 1000,
            text: noise.into(),
        });
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = Path::new(args.get(1).map(String::as_str).unwrap_or("bench-data"));
    let messages: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(400_000);
    let seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut rng = Rng(seed);
    let mut lines = Vec::new();
    for i in 0..messages {
        message(&mut rng, i, messages, &mut lines);
    }
    // One folder per hour of arrival, four files per hour; half of them gzip.
    let mut files: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for line in lines {
        let shard = rng.below(4);
        files
            .entry((line.arrival_s / 3600, shard))
            .or_default()
            .push(line.text);
    }
    let (mut bytes, mut count) = (0, 0);
    for ((hour, shard), mut texts) in files {
        for i in (1..texts.len()).rev() {
            texts.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let when = chrono::DateTime::from_timestamp((hour * 3600) as i64, 0).unwrap();
        let dir = out.join(when.format("gupshup/%Y/%m/%d/%H").to_string());
        std::fs::create_dir_all(&dir)?;
        let body = texts.join("\n") + "\n";
        bytes += body.len();
        count += texts.len();
        if (hour + shard) % 2 == 0 {
            let file = std::fs::File::create(dir.join(format!("part-{shard}.ndjson.gz")))?;
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::new(6));
            gz.write_all(body.as_bytes())?;
            gz.finish()?;
        } else {
            std::fs::write(dir.join(format!("part-{shard}.ndjson")), body)?;
        }
    }
    eprintln!(
        "{messages} messages, {count} lines, {} MB of NDJSON in {}",
        bytes >> 20,
        out.display()
    );
    Ok(())
}
