//! How a target is doing, from the job's own tables only: the runs it recorded,
//! the files it finished, the keys still pending and the dead letters. One query
//! whose text both stores share but for a few dialect words.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::schema;
use crate::batch::Reason;
use crate::resolve::format_ms;

/// One run as the runs table keeps it; written outside the run's transaction,
/// so failed runs are recorded too.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// `success` or `failed`.
    pub outcome: &'static str,
    pub failed_step: Option<&'static str>,
    /// Objects listed but not done for this target when the run ended.
    pub backlog: Option<u64>,
    pub files: u64,
    pub lines: u64,
    pub dead_lettered: u64,
    pub rows_updated: u64,
    pub pending: u64,
    pub bytes_processed: u64,
}

impl RunRecord {
    /// Times as the SQLite target stores TIMESTAMP columns (fixed-width UTC text).
    pub fn times(&self) -> (String, String) {
        (
            format_ms(self.started_at.timestamp_millis()),
            format_ms(self.ended_at.timestamp_millis()),
        )
    }
}

/// A run read back from the runs table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastRun {
    pub run_id: String,
    pub started_at: String,
    pub ended_at: String,
    pub outcome: String,
    pub failed_step: Option<String>,
    pub backlog: Option<u64>,
    pub bytes_processed: u64,
}

impl LastRun {
    pub fn ended(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.ended_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Keys still without a messages row, by when they were first seen
/// (cumulative: a key under an hour old is also under a day old).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PendingAges {
    pub total: u64,
    pub under_1h: u64,
    pub under_1d: u64,
    pub under_7d: u64,
}

/// What the status query finds in a target.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Health {
    pub last_run: Option<LastRun>,
    pub last_success: Option<LastRun>,
    pub files_24h: u64,
    pub pending: PendingAges,
    /// Dead letters recorded in the last 24 hours, by reason (expired keys included).
    pub dead_letters_24h: BTreeMap<String, u64>,
    /// What the query itself cost (BigQuery; 0 on SQLite).
    pub bytes_processed: u64,
}

impl Health {
    /// Keys whose time-to-live ended in the last 24 hours.
    pub fn expired_24h(&self) -> u64 {
        self.dead_letters_24h
            .get(Reason::PendingExpired.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// Reads the rows of `health_sql`: (kind, name, six values), all as text.
    pub fn from_rows(rows: &[Vec<Option<String>>]) -> Result<Health> {
        let mut h = Health::default();
        for row in rows {
            let cell = |i: usize| row.get(i).cloned().flatten();
            let time = |i: usize| {
                cell(i).map(|v| match v.parse::<i64>() {
                    Ok(ms) => format_ms(ms),
                    Err(_) => v,
                })
            };
            let num = |i: usize| -> Result<u64> {
                cell(i).map_or(Ok(0), |v| v.parse().context("a count in the status query"))
            };
            match cell(0).as_deref() {
                Some("pending") => {
                    h.pending = PendingAges {
                        total: num(2)?,
                        under_1h: num(3)?,
                        under_1d: num(4)?,
                        under_7d: num(5)?,
                    }
                }
                Some("files") => h.files_24h = num(2)?,
                Some("dead") => {
                    h.dead_letters_24h
                        .insert(cell(1).unwrap_or_default(), num(2)?);
                }
                Some(kind @ ("last_run" | "last_success")) => {
                    let run = LastRun {
                        run_id: cell(1).unwrap_or_default(),
                        started_at: time(2).unwrap_or_default(),
                        ended_at: time(3).unwrap_or_default(),
                        outcome: cell(4).unwrap_or_default(),
                        failed_step: cell(5),
                        backlog: cell(6).map(|v| v.parse()).transpose()?,
                        bytes_processed: num(7)?,
                    };
                    match kind {
                        "last_run" => h.last_run = Some(run),
                        _ => h.last_success = Some(run),
                    }
                }
                other => anyhow::bail!("unexpected row {other:?} in the status query"),
            }
        }
        Ok(h)
    }
}

/// The few words in which the stores' SQL differs.
pub struct Dialect {
    /// A table's name as the SQL text writes it.
    pub table: Box<dyn Fn(&str) -> String + Send + Sync>,
    /// A time literal of our own (never a callback value).
    pub time: fn(DateTime<Utc>) -> String,
    /// A TIMESTAMP column as `YYYY-MM-DDTHH:MM:SS.mmmZ` text, or as epoch
    /// milliseconds (digits), which `Health::from_rows` turns into that text.
    pub time_text: fn(&str) -> String,
    /// The text type's name.
    pub text: &'static str,
}

/// The status query: rows of (kind, name, c2 … c7), every value as text.
pub fn health_sql(d: &Dialect, now: DateTime<Utc>) -> String {
    let t = d.text;
    let count = |cond: &str| format!("CAST(COUNT(CASE WHEN {cond} THEN 1 END) AS {t})");
    let null = format!("CAST(NULL AS {t})");
    let since = |hours: i64| (d.time)(now - chrono::Duration::hours(hours));
    let runs = (d.table)(schema::RUNS.name);
    let run_row = |kind: &str, filter: &str| {
        format!(
            "SELECT '{kind}', run_id, {}, {}, outcome, failed_step, CAST(backlog AS {t}), \
             CAST(bytes_processed AS {t}) FROM (SELECT * FROM {runs}{filter} \
             ORDER BY ended_at DESC, run_id DESC LIMIT 1)",
            (d.time_text)("started_at"),
            (d.time_text)("ended_at"),
        )
    };
    [
        format!(
            "SELECT 'pending', {null}, CAST(COUNT(*) AS {t}), {}, {}, {}, {null}, {null} \
             FROM {} WHERE matched_at IS NULL",
            count(&format!("first_seen_at >= {}", since(1))),
            count(&format!("first_seen_at >= {}", since(24))),
            count(&format!("first_seen_at >= {}", since(24 * 7))),
            (d.table)(schema::PENDING.name),
        ),
        format!(
            "SELECT 'files', {null}, CAST(COUNT(*) AS {t}), {null}, {null}, {null}, {null}, {null} \
             FROM {} WHERE processed_at >= {}",
            (d.table)(schema::FILES.name),
            since(24)
        ),
        format!(
            "SELECT 'dead', reason, CAST(COUNT(*) AS {t}), {null}, {null}, {null}, {null}, {null} \
             FROM {} WHERE recorded_at >= {} GROUP BY reason",
            (d.table)(schema::DEAD_LETTERS.name),
            since(24)
        ),
        run_row("last_run", ""),
        run_row("last_success", " WHERE outcome = 'success'"),
    ]
    .join("\nUNION ALL ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[Option<&str>]) -> Vec<Option<String>> {
        cells.iter().map(|c| c.map(str::to_owned)).collect()
    }

    #[test]
    fn rows_are_read_back_by_kind() {
        let rows = [
            row(&[
                Some("pending"),
                None,
                Some("9"),
                Some("1"),
                Some("4"),
                Some("9"),
            ]),
            row(&[Some("files"), None, Some("3")]),
            row(&[Some("dead"), Some("not JSON"), Some("2")]),
            row(&[
                Some("dead"),
                Some(Reason::PendingExpired.as_str()),
                Some("5"),
            ]),
            row(&[
                Some("last_success"),
                Some("r1"),
                Some("2026-01-01T00:00:00.000Z"),
                Some("1767225660000"),
                Some("success"),
                None,
                Some("0"),
                Some("10"),
            ]),
        ];
        let h = Health::from_rows(&rows).unwrap();
        assert_eq!(h.pending.under_1d, 4);
        assert_eq!(h.files_24h, 3);
        assert_eq!(h.expired_24h(), 5);
        assert_eq!(h.dead_letters_24h["not JSON"], 2);
        let ok = h.last_success.unwrap();
        assert_eq!(ok.backlog, Some(0));
        assert_eq!(ok.ended().unwrap().timestamp(), 1_767_225_660);
        assert_eq!(
            ok.ended_at, "2026-01-01T00:01:00.000Z",
            "milliseconds become text"
        );
        assert!(h.last_run.is_none());
        assert!(Health::from_rows(&[row(&[Some("what")])]).is_err());
    }
}
