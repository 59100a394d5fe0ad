//! Where resolutions go: one trait, a backend per store, chosen by URL.
//! `sqlite://PATH` (embedded) and `bigquery://PROJECT/DATASET[/TABLE]` (production).

pub mod bigquery;
pub mod health;
mod order;
pub mod schema;
mod sqlite;
pub mod views;

use std::collections::HashMap;

use anyhow::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::batch::Batch;
use crate::error::UsageError;
use crate::resolve::{Resolved, TIMELINE_FIELDS, Timeline, Timelines, format_ms};
use crate::status::STATUSES;
use crate::status::Status;

pub use health::{Health, RunRecord};
pub use sqlite::Sqlite;

/// Names of the `messages` table and its columns (configurable, checked as identifiers).
#[derive(Debug, Clone)]
pub struct Columns {
    /// The messages table itself.
    pub table: String,
    pub key: String,
    pub status: String,
    /// Written with a JSON note when the status becomes `error`, if the table has it.
    pub errors: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            table: "messages".into(),
            key: "bsp_message_id".into(),
            status: "bsp_status".into(),
            errors: "errors".into(),
        }
    }
}

/// Finished objects: (name, generation) → the label of the run or backfill that did them.
pub type DoneFiles = HashMap<(String, String), String>;

/// Where a source's next listing resumes, kept by each target for its own
/// files, so that a quiet run lists and reads O(new) names and rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The next listing starts at this name: every object before it was done.
    pub start: String,
    /// When a run last listed the whole source.
    pub full_listed_at: DateTime<Utc>,
    /// Files done before this are forgotten: objects last modified before it
    /// count as done.
    pub forgotten_before: Option<DateTime<Utc>>,
}

/// What one run hands a target besides the batch.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: String,
    /// Recorded with finished files: the run id, or a backfill's window, so an
    /// interrupted backfill can skip what it already did.
    pub label: String,
    /// Start of the run: pending keys are stamped with it and expire relative to it.
    pub now: DateTime<Utc>,
    pub pending_ttl: chrono::Duration,
}

/// What applying a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub rows_updated: u64,
    /// Keys still without a messages row.
    pub pending: u64,
    /// Pending keys whose time-to-live ended this run (dead-lettered).
    pub expired: u64,
    pub bytes_processed: u64,
}

impl std::ops::AddAssign for Applied {
    fn add_assign(&mut self, o: Applied) {
        self.rows_updated += o.rows_updated;
        self.pending += o.pending;
        self.expired += o.expired;
        self.bytes_processed += o.bytes_processed;
    }
}

#[async_trait]
pub trait Target: Send + Sync {
    /// Creates the job's own tables and adds the key column; `create_messages`
    /// also creates a `messages` table when there is none. Safe to repeat.
    async fn init(&self, create_messages: bool) -> Result<()>;

    /// Objects already done whose names are not before `from` ("" for all), as
    /// (name, generation), with the label that did them.
    async fn done(&self, from: &str) -> Result<DoneFiles>;

    /// The watermark of `source`, if a run recorded one.
    async fn watermark(&self, source: &str) -> Result<Option<Watermark>>;

    /// Records the watermark of `source` after a successful run, and forgets
    /// the files done before its `forgotten_before`.
    async fn set_watermark(&self, source: &str, w: &Watermark, now: DateTime<Utc>) -> Result<()>;

    /// Folds the batch into the pending keys, updates `messages` under the rank
    /// guard, expires old keys, keeps dead letters and marks the batch's files
    /// done — all or nothing.
    async fn apply(&self, batch: &Batch, ctx: &RunContext) -> Result<Applied>;

    /// Creates (or replaces) the dashboards' view, its local days in `tz`.
    async fn create_views(&self, tz: chrono_tz::Tz) -> Result<()>;

    /// The timelines of messages first reported in `[from, until)`, folded by key.
    async fn timelines(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<Timelines>;

    /// Records one run in the runs table, outside any run's transaction (so a
    /// failed run is recorded too).
    async fn record_run(&self, run: &RunRecord) -> Result<()>;

    /// The job's health as of `now`, read from its own tables only.
    async fn health(&self, now: DateTime<Utc>) -> Result<Health>;
}

/// Settings only some targets use.
#[derive(Debug, Clone)]
pub struct Options {
    /// A service-account key file (BigQuery); else Application Default Credentials.
    pub credentials: Option<String>,
    /// How far before the earliest status time a partitioned MERGE reads.
    pub lookback: chrono::Duration,
    /// The messages table's write-time column (BigQuery's streaming buffer).
    pub streamed_at: String,
    /// The zone that column's local times are in.
    pub timezone: chrono_tz::Tz,
    /// BigQuery: `maximumBytesBilled` of every query job (None: no cap).
    pub max_bytes_billed: Option<u64>,
}

/// Opens the target a URL names.
pub async fn open(url: &str, columns: Columns, options: &Options) -> Result<Box<dyn Target>> {
    for name in [
        &columns.table,
        &columns.key,
        &columns.status,
        &columns.errors,
        &options.streamed_at,
    ] {
        ident(name)?;
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(UsageError::new("target sqlite:// needs a file path").into());
        }
        crate::error::require_folder_of(std::path::Path::new(path), "sqlite target")?;
        return Ok(Box::new(Sqlite::open(path, columns)?));
    }
    if let Some(rest) = url.strip_prefix("bigquery://") {
        let bq = bigquery::BigQuery::open(rest, columns, options).await?;
        return Ok(Box::new(bq));
    }
    Err(UsageError::new(format!(
        "target {url:?}: use sqlite://PATH or bigquery://PROJECT/DATASET[/TABLE]"
    ))
    .into())
}

/// A table or column name we are willing to put into SQL text.
pub fn ident(name: &str) -> Result<&str> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 300;
    if ok {
        Ok(name)
    } else {
        Err(UsageError::new(format!(
            "{name:?} is not a valid table or column name (letters, digits, underscores)"
        ))
        .into())
    }
}

/// One timeline as the timeline table holds it: times as `format_ms` text.
pub struct TimelineRow<'a> {
    pub key: &'a str,
    pub first_at: String,
    /// The seven status times, in `TIMELINE_FIELDS` order.
    pub times: [Option<String>; 7],
    pub error_code: Option<i64>,
}

impl<'a> TimelineRow<'a> {
    pub fn new(key: &'a str, t: &Timeline) -> Self {
        let times = STATUSES.map(|(_, _, s)| t.at(s).map(format_ms));
        TimelineRow {
            key,
            first_at: format_ms(t.first_at()),
            times,
            error_code: t.error_code(),
        }
    }
}

/// The SET list that folds row `new` into row `old` of the timeline table, each
/// field kept at its minimum; `least` is the store's two-argument minimum. The
/// error code follows the earliest failure (ties: the smallest code).
pub fn timeline_fold_sql(old: &str, new: &str, least: &str) -> String {
    let min = |c: &str| {
        format!("{c} = {least}(COALESCE({old}.{c}, {new}.{c}), COALESCE({new}.{c}, {old}.{c}))")
    };
    let mut sets: Vec<String> = TIMELINE_FIELDS.iter().map(|c| min(c)).collect();
    sets.push(min("first_at"));
    sets.push(format!(
        "error_code = CASE WHEN {new}.error_at IS NULL THEN {old}.error_code \
         WHEN {old}.error_at IS NULL OR {new}.error_at < {old}.error_at THEN {new}.error_code \
         WHEN {new}.error_at > {old}.error_at THEN {old}.error_code \
         ELSE {least}(COALESCE({old}.error_code, {new}.error_code), COALESCE({new}.error_code, {old}.error_code)) END"
    ));
    sets.join(", ")
}

/// One resolution as the pending table holds it.
pub struct StagedRow<'a> {
    pub key: &'a str,
    pub status: &'static str,
    pub status_at: String,
    pub code: Option<i64>,
    /// The JSON note written to the `errors` column when a message becomes `error`.
    pub errors_note: Option<String>,
}

impl<'a> StagedRow<'a> {
    pub fn new(key: &'a str, r: &Resolved) -> Self {
        let status_at = r.status_at();
        let errors_note = (r.status == Status::Error).then(|| {
            serde_json::json!({ "code": r.code, "status_at": status_at, "source": "bsp-status-loader" })
                .to_string()
        });
        StagedRow {
            key,
            status: r.status.written(),
            status_at,
            code: r.code,
            errors_note,
        }
    }
}
