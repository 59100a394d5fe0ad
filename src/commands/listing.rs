//! Which objects a run lists and considers: from the watermark its targets
//! recorded (a quiet run lists and reads O(new) names and rows), the whole
//! source once a day (files written late under old names), and, for a
//! backfill split across tasks, the objects whose names hash to this task.
//!
//! Files are remembered for `REMEMBER` after they are done: a daily full
//! listing then takes objects last modified before that as done, so older
//! bookkeeping can be forgotten. Forgetting needs a full listing of the same
//! run that found nothing left undone: otherwise a file written late under an
//! old name and not yet listed could be taken as done.

use chrono::{DateTime, Duration, Utc};

use crate::source::ObjectRef;
use crate::target::Watermark;

/// How often a run lists the whole source.
const FULL_EVERY: Duration = Duration::hours(24);
/// How long a done file is remembered: several full listings, plus slack for
/// clocks and for days the job did not run.
pub const REMEMBER: Duration = Duration::days(7);

/// What one run lists, for all its targets at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The first name listed ("" for all).
    pub start: String,
    /// The whole source is listed (no target has a watermark, or a day passed).
    pub full: bool,
    /// Objects last modified before this count as done (their files may be forgotten).
    pub forgotten_before: Option<DateTime<Utc>>,
}

impl Listing {
    /// Everything: backfills, and sources no watermark covers.
    pub fn everything() -> Listing {
        Listing {
            start: String::new(),
            full: true,
            forgotten_before: None,
        }
    }

    /// From the earliest of the targets' watermarks; whole when any target has
    /// none or its last full listing is a day old.
    pub fn plan(marks: &[Option<&Watermark>], now: DateTime<Utc>) -> Listing {
        let known: Option<Vec<&Watermark>> = marks.iter().copied().collect();
        let Some(known) = known.filter(|k| !k.is_empty()) else {
            return Listing::everything();
        };
        let forgotten_before = known
            .iter()
            .map(|m| m.forgotten_before)
            .collect::<Option<Vec<_>>>()
            .and_then(|t| t.into_iter().min());
        let full = known.iter().any(|m| now - m.full_listed_at >= FULL_EVERY);
        let start = match full {
            true => String::new(),
            false => known
                .iter()
                .map(|m| m.start.clone())
                .min()
                .unwrap_or_default(),
        };
        Listing {
            start,
            full,
            forgotten_before,
        }
    }

    /// An object old enough to have been forgotten counts as done.
    pub fn is_forgotten(&self, o: &ObjectRef) -> bool {
        self.forgotten_before.is_some_and(|t| o.last_modified < t)
    }

    /// The watermark a target records after a run in which every object it
    /// needed was done; None keeps the stored one. The next listing starts at
    /// the greatest name written more than `grace` ago: a receiver writes late
    /// under an earlier name only within that window.
    pub fn next(
        &self,
        stored: Option<&Watermark>,
        listed: &[ObjectRef],
        now: DateTime<Utc>,
        grace: Duration,
    ) -> Option<Watermark> {
        let settled = listed
            .iter()
            .filter(|o| o.last_modified <= now - grace)
            .map(|o| o.name.as_str())
            .max()
            .unwrap_or("");
        let start = stored
            .map(|w| w.start.as_str())
            .unwrap_or("")
            .max(settled)
            .to_owned();
        let next = Watermark {
            start,
            full_listed_at: match (self.full, stored) {
                (false, Some(w)) => w.full_listed_at,
                _ => now,
            },
            // Forgetting is decided on full listings only (see the module's header).
            forgotten_before: match (self.full, stored) {
                (true, _) => Some(now - REMEMBER),
                (false, w) => w.and_then(|w| w.forgotten_before),
            },
        };
        (stored != Some(&next)).then_some(next)
    }
}

/// Task `index` of `count` takes the objects whose names hash to it. FNV-1a:
/// stable across releases and machines, so a rerun of a task takes the same objects.
pub fn is_mine(name: &str, (index, count): (usize, usize)) -> bool {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % count as u64 == index as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Location;

    fn at(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_763_000_000 + h * 3600, 0).unwrap()
    }

    fn object(name: &str, modified: DateTime<Utc>) -> ObjectRef {
        ObjectRef {
            name: name.into(),
            generation: "1".into(),
            size: 1,
            last_modified: modified,
            location: Location::File(name.into()),
        }
    }

    fn mark(start: &str, full: DateTime<Utc>, forgotten: Option<DateTime<Utc>>) -> Watermark {
        Watermark {
            start: start.into(),
            full_listed_at: full,
            forgotten_before: forgotten,
        }
    }

    #[test]
    fn a_target_without_a_watermark_lists_everything() {
        let m = mark("p/2026/11/23", at(0), None);
        assert_eq!(Listing::plan(&[], at(1)), Listing::everything());
        assert_eq!(
            Listing::plan(&[Some(&m), None], at(1)),
            Listing::everything()
        );
    }

    #[test]
    fn the_earliest_watermark_wins_and_a_day_later_the_listing_is_full() {
        let a = mark("p/2026/11/23/10", at(0), Some(at(-200)));
        let b = mark("p/2026/11/23/09", at(0), Some(at(-100)));
        let plan = Listing::plan(&[Some(&a), Some(&b)], at(23));
        assert_eq!(plan.start, "p/2026/11/23/09");
        assert!(!plan.full);
        assert_eq!(plan.forgotten_before, Some(at(-200)));
        let plan = Listing::plan(&[Some(&a), Some(&b)], at(24));
        assert!(plan.full);
        assert_eq!(plan.start, "");
    }

    #[test]
    fn the_next_watermark_stops_before_objects_younger_than_the_grace() {
        let now = at(10);
        let listed = [
            object("p/07/a", at(7)),
            object("p/08/a", at(8)),
            object("p/09/a", at(9)),
        ];
        let plan = Listing::everything();
        let next = plan
            .next(None, &listed, now, Duration::hours(2))
            .expect("a first watermark");
        assert_eq!(next.start, "p/08/a");
        assert_eq!(next.full_listed_at, now);
        assert_eq!(next.forgotten_before, Some(now - REMEMBER));
    }

    #[test]
    fn a_watermark_never_goes_back_and_only_full_listings_forget() {
        let stored = mark("p/09/z", at(0), Some(at(-100)));
        let plan = Listing::plan(&[Some(&stored)], at(10));
        let listed = [object("p/09/z", at(1)), object("p/10/a", at(9))];
        let next = plan.next(Some(&stored), &listed, at(10), Duration::hours(2));
        assert_eq!(next, None, "nothing settled past the stored start");
        let listed = [object("p/10/a", at(7))];
        let next = plan
            .next(Some(&stored), &listed, at(10), Duration::hours(2))
            .unwrap();
        assert_eq!(next.start, "p/10/a");
        assert_eq!(next.full_listed_at, at(0));
        assert_eq!(next.forgotten_before, Some(at(-100)));
    }

    #[test]
    fn forgotten_objects_are_those_modified_before_the_mark() {
        let plan = Listing {
            forgotten_before: Some(at(0)),
            ..Listing::everything()
        };
        assert!(plan.is_forgotten(&object("a", at(-1))));
        assert!(!plan.is_forgotten(&object("a", at(0))));
        assert!(!Listing::everything().is_forgotten(&object("a", at(-1000))));
    }

    #[test]
    fn every_name_goes_to_exactly_one_task_and_the_tasks_share_the_work() {
        let names: Vec<String> = (0..3000).map(|i| format!("p/2026/11/{i}.ndjson")).collect();
        let mut per_task = [0; 3];
        for name in &names {
            let owners: Vec<usize> = (0..3).filter(|&i| is_mine(name, (i, 3))).collect();
            assert_eq!(owners.len(), 1, "{name}");
            per_task[owners[0]] += 1;
        }
        assert!(per_task.iter().all(|&n| n > 800), "{per_task:?}");
    }
}
