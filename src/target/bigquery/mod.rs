//! The production target: `bigquery://PROJECT/DATASET[/TABLE]`.
//!
//! A run stages its batch by load jobs in per-run tables of the job's own
//! staging dataset (free, no streaming buffer, self-expiring), then runs ONE
//! script that folds it into the pending table, MERGEs `messages` under the
//! rank guard within literal partition bounds, and commits the bookkeeping in
//! the same transaction.

mod api;
mod auth;
mod bounds;
mod migrate;
mod raw;
mod retry;
mod runs;
mod sql;
mod stage;
mod watermark;

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::{info, warn};

use self::api::Api;
use self::sql::{Bounds, Names, Reach, Script, TimeColumn};
use super::schema;
use super::views::{DELIVERY_DAILY, Dialect as ViewDialect, ViewNames, delivery_daily_sql};
use super::{
    Applied, Columns, DoneFiles, Health, Options, RunContext, RunRecord, Target, Watermark, ident,
};
use crate::batch::Batch;
use crate::error::{Step, UsageError};
use crate::failpoint;
use crate::resolve::{Timeline, Timelines};

pub use self::retry::Failure;

pub struct BigQuery {
    api: Api,
    dataset: String,
    columns: Columns,
    /// How far before the earliest status time the MERGE still reads partitions.
    lookback: chrono::Duration,
    /// The write-time column of streamed rows, and the zone of its local times.
    streamed_at: String,
    timezone: chrono_tz::Tz,
    /// Batches applied so far by this process (backfill chunks): part of every job id.
    applies: AtomicU32,
}

impl BigQuery {
    /// `rest` is `PROJECT/DATASET[/TABLE]`.
    pub async fn open(rest: &str, mut columns: Columns, options: &Options) -> Result<Self> {
        let parts: Vec<&str> = rest.split('/').collect();
        let (project, dataset) = match parts[..] {
            [p, d] | [p, d, _] if !p.is_empty() => (p, d),
            _ => {
                return Err(UsageError::new(format!(
                    "target bigquery://{rest}: expected bigquery://PROJECT/DATASET[/TABLE]"
                ))
                .into());
            }
        };
        if let [_, _, table] = parts[..] {
            columns.table = ident(table)?.to_owned();
        }
        let project_ok = project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.'));
        if !project_ok {
            return Err(UsageError::new(format!("{project:?} is not a valid project id")).into());
        }
        ident(dataset)?;
        let mut api = Api::connect(project, options.credentials.as_deref()).await?;
        api.max_bytes_billed = options.max_bytes_billed;
        match api.locate(dataset).await {
            Err(Failure::Http { code: 404, .. }) => {
                return Err(UsageError::new(format!(
                    "bigquery://{project}/{dataset}: the dataset does not exist; create it first"
                ))
                .into());
            }
            located => located?,
        }
        Ok(BigQuery {
            api,
            dataset: dataset.to_owned(),
            columns,
            lookback: options.lookback,
            streamed_at: options.streamed_at.clone(),
            timezone: options.timezone,
            applies: AtomicU32::new(0),
        })
    }

    /// Job ids are unique in the project forever: the dataset (organizations may
    /// share a project), the run and the chunk name each batch's jobs; a step
    /// suffix names each job.
    fn job_prefix(&self, run_id: &str) -> String {
        let chunk = self.applies.fetch_add(1, Ordering::Relaxed);
        let run = run_id.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        format!("bsp_{}_{run}_{chunk}", self.dataset)
    }

    fn describe(&self, table: &str) -> String {
        format!("bigquery://{}/{}/{table}", self.api.project, self.dataset)
    }

    /// The REST representation of a table from one of our schemas.
    fn table_json(&self, name: &str, fields: Value) -> Value {
        json!({
            "tableReference": { "projectId": self.api.project, "datasetId": self.dataset, "tableId": name },
            "schema": { "fields": fields },
        })
    }

    /// What the script needs to know of `messages`, read from its metadata.
    async fn names(&self) -> Result<Names> {
        let c = &self.columns;
        let meta = self
            .api
            .table(&self.dataset, &c.table)
            .await?
            .ok_or_else(|| {
                UsageError::new(format!(
                    "{} does not exist; run init",
                    self.describe(&c.table)
                ))
            })?;
        let fields = meta["schema"]["fields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let type_of = |name: &str| {
            fields
                .iter()
                .find(|f| same_name(f, name))
                .and_then(|f| f["type"].as_str())
                .map(str::to_owned)
        };
        for needed in [&c.key, &c.status] {
            if type_of(needed).is_none() {
                return Err(UsageError::new(format!(
                    "{} has no column {needed}; run init",
                    self.describe(&c.table)
                ))
                .into());
            }
        }
        let partitioning = meta["timePartitioning"].as_object().map(|p| {
            match p.get("field").and_then(Value::as_str) {
                Some(field) => TimeColumn {
                    column: field.to_owned(),
                    kind: type_of(field).unwrap_or_else(|| "DATETIME".into()),
                },
                None => TimeColumn {
                    column: "_PARTITIONTIME".into(),
                    kind: "TIMESTAMP".into(),
                },
            }
        });
        let streamed = type_of(&self.streamed_at)
            .filter(|kind| matches!(kind.as_str(), "DATETIME" | "TIMESTAMP" | "DATE"))
            .map(|kind| TimeColumn {
                column: self.streamed_at.clone(),
                kind,
            });
        let unit =
            bounds::Unit::from_type(meta["timePartitioning"]["type"].as_str().unwrap_or("DAY"));
        Ok(Names {
            unit,
            project: self.api.project.clone(),
            dataset: self.dataset.clone(),
            messages: c.table.clone(),
            key: c.key.clone(),
            status: c.status.clone(),
            errors: type_of(&c.errors).map(|_| c.errors.clone()),
            partitioning,
            streamed,
        })
    }

    /// The rows of one read of the job's own tables, under a fresh job id.
    async fn read(
        &self,
        what: &str,
        sql: &str,
        params: Vec<gcp_bigquery_client::model::query_parameter::QueryParameter>,
    ) -> Result<Vec<Vec<api::Cell>>> {
        let id = format!(
            "bsp_{}_{what}_{}",
            self.dataset,
            uuid::Uuid::new_v4().simple()
        );
        let done = self.api.run(&id, sql, params).await?;
        Ok(self.api.rows(&done).await?)
    }

    /// The job's staging dataset, beside the organization's and in its location;
    /// its tables expire by default. One made beforehand (by an administrator:
    /// the job then needs no right to create datasets) is only checked.
    async fn create_staging(&self) -> Result<()> {
        let name = stage::staging_dataset(&self.dataset);
        let here = self.api.location().unwrap_or("US");
        if let Some(there) = self.api.dataset_location(&name).await? {
            if !there.eq_ignore_ascii_case(here) {
                return Err(UsageError::new(format!(
                    "bigquery://{}/{name} is in {there}, the dataset in {here}: a run's script reads both, so they must share a location",
                    self.api.project
                ))
                .into());
            }
            return Ok(());
        }
        let dataset = json!({
            "datasetReference": { "projectId": self.api.project, "datasetId": name },
            "location": self.api.location(),
            "defaultTableExpirationMs": stage::EXPIRY.num_milliseconds().to_string(),
            "description": "bsp-status-loader: staged batches of its runs; every table expires after a day",
        });
        match self.api.create_dataset(&dataset).await {
            Err(Failure::Http { code: 403, .. }) => Err(UsageError::new(format!(
                "bigquery://{}/{name}: the job may not create its staging dataset; create it in {} (README, IAM)",
                self.api.project,
                self.api.location().unwrap_or("the dataset's location")
            ))
            .into()),
            created => Ok(created?),
        }
    }

    /// Rows within the bounds that carry a key, and rows written in the future.
    async fn rows_check(
        &self,
        names: &Names,
        bounds: &Bounds,
        now: DateTime<Utc>,
        run: &str,
    ) -> Result<(u64, u64)> {
        let sql = sql::rows_check_sql(names, bounds, now, self.timezone);
        let done = self.api.run(&format!("{run}_rows"), &sql, vec![]).await?;
        let rows = self.api.rows(&done).await?;
        Ok((number(&rows, 0).unwrap_or(0), number(&rows, 1).unwrap_or(0)))
    }

    /// The partitions the MERGE reads (`bounds`), from the keys it merges, and
    /// how many keys it merges.
    async fn bounds(
        &self,
        names: &Names,
        stage: &sql::Stage,
        now: DateTime<Utc>,
        run: &str,
    ) -> Result<(Bounds, u64)> {
        let sql = bounds::candidates_sql(names, stage, now);
        let done = self.api.run(&format!("{run}_bounds"), &sql, vec![]).await?;
        let rows = self.api.rows(&done).await?;
        let mut keys = 0;
        let mut seen = vec![];
        for row in &rows {
            let cell = |i: usize| row.get(i).cloned().flatten();
            let at = cell(1)
                .and_then(|ms| ms.parse().ok())
                .and_then(DateTime::from_timestamp_millis);
            keys += cell(2).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            match (cell(0).as_deref(), at) {
                (Some("true"), Some(at)) => seen.push(bounds::Seen::Partition(at)),
                (_, Some(at)) => seen.push(bounds::Seen::Status(at)),
                _ => {}
            }
        }
        if names.partitioning.is_none() {
            return Ok((Bounds::default(), keys));
        }
        let spans = bounds::spans(seen, names.unit, self.lookback);
        info!(
            keys,
            partitions = bounds::partitions(&spans, names.unit),
            spans = bounds::describe(&spans),
            "the MERGE reads these partitions of {}",
            names.messages
        );
        Ok((Bounds { spans }, keys))
    }
}

/// How long after a message's first report a later one still finds its timeline
/// row through the MERGE's partition bound (later ones start a second row, which
/// `report` and the view fold by key).
const TIMELINE_REACH: chrono::Duration = chrono::Duration::days(180);

/// Rows streamed this recently may still be in BigQuery's streaming buffer.
const STREAMING_BUFFER: chrono::Duration = chrono::Duration::minutes(90);

#[async_trait]
impl Target for BigQuery {
    async fn create_views(&self, tz: chrono_tz::Tz) -> Result<()> {
        let names = self.names().await?;
        let view_names = ViewNames {
            messages: &names.messages,
            key: &names.key,
            streamed_at: names.streamed.as_ref().map(|c| c.column.as_str()),
        };
        let dialect = ViewDialect::BigQuery {
            project: &self.api.project,
            dataset: &self.dataset,
        };
        let mut view = self.table_json(DELIVERY_DAILY, Value::Array(vec![]));
        view.as_object_mut().expect("an object").remove("schema");
        view["view"] = json!({
            "query": delivery_daily_sql(dialect, &view_names, tz),
            "useLegacySql": false,
        });
        // Created if missing, then given this release's query either way.
        self.api.create_table(view.clone()).await?;
        self.api
            .patch_table(&self.dataset, DELIVERY_DAILY, view)
            .await?;
        Ok(())
    }

    async fn timelines(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<Timelines> {
        let names = self.names().await?;
        let job = format!(
            "bsp_{}_report_{}",
            self.dataset,
            uuid::Uuid::new_v4().simple()
        );
        let done = self
            .api
            .run(&job, &sql::timelines_sql(&names, from, until), vec![])
            .await?;
        let mut out = Timelines::default();
        for row in self.api.rows(&done).await? {
            if let Some((key, t)) = timeline_of(&row) {
                out.insert(key, t);
            }
        }
        Ok(out)
    }

    async fn init(&self, create_messages: bool) -> Result<()> {
        let c = &self.columns;
        let messages = self.api.table(&self.dataset, &c.table).await?;
        let messages = match messages {
            Some(m) => m,
            None if create_messages => {
                let mut t = self.table_json(&c.table, serde_json::from_str(schema::MESSAGES.json)?);
                t["timePartitioning"] = json!({ "type": "MONTH", "field": "inserted_at" });
                self.api.create_table(t).await?;
                self.api
                    .table(&self.dataset, &c.table)
                    .await?
                    .context("the table just created")?
            }
            None => {
                return Err(UsageError::new(format!(
                    "{} does not exist (or the dataset does not); create it, or pass --create-messages",
                    self.describe(&c.table)
                ))
                .into());
            }
        };
        let mut fields = messages["schema"]["fields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let missing: Vec<&String> = [&c.key, &c.status]
            .into_iter()
            .filter(|n| !fields.iter().any(|f| same_name(f, n)))
            .collect();
        if !missing.is_empty() {
            fields.extend(
                missing
                    .iter()
                    .map(|n| json!({ "name": n, "type": "STRING", "mode": "NULLABLE" })),
            );
            self.api
                .patch_table(
                    &self.dataset,
                    &c.table,
                    self.table_json(&c.table, Value::Array(fields)),
                )
                .await?;
        }
        // Tables made by earlier releases (or missing: the runs table came later)
        // are brought to this release's shape.
        for table in [
            schema::PENDING,
            schema::FILES,
            schema::DEAD_LETTERS,
            schema::RUNS,
            schema::WATERMARKS,
        ] {
            match self.api.table(&self.dataset, table.name).await? {
                None => {
                    let json = self.table_json(table.name, serde_json::from_str(table.json)?);
                    self.api.create_table(json).await?;
                }
                Some(meta) => migrate::upgrade(&self.api, &self.dataset, table, &meta).await?,
            }
        }
        self.create_staging().await?;
        // The timeline is read by first-report time (reports) and by key (the MERGE).
        let mut timeline = self.table_json(
            schema::TIMELINE.name,
            serde_json::from_str(schema::TIMELINE.json)?,
        );
        timeline["timePartitioning"] = json!({ "type": "MONTH", "field": "first_at" });
        timeline["clustering"] = json!({ "fields": ["bsp_message_id"] });
        self.api.create_table(timeline).await?;
        Ok(())
    }

    async fn done(&self, from: &str) -> Result<DoneFiles> {
        let names = self.names().await?;
        let rows = self
            .read(
                "done",
                &watermark::done_files_sql(&names),
                vec![watermark::text("from", from)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match &r[..] {
                [Some(name), Some(generation), Some(label)] => {
                    Some(((name.clone(), generation.clone()), label.clone()))
                }
                _ => None,
            })
            .collect())
    }

    async fn watermark(&self, source: &str) -> Result<Option<Watermark>> {
        let names = self.names().await?;
        let rows = self
            .read(
                "watermark",
                &watermark::read_sql(&names),
                vec![watermark::text("source", source)],
            )
            .await?;
        Ok(rows.first().and_then(|r| watermark::from_row(r)))
    }

    async fn set_watermark(&self, source: &str, w: &Watermark, now: DateTime<Utc>) -> Result<()> {
        let names = self.names().await?;
        let run = format!(
            "bsp_{}_watermark_{}",
            self.dataset,
            uuid::Uuid::new_v4().simple()
        );
        let params = watermark::write_params(source, w, now);
        self.api
            .run(&format!("{run}_set"), &watermark::write_sql(&names), params)
            .await?;
        if let Some(before) = w.forgotten_before {
            let params = vec![watermark::millis("before", Some(before))];
            self.api
                .run(
                    &format!("{run}_forget"),
                    &watermark::forget_sql(&names),
                    params,
                )
                .await?;
        }
        Ok(())
    }

    async fn apply(&self, batch: &Batch, ctx: &RunContext) -> Result<Applied> {
        let names = self.names().await?;
        let cutoff = ctx.now - ctx.pending_ttl;
        let run = self.job_prefix(&ctx.run_id);
        if batch.files.is_empty() && batch.resolution.is_empty() && batch.dead_letters.is_empty() {
            // Nothing new: the MERGE (the run's cost) is needed only for keys still
            // waiting for a row, or to expire old ones.
            let check = sql::idle_check_sql(&names, ctx.now, cutoff);
            let done = self.api.run(&format!("{run}_idle"), &check, vec![]).await?;
            let rows = self.api.rows(&done).await?;
            if number(&rows, 0).unwrap_or(0) == 0 && number(&rows, 1).unwrap_or(0) == 0 {
                return Ok(Applied {
                    pending: number(&rows, 2).unwrap_or(0),
                    bytes_processed: done.bytes_processed,
                    ..Applied::default()
                });
            }
        }
        let staged = stage::Tables::new(&self.dataset, &run);
        let bytes_before = self.api.bytes_processed.load(Ordering::Relaxed);
        stage::write(&self.api, &staged, batch, ctx.now)
            .await
            .context(Step::Staging)?;
        let stage = staged.sources(&self.api.project);
        failpoint::hit("after-stage");

        let (bounds, keys) = self.bounds(&names, &stage, ctx.now, &run).await?;
        let (keyed, future) = match keys {
            0 => (0, 0),
            _ => self.rows_check(&names, &bounds, ctx.now, &run).await?,
        };
        if future > 0 {
            warn!(
                rows = future,
                column = self.streamed_at,
                timezone = %self.timezone,
                "rows of messages were written in the future: is the time zone the organization's?"
            );
        }
        let reach = Reach {
            bounds,
            settled_before: Some(ctx.now - STREAMING_BUFFER),
            messages: keyed > 0,
            timeline_from: batch
                .timelines
                .iter()
                .map(|(_, t)| t.first_at())
                .min()
                .and_then(DateTime::from_timestamp_millis)
                .map(|t| t - TIMELINE_REACH),
        };
        let script = |reach: &Reach| Script {
            stage: &stage,
            run_id: &ctx.run_id,
            label: &ctx.label,
            now: ctx.now,
            cutoff,
            reach: reach.clone(),
            tz: self.timezone,
        };
        let merge = sql::run_script(&names, &script(&reach));
        let done = match self.api.run(&format!("{run}_merge"), &merge, vec![]).await {
            Err(f) if f.is_streaming_buffer() => {
                // No write-time column (or a wrong zone) let the MERGE reach the
                // buffer: keep the batch pending and the books; a later run retries.
                warn!(error = %f, "BigQuery refused the MERGE for rows in the streaming buffer; the keys stay pending for a later run (is --streamed-at-column right?)");
                let books = sql::run_script(
                    &names,
                    &script(&Reach {
                        messages: false,
                        ..reach.clone()
                    }),
                );
                self.api
                    .run(&format!("{run}_books"), &books, vec![])
                    .await?
            }
            other => other?,
        };
        failpoint::hit("after-merge");
        let bytes = self.api.bytes_processed.load(Ordering::Relaxed) - bytes_before;
        let rows = self.api.rows(&done).await?;
        let count = |i| number(&rows, i).unwrap_or(0);
        if keys > 0 && keyed == 0 && count(2) > 0 {
            warn!(
                keys_waiting = count(2),
                column = names.key,
                "no row of {} within the MERGE's bounds has a {}: the MERGE was skipped; whoever streams messages must fill it (README, \"The key column\")",
                self.describe(&names.messages),
                names.key
            );
        }
        Ok(Applied {
            rows_updated: count(0),
            expired: count(1),
            pending: count(2),
            bytes_processed: bytes,
        })
    }

    async fn record_run(&self, r: &RunRecord) -> Result<()> {
        let (sql, params) = runs::insert(&self.api.project, &self.dataset, r);
        let job = format!("{}_record", self.job_prefix(&r.run_id));
        self.api.run(&job, &sql, params).await?;
        Ok(())
    }

    async fn health(&self, now: DateTime<Utc>) -> Result<Health> {
        let sql = super::health::health_sql(&runs::dialect(&self.api.project, &self.dataset), now);
        let id = format!("status_{}", uuid::Uuid::new_v4().simple());
        let job = format!("{}_status", self.job_prefix(&id));
        let done = self.api.run(&job, &sql, vec![]).await?;
        let mut health = Health::from_rows(&self.api.rows(&done).await?)?;
        health.bytes_processed = done.bytes_processed;
        Ok(health)
    }
}

/// A timeline row read back: key, seven times in epoch ms, error code.
fn timeline_of(row: &[api::Cell]) -> Option<(&str, Timeline)> {
    let number = |i: usize| row.get(i)?.as_deref()?.parse::<i64>().ok();
    let times = std::array::from_fn(|i| number(i + 1));
    Some((
        row.first()?.as_deref()?,
        Timeline::from_parts(times, number(8))?,
    ))
}

/// A number in the first result row, at `column` (None for NULL or no row).
fn number<T: std::str::FromStr>(rows: &[Vec<api::Cell>], column: usize) -> Option<T> {
    rows.first()?.get(column)?.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests;

/// Whether a schema field is the column `name`: BigQuery column names are
/// case-insensitive.
fn same_name(field: &Value, name: &str) -> bool {
    field["name"]
        .as_str()
        .is_some_and(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod name_tests {
    #[test]
    fn column_names_match_whatever_their_case() {
        let field = serde_json::json!({ "name": "bsp_status", "type": "STRING" });
        assert!(super::same_name(&field, "Bsp_Status"));
        assert!(!super::same_name(&field, "bsp_statuses"));
    }
}
