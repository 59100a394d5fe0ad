//! Which partitions of `messages` a run's MERGE reads, from the keys it merges.
//!
//! A MERGE with an UPDATE clause is billed for every column of every partition
//! it reads, so the bounds are per key, not one range from the oldest time:
//! - a key whose row was found (matched) remembers that row's partition value
//!   (`partition_at`), and reads exactly that partition;
//! - a key still without a row reads from its status time less the lookback
//!   (a message's row is written before its statuses) to a day after it (the
//!   partition column holds local times, at most 14 hours ahead of UTC).
//!
//! The spans are merged and go into the SQL as literals, OR-ed: one odd old
//! time adds its own few partitions, not everything since. A backfill chunk's
//! spans end where its keys do.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

use super::sql::{Names, Stage, timestamp};
use crate::target::schema;

/// How `messages` is partitioned (`timePartitioning.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unit {
    Hour,
    #[default]
    Day,
    Month,
    Year,
}

impl Unit {
    pub fn from_type(kind: &str) -> Unit {
        match kind {
            "HOUR" => Unit::Hour,
            "MONTH" => Unit::Month,
            "YEAR" => Unit::Year,
            _ => Unit::Day,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Unit::Hour => "HOUR",
            Unit::Day => "DAY",
            Unit::Month => "MONTH",
            Unit::Year => "YEAR",
        }
    }

    /// The start of the partition holding `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap();
        match self {
            Unit::Hour => at(t.year(), t.month(), t.day(), t.hour()),
            Unit::Day => at(t.year(), t.month(), t.day(), 0),
            Unit::Month => at(t.year(), t.month(), 1, 0),
            Unit::Year => at(t.year(), 1, 1, 0),
        }
    }

    /// The start of the partition after the one holding `t`.
    pub fn next(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.floor(t);
        match self {
            Unit::Hour => start + Duration::hours(1),
            Unit::Day => start + Duration::days(1),
            Unit::Month => self.floor(start + Duration::days(32)),
            Unit::Year => self.floor(start + Duration::days(366)),
        }
    }

    /// `t` if a partition starts there, else the next partition's start.
    fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        if self.floor(t) == t { t } else { self.next(t) }
    }
}

/// Partitions `[from, before)`, as the partition column's UTC wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub before: DateTime<Utc>,
}

/// What the candidates query saw: a matched key's partition (its start), or
/// an unmatched key's status time (the hour it falls in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Partition(DateTime<Utc>),
    Status(DateTime<Utc>),
}

/// How far after its status time an unmatched key's row may lie on the
/// partition column's clock (local times run up to 14 hours ahead of UTC).
const AHEAD: Duration = Duration::days(1);

/// The partitions to read, merged, sorted.
pub fn spans(seen: impl IntoIterator<Item = Seen>, unit: Unit, lookback: Duration) -> Vec<Span> {
    let mut spans: Vec<Span> = seen
        .into_iter()
        .map(|s| match s {
            Seen::Partition(p) => Span {
                from: unit.floor(p),
                before: unit.next(p),
            },
            Seen::Status(hour) => Span {
                from: unit.floor(hour - lookback),
                before: unit.ceil(hour + Duration::hours(1) + AHEAD),
            },
        })
        .collect();
    spans.sort_by_key(|s| s.from);
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.from <= last.before => last.before = last.before.max(s.before),
            _ => merged.push(s),
        }
    }
    merged
}

/// How many partitions the spans hold.
pub fn partitions(spans: &[Span], unit: Unit) -> usize {
    spans
        .iter()
        .map(|s| {
            let mut n = 0;
            let mut t = s.from;
            while t < s.before {
                n += 1;
                t = unit.next(t);
            }
            n
        })
        .sum()
}

/// For the log: `2025-10-01..2025-12-01` per span (end exclusive).
pub fn describe(spans: &[Span]) -> String {
    let day = |t: DateTime<Utc>| {
        if t.hour() == 0 {
            t.format("%Y-%m-%d").to_string()
        } else {
            t.format("%Y-%m-%dT%H").to_string()
        }
    };
    spans
        .iter()
        .map(|s| format!("{}..{}", day(s.from), day(s.before)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Unmatched keys first seen more than this long ago are looked for once per
/// clock hour, not on every run.
pub const FRESH: Duration = Duration::days(1);

/// SQL predicate over pending row `P`: the key is looked for by this run: it
/// was matched (its row's later copies), is fresh, or was not tried yet in
/// this clock hour.
pub fn due_sql(now: DateTime<Utc>) -> String {
    format!(
        "(P.matched_at IS NOT NULL OR P.first_seen_at >= {} OR P.last_tried_at IS NULL OR P.last_tried_at < {})",
        timestamp(now - FRESH),
        timestamp(Unit::Hour.floor(now))
    )
}

/// The keys this run merges, the staged and the due pending ones, grouped by
/// what bounds them: (matched, partition start or status hour in epoch ms, keys).
pub fn candidates_sql(n: &Names, stage: &Stage, now: DateTime<Utc>) -> String {
    let pending = n.table(schema::PENDING.name);
    let unit = n.unit.sql();
    format!(
        "SELECT matched, UNIX_MILLIS(at), COUNT(*) FROM (
  SELECT P.partition_at IS NOT NULL AS matched,
    IF(P.partition_at IS NOT NULL, TIMESTAMP_TRUNC(P.partition_at, {unit}),
      TIMESTAMP_TRUNC(LEAST(COALESCE(P.status_at, S.status_at), COALESCE(S.status_at, P.status_at)), HOUR)) AS at
  FROM {pending} P FULL OUTER JOIN {staged} S ON P.bsp_message_id = S.bsp_message_id
  WHERE S.bsp_message_id IS NOT NULL OR {due}
) GROUP BY matched, at",
        staged = stage.pending,
        due = due_sql(now),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn span(from: &str, before: &str) -> Span {
        Span {
            from: t(from),
            before: t(before),
        }
    }

    const MONTH_LOOKBACK: Duration = Duration::days(31);

    #[test]
    fn a_matched_key_reads_its_rows_partition_only() {
        let s = spans(
            [Seen::Partition(t("2025-03-01T00:00:00Z"))],
            Unit::Month,
            MONTH_LOOKBACK,
        );
        assert_eq!(s, [span("2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z")]);
        assert_eq!(partitions(&s, Unit::Month), 1);
        let s = spans(
            [Seen::Partition(t("2025-03-07T00:00:00Z"))],
            Unit::Day,
            MONTH_LOOKBACK,
        );
        assert_eq!(s, [span("2025-03-07T00:00:00Z", "2025-03-08T00:00:00Z")]);
    }

    #[test]
    fn an_unmatched_key_reads_the_lookback_before_and_a_day_after_its_status() {
        let s = spans(
            [Seen::Status(t("2025-11-22T01:00:00Z"))],
            Unit::Month,
            MONTH_LOOKBACK,
        );
        assert_eq!(s, [span("2025-10-01T00:00:00Z", "2025-12-01T00:00:00Z")]);
        let s = spans(
            [Seen::Status(t("2025-11-22T01:00:00Z"))],
            Unit::Day,
            Duration::days(2),
        );
        assert_eq!(s, [span("2025-11-20T00:00:00Z", "2025-11-24T00:00:00Z")]);
    }

    #[test]
    fn one_odd_old_time_adds_its_own_partitions_not_everything_since() {
        let s = spans(
            [
                Seen::Status(t("2025-11-22T01:00:00Z")),
                Seen::Partition(t("2025-11-01T00:00:00Z")),
                Seen::Status(t("2011-05-10T00:00:00Z")),
            ],
            Unit::Month,
            MONTH_LOOKBACK,
        );
        assert_eq!(
            s,
            [
                span("2011-04-01T00:00:00Z", "2011-06-01T00:00:00Z"),
                span("2025-10-01T00:00:00Z", "2025-12-01T00:00:00Z"),
            ]
        );
        assert_eq!(partitions(&s, Unit::Month), 4);
        assert_eq!(
            describe(&s),
            "2011-04-01..2011-06-01, 2025-10-01..2025-12-01"
        );
    }

    #[test]
    fn a_backfill_chunk_ends_where_its_keys_do() {
        // Statuses of January 2025, read in November: nothing after February.
        let s = spans(
            [
                Seen::Status(t("2025-01-05T00:00:00Z")),
                Seen::Status(t("2025-01-31T23:00:00Z")),
            ],
            Unit::Month,
            MONTH_LOOKBACK,
        );
        assert_eq!(s, [span("2024-12-01T00:00:00Z", "2025-03-01T00:00:00Z")]);
    }

    #[test]
    fn units_step_over_month_and_year_ends() {
        assert_eq!(
            Unit::Month.next(t("2025-01-31T10:00:00Z")),
            t("2025-02-01T00:00:00Z")
        );
        assert_eq!(
            Unit::Month.next(t("2025-12-15T00:00:00Z")),
            t("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            Unit::Year.next(t("2024-12-31T23:00:00Z")),
            t("2025-01-01T00:00:00Z")
        );
        assert_eq!(
            Unit::Hour.floor(t("2024-12-31T23:59:59Z")),
            t("2024-12-31T23:00:00Z")
        );
    }

    #[test]
    fn keys_not_fresh_are_due_once_per_clock_hour() {
        let due = due_sql(t("2025-11-22T10:15:00Z"));
        assert!(
            due.contains("P.first_seen_at >= TIMESTAMP '2025-11-21 10:15:00.000+00'"),
            "{due}"
        );
        assert!(
            due.contains("P.last_tried_at < TIMESTAMP '2025-11-22 10:00:00.000+00'"),
            "{due}"
        );
    }
}
