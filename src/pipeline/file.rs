//! One object → its events folded per message, counters and dead letters.

use bytes::Bytes;

use super::{Batch, Counts, DeadLetter};
use crate::callback::{self, Event, Reason, Sink};
use crate::resolve::Resolution;
use crate::source::{self, ObjectRef};

struct FileSink<'a> {
    file: &'a str,
    line_no: u64,
    line: &'a [u8],
    resolution: Resolution,
    counts: Counts,
    dead_letters: Vec<DeadLetter>,
}

impl FileSink<'_> {
    fn keep(&mut self, reason: Reason, raw: String) {
        self.counts.dead_lettered += 1;
        self.dead_letters.push(DeadLetter {
            file: self.file.to_owned(),
            line: self.line_no,
            reason: reason.as_str(),
            raw,
        });
    }
}

impl Sink for FileSink<'_> {
    fn event(&mut self, event: Event<'_>) {
        self.counts.events += 1;
        self.resolution.add(&event);
    }

    fn skipped(&mut self) {
        self.counts.skipped += 1;
    }

    fn dead_letter(&mut self, reason: Reason, entry: Option<&str>) {
        let raw = match entry {
            Some(entry) => entry.to_owned(),
            None => String::from_utf8_lossy(self.line).into_owned(),
        };
        self.keep(reason, raw);
    }
}

/// Decodes and parses one object. Never fails: what cannot be read is dead-lettered.
pub fn parse_object(object: ObjectRef, raw: Bytes) -> Batch {
    let decoded = source::decode(raw);
    let mut sink = FileSink {
        file: &object.name,
        line_no: 0,
        line: &[],
        resolution: Resolution::default(),
        counts: Counts {
            files: 1,
            bytes: object.size,
            ..Counts::default()
        },
        dead_letters: Vec::new(),
    };
    for (line_no, line) in source::lines(&decoded.data) {
        sink.line_no = line_no;
        sink.line = line;
        sink.counts.lines += 1;
        callback::parse_line(line, &mut sink);
    }
    if let Some(error) = decoded.error {
        // The damage starts on the line after the last whole one.
        sink.line_no = memchr::memchr_iter(b'\n', &decoded.data).count() as u64 + 1;
        sink.keep(Reason::UnreadableFile, error);
    }
    let FileSink {
        resolution,
        counts,
        dead_letters,
        ..
    } = sink;
    Batch {
        resolution,
        counts,
        dead_letters,
        files: vec![object],
    }
}
