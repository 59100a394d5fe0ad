//! Observations folded per message id, held in shards by key: each parsing thread
//! keeps a whole `Fold`, and at the end the threads' folds are merged shard by
//! shard on every core (a key lives in one shard, so shards never meet).
//!
//! A shard keeps its entries in the order their keys first came, beside a small
//! hash index of positions. A new message is appended where the last ones are,
//! in cache, as are the entries its next callbacks look up (a message's callbacks
//! come close together in time, and files are read in time order); the index, 8
//! bytes a slot, stays in the caches where a table of whole entries would not;
//! and room the entry vector has not used yet costs no memory.
//!
//! Output in key order (`write_sorted`) never sorts the entries themselves: each
//! shard sorts its own small index of (first eight key bytes, position), then
//! ranges of keys are merged from the shards and formatted on every core.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, Equivalent};

use super::index::{Index, prefetch};
use super::{Key, Observation, Resolution, Timelines};

/// Shards per fold: enough for every core of the machines this runs on to merge
/// one at a time; each holds about one eighth of the keys.
const SHARDS: usize = 8;

/// Observations of a set of events folded per Gupshup message id.
#[derive(Debug, Clone)]
pub struct Fold<V> {
    shards: Vec<Shard<V>>,
}

/// Equal when they hold the same keys with the same values, whatever the order.
impl<V: Observation + PartialEq> PartialEq for Fold<V> {
    fn eq(&self, other: &Self) -> bool {
        self.shards == other.shards
    }
}

impl<V: Observation + Eq> Eq for Fold<V> {}

#[derive(Debug, Clone)]
struct Shard<V> {
    /// Each key once, in the order keys first came.
    entries: Vec<(Key, V)>,
    /// Each entry's position, by the upper half of its key's hash.
    index: Index,
    hasher: DefaultHashBuilder,
    /// Heap bytes of keys too long to be inline.
    heap_bytes: usize,
}

impl<V> Default for Fold<V> {
    fn default() -> Self {
        Fold {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Shard {
            entries: Vec::new(),
            index: Index::default(),
            hasher: DefaultHashBuilder::default(),
            heap_bytes: 0,
        }
    }
}

/// The shard of a key: its first and last eight bytes mixed, so ids that share a
/// prefix (`wamid.`) or a suffix still spread. Cheap: it runs once per event.
fn shard_of(key: &[u8]) -> usize {
    let word = |bytes: &[u8]| {
        let mut w = [0; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(w)
    };
    let n = key.len().min(8);
    let mixed = word(&key[..n]) ^ word(&key[key.len() - n..]).rotate_left(29);
    (mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SHARDS.trailing_zeros())) as usize
}

/// An event on its way into a fold: its key, where it goes, and what it says.
pub struct Prepared<V> {
    shard: usize,
    half: u32,
    key: Key,
    value: V,
}

impl<V: Observation> Prepared<V> {
    /// Room for an event, which `Fold::prepare` fills.
    pub fn new(event: &crate::callback::Event<'_>) -> Self {
        Prepared {
            shard: 0,
            half: 0,
            key: Key::default(),
            value: V::of(event),
        }
    }
}

/// A key as it comes in: borrowed text (copied into a `Key` if new), or a stored
/// key being merged (moved, never copied).
trait Incoming {
    fn text(&self) -> &str;
    /// Puts the key into `slot`, a new entry's.
    fn store(self, slot: &mut Key);
}

impl Incoming for &str {
    fn text(&self) -> &str {
        self
    }
    fn store(self, slot: &mut Key) {
        slot.set(self)
    }
}

impl Incoming for Key {
    fn text(&self) -> &str {
        self.as_str()
    }
    fn store(self, slot: &mut Key) {
        *slot = self
    }
}

impl<V: Observation> Shard<V> {
    fn hash(&self, key: &str) -> u32 {
        (self.hasher.hash_one(key) >> 32) as u32
    }

    fn find(&self, key: &str) -> Option<usize> {
        let entries = &self.entries;
        let same = |i: u32| key.equivalent(&entries[i as usize].0);
        self.index.find(self.hash(key), same).map(|i| i as usize)
    }

    /// Folds `value` into the key's entry, appending one if the key is new.
    fn upsert(&mut self, key: impl Incoming, value: V) -> bool {
        self.upsert_hashed(self.hash(key.text()), key, value)
    }

    /// `upsert`, with the key's hash already worked out.
    fn upsert_hashed(&mut self, half: u32, key: impl Incoming, value: V) -> bool {
        let entries = &mut self.entries;
        let same = |i: u32| key.text().equivalent(&entries[i as usize].0);
        let new = u32::try_from(entries.len()).expect("under 2^32 messages a shard");
        match self.index.find_or_insert(half, same, new) {
            Some(at) => entries[at as usize].1.absorb(value),
            None => {
                // Room first, so the entry is written in place: pushed with the
                // growth check between, it was staged on the stack and copied,
                // and that copy stalled on its own half-finished stores.
                entries.reserve(1);
                entries.push((Key::default(), value));
                let new = &mut entries.last_mut().expect("just pushed").0;
                key.store(new);
                self.heap_bytes += new.heap_bytes();
                true
            }
        }
    }

    /// Folds `other`'s entries into this shard's. Each key's probe is started early:
    /// its index slot `2 * AHEAD` keys before it is folded, the entry that slot
    /// names `AHEAD` keys before, so the cache misses of many keys overlap. (No room
    /// is reserved first: the two shards mostly hold the same keys.)
    fn merge(&mut self, mut other: Shard<V>) {
        const AHEAD: usize = 8;
        if self.entries.len() < other.entries.len() {
            std::mem::swap(self, &mut other);
        }
        let halves: Vec<u32> = (other.entries.iter())
            .map(|(key, _)| self.hash(key.as_str()))
            .collect();
        for (i, (key, value)) in other.entries.into_iter().enumerate() {
            if let Some(&half) = halves.get(i + 2 * AHEAD) {
                self.index.prefetch(half);
            }
            if let Some(at) = halves.get(i + AHEAD).and_then(|&h| self.index.likely(h)) {
                prefetch(&self.entries[at as usize]);
            }
            self.upsert_hashed(halves[i], key, value);
        }
    }
}

/// Equal when they hold the same keys with the same values, whatever the order.
impl<V: Observation + PartialEq> PartialEq for Shard<V> {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().all(|(k, v)| {
                let theirs = other.find(k.as_str()).map(|i| &other.entries[i].1);
                theirs == Some(v)
            })
    }
}

impl<V: Observation + Eq> Eq for Shard<V> {}

impl Timelines {
    /// Each message's status, read off its timeline (the same rule, derived).
    pub fn statuses(&self) -> Resolution {
        let mut out = Resolution::default();
        for (key, t) in self.iter() {
            out.insert(key, t.resolved());
        }
        out
    }
}

impl<V: Observation> Fold<V> {
    /// Adds one event; returns whether it changed anything (false: a repeat or a loser).
    pub fn add(&mut self, event: &crate::callback::Event<'_>) -> bool {
        self.insert(&event.key, V::of(event))
    }

    pub fn insert(&mut self, key: &str, value: V) -> bool {
        self.shards[shard_of(key.as_bytes())].upsert(key, value)
    }

    /// Makes `event` ready to be added (into `ready`, in place) and starts fetching
    /// the index slot it will probe into the caches. Added a few events later
    /// (`add_prepared`), its probe overlaps with theirs instead of waiting alone
    /// for memory: the index of a large batch does not fit in the caches.
    pub fn prepare(&self, event: &crate::callback::Event<'_>, ready: &mut Prepared<V>) {
        let shard = shard_of(event.key.as_bytes());
        let half = self.shards[shard].hash(&event.key);
        self.shards[shard].index.prefetch(half);
        ready.key.set(&event.key);
        (ready.shard, ready.half, ready.value) = (shard, half, V::of(event));
    }

    /// Starts fetching the entry `ready`'s key most likely has (once `prepare`'s
    /// fetch of its index slot is done), so its probe's comparison does not wait.
    pub fn prefetch_entry(&self, ready: &Prepared<V>) {
        let shard = &self.shards[ready.shard];
        if let Some(at) = shard.index.likely(ready.half) {
            prefetch(&shard.entries[at as usize]);
        }
    }

    /// Adds an event made ready by `prepare` (on this fold; its key is taken).
    pub fn add_prepared(&mut self, ready: &mut Prepared<V>) -> bool {
        let key = std::mem::take(&mut ready.key);
        self.shards[ready.shard].upsert_hashed(ready.half, key, ready.value)
    }

    pub fn merge(&mut self, other: Fold<V>) {
        for (mine, theirs) in self.shards.iter_mut().zip(other.shards) {
            mine.merge(theirs);
        }
    }

    /// What the map holds in memory, at most: its entries' and index's room, and
    /// keys too long to be inline.
    pub fn estimated_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(Key, V)>();
        let shard = |s: &Shard<V>| s.entries.capacity() * entry + s.index.bytes() + s.heap_bytes;
        self.shards.iter().map(shard).sum()
    }

    /// Takes every entry out; the shards keep their room for what comes next.
    pub fn drain(&mut self) -> impl Iterator<Item = (Key, V)> + '_ {
        self.shards.iter_mut().flat_map(|s| {
            s.heap_bytes = 0;
            s.index.clear();
            s.entries.drain(..)
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        let shards = self.shards.iter();
        shards.flat_map(|s| s.entries.iter().map(|(k, v)| (k.as_str(), v)))
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.entries.is_empty())
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        let shard = &self.shards[shard_of(key.as_bytes())];
        shard.find(key).map(|i| &shard.entries[i].1)
    }

    /// Entries sorted by key in byte order, as `write_sorted` orders them.
    pub fn sorted(&self) -> Vec<(&str, V)> {
        let orders: Vec<Order> = self.shards.iter().map(Shard::order).collect();
        let runs = (self.shards.iter().zip(&orders)).map(|(shard, rows)| Run { shard, rows });
        let picks = merged(runs.collect());
        picks.into_iter().map(|(k, v)| (k.as_str(), *v)).collect()
    }
}

/// A shard's rows in key order: each key's first eight bytes (most comparisons
/// end there) and its position among the entries.
type Order = Vec<(u64, u32)>;

/// A shard's sorted rows from one range of keys, being merged with the others'.
struct Run<'s, 'r, V> {
    shard: &'s Shard<V>,
    rows: &'r [(u64, u32)],
}

impl<V> Shard<V> {
    fn key(&self, at: u32) -> &str {
        self.entries[at as usize].0.as_str()
    }

    /// The rows sorted by their first eight bytes alone (no key is read), then
    /// those that share them by the bytes after (`order_from`).
    fn order(&self) -> Order {
        let mut order: Order = (self.entries.iter().enumerate())
            .map(|(i, (k, _))| (prefix(k.as_str()), i as u32))
            .collect();
        self.order_from(&mut order, 0);
        order
    }

    /// Sorts `rows`, whose keys share their first `from` bytes and which hold bytes
    /// `from..from + 8` as numbers (`chunk`), by those numbers; rows that share them
    /// too by the eight bytes after (each key read once, in one pass), and so on.
    /// The numbers are left as they came. Comparing whole keys read two entries from
    /// all over memory per comparison, and ids with a long common start (wamids: the
    /// phone number comes first) needed it for nearly every one.
    fn order_from(&self, rows: &mut [(u64, u32)], from: usize) {
        // Past this, what is still alike is sorted by whole keys: padding and a
        // key's own zero bytes read alike, so eight at a time might never end.
        const DEEPEST: usize = 64;
        rows.sort_unstable_by_key(|&(c, _)| c);
        let next = from + 8;
        for alike in rows.chunk_by_mut(|a, b| a.0 == b.0).filter(|r| r.len() > 1) {
            if next >= DEEPEST {
                alike.sort_unstable_by(|a, b| self.key(a.1).cmp(self.key(b.1)));
                continue;
            }
            let shared = alike[0].0;
            for row in alike.iter_mut() {
                row.0 = chunk(self.key(row.1), next);
            }
            self.order_from(alike, next);
            alike.iter_mut().for_each(|row| row.0 = shared);
        }
    }
}

impl<V> Run<'_, '_, V> {
    /// Whether this run's next row comes before `other`'s (keys are distinct); a
    /// run with no rows left never does.
    fn leads(&self, other: &Run<'_, '_, V>) -> bool {
        let (Some(&(p, i)), Some(&(q, j))) = (self.rows.first(), other.rows.first()) else {
            return !self.rows.is_empty();
        };
        p.cmp(&q)
            .then_with(|| self.shard.key(i).cmp(other.shard.key(j)))
            == std::cmp::Ordering::Less
    }
}

/// The entries of sorted `runs` in one order, picked by a tournament: each node
/// of a binary tree over the runs keeps the loser of the match below it, so a
/// pick replays only its own run's path, log2(runs) comparisons instead of one
/// with every other run (each a whole-key comparison where ids share a start).
fn merged<'s, V>(mut runs: Vec<Run<'s, '_, V>>) -> Vec<&'s (Key, V)> {
    let leaves = runs.len().next_power_of_two();
    // A leaf past the runs is an empty run.
    let leads = |runs: &[Run<'s, '_, V>], a: usize, b: usize| match (runs.get(a), runs.get(b)) {
        (Some(a), Some(b)) => a.leads(b),
        (a, _) => a.is_some_and(|a| !a.rows.is_empty()),
    };
    // Node n's children are 2n and 2n + 1; leaf i is node leaves + i.
    let mut winners: Vec<usize> = (0..2 * leaves).map(|n| n.wrapping_sub(leaves)).collect();
    let mut losers = vec![0; leaves];
    for n in (1..leaves).rev() {
        let (a, b) = (winners[2 * n], winners[2 * n + 1]);
        (winners[n], losers[n]) = if leads(&runs, b, a) { (b, a) } else { (a, b) };
    }
    let mut top = winners[1];
    let total = runs.iter().map(|r| r.rows.len()).sum();
    let mut picks = Vec::with_capacity(total);
    for _ in 0..total {
        let run = &mut runs[top];
        picks.push(&run.shard.entries[run.rows[0].1 as usize]);
        run.rows = &run.rows[1..];
        let mut n = (leaves + top) / 2;
        while n > 0 {
            if leads(&runs, losers[n], top) {
                std::mem::swap(&mut losers[n], &mut top);
            }
            n /= 2;
        }
    }
    picks
}

impl<V: Observation + Sync> Fold<V> {
    /// Writes one `line` per entry, in key order, formatted on `threads` threads.
    pub fn write_sorted(
        &self,
        line: fn(&mut Vec<u8>, &str, &V),
        threads: usize,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        let orders = on_threads(self.shards.iter().collect(), threads, Shard::order);
        // Keys spread over shards by hash, so the largest shard's quantiles cut the
        // whole into ranges of about equal size.
        let ranges = threads.max(1) * 32;
        let (sample, shard) = (orders.iter().zip(&self.shards))
            .max_by_key(|(o, _)| o.len())
            .expect("a fold has shards");
        let cuts: Vec<(u64, &str)> = (1..ranges)
            .filter_map(|r| sample.get(sample.len() * r / ranges))
            .map(|&(p, i)| (p, shard.key(i)))
            .collect();
        let format = |range: usize| {
            let runs = (self.shards.iter().zip(&orders)).map(|(shard, order)| {
                // The first row at or past a cut.
                let start = |cut: Option<&(u64, &str)>| {
                    cut.map_or(order.len(), |&(p, k)| {
                        order.partition_point(|&(q, i)| (q, shard.key(i)) < (p, k))
                    })
                };
                let from = range.checked_sub(1).map_or(0, |c| start(cuts.get(c)));
                let to = start(cuts.get(range));
                Run {
                    shard,
                    rows: &order[from..to.max(from)],
                }
            });
            // First the order, from the small indexes alone; then the text, each
            // entry (from all over memory) fetched a few rows before it is written.
            let picks = merged(runs.collect());
            const AHEAD: usize = 8;
            let mut text = Vec::with_capacity(picks.len() * 128);
            for (i, (key, value)) in picks.iter().enumerate() {
                if let Some(&ahead) = picks.get(i + AHEAD) {
                    prefetch(ahead);
                }
                line(&mut text, key.as_str(), value);
            }
            text
        };
        // Ranges are formatted on `threads` threads, taken in order, while this
        // thread writes the ones done, in order: writing overlaps formatting, and
        // at most a few ranges' text waits in memory.
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel(threads.max(1));
            for _ in 0..threads.max(1) {
                let (tx, next, format) = (tx.clone(), &next, &format);
                s.spawn(move || {
                    loop {
                        let range = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        // A failed write drops the receiver: stop then too.
                        if range >= ranges || tx.send((range, format(range))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let mut done = std::collections::BTreeMap::new();
            let mut due = 0;
            for (range, text) in rx {
                done.insert(range, text);
                while let Some(text) = done.remove(&due) {
                    out.write_all(&text)?;
                    due += 1;
                }
            }
            Ok(())
        })
    }
}

impl<V: Observation + Send> Fold<V> {
    /// Merges `folds` into one, shard by shard, on at most `threads` threads.
    pub fn merge_all(folds: Vec<Fold<V>>, threads: usize) -> Fold<V> {
        let mut columns: Vec<Vec<Shard<V>>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for fold in folds {
            for (column, shard) in columns.iter_mut().zip(fold.shards) {
                column.push(shard);
            }
        }
        let shards = on_threads(columns, threads, |column| {
            let mut shards = column.into_iter();
            let mut first = shards.next().unwrap_or_default();
            shards.for_each(|s| first.merge(s));
            first
        });
        Fold { shards }
    }
}

/// `work(item)` for every item, on at most `threads` threads; results in item order.
fn on_threads<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    // Thread t takes items t, t + threads, …: the shards are of about equal size.
    let mut lanes: Vec<Vec<(usize, T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        lanes[i % threads].push((i, item));
    }
    let work = &work;
    let run = move |lane: Vec<(usize, T)>| -> Vec<(usize, R)> {
        lane.into_iter().map(|(i, t)| (i, work(t))).collect()
    };
    let mut done = std::thread::scope(|s| {
        let mut lanes = lanes.into_iter();
        let first = lanes.next().unwrap_or_default();
        let others: Vec<_> = lanes.map(|lane| s.spawn(move || run(lane))).collect();
        let mut done = run(first);
        for other in others {
            done.extend(other.join().expect("merging never panics"));
        }
        done
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The first eight bytes of `key`, zero-padded, as a number: ordered as the keys are
/// (a shorter key's padding sorts before any byte), so equal prefixes only need
/// the full comparison.
fn prefix(key: &str) -> u64 {
    chunk(key, 0)
}

/// Bytes `from..from + 8` of `key` as `prefix` makes a number of its first eight.
fn chunk(key: &str, from: usize) -> u64 {
    let rest = key.as_bytes().get(from..).unwrap_or_default();
    let mut bytes = [0; 8];
    let n = rest.len().min(8);
    bytes[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(bytes)
}
