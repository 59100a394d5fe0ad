//! The production target: `bigquery://PROJECT/DATASET[/TABLE]`.
//!
//! A run stages its batch in per-run tables (DML inserts from query parameters:
//! no streaming buffer, self-expiring), then runs ONE script that folds it into
//! the pending table, MERGEs `messages` under the rank guard within literal
//! partition bounds, and commits the bookkeeping in the same transaction.

mod api;
mod retry;
mod sql;
mod stage;

use std::sync::atomic::Ordering;

use anyhow::{Context, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::warn;

use self::api::Api;
use self::sql::{Bounds, Names, Partitioning, Stage};
use super::schema::{self, Table};
use super::{Applied, Columns, Done, RunContext, Target, ident};
use crate::error::UsageError;
use crate::failpoint;
use crate::pipeline::Batch;

pub use self::api::finished;
pub use self::retry::Failure;

pub struct BigQuery {
    api: Api,
    dataset: String,
    columns: Columns,
    /// How far before the earliest status time the MERGE still reads partitions.
    lookback: chrono::Duration,
}

impl BigQuery {
    /// `rest` is `PROJECT/DATASET[/TABLE]`.
    pub async fn open(
        rest: &str,
        mut columns: Columns,
        credentials: Option<&str>,
        lookback: chrono::Duration,
    ) -> Result<Self> {
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
        let api = Api::connect(project, credentials).await?;
        Ok(BigQuery {
            api,
            dataset: dataset.to_owned(),
            columns,
            lookback,
        })
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
                Some(field) => Partitioning {
                    column: field.to_owned(),
                    kind: type_of(field).unwrap_or_else(|| "DATETIME".into()),
                },
                None => Partitioning {
                    column: "_PARTITIONTIME".into(),
                    kind: "TIMESTAMP".into(),
                },
            }
        });
        Ok(Names {
            project: self.api.project.clone(),
            dataset: self.dataset.clone(),
            messages: c.table.clone(),
            key: c.key.clone(),
            status: c.status.clone(),
            errors: type_of(&c.errors).map(|_| c.errors.clone()),
            partitioning,
        })
    }

    /// The lower partition bound: the earliest status time among the keys the
    /// MERGE will carry, less the lookback. None when there is nothing to merge.
    async fn lower_bound(
        &self,
        names: &Names,
        batch: &Batch,
        run_id: &str,
    ) -> Result<Option<DateTime<Utc>>> {
        names
            .partitioning
            .as_ref()
            .context("only for partitioned tables")?;
        let done = self
            .api
            .run(
                &format!("{run_id}_bounds"),
                &sql::min_pending_sql(names),
                vec![],
            )
            .await?;
        let stored = number(&self.api.rows(&done).await?, 0);
        let batch_min = batch.resolution.iter().map(|(_, r)| r.at_ms).min();
        let earliest = [stored, batch_min].into_iter().flatten().min();
        Ok(earliest
            .and_then(DateTime::from_timestamp_millis)
            .map(|t| t - self.lookback))
    }
}

#[async_trait]
impl Target for BigQuery {
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
        for table in [schema::PENDING, schema::FILES, schema::DEAD_LETTERS] {
            self.api
                .create_table(self.table_json(table.name, serde_json::from_str(table.json)?))
                .await?;
        }
        Ok(())
    }

    async fn done(&self) -> Result<Done> {
        let names = self.names().await?;
        let run = format!("bsp_done_{}", uuid::Uuid::new_v4().simple());
        let done = self
            .api
            .run(&run, &sql::done_files_sql(&names), vec![])
            .await?;
        let rows = self.api.rows(&done).await?;
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

    async fn apply(&self, batch: &Batch, ctx: &RunContext) -> Result<Applied> {
        let names = self.names().await?;
        let cutoff = ctx.now - ctx.pending_ttl;
        let run = format!(
            "bsp_{}",
            ctx.run_id
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        if batch.files.is_empty() && batch.resolution.is_empty() && batch.dead_letters.is_empty() {
            // Nothing new: the MERGE (the run's cost) is needed only for keys still
            // waiting for a row, or to expire old ones.
            let check = sql::idle_check_sql(&names, cutoff);
            let done = self.api.run(&format!("{run}_idle"), &check, vec![]).await?;
            let rows = self.api.rows(&done).await?;
            if number(&rows, 0).unwrap_or(0) == 0 && number(&rows, 1).unwrap_or(0) == 0 {
                return Ok(Applied {
                    bytes_processed: done.bytes_processed,
                    ..Applied::default()
                });
            }
        }
        let stage = Stage {
            pending: format!("{run}_stage_pending"),
            dead_letters: format!("{run}_stage_dead_letters"),
            files: format!("{run}_stage_files"),
        };
        let bytes_before = self.api.bytes_processed.load(Ordering::Relaxed);
        stage::write(&self.api, self, &stage, batch, ctx.now).await?;
        failpoint::hit("after-stage");

        let from = match names.partitioning {
            Some(_) => self.lower_bound(&names, batch, &run).await?,
            None => None,
        };
        let script = |bounds| {
            sql::run_script(
                &names,
                &stage,
                &ctx.run_id,
                &ctx.label,
                ctx.now,
                cutoff,
                bounds,
            )
        };
        let first = script(Bounds { from, before: None });
        let done = match self.api.run(&format!("{run}_merge"), &first, vec![]).await {
            Err(f) if f.is_streaming_buffer() && names.partitioning.is_some() => {
                // Leave rows that may still be in the streaming buffer for a later run:
                // their keys stay pending. A day covers the buffer in any time zone.
                warn!(error = %f, "rows in the streaming buffer; updating older rows only, the rest stay pending");
                let before = Some(ctx.now - chrono::Duration::days(1));
                let script = script(Bounds { from, before });
                self.api
                    .run(&format!("{run}_merge_sb"), &script, vec![])
                    .await?
            }
            other => other?,
        };
        failpoint::hit("after-merge");
        let bytes = self.api.bytes_processed.load(Ordering::Relaxed) - bytes_before;
        let rows = self.api.rows(&done).await?;
        let count = |i| number(&rows, i).unwrap_or(0);
        Ok(Applied {
            rows_updated: count(0),
            expired: count(1),
            pending: count(2),
            bytes_processed: bytes,
        })
    }
}

/// A number in the first result row, at `column` (None for NULL or no row).
fn number<T: std::str::FromStr>(rows: &[Vec<api::Cell>], column: usize) -> Option<T> {
    rows.first()?.get(column)?.as_deref()?.parse().ok()
}

/// A staging table's REST representation: all columns NULLABLE, gone after a day.
fn staging_table(
    bq: &BigQuery,
    name: &str,
    table: Table,
    keep: &[&str],
    now: DateTime<Utc>,
) -> Value {
    let fields: Vec<Value> = table
        .fields()
        .into_iter()
        .filter(|f| keep.contains(&f.name.as_str()))
        .map(|f| json!({ "name": f.name, "type": f.kind, "mode": "NULLABLE" }))
        .collect();
    let mut t = bq.table_json(name, Value::Array(fields));
    t["expirationTime"] = (now + chrono::Duration::days(1))
        .timestamp_millis()
        .to_string()
        .into();
    t
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
