//! A large file read in pieces (`source::Part`) by several threads: each piece
//! numbers its lines from one, and no piece knows whether another counted the
//! file for a batch. When every piece is read, the join numbers each piece's
//! dead letters within the file and counts each file once per batch; a file no
//! piece could read is one dead letter, not one a piece.

use std::collections::BTreeSet;

use super::ReadResult;
use crate::batch::DeadLetter;

/// What one piece of a file left for the join.
#[derive(Debug, Default)]
pub(super) struct PieceRead {
    pub file: String,
    /// The file's size as listed (what a batch counts for it).
    pub size: u64,
    /// Where the piece starts: the pieces of a file in order.
    pub start: u64,
    /// Its lines, blank ones too: where the next piece's numbering starts.
    pub lines: u64,
    /// The batches its lines went to.
    pub routed: BTreeSet<usize>,
    /// Its dead letters with their batch, numbered within the piece (0: the
    /// piece could not be read at all, which stays 0).
    pub letters: Vec<(usize, DeadLetter)>,
}

/// Numbers every piece's dead letters within its file, adds them to their
/// batches, and counts each file once in each batch its lines went to. Pieces
/// that could not be read for the same reason leave one dead letter.
pub(super) fn join(total: &mut ReadResult, mut pieces: Vec<PieceRead>) {
    pieces.sort_by(|a, b| (&a.file, a.start).cmp(&(&b.file, b.start)));
    let mut rest = &mut pieces[..];
    while let Some(first) = rest.first() {
        let n = rest.iter().take_while(|p| p.file == first.file).count();
        let (file, after) = rest.split_at_mut(n);
        rest = after;
        let (mut before, mut routed, mut unreadable) = (0, BTreeSet::new(), BTreeSet::new());
        for piece in file.iter_mut() {
            for (batch, mut letter) in piece.letters.drain(..) {
                if letter.line > 0 {
                    letter.line += before;
                } else if !unreadable.insert((batch, letter.raw.clone())) {
                    total.counts.dead_lettered -= 1;
                    total.batches[batch].counts.dead_lettered -= 1;
                    continue;
                }
                total.batches[batch].dead_letters.push(letter);
            }
            before += piece.lines;
            routed.append(&mut piece.routed);
        }
        for batch in routed {
            total.batches[batch].counts.files += 1;
            total.batches[batch].counts.bytes += file[0].size;
        }
    }
}
