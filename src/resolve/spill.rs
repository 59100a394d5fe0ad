//! Resolving more messages than fit in memory: when a worker's map grows past
//! its share of `--memory-limit`, its entries go to disk, partitioned by key
//! hash. At the end each partition is resolved alone (the rule is a max, so
//! entries combine in any order), sorted, and the partitions are merged into one
//! sorted stream: the output is identical to the in-memory one.

use std::collections::BinaryHeap;
use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};

use super::{Resolution, Resolved};
use crate::status::Status;

/// Partitions: each holds about 1/PARTITIONS of the messages when resolved.
const PARTITIONS: usize = 64;
/// Memory the process needs whatever the state: code, runtime, files in flight.
const RESERVE: usize = 24 << 20;

/// `--memory-limit` for the whole process. `worker_budget` fixes each worker's
/// share instead (tests force spilling on small inputs with a tiny one).
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimit {
    pub bytes: usize,
    pub worker_budget: Option<usize>,
}

#[derive(Debug)]
pub struct Spill {
    dir: tempfile::TempDir,
    /// Per-worker budget for the in-memory map, in bytes.
    worker_budget: usize,
    spilled: AtomicBool,
    writers: AtomicUsize,
}

/// One worker's partition files (no locks on the hot path).
pub struct SpillWriter {
    files: Vec<BufWriter<File>>,
    budget: usize,
}

impl Spill {
    /// `limit.bytes` covers the process: a fixed reserve for the program, files in
    /// flight and buffers; half of the rest for `workers` maps (the other half
    /// absorbs a table's growth and the allocator's slack).
    pub fn new(limit: MemoryLimit, workers: usize) -> Result<Spill> {
        let share = || (limit.bytes.saturating_sub(RESERVE) / 2 / workers.max(1)).max(1 << 20);
        Spill::with_worker_budget(limit.worker_budget.unwrap_or_else(share))
    }

    /// A spill whose workers each keep at most `budget` bytes of map in memory.
    pub fn with_worker_budget(budget: usize) -> Result<Spill> {
        let dir = tempfile::Builder::new()
            .prefix("bsp-spill-")
            .tempdir()
            .context("creating a spill folder")?;
        Ok(Spill {
            dir,
            worker_budget: budget,
            spilled: false.into(),
            writers: 0.into(),
        })
    }

    /// A worker's own set of partition files.
    pub fn writer(&self) -> Result<SpillWriter> {
        let w = self.writers.fetch_add(1, Ordering::Relaxed);
        let files = (0..PARTITIONS)
            .map(|p| File::create(self.path(w, p)).map(BufWriter::new))
            .collect::<std::io::Result<_>>()
            .context("creating spill files")?;
        Ok(SpillWriter {
            files,
            budget: self.worker_budget,
        })
    }

    fn mark_spilled(&self) {
        self.spilled.store(true, Ordering::Relaxed);
    }

    pub fn spilled(&self) -> bool {
        self.spilled.load(Ordering::Relaxed)
    }

    /// Resolves each partition alone, writes it sorted, and calls `emit` for every
    /// message in key order across all partitions. Returns how many there were.
    pub fn finish(self, mut emit: impl FnMut(&str, &Resolved) -> Result<()>) -> Result<u64> {
        let writers = self.writers.load(Ordering::Relaxed);
        let mut sorted_runs = Vec::with_capacity(PARTITIONS);
        for p in 0..PARTITIONS {
            let mut resolution = Resolution::default();
            for w in 0..writers {
                let bytes = std::fs::read(self.path(w, p)).context("reading a spill file")?;
                let mut rest = &bytes[..];
                while let Some((key, r, tail)) = decode(rest)? {
                    resolution.insert(key, r);
                    rest = tail;
                }
                std::fs::remove_file(self.path(w, p))?;
            }
            let run = self.dir.path().join(format!("sorted{p}"));
            let mut out = BufWriter::new(File::create(&run)?);
            let mut buf = Vec::new();
            for (key, r) in resolution.sorted() {
                encode(&mut buf, key, &r);
                out.write_all(&buf)?;
                buf.clear();
            }
            out.flush()?;
            sorted_runs.push(run);
        }
        merge(&sorted_runs, &mut emit)
    }

    fn path(&self, worker: usize, partition: usize) -> PathBuf {
        self.dir.path().join(format!("w{worker}-p{partition}"))
    }
}

impl SpillWriter {
    /// Writes `resolution` out if it is over budget (or `force`), leaving it empty.
    pub fn maybe_spill(
        &mut self,
        spill: &Spill,
        resolution: &mut Resolution,
        force: bool,
    ) -> Result<()> {
        if resolution.is_empty() || (!force && resolution.estimated_bytes() < self.budget) {
            return Ok(());
        }
        spill.mark_spilled();
        let mut buf = Vec::with_capacity(64);
        for (key, r) in resolution.drain() {
            encode(&mut buf, key.as_str(), &r);
            self.files[partition(key.as_str())]
                .write_all(&buf)
                .context("writing a spill file")?;
            buf.clear();
        }
        Ok(())
    }

    /// Flushes the files; call before `Spill::finish`.
    pub fn close(mut self) -> Result<()> {
        for f in &mut self.files {
            f.flush().context("writing a spill file")?;
        }
        Ok(())
    }
}

fn partition(key: &str) -> usize {
    let mut h = DefaultHasher::new();
    h.write(key.as_bytes());
    (h.finish() % PARTITIONS as u64) as usize
}

/// [u32 key length][key][status rank][i64 time][u8 has code][i64 code]
fn encode(out: &mut Vec<u8>, key: &str, r: &Resolved) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.push(r.status.rank());
    out.extend_from_slice(&r.at_ms.to_le_bytes());
    out.push(u8::from(r.code.is_some()));
    out.extend_from_slice(&r.code.unwrap_or(0).to_le_bytes());
}

fn decode(bytes: &[u8]) -> Result<Option<(&str, Resolved, &[u8])>> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let corrupt = || anyhow::anyhow!("a spill file is corrupt");
    fn take(b: &[u8], n: usize) -> Result<(&[u8], &[u8])> {
        (b.len() >= n)
            .then(|| b.split_at(n))
            .ok_or_else(|| anyhow::anyhow!("a spill file is corrupt"))
    }
    let (len, rest) = take(bytes, 4)?;
    let (key, rest) = take(rest, u32::from_le_bytes(len.try_into()?) as usize)?;
    let (fixed, rest) = take(rest, 1 + 8 + 1 + 8)?;
    let status = Status::from_rank(fixed[0]).ok_or_else(corrupt)?;
    let at_ms = i64::from_le_bytes(fixed[1..9].try_into()?);
    let code =
        (fixed[9] == 1).then(|| i64::from_le_bytes(fixed[10..18].try_into().expect("8 bytes")));
    Ok(Some((
        std::str::from_utf8(key)?,
        Resolved {
            status,
            at_ms,
            code,
        },
        rest,
    )))
}

/// K-way merge of sorted runs (distinct keys across runs: each key lives in one partition).
fn merge(runs: &[PathBuf], emit: &mut impl FnMut(&str, &Resolved) -> Result<()>) -> Result<u64> {
    let mut readers: Vec<BufReader<File>> = runs
        .iter()
        .map(|p| File::open(p).map(BufReader::new))
        .collect::<std::io::Result<_>>()?;
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some((key, res)) = read_record(r)? {
            heap.push(std::cmp::Reverse((key, i, Entry(res))));
        }
    }
    let mut n = 0;
    while let Some(std::cmp::Reverse((key, i, Entry(res)))) = heap.pop() {
        emit(&key, &res)?;
        n += 1;
        if let Some((next, res)) = read_record(&mut readers[i])? {
            heap.push(std::cmp::Reverse((next, i, Entry(res))));
        }
    }
    Ok(n)
}

/// Orders heap entries by key and run only.
struct Entry(Resolved);
impl PartialEq for Entry {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

fn read_record(r: &mut impl Read) -> Result<Option<(String, Resolved)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let mut record = vec![0u8; u32::from_le_bytes(len) as usize + 18];
    r.read_exact(&mut record)?;
    let mut whole = len.to_vec();
    whole.extend_from_slice(&record);
    let (key, res, _) = decode(&whole)?.expect("a whole record");
    Ok(Some((key.to_owned(), res)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_resolution_equals_the_in_memory_one() {
        let mut rng = 7u64;
        let mut next = || {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            rng >> 33
        };
        let spill = Spill::with_worker_budget(1).unwrap(); // a tiny budget: spill on every check
        let mut writers = [spill.writer().unwrap(), spill.writer().unwrap()];
        let mut whole = Resolution::default();
        for round in 0..20 {
            let mut part = Resolution::default();
            for _ in 0..500 {
                let key = format!("k{:05}", next() % 3000);
                let status = Status::from_rank((next() % 7 + 1) as u8).unwrap();
                let code = (status == Status::Error).then(|| (next() % 3) as i64);
                let r = Resolved {
                    status,
                    at_ms: (next() % 50) as i64,
                    code,
                };
                part.insert(&key, r);
                whole.insert(&key, r);
            }
            writers[round % 2]
                .maybe_spill(&spill, &mut part, round % 3 == 0)
                .unwrap();
            assert!(part.is_empty(), "over budget: everything went to disk");
        }
        assert!(spill.spilled());
        writers.into_iter().for_each(|w| w.close().unwrap());
        let mut out = Vec::new();
        let n = spill
            .finish(|k, r| {
                out.push((k.to_owned(), *r));
                Ok(())
            })
            .unwrap();
        let want: Vec<_> = whole
            .sorted()
            .into_iter()
            .map(|(k, r)| (k.to_owned(), r))
            .collect();
        assert_eq!(n as usize, want.len());
        assert_eq!(out, want);
    }
}
