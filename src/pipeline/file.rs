//! One object → its events folded per message, counters and dead letters.

use bytes::Bytes;

use super::{Batch, DeadLetter};
use crate::callback::{self, Event, Reason, Sink};
use crate::source::{self, ObjectRef};

struct FileSink<'a> {
    file: &'a str,
    line_no: u64,
    line: &'a [u8],
    batch: &'a mut Batch,
}

impl FileSink<'_> {
    fn keep(&mut self, reason: Reason, raw: String) {
        self.batch.counts.dead_lettered += 1;
        self.batch.dead_letters.push(DeadLetter {
            file: self.file.to_owned(),
            line: self.line_no,
            reason: reason.as_str(),
            raw,
        });
    }
}

impl Sink for FileSink<'_> {
    fn event(&mut self, event: Event<'_>) {
        self.batch.counts.events += 1;
        self.batch.resolution.add(&event);
    }

    fn skipped(&mut self) {
        self.batch.counts.skipped += 1;
    }

    fn dead_letter(&mut self, reason: Reason, entry: Option<&str>) {
        let raw = match entry {
            Some(entry) => entry.to_owned(),
            None => String::from_utf8_lossy(self.line).into_owned(),
        };
        self.keep(reason, raw);
    }
}

/// Decodes and parses one object into `batch`. Never fails: what cannot be read
/// is dead-lettered.
pub fn parse_object(batch: &mut Batch, object: ObjectRef, raw: Bytes) {
    let decoded = source::decode(raw);
    batch.counts.files += 1;
    batch.counts.bytes += object.size;
    let mut sink = FileSink {
        file: &object.name,
        line_no: 0,
        line: &[],
        batch,
    };
    for (line_no, line) in source::lines(&decoded.data) {
        sink.line_no = line_no;
        sink.line = line;
        sink.batch.counts.lines += 1;
        callback::parse_line(line, &mut sink);
    }
    if let Some(error) = decoded.error {
        // The damage starts on the line after the last whole one.
        sink.line_no = memchr::memchr_iter(b'\n', &decoded.data).count() as u64 + 1;
        sink.keep(Reason::UnreadableFile, error);
    }
    batch.files.push(object);
}
