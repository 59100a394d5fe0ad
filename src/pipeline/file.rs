//! One object → its events folded per message, counters and dead letters.

use super::pieces::PieceRead;
use super::{ReadResult, Routing};
use crate::batch::{DeadLetter, Reason as Lost};
use crate::callback::{self, Event, Reason, Sink};
use crate::resolve::{Prepared, Resolved};
use std::io::BufRead;

use anyhow::Context;

use crate::source::{self, Inflating, ObjectRef, Part, Stretch, Text};

/// Events are folded this many events after they come (see `Fold::prepare`).
const LOOKAHEAD: usize = 8;

struct FileSink<'a> {
    file: &'a str,
    line_no: u64,
    line: &'a [u8],
    read: &'a mut ReadResult,
    routing: &'a Routing,
    /// The batch the current callback goes to (None: another task's organization).
    route: Option<usize>,
    /// An unknown app's line is dead-lettered once, however many events it holds.
    unknown_kept: bool,
    /// A piece of a file: its dead letters wait in `read.pieces` to be numbered.
    piece: bool,
    /// The last events, prepared and not yet folded, with their batch: a ring,
    /// `next` its oldest once full. Folded when the sink goes away, at the latest.
    pending: Vec<(usize, Prepared<Resolved>)>,
    next: usize,
}

impl<'a> FileSink<'a> {
    /// A sink for `part` of `object`, before its first line: what it keeps goes
    /// to the unrouted batch until a callback names its app.
    fn new(
        read: &'a mut ReadResult,
        routing: &'a Routing,
        object: &'a ObjectRef,
        part: &Part,
    ) -> Self {
        let piece = match part {
            Part::Whole => false,
            Part::Piece(range) => {
                read.pieces.push(PieceRead {
                    file: object.name.clone(),
                    size: object.size,
                    start: range.start,
                    ..PieceRead::default()
                });
                true
            }
        };
        FileSink {
            piece,
            file: &object.name,
            line_no: 0,
            line: &[],
            read,
            routing,
            route: routing.route(None),
            unknown_kept: false,
            pending: Vec::with_capacity(LOOKAHEAD),
            next: 0,
        }
    }

    /// Folds `event` into batch `to`'s resolution, a few events from now.
    fn fold_soon(&mut self, to: usize, event: &Event<'_>) {
        let batches = &mut self.read.batches;
        if self.pending.len() < LOOKAHEAD {
            let mut ready = Prepared::new(event);
            batches[to].resolution.prepare(event, &mut ready);
            return self.pending.push((to, ready));
        }
        // Halfway through the ring, the index slot fetched when it came in names
        // the entry this event's probe will compare: fetched now too.
        let (batch, halfway) = &self.pending[(self.next + LOOKAHEAD / 2) % LOOKAHEAD];
        batches[*batch].resolution.prefetch_entry(halfway);
        let (batch, ready) = &mut self.pending[self.next];
        batches[*batch].resolution.add_prepared(ready);
        batches[to].resolution.prepare(event, ready);
        *batch = to;
        self.next = (self.next + 1) % LOOKAHEAD;
    }

    /// Keeps a dead letter for `reason` (a line's or the pipeline's own, as text).
    fn keep(&mut self, reason: &'static str, raw: String) {
        self.read.counts.dead_lettered += 1;
        let Some(i) = self.route else {
            return;
        };
        self.read.batches[i].counts.dead_lettered += 1;
        let letter = DeadLetter {
            file: self.file.to_owned(),
            line: self.line_no,
            reason,
            raw,
        };
        match self.piece {
            true => self.piece_read().letters.push((i, letter)),
            false => self.read.batches[i].dead_letters.push(letter),
        }
    }

    /// This piece's entry (`piece` only: `new` pushed it).
    fn piece_read(&mut self) -> &mut PieceRead {
        self.read.pieces.last_mut().expect("a piece's sink made it")
    }

    /// An unknown app's line is kept once, however many events it holds.
    fn keep_unknown_app(&mut self) {
        if !std::mem::replace(&mut self.unknown_kept, true) {
            let raw = self.line_text();
            self.keep(Lost::UnknownApp.as_str(), raw);
        }
    }

    fn line_text(&self) -> String {
        String::from_utf8_lossy(self.line).into_owned()
    }
}

impl Sink for FileSink<'_> {
    fn app(&mut self, app: Option<&str>) {
        self.route = self.routing.route(app);
    }

    fn event(&mut self, event: Event<'_>) {
        self.read.counts.events += 1;
        match self.route {
            Some(i) if self.routing.is_unrouted(i) => self.keep_unknown_app(),
            Some(i) => {
                let batch = &mut self.read.batches[i];
                batch.counts.events += 1;
                if self.routing.timelines {
                    batch.timelines.add(&event);
                } else {
                    self.fold_soon(i, &event);
                }
            }
            None => {}
        }
    }

    fn skipped(&mut self) {
        self.read.counts.skipped += 1;
        if let Some(i) = self.route {
            self.read.batches[i].counts.skipped += 1;
        }
    }

    fn dead_letter(&mut self, reason: Reason, entry: Option<&str>) {
        let raw = match entry {
            Some(entry) => entry.to_owned(),
            None => self.line_text(),
        };
        self.keep(reason.as_str(), raw);
    }
}

impl Drop for FileSink<'_> {
    fn drop(&mut self) {
        for (batch, ready) in &mut self.pending {
            self.read.batches[*batch].resolution.add_prepared(ready);
        }
    }
}

/// What the thread parsing a large gzip object does beside parsing its stretches.
pub trait Stretches {
    /// Takes a stretch but the first (its text) to be parsed by another thread;
    /// false leaves it to be parsed here.
    fn offer(&mut self, _piece: &Part, _text: &mut Vec<u8>) -> bool {
        false
    }
    /// After each stretch parsed here (a worker spills what passed its limit).
    fn parsed(&mut self, _read: &mut ReadResult) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Every stretch parsed here, nothing between.
pub struct Alone;

impl Stretches for Alone {}

/// Decodes and parses `part` of one object into `read`, routing each callback by
/// its app; what cannot be read is dead-lettered (an error is `stretches`' own).
/// `scratch` is the worker's buffer for inflating gzip. A large gzip object is
/// inflated a stretch of lines at a time, each a piece of the object, offered to
/// `stretches` before it is parsed here.
pub fn parse_object(
    read: &mut ReadResult,
    routing: &Routing,
    object: &ObjectRef,
    part: &Part,
    raw: &[u8],
    scratch: &mut Vec<u8>,
    stretches: &mut impl Stretches,
) -> anyhow::Result<()> {
    match source::decode_part(raw, part, scratch) {
        Text::Whole(data) => {
            parse_text(read, routing, object, part, data, None);
            Ok(())
        }
        Text::Stretches(inflating) => parse_stretches(read, routing, object, inflating, stretches),
    }
}

/// Parses a large gzip object a stretch at a time (see `parse_object`).
pub fn parse_stretches(
    read: &mut ReadResult,
    routing: &Routing,
    object: &ObjectRef,
    mut inflating: Inflating<impl BufRead>,
    stretches: &mut impl Stretches,
) -> anyhow::Result<()> {
    let mut text = Vec::new();
    let failed = || format!("reading {:?}", object.name);
    while let Some(Stretch { start, error }) =
        inflating.next_stretch(&mut text).with_context(failed)?
    {
        let piece = Part::Piece(start..start + text.len() as u64);
        if start > 0 && error.is_none() && stretches.offer(&piece, &mut text) {
            continue;
        }
        parse_text(read, routing, object, &piece, &text, error);
        stretches.parsed(read)?;
    }
    Ok(())
}

/// Parses `part` of an object, its text `data` (whole lines, but maybe the last),
/// into `read`; `error`: why the text stops early.
pub(super) fn parse_text(
    read: &mut ReadResult,
    routing: &Routing,
    object: &ObjectRef,
    part: &Part,
    data: &[u8],
    error: Option<String>,
) {
    if part.is_first() {
        read.counts.files += 1;
        read.counts.bytes += object.size;
    }
    let unrouted = routing.route(None);
    let mut sink = FileSink::new(read, routing, object, part);
    let mut parser = callback::Parser::new(data);
    // A batch's files are those with a line routed to it: compare its line count
    // before and after the file (per file, not per line, to keep the hot loop lean).
    let lines_before: smallvec::SmallVec<[u64; 8]> =
        sink.read.batches.iter().map(|b| b.counts.lines).collect();
    for (line_no, line) in source::lines(data) {
        sink.line_no = line_no;
        sink.line = line;
        sink.route = unrouted;
        sink.unknown_kept = false;
        sink.read.counts.lines += 1;
        parser.parse(line, &mut sink);
        if let Some(i) = sink.route {
            sink.read.batches[i].counts.lines += 1;
        }
    }
    let routed = sink.read.batches.iter().zip(lines_before);
    let routed: smallvec::SmallVec<[usize; 8]> = (routed.enumerate())
        .filter_map(|(i, (batch, before))| (batch.counts.lines > before).then_some(i))
        .collect();
    if sink.piece {
        let piece = sink.piece_read();
        piece.routed.extend(routed);
        piece.lines = memchr::memchr_iter(b'\n', data).count() as u64;
    } else {
        for i in routed {
            sink.read.batches[i].counts.files += 1;
            sink.read.batches[i].counts.bytes += object.size;
        }
    }
    if let Some(error) = error {
        // The damage starts on the line after the last whole one.
        sink.line_no = memchr::memchr_iter(b'\n', data).count() as u64 + 1;
        sink.route = unrouted;
        sink.keep(Lost::UnreadableFile.as_str(), error);
    }
}

/// An object that will never be readable: one dead letter (line 0, the error as
/// its text), counted as a file, so it is marked done and never blocks a run.
pub fn unreadable_object(
    read: &mut ReadResult,
    routing: &Routing,
    object: &ObjectRef,
    part: &Part,
    why: String,
) {
    if part.is_first() {
        read.counts.files += 1;
    }
    FileSink::new(read, routing, object, part).keep(Lost::UnreadableObject.as_str(), why);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Resolution;
    use crate::source::Location;

    /// Folds events as they come, for comparison.
    struct Direct(Resolution);

    impl Sink for Direct {
        fn event(&mut self, event: Event<'_>) {
            self.0.add(&event);
        }
        fn skipped(&mut self) {}
        fn dead_letter(&mut self, _: Reason, _: Option<&str>) {}
    }

    fn object() -> ObjectRef {
        ObjectRef {
            name: "f.ndjson".into(),
            generation: String::new(),
            size: 0,
            last_modified: chrono::Utc::now(),
            location: Location::File("f.ndjson".into()),
        }
    }

    /// Parses `body` as a file, and line by line on its own, for comparison.
    fn parse_both(body: &str) -> (ReadResult, Resolution) {
        let mut read = ReadResult::new(1);
        parse_object(
            &mut read,
            &Routing::single(),
            &object(),
            &Part::Whole,
            body.as_bytes(),
            &mut Vec::new(),
            &mut Alone,
        )
        .unwrap();
        let mut direct = Direct(Resolution::default());
        body.lines()
            .for_each(|l| callback::parse_line(l.as_bytes(), &mut direct));
        (read, direct.0)
    }

    /// A large gzip object is parsed a stretch at a time: each but the first is
    /// offered first, one taken is not parsed here, and the worker's call comes
    /// after each one parsed here (where it spills what passed the memory limit).
    #[test]
    fn a_large_gzip_object_is_offered_and_parsed_a_stretch_at_a_time() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        #[derive(Default)]
        struct Recorded {
            offered: Vec<(u64, usize)>,
            taken: u64,
            events_after: Vec<u64>,
        }
        impl Stretches for Recorded {
            fn offer(&mut self, piece: &Part, text: &mut Vec<u8>) -> bool {
                let Part::Piece(range) = piece else {
                    panic!("{piece:?}")
                };
                assert_eq!(range.end - range.start, text.len() as u64);
                self.offered.push((range.start, text.len()));
                // Every third one is taken, its lines not parsed here.
                let take = self.offered.len().is_multiple_of(3);
                if take {
                    self.taken += memchr::memchr_iter(b'\n', text).count() as u64;
                    text.clear();
                }
                take
            }
            fn parsed(&mut self, read: &mut ReadResult) -> anyhow::Result<()> {
                self.events_after.push(read.counts.events);
                Ok(())
            }
        }
        let n = 40_000;
        let body: String = (0..n)
            .map(|i| {
                format!(
                    r#"{{"app":"a","timestamp":1,"version":2,"type":"message-event","payload":{{"id":"m{i}","type":"sent","payload":{{"ts":1700000000}}}}}}"#
                ) + "\n"
            })
            .collect();
        let mut zipped = GzEncoder::new(Vec::new(), Compression::fast());
        zipped.write_all(body.as_bytes()).unwrap();
        let zipped = zipped.finish().unwrap();
        let (mut read, mut recorded) = (ReadResult::new(1), Recorded::default());
        let (object, whole) = (object(), Part::Whole);
        let routing = Routing::single();
        parse_object(
            &mut read,
            &routing,
            &object,
            &whole,
            &zipped,
            &mut Vec::new(),
            &mut recorded,
        )
        .unwrap();
        let stretches = recorded.offered.len() + 1;
        assert!(stretches > 8, "{stretches} stretches");
        assert!(
            recorded.offered.iter().all(|&(start, _)| start > 0),
            "not the first"
        );
        let taken = recorded.offered.len() / 3;
        assert_eq!(
            recorded.events_after.len(),
            stretches - taken,
            "after each parsed here"
        );
        assert!(recorded.events_after.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(read.counts.events + recorded.taken, n);
        assert_eq!(read.counts.files, 1, "counted by its first stretch");
    }

    #[test]
    fn lines_too_long_to_scan_read_as_the_others() {
        let line = |id: &str, pad: usize| {
            let pad = "x".repeat(pad);
            format!(
                r#"{{"app":"a","timestamp":1,"version":2,"type":"message-event","payload":{{"note":"{pad}","id":"{id}","type":"read","payload":{{"ts":1700000000}}}}}}"#
            )
        };
        let body = [line("a", 10), line("b", 1 << 20), line("c", 10)].join("\n");
        let (read, direct) = parse_both(&body);
        assert_eq!((read.counts.events, read.counts.dead_lettered), (3, 0));
        assert_eq!(read.batches[0].resolution, direct);
        assert_eq!(direct.len(), 3);
    }

    #[test]
    fn every_event_is_folded_however_many_are_still_on_their_way_when_a_file_ends() {
        let statuses = ["enqueued", "sent", "delivered", "read", "failed"];
        let line = |i: usize| {
            let (key, status, ts) = (i * 7 % 5, statuses[i * 3 % 5], 1_700_000_000 + i * 13 % 11);
            format!(
                r#"{{"app":"a","timestamp":1,"version":2,"type":"message-event","payload":{{"id":"m{key}","type":"{status}","payload":{{"ts":{ts}}}}}}}"#
            )
        };
        for n in 0..3 * LOOKAHEAD {
            let body: String = (0..n).map(|i| line(i) + "\n").collect();
            let (read, direct) = parse_both(&body);
            assert_eq!(read.counts.events, n as u64);
            assert_eq!(read.batches[0].resolution, direct, "{n} lines");
            assert_eq!(read.batches[0].resolution.len(), n.min(5), "{n} lines");
        }
    }
}
