//! One test per rule that concerns reading a line (README, "The rules, in a user's words").

use super::*;

#[derive(Debug, Default)]
struct Collected {
    events: Vec<(String, Status, i64, Option<i64>)>,
    skipped: usize,
    dead: Vec<(Reason, Option<String>)>,
}

impl Sink for Collected {
    fn event(&mut self, e: Event<'_>) {
        self.events
            .push((e.key.into_owned(), e.status, e.at_ms, e.code));
    }
    fn skipped(&mut self) {
        self.skipped += 1;
    }
    fn dead_letter(&mut self, reason: Reason, entry: Option<&str>) {
        self.dead.push((reason, entry.map(str::to_owned)));
    }
}

fn parse(line: &str) -> Collected {
    let mut c = Collected::default();
    parse_line(line.as_bytes(), &mut c);
    c
}

fn one_event(line: &str) -> (String, Status, i64, Option<i64>) {
    let c = parse(line);
    assert_eq!(
        (c.events.len(), c.skipped, c.dead.len()),
        (1, 0, 0),
        "{line}: {c:?}"
    );
    c.events.into_iter().next().unwrap()
}

fn dead_reason(line: &str) -> Reason {
    let c = parse(line);
    assert_eq!((c.events.len(), c.dead.len()), (0, 1), "{line}: {c:?}");
    c.dead[0].0
}

fn v2(payload: &str) -> String {
    format!(
        r#"{{"app":"DemoAPI","timestamp":1580546677791,"version":2,"type":"message-event","payload":{payload}}}"#
    )
}

fn v3(statuses: &str) -> String {
    format!(
        r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","statuses":[{statuses}]}}}}]}}],"gs_app_id":"a","object":"whatsapp_business_account"}}"#
    )
}

#[test]
fn v2_key_is_gs_id_else_id_trimmed() {
    let both = v2(r#"{"id":"wa","gsId":" gs ","type":"read","payload":{"ts":1585344602}}"#);
    assert_eq!(one_event(&both).0, "gs");
    let only_id = v2(r#"{"id":"wa","type":"read","payload":{"ts":1585344602}}"#);
    assert_eq!(one_event(&only_id).0, "wa");
    let empty_gs = v2(r#"{"id":"wa","gsId":"  ","type":"read","payload":{"ts":1585344602}}"#);
    assert_eq!(one_event(&empty_gs).0, "wa");
    let none = v2(r#"{"id":"","type":"read","payload":{"ts":1585344602}}"#);
    assert_eq!(dead_reason(&none), Reason::MissingKey);
}

#[test]
fn v3_key_is_gs_id_else_id() {
    assert_eq!(
        one_event(&v3(
            r#"{"gs_id":"g","id":"w","status":"sent","timestamp":"1763773200"}"#
        ))
        .0,
        "g"
    );
    assert_eq!(
        one_event(&v3(
            r#"{"gs_id":"","id":"w","status":"sent","timestamp":"1763773200"}"#
        ))
        .0,
        "w"
    );
    assert_eq!(
        one_event(&v3(
            r#"{"id":" w ","status":"sent","timestamp":"1763773200"}"#
        ))
        .0,
        "w"
    );
    assert_eq!(
        dead_reason(&v3(
            r#"{"gs_id":7,"status":"sent","timestamp":"1763773200"}"#
        )),
        Reason::MissingKey
    );
}

#[test]
fn every_status_word_maps_case_insensitively() {
    for (word, _, status) in crate::status::STATUSES {
        let upper = word.to_uppercase();
        let line = v3(&format!(
            r#"{{"gs_id":"k","status":"{upper}","timestamp":"1763773200"}}"#
        ));
        assert_eq!(one_event(&line).1, status);
    }
    assert_eq!(
        dead_reason(&v3(
            r#"{"gs_id":"k","status":"warning","timestamp":"1763773200"}"#
        )),
        Reason::UnknownStatus
    );
    assert_eq!(
        dead_reason(&v3(r#"{"gs_id":"k","timestamp":"1763773200"}"#)),
        Reason::UnknownStatus
    );
}

#[test]
fn times_are_seconds_below_1e11_and_milliseconds_above() {
    let at = |ts: &str| {
        one_event(&v3(&format!(
            r#"{{"gs_id":"k","status":"sent","timestamp":{ts}}}"#
        )))
        .2
    };
    assert_eq!(at("1710941507"), 1_710_941_507_000);
    assert_eq!(at(r#""1710941507""#), 1_710_941_507_000);
    assert_eq!(at("1710941393420"), 1_710_941_393_420);
    assert_eq!(at(r#""1710941393420""#), 1_710_941_393_420);
    assert_eq!(at("99999999999"), 99_999_999_999_000);
    assert_eq!(at("1262304000"), 1_262_304_000_000, "2010-01-01 in seconds");
    assert_eq!(
        at("1262304000000"),
        1_262_304_000_000,
        "and in milliseconds"
    );
    for bad in [
        r#""soon""#,
        "1.5",
        "-1",
        r#""""#,
        "null",
        r#""12 ""#,
        "99999999999999999999",
        // Before 2010-01-01: no Gupshup callback is that old.
        "0",
        r#""0""#,
        "1262303999",
        "100000000000",
        "1262303999999",
    ] {
        let line = v3(&format!(
            r#"{{"gs_id":"k","status":"sent","timestamp":{bad}}}"#
        ));
        assert_eq!(dead_reason(&line), Reason::BadTimestamp, "{bad}");
    }
}

#[test]
fn v2_time_is_payload_ts_else_envelope() {
    let with_ts = v2(r#"{"id":"k","type":"sent","payload":{"ts":1585344602}}"#);
    assert_eq!(one_event(&with_ts).2, 1_585_344_602_000);
    let without = v2(r#"{"id":"k","type":"enqueued","payload":{"whatsappMessageId":"x"}}"#);
    assert_eq!(one_event(&without).2, 1_580_546_677_791);
    let bad_ts = v2(r#"{"id":"k","type":"sent","payload":{"ts":"x"}}"#);
    assert_eq!(dead_reason(&bad_ts), Reason::BadTimestamp);
}

#[test]
fn error_codes_are_read_from_each_place_and_only_for_failures() {
    let v2_failed = v2(r#"{"id":"k","type":"failed","payload":{"code":1008,"reason":"r"}}"#);
    assert_eq!(one_event(&v2_failed).3, Some(1008));
    let v3_errors = v3(
        r#"{"gs_id":"k","status":"failed","timestamp":"1763773200","errors":[{"code":131047},{"code":1}]}"#,
    );
    assert_eq!(one_event(&v3_errors).3, Some(131047));
    let v3_flat = v3(r#"{"gs_id":"k","status":"failed","timestamp":"1763773200","code":1002}"#);
    assert_eq!(one_event(&v3_flat).3, Some(1002));
    let v3_none = v3(r#"{"gs_id":"k","status":"failed","timestamp":"1763773200"}"#);
    assert_eq!(one_event(&v3_none).3, None);
    let not_failed = v3(r#"{"gs_id":"k","status":"sent","timestamp":"1763773200","code":5}"#);
    assert_eq!(one_event(&not_failed).3, None);
}

#[test]
fn non_statuses_are_skipped() {
    for kind in ["message", "user-event", "billing-event", "system-event"] {
        let c = parse(&format!(
            r#"{{"app":"a","timestamp":1763773200,"version":2,"type":"{kind}","payload":{{}}}}"#
        ));
        assert_eq!(
            (c.skipped, c.events.len(), c.dead.len()),
            (1, 0, 0),
            "{kind}"
        );
    }
    for kind in ["mismatch", "others"] {
        let c = parse(&v2(&format!(r#"{{"type":"{kind}","payload":{{}}}}"#)));
        assert_eq!(
            (c.skipped, c.events.len(), c.dead.len()),
            (1, 0, 0),
            "{kind}"
        );
    }
    let set_callback = parse(&v3(r#"{"type":"set-callback"}"#));
    assert_eq!((set_callback.skipped, set_callback.dead.len()), (1, 0));
    let inbound = parse(
        r#"{"entry":[{"changes":[{"field":"messages","value":{"messages":[{"id":"x"}]}}]}]}"#,
    );
    assert_eq!((inbound.skipped, inbound.dead.len()), (1, 0));
    let other_field = parse(r#"{"entry":[{"changes":[{"field":"billing-event","value":{}}]}]}"#);
    assert_eq!((other_field.skipped, other_field.dead.len()), (1, 0));
}

#[test]
fn bad_lines_are_dead_lettered_with_a_reason() {
    let mut c = Collected::default();
    parse_line(b"\xff\xfe{}", &mut c);
    assert_eq!(c.dead, vec![(Reason::NotUtf8, None)]);
    assert_eq!(dead_reason(r#"{"app":"#), Reason::NotJson);
    assert_eq!(dead_reason("[1,2]"), Reason::UnknownShape);
    assert_eq!(dead_reason(r#"{"hello":1}"#), Reason::UnknownShape);
    assert_eq!(
        dead_reason(r#"{"type":"future-event"}"#),
        Reason::UnknownShape
    );
    assert_eq!(dead_reason(r#"{"entry":[]}"#), Reason::UnknownShape);
    assert_eq!(dead_reason(r#"{"entry":"x"}"#), Reason::UnknownShape);
    // Deep nesting is refused, never a stack overflow: at the top, in a field, in a body.
    let deep = "[".repeat(100_000);
    assert_eq!(dead_reason(&deep), Reason::NotJson);
    let nested = format!(
        r#"{{"type":"message","payload":{{"a":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(dead_reason(&nested), Reason::NestedTooDeeply);
    let in_body = format!(r#"{{"body":{}}}"#, serde_json::to_string(&nested).unwrap());
    assert_eq!(dead_reason(&in_body), Reason::NestedTooDeeply);
    let in_v3 = v3(&format!(
        r#"{{"gs_id":"k","x":{}{{}}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    ));
    assert_eq!(dead_reason(&in_v3), Reason::NestedTooDeeply);
    // Deep but broken is not JSON.
    let broken = format!(r#"{{"a":{}1{}}}"#, "[".repeat(200), "]".repeat(199));
    assert_eq!(dead_reason(&broken), Reason::NotJson);
    // Moderate nesting in an ignored field is fine.
    let moderate = format!(
        r#"{{"type":"message","x":{}1{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(parse(&moderate).skipped, 1);
}

#[test]
fn one_bad_v3_entry_does_not_spoil_its_siblings() {
    let line = v3(concat!(
        r#"{"gs_id":"a","status":"sent","timestamp":"1763773200"},"#,
        r#"{"gs_id":"b","status":"warning","timestamp":"1763773200"},"#,
        r#"{"gs_id":"c","status":"read","timestamp":"nope"},"#,
        r#"{"gs_id":"d","status":"read","timestamp":"1763773201"}"#
    ));
    let c = parse(&line);
    let keys: Vec<_> = c.events.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(keys, ["a", "d"]);
    let reasons: Vec<_> = c.dead.iter().map(|d| d.0).collect();
    assert_eq!(reasons, [Reason::UnknownStatus, Reason::BadTimestamp]);
    // The dead letter keeps the bad entry's own text.
    assert!(c.dead[0].1.as_deref().unwrap().contains(r#""warning""#));
}

#[test]
fn wrapper_body_may_be_an_object_or_a_string() {
    let inner = v2(r#"{"id":"k","type":"read","payload":{"ts":1585344602}}"#);
    let as_object = format!(r#"{{"received_at":"2025-11-22T01:00:00Z","body":{inner}}}"#);
    assert_eq!(one_event(&as_object).0, "k");
    let as_string = format!(
        r#"{{"received_at":"2025-11-22T01:00:00Z","body":{}}}"#,
        serde_json::to_string(&inner).unwrap()
    );
    assert_eq!(one_event(&as_string).0, "k");
    assert_eq!(
        dead_reason(r#"{"received_at":"x","body":"not json"}"#),
        Reason::NotJson
    );
    let twice = format!(r#"{{"body":{as_object}}}"#);
    assert_eq!(dead_reason(&twice), Reason::UnknownShape);
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// Fragments of real callbacks, so random joins reach deep into the parser.
    pub(super) const PIECES: [&str; 16] = [
        r#"{"entry":[{"changes":[{"field":"messages","value":{"statuses":["#,
        r#"{"gs_id":"k","status":"read","timestamp":"1763773200"}"#,
        r#"]}}]}]}"#,
        r#"{"app":"a","timestamp":1763773200,"type":"message-event","payload":{"id":"k","type":"sent","payload":{"ts":1763773200}}}"#,
        r#"{"received_at":"x","body":"#,
        "\"",
        "\\",
        "[",
        "{",
        "}",
        "]",
        ",",
        ":",
        "null",
        "1e999",
        "\u{0}",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_bytes_never_panic_and_always_account_for_the_line(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut c = Collected::default();
            parse_line(&bytes, &mut c);
            prop_assert!(!c.events.is_empty() || c.skipped > 0 || !c.dead.is_empty());
        }

        #[test]
        fn spliced_callbacks_never_panic(parts in proptest::collection::vec(0..PIECES.len(), 0..40)) {
            let line: String = parts.iter().map(|&i| PIECES[i]).collect();
            let c = parse(&line);
            prop_assert!(!c.events.is_empty() || c.skipped > 0 || !c.dead.is_empty());
        }
    }
}

/// Random well-formed callbacks, built from parameters that also give the expected
/// event: the parser must read back exactly what was written, in every format.
mod round_trip {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    pub(super) struct Params {
        key: String,
        padded: bool,
        status: usize,
        upper: bool,
        seconds: u64,
        millis: Option<u64>,
        time_as_string: bool,
        code: Option<i64>,
        format: u8,
        wrap: u8,
    }

    pub(super) fn params() -> impl Strategy<Value = Params> {
        (
            "[a-zA-Z0-9-]{1,40}",
            any::<bool>(),
            0..crate::status::STATUSES.len(),
            any::<bool>(),
            1_262_304_000u64..4_000_000_000,
            proptest::option::of(0u64..1000),
            any::<bool>(),
            proptest::option::of(0i64..200_000),
            0u8..3,
            0u8..3,
        )
            .prop_map(
                |(
                    key,
                    padded,
                    status,
                    upper,
                    seconds,
                    millis,
                    time_as_string,
                    code,
                    format,
                    wrap,
                )| Params {
                    key,
                    padded,
                    status,
                    upper,
                    seconds,
                    millis,
                    time_as_string,
                    code,
                    format,
                    wrap,
                },
            )
    }

    pub(super) fn line(p: &Params) -> String {
        let word = crate::status::STATUSES[p.status].0;
        let word = if p.upper {
            word.to_uppercase()
        } else {
            word.to_owned()
        };
        let key = if p.padded {
            format!("  {}\\t", p.key) // a JSON-escaped tab: trimmed like the spaces
        } else {
            p.key.clone()
        };
        let raw_time = match p.millis {
            Some(ms) => p.seconds * 1000 + ms,
            None => p.seconds,
        };
        let time = if p.time_as_string {
            format!("\"{raw_time}\"")
        } else {
            raw_time.to_string()
        };
        let code = p
            .code
            .map(|c| format!(r#","code":{c}"#))
            .unwrap_or_default();
        let body = match p.format {
            // V2 with gsId, the time in payload.payload.ts
            0 => format!(
                r#"{{"app":"A","timestamp":1763773200,"version":2,"type":"message-event","payload":{{"id":"wa","gsId":"{key}","type":"{word}","destination":"91XX","payload":{{"ts":{time}{code}}}}}}}"#
            ),
            // V2 keyed by payload.id, the time in the envelope
            1 => format!(
                r#"{{"app":"A","timestamp":{time},"version":2,"type":"message-event","payload":{{"id":"{key}","type":"{word}","payload":{{"reason":"r"{code}}}}}}}"#
            ),
            // V3, the code in errors[0]
            _ => {
                let errors = p
                    .code
                    .map(|c| format!(r#","errors":[{{"code":{c},"title":"t"}}]"#))
                    .unwrap_or_default();
                format!(
                    r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"statuses":[{{"gs_id":"{key}","id":"wamid.x","status":"{word}","timestamp":{time}{errors}}}]}}}}]}}],"gs_app_id":"g","object":"whatsapp_business_account"}}"#
                )
            }
        };
        match p.wrap {
            0 => body,
            1 => format!(r#"{{"received_at":"2025-11-22T01:00:00Z","body":{body}}}"#),
            _ => format!(
                r#"{{"received_at":"2025-11-22T01:00:00Z","body":{}}}"#,
                serde_json::to_string(&body).unwrap()
            ),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn every_format_reads_back_what_was_written(p in params()) {
            let (_, _, status) = crate::status::STATUSES[p.status];
            let at_ms = match p.millis {
                Some(ms) => (p.seconds * 1000 + ms) as i64,
                None => (p.seconds * 1000) as i64,
            };
            let code = if status == Status::Error { p.code } else { None };
            let c = parse(&line(&p));
            prop_assert_eq!(c.skipped, 0);
            prop_assert!(c.dead.is_empty(), "{:?}", c.dead);
            prop_assert_eq!(c.events, vec![(p.key.clone(), status, at_ms, code)]);
        }
    }
}

/// simdjson's tape and the text reader agree on every line: what the tape answers
/// is what the text reader says, and `parse_line` (the tape, else the text reader)
/// always says what the text reader alone says.
mod tape_and_text {
    use super::*;
    use proptest::prelude::*;

    fn text_only(line: &[u8]) -> String {
        let mut c = Collected::default();
        parse_line_text(line, &mut c);
        format!("{c:?}")
    }

    fn either(line: &[u8]) -> String {
        let mut c = Collected::default();
        parse_line(line, &mut c);
        format!("{c:?}")
    }

    /// What the tape alone says, or None when simdjson refuses the line or the
    /// tape declines it.
    fn tape_only(line: &[u8]) -> Option<String> {
        let mut lines = tape::Lines::take();
        let (tape, plans, mut bodies) = lines.parse(line, 0..line.len())?;
        let mut c = Collected::default();
        read_tape(TapeReader::root(&tape), plans, Some(&mut bodies), &mut c).ok()?;
        Some(format!("{c:?}"))
    }

    /// Values a callback's fields may hold that are not what they should be, and
    /// numbers written in every way JSON allows.
    const ODD: [&str; 32] = [
        "-0",
        "0",
        "-1",
        "1.0",
        "1e3",
        "1E+2",
        "-0.0",
        "0.5e-3",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775808",
        "-9223372036854775809",
        "1e400",
        "null",
        "true",
        "false",
        r#""""#,
        r#"" ""#,
        r#""\u00e9""#,
        r#""\ud83d\ude00""#,
        r#""\ud800""#,
        r#""x\"y""#,
        "[]",
        "{}",
        r#"[1,{"code":5}]"#,
        r#"[{"code":"7"},{"code":8}]"#,
        r#"{"a":[null]}"#,
        r#""1763773200""#,
        r#""  17 ""#,
        "1763773200123",
        r#""-5""#,
        r#""+5""#,
    ];

    /// Where each scalar value of `line` is (a string or a number or literal after
    /// a key's colon).
    fn scalars(line: &str) -> Vec<std::ops::Range<usize>> {
        let bytes = line.as_bytes();
        let mut found = Vec::new();
        for (colon, _) in line.match_indices("\":") {
            let start = colon + 2;
            let end = match bytes.get(start) {
                Some(b'"') => {
                    let mut at = start + 1;
                    while at < bytes.len() && bytes[at] != b'"' {
                        at += if bytes[at] == b'\\' { 2 } else { 1 };
                    }
                    at + 1
                }
                Some(b'{' | b'[') | None => continue,
                Some(_) => {
                    start
                        + bytes[start..]
                            .iter()
                            .position(|b| matches!(b, b',' | b'}' | b']'))
                            .unwrap_or(bytes.len() - start)
                }
            };
            found.push(start..end.min(bytes.len()));
        }
        found
    }

    /// A callback with some of its values replaced by odd ones or nested deep
    /// around the depth limits, or a key's field written twice.
    fn odd_callbacks() -> impl Strategy<Value = String> {
        (
            super::round_trip::params(),
            proptest::collection::vec((any::<prop::sample::Index>(), 0..ODD.len() + 2), 1..3),
            120usize..135,
        )
            .prop_map(|(p, edits, depth)| {
                let mut line = super::round_trip::line(&p);
                for (which, odd) in edits {
                    let spots = scalars(&line);
                    if spots.is_empty() {
                        break;
                    }
                    let spot = spots[which.index(spots.len())].clone();
                    let with = match odd {
                        n if n < ODD.len() => ODD[n].to_owned(),
                        n if n == ODD.len() => "[".repeat(depth) + &"]".repeat(depth),
                        // The field twice: its value, a comma, and the key and value again.
                        _ => {
                            let key_start = line[..spot.start - 2]
                                .rfind('"')
                                .map_or(0, |q| line[..q].rfind(['{', ',']).map_or(q, |b| b + 1));
                            format!("{},{}", &line[spot.clone()], &line[key_start..spot.end])
                        }
                    };
                    line.replace_range(spot, &with);
                }
                line
            })
    }

    /// A key written with escapes is the key it spells, on the tape as in the text.
    #[test]
    fn an_escaped_key_reads_the_same_from_the_tape() {
        let line = r#"{"app":"a","timestamp":1,"\u0074ype":"message-event","payload":{"i\u0064":"k","type":"read","payload":{"ts":1763773200}}}"#;
        let tape = tape_only(line.as_bytes());
        assert_eq!(tape.as_deref(), Some(text_only(line.as_bytes()).as_str()));
        assert!(tape.unwrap().contains("Read"));
    }

    /// simdjson skips a byte order mark before a document; the text reader, as
    /// serde_json, does not (a line is not JSON with one): the tape leaves such a line to it.
    #[test]
    fn a_line_with_a_byte_order_mark_is_the_text_readers() {
        let line = format!(
            "\u{feff}{}",
            v2(r#"{"id":"k","type":"read","payload":{"ts":1763773200}}"#)
        );
        assert_eq!(tape_only(line.as_bytes()), None);
        assert_eq!(either(line.as_bytes()), text_only(line.as_bytes()));
        assert!(either(line.as_bytes()).contains("NotJson"));
        // The same inside a wrapper's body given as a string.
        let wrapped = format!(r#"{{"body":{}}}"#, serde_json::to_string(&line).unwrap());
        assert_eq!(either(wrapped.as_bytes()), text_only(wrapped.as_bytes()));
        assert!(either(wrapped.as_bytes()).contains("NotJson"));
    }

    /// Lines whose parts a plan must find: V3 with several entries, changes (of
    /// `messages` and not) and statuses, and wrappers with the body as an object.
    const MANY_PARTS: [&str; 3] = [
        r#"{"entry":[{"changes":[{"field":"messages","value":{"statuses":[{"gs_id":"a","status":"sent","timestamp":"1763773200"},{"id":"b","status":"read","timestamp":1763773201,"errors":[{"code":5}]}]}},{"field":"x","value":{"messages":[{"id":"m"}]}}]},{"changes":[{"field":"messages","value":{"statuses":[]}}]}],"gs_app_id":"g"}"#,
        r#"{"received_at":"t","body":{"entry":[{"changes":[{"field":"messages","value":{"statuses":[{"gs_id":"a","status":"failed","timestamp":1763773200,"code":7,"type":"t"}]}}]},{"id":"e"}],"gs_app_id":"g"}}"#,
        r#"{"received_at":"t","body":{"app":"A","timestamp":1763773200,"type":"message-event","payload":{"id":"k","gsId":"g","type":"read","payload":{"ts":"1763773200","code":3}}}}"#,
    ];

    /// Values put where a line had strings and integers: the words that change
    /// what a line means, and ones that make it unusable.
    const PLAIN_STRINGS: [&str; 16] = [
        "messages",
        "statuses",
        "x",
        "",
        "sent",
        "DELIVERED",
        "read",
        "failed",
        "enqueued",
        "message-event",
        "message",
        "mismatch",
        "1763773200",
        "1763773200123",
        "wamid.ABC",
        " k ",
    ];
    const PLAIN_INTEGERS: [&str; 5] = ["0", "7", "-5", "1763773200", "1763773200123"];

    /// `line` with string or integer values that `picks` reaches replaced by plain
    /// ones: the same shape, other values.
    fn revalued(line: &str, picks: &[(prop::sample::Index, usize)]) -> String {
        let mut line = line.to_owned();
        for (which, pick) in picks {
            let spots: Vec<_> = scalars(&line)
                .into_iter()
                // Values of the line's own keys (not inside a string), without escapes.
                .filter(|s| matches!(line.as_bytes()[s.start], b'"' | b'-' | b'0'..=b'9'))
                .filter(|s| !line[..s.start - 2].ends_with('\\') && !line[s.clone()].contains('\\'))
                .collect();
            if spots.is_empty() {
                break;
            }
            let spot = spots[which.index(spots.len())].clone();
            let with = match line.as_bytes()[spot.start] {
                b'"' => format!("\"{}\"", PLAIN_STRINGS[pick % PLAIN_STRINGS.len()]),
                _ => PLAIN_INTEGERS[pick % PLAIN_INTEGERS.len()].to_owned(),
            };
            line.replace_range(spot, &with);
        }
        line
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// A line of a shape read before is read from its plan: whatever its values,
        /// it says what the text reader says.
        #[test]
        fn a_line_read_from_its_plan_says_what_the_text_reader_says(
            p in super::round_trip::params(),
            base in 0..MANY_PARTS.len() + 1,
            variants in proptest::collection::vec(
                proptest::collection::vec((any::<prop::sample::Index>(), 0usize..64), 1..6),
                1..6,
            ),
        ) {
            let line = match MANY_PARTS.get(base) {
                Some(line) => line.to_string(),
                None => super::round_trip::line(&p),
            };
            let mut lines = tape::Lines::new();
            // Read twice: the second time from the shape the first taught, if it did,
            // which keeps the plan.
            let mut learned = false;
            for variant in [&line, &line].into_iter().chain(&variants.iter().map(|picks| revalued(&line, picks)).collect::<Vec<_>>()) {
                let Some((tape, plans, mut bodies)) = lines.parse(variant.as_bytes(), 0..variant.len()) else {
                    continue;
                };
                if learned {
                    prop_assert!(tape.shape().is_some() && plans.get(&TapeReader::root(&tape)).is_some(), "{}", variant);
                }
                learned = tape.shape().is_some();
                let mut c = Collected::default();
                if read_tape(TapeReader::root(&tape), plans, Some(&mut bodies), &mut c).is_ok() {
                    prop_assert_eq!(format!("{c:?}"), text_only(variant.as_bytes()), "{}", variant);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn the_tape_reads_every_well_formed_callback_itself(p in super::round_trip::params()) {
            let line = super::round_trip::line(&p);
            // Twice: the second time from the shape the first taught the parser.
            for _ in 0..2 {
                let tape = tape_only(line.as_bytes());
                prop_assert!(tape.is_some(), "{}", line);
                prop_assert_eq!(tape.unwrap(), text_only(line.as_bytes()));
            }
        }

        #[test]
        fn the_tape_agrees_with_the_text_reader_on_odd_values(line in odd_callbacks()) {
            let text = text_only(line.as_bytes());
            for _ in 0..2 {
                if let Some(tape) = tape_only(line.as_bytes()) {
                    prop_assert_eq!(&tape, &text, "{}", line);
                }
                prop_assert_eq!(&either(line.as_bytes()), &text, "{}", line);
            }
        }

        #[test]
        fn the_tape_agrees_with_the_text_reader_on_broken_lines(
            parts in proptest::collection::vec(0..super::hostile::PIECES.len(), 0..40),
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let spliced: String = parts.iter().map(|&i| super::hostile::PIECES[i]).collect();
            let marked = format!("\u{feff}{spliced}");
            for line in [spliced.as_bytes(), marked.as_bytes(), &bytes] {
                let text = text_only(line);
                if let Some(tape) = tape_only(line) {
                    prop_assert_eq!(&tape, &text);
                }
                prop_assert_eq!(either(line), text);
            }
        }
    }
}

#[test]
fn a_malformed_v3_container_is_dead_lettered_alone_and_its_siblings_count() {
    let good = |k: &str| format!(r#"{{"gs_id":"{k}","status":"sent","timestamp":"1763773200"}}"#);
    let change =
        |statuses: &str| format!(r#"{{"field":"messages","value":{{"statuses":{statuses}}}}}"#);
    let envelope =
        |entries: &[String]| format!(r#"{{"entry":[{}],"gs_app_id":"a"}}"#, entries.join(","));
    let entry = |changes: &[String]| format!(r#"{{"changes":[{}]}}"#, changes.join(","));
    let cases: Vec<(String, &str)> = vec![
        // A change that is not an object, beside a good one.
        (
            entry(&[change(&format!("[{}]", good("c"))), "7".into()]),
            "7",
        ),
        // An entry that is not an object.
        ("\"oops\"".into(), "\"oops\""),
        // `statuses` that is not an array: that change alone.
        (
            entry(&[change("{\"gs_id\":\"x\"}")]),
            r#"{"field":"messages","value":{"statuses":{"gs_id":"x"}}}"#,
        ),
        // An entry without changes.
        (r#"{"id":"1"}"#.into(), r#"{"id":"1"}"#),
        // A change whose value is not an object.
        (
            entry(&[r#"{"field":"messages","value":[1]}"#.into()]),
            r#"{"field":"messages","value":[1]}"#,
        ),
        // An entry with a key twice.
        (
            r#"{"changes":[],"changes":[]}"#.into(),
            r#"{"changes":[],"changes":[]}"#,
        ),
    ];
    for (bad, text) in cases {
        let line = envelope(&[
            entry(&[change(&format!("[{}]", good("a")))]),
            bad.clone(),
            entry(&[change(&format!("[{}]", good("b")))]),
        ]);
        let c = parse(&line);
        let keys: Vec<_> = c
            .events
            .iter()
            .map(|e| e.0.as_str())
            .filter(|k| *k != "c")
            .collect();
        assert_eq!(keys, ["a", "b"], "{line}");
        assert_eq!(
            c.dead,
            vec![(Reason::UnknownShape, Some(text.to_owned()))],
            "{line}"
        );
    }
}

#[test]
fn a_key_twice_in_the_v2_inner_payload_is_a_dead_letter_as_everywhere() {
    let twice = v2(r#"{"id":"k","type":"failed","payload":{"code":470,"code":1002,"ts":5}}"#);
    assert_eq!(dead_reason(&twice), Reason::UnknownShape);
    let ts_twice = v2(r#"{"id":"k","type":"read","payload":{"ts":1585344602,"ts":1}}"#);
    assert_eq!(dead_reason(&ts_twice), Reason::UnknownShape);
    // An inner payload of another shape still just has no ts and no code.
    let other = v2(r#"{"id":"k","type":"failed","payload":"x"}"#);
    assert_eq!(one_event(&other).3, None);
}

/// A file's parser reads its own lines with its scan, and a line from elsewhere
/// (its bytes not the text's) on its own: each as `parse_line` does.
#[test]
fn a_files_parser_reads_its_lines_and_any_other_as_parse_line_does() {
    let v2 = |id: &str, status: &str| {
        format!(
            r#"{{"app":"a","timestamp":1,"type":"message-event","payload":{{"id":"{id}","type":"{status}","payload":{{"ts":1700000000}}}}}}"#
        )
    };
    // A plain first line longer than the other: read with its scan, that one would go wrong.
    let text = [
        v2("a", "delivered"),
        v2("b", "read"),
        v2("b\\u0041", "read"),
        "\u{e9}".into(),
    ]
    .join("\n");
    let other = v2("c", "read");
    let mut parser = Parser::new(text.as_bytes());
    for line in text
        .lines()
        .chain([other.as_str(), &text[..0], &text[text.len()..]])
    {
        let mut c = Collected::default();
        parser.parse(line.as_bytes(), &mut c);
        assert_eq!(format!("{c:?}"), format!("{:?}", parse(line)), "{line}");
    }
}
