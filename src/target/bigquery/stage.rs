//! Staging a run's batch: per-run tables filled by INSERTs whose rows arrive as
//! one ARRAY<STRUCT> query parameter (no streaming buffer, no value in SQL text),
//! chunked to stay under BigQuery's request size limit.

use anyhow::Result;
use chrono::{DateTime, Utc};
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_type_struct_types::QueryParameterTypeStructTypes;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;

use super::api::{Api, Cell};
use super::sql::Stage;
use super::{BigQuery, staging_table};
use crate::batch::Batch;
use crate::status::STATUSES;
use crate::target::{StagedRow, schema};

/// The staged columns of the dead letters and the files read.
const DEAD: [&str; 4] = ["file", "line", "reason", "raw"];
const FILES: [&str; 2] = ["object_name", "generation"];

/// Request bodies stay well under BigQuery's 10 MB.
const CHUNK_BYTES: usize = 4 << 20;
/// Longer raw dead-letter texts are cut (SQLite keeps them whole).
const MAX_RAW_BYTES: usize = 1 << 20;

/// A staged column: its name, the parameter's type and how the INSERT reads it.
pub(super) struct Column {
    pub name: String,
    pub kind: &'static str,
    pub select: String,
}

/// The columns `names` of `table` as its schema types them, read from `source`
/// (`r.` for a staged row's fields, `@` for scalar parameters). Times travel as
/// epoch milliseconds.
pub(super) fn columns(table: schema::Table, names: &[&str], source: &str) -> Vec<Column> {
    let fields = table.fields();
    names
        .iter()
        .map(|name| {
            let field = fields
                .iter()
                .find(|f| f.name == *name)
                .unwrap_or_else(|| panic!("{} has a column {name}", table.name));
            let value = format!("{source}{name}");
            let (kind, select) = match field.kind.as_str() {
                "TIMESTAMP" => ("INT64", format!("TIMESTAMP_MILLIS({value})")),
                "INTEGER" | "INT64" => ("INT64", value),
                _ => ("STRING", value),
            };
            Column {
                name: (*name).to_owned(),
                kind,
                select,
            }
        })
        .collect()
}

/// A table's staged columns: the named ones, or all.
fn staged(table: schema::Table, names: Option<&[&str]>) -> Vec<Column> {
    let all = table.field_names();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    columns(table, names.unwrap_or(&all), "r.")
}

/// Creates and fills the three staging tables.
pub async fn write(
    api: &Api,
    bq: &BigQuery,
    stage: &Stage,
    batch: &Batch,
    now: DateTime<Utc>,
) -> Result<()> {
    let pending = batch.resolution.iter().map(|(k, r)| {
        let row = StagedRow::new(k, r);
        let at_ms = r.at_ms.to_string();
        vec![
            Some(row.key.to_owned()),
            Some(row.status.to_owned()),
            Some(at_ms),
            row.code.map(|c| c.to_string()),
            row.errors_note,
        ]
    });
    let dead = batch.dead_letters.iter().map(|d| {
        let mut raw = d.raw.clone();
        if raw.len() > MAX_RAW_BYTES {
            let cut = (0..=MAX_RAW_BYTES)
                .rev()
                .find(|&i| raw.is_char_boundary(i))
                .unwrap_or(0);
            raw.truncate(cut);
        }
        vec![
            Some(d.file.clone()),
            Some(d.line.to_string()),
            Some(d.reason.to_owned()),
            Some(raw),
        ]
    });
    let files = batch
        .files
        .iter()
        .map(|f| vec![Some(f.name.clone()), Some(f.generation.clone())]);
    let timelines = batch.timelines.iter().map(|(k, t)| {
        let mut row = vec![Some(k.to_owned()), Some(t.first_at().to_string())];
        row.extend(STATUSES.map(|(_, _, s)| t.at(s).map(|ms| ms.to_string())));
        row.push(t.error_code().map(|c| c.to_string()));
        row
    });
    fill(
        api,
        bq,
        &stage.timeline,
        schema::TIMELINE,
        &staged(schema::TIMELINE, None),
        timelines,
        now,
    )
    .await?;

    fill(
        api,
        bq,
        &stage.pending,
        schema::PENDING,
        &staged(
            schema::PENDING,
            Some(&[
                "bsp_message_id",
                "bsp_status",
                "status_at",
                "error_code",
                "errors_note",
            ]),
        ),
        pending,
        now,
    )
    .await?;
    fill(
        api,
        bq,
        &stage.dead_letters,
        schema::DEAD_LETTERS,
        &staged(schema::DEAD_LETTERS, Some(&DEAD)),
        dead,
        now,
    )
    .await?;
    let file_columns = staged(schema::FILES, Some(&FILES));
    fill(
        api,
        bq,
        &stage.files,
        schema::FILES,
        &file_columns,
        files,
        now,
    )
    .await
}

async fn fill(
    api: &Api,
    bq: &BigQuery,
    table: &str,
    schema: schema::Table,
    columns: &[Column],
    rows: impl Iterator<Item = Vec<Cell>>,
    now: DateTime<Utc>,
) -> Result<()> {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    api.create_table(staging_table(bq, table, schema, &names, now))
        .await?;
    let sql = format!(
        "INSERT INTO `{}.{}.{table}` ({}) SELECT {} FROM UNNEST(@rows) AS r",
        api.project,
        bq.dataset,
        names.join(", "),
        columns
            .iter()
            .map(|c| c.select.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, chunk) in chunks(columns, rows).into_iter().enumerate() {
        api.run(
            &format!("{table}_{i}"),
            &sql,
            vec![rows_parameter(columns, chunk)],
        )
        .await?;
    }
    Ok(())
}

/// Groups rows into chunks of at most `CHUNK_BYTES` of parameter values.
fn chunks(
    columns: &[Column],
    rows: impl Iterator<Item = Vec<Cell>>,
) -> Vec<Vec<QueryParameterValue>> {
    let mut out = vec![];
    let mut current = vec![];
    let mut size = 0;
    for row in rows {
        let values = columns
            .iter()
            .zip(row)
            .map(|(c, value)| {
                let value = QueryParameterValue {
                    value,
                    ..Default::default()
                };
                (c.name.to_owned(), value)
            })
            .collect();
        let value = QueryParameterValue {
            struct_values: Some(values),
            ..Default::default()
        };
        let len = serde_json::to_vec(&value).map_or(0, |v| v.len());
        if size + len > CHUNK_BYTES && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(value);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The rows as one `ARRAY<STRUCT<…>>` query parameter named `rows`.
fn rows_parameter(columns: &[Column], values: Vec<QueryParameterValue>) -> QueryParameter {
    let scalar = |kind: &str| QueryParameterType {
        r#type: kind.to_owned(),
        ..Default::default()
    };
    let fields = columns
        .iter()
        .map(|c| QueryParameterTypeStructTypes {
            name: Some(c.name.to_owned()),
            r#type: Some(scalar(c.kind)),
            description: None,
        })
        .collect();
    let row = QueryParameterType {
        struct_types: Some(fields),
        ..scalar("STRUCT")
    };
    QueryParameter {
        name: Some("rows".into()),
        parameter_type: Some(QueryParameterType {
            array_type: Some(Box::new(row)),
            ..scalar("ARRAY")
        }),
        parameter_value: Some(QueryParameterValue {
            array_values: Some(values),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_chunked_under_the_request_limit_and_none_is_lost() {
        let row = |i: usize| {
            vec![
                Some(format!("file-{i}")),
                Some("1".into()),
                Some("r".into()),
                Some("x".repeat(100_000)),
            ]
        };
        let dead = staged(schema::DEAD_LETTERS, Some(&DEAD));
        let chunks = chunks(&dead, (0..100).map(row));
        assert!(chunks.len() >= 3);
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 100);
        for c in &chunks {
            let text = serde_json::to_string(&rows_parameter(&dead, c.clone())).unwrap();
            assert!(text.len() < 5 << 20);
        }
    }

    #[test]
    fn the_parameter_is_an_array_of_structs_with_nulls() {
        let p = serde_json::to_value(rows_parameter(
            &staged(schema::FILES, Some(&FILES)),
            chunks(
                &staged(schema::FILES, Some(&FILES)),
                std::iter::once(vec![Some("a".into()), None]),
            )
            .remove(0),
        ))
        .unwrap();
        assert_eq!(
            p["parameterType"]["arrayType"]["structTypes"][1]["name"],
            "generation"
        );
        assert_eq!(
            p["parameterValue"]["arrayValues"][0]["structValues"]["object_name"]["value"],
            "a"
        );
        assert!(
            p["parameterValue"]["arrayValues"][0]["structValues"]["generation"]["value"].is_null()
        );
    }
}
