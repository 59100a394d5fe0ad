//! The bookkeeping a run reads and writes on BigQuery besides its batches:
//! files done from a name on, and the source's watermark. Each is one
//! single-statement job whose values arrive as query parameters.

use chrono::{DateTime, Utc};
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;

use super::api::Cell;
use super::sql::Names;
use crate::target::{Watermark, schema};

/// Files done whose names are not before `@from`.
pub fn done_files_sql(n: &Names) -> String {
    format!(
        "SELECT object_name, generation, done_by FROM {} WHERE object_name >= @from",
        n.table(schema::FILES.name)
    )
}

pub fn read_sql(n: &Names) -> String {
    format!(
        "SELECT start, CAST(UNIX_MILLIS(full_listed_at) AS STRING), \
         CAST(UNIX_MILLIS(forgotten_before) AS STRING) FROM {} WHERE source = @source",
        n.table(schema::WATERMARKS.name)
    )
}

/// Replaces the source's row (a MERGE: one statement, so parameters bind).
pub fn write_sql(n: &Names) -> String {
    format!(
        "MERGE {} T USING (SELECT @source AS source) S ON T.source = S.source
WHEN MATCHED THEN UPDATE SET start = @start, full_listed_at = TIMESTAMP_MILLIS(@full_listed_at),
  forgotten_before = TIMESTAMP_MILLIS(@forgotten_before), updated_at = TIMESTAMP_MILLIS(@now)
WHEN NOT MATCHED THEN INSERT (source, start, full_listed_at, forgotten_before, updated_at)
  VALUES (@source, @start, TIMESTAMP_MILLIS(@full_listed_at), TIMESTAMP_MILLIS(@forgotten_before),
  TIMESTAMP_MILLIS(@now))",
        n.table(schema::WATERMARKS.name)
    )
}

/// Compaction: the files done before `@before`.
pub fn forget_sql(n: &Names) -> String {
    format!(
        "DELETE FROM {} WHERE processed_at < TIMESTAMP_MILLIS(@before)",
        n.table(schema::FILES.name)
    )
}

pub fn text(name: &str, value: &str) -> QueryParameter {
    param(name, "STRING", Some(value.to_owned()))
}

pub fn millis(name: &str, t: Option<DateTime<Utc>>) -> QueryParameter {
    param(name, "INT64", t.map(|t| t.timestamp_millis().to_string()))
}

fn param(name: &str, kind: &str, value: Cell) -> QueryParameter {
    QueryParameter {
        name: Some(name.to_owned()),
        parameter_type: Some(QueryParameterType {
            r#type: kind.to_owned(),
            ..Default::default()
        }),
        parameter_value: Some(QueryParameterValue {
            value,
            ..Default::default()
        }),
    }
}

/// The parameters of `write_sql`.
pub fn write_params(source: &str, w: &Watermark, now: DateTime<Utc>) -> Vec<QueryParameter> {
    vec![
        text("source", source),
        text("start", &w.start),
        millis("full_listed_at", Some(w.full_listed_at)),
        millis("forgotten_before", w.forgotten_before),
        millis("now", Some(now)),
    ]
}

/// A row of `read_sql`.
pub fn from_row(row: &[Cell]) -> Option<Watermark> {
    let time = |c: &Cell| {
        c.as_deref()
            .and_then(|t| t.parse().ok())
            .and_then(DateTime::from_timestamp_millis)
    };
    match row {
        [Some(start), full, forgotten] => Some(Watermark {
            start: start.clone(),
            full_listed_at: time(full)?,
            forgotten_before: time(forgotten),
        }),
        _ => None,
    }
}
