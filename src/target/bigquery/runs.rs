//! The runs table and the status query on BigQuery: recording a run is one
//! small DML INSERT whose values all arrive as query parameters.

use chrono_tz::Tz;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;

use super::api::Cell;
use super::sql::literal_in;
use super::stage::columns;
use crate::target::health::{Dialect, RunRecord};
use crate::target::schema;

/// The INSERT of one run into `project.dataset`'s runs table, and its parameters.
pub fn insert(project: &str, dataset: &str, r: &RunRecord) -> (String, Vec<QueryParameter>) {
    let n = |v: u64| Some(v.to_string());
    let values: [Cell; 12] = [
        Some(r.run_id.clone()),
        n(r.started_at.timestamp_millis() as u64),
        n(r.ended_at.timestamp_millis() as u64),
        Some(r.outcome.to_owned()),
        r.failed_step.map(str::to_owned),
        r.backlog.and_then(n),
        n(r.files),
        n(r.lines),
        n(r.dead_lettered),
        n(r.rows_updated),
        n(r.pending),
        n(r.bytes_processed),
    ];
    let names = schema::RUNS.field_names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let run = columns(schema::RUNS, &names, "@");
    let sql = format!(
        "INSERT INTO `{project}.{dataset}.{}` ({}) VALUES ({})",
        schema::RUNS.name,
        names.join(", "),
        run.iter()
            .map(|c| c.select.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    let params = run
        .iter()
        .zip(values)
        .map(|(c, value)| QueryParameter {
            name: Some(c.name.clone()),
            parameter_type: Some(QueryParameterType {
                r#type: c.kind.to_owned(),
                ..Default::default()
            }),
            parameter_value: Some(QueryParameterValue {
                value,
                ..Default::default()
            }),
        })
        .collect();
    (sql, params)
}

/// How the status query names tables and times on BigQuery.
pub fn dialect(project: &str, dataset: &str) -> Dialect {
    let prefix = format!("{project}.{dataset}");
    Dialect {
        table: Box::new(move |name| format!("`{prefix}.{name}`")),
        time: |t| literal_in("TIMESTAMP", t, Tz::UTC),
        // Milliseconds (read back as text by `Health::from_rows`): the emulator
        // knows no `%E3S`.
        time_text: |c| format!("CAST(UNIX_MILLIS({c}) AS STRING)"),
        text: "STRING",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_run_goes_in_as_parameters_only() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let r = RunRecord {
            run_id: "r'1".into(),
            started_at: t,
            ended_at: t,
            outcome: "failed",
            failed_step: Some("merge"),
            backlog: None,
            files: 2,
            lines: 3,
            dead_lettered: 0,
            rows_updated: 0,
            pending: 1,
            bytes_processed: 9,
        };
        let (sql, params) = insert("p", "d", &r);
        let params = serde_json::to_value(params).unwrap();
        assert!(!sql.contains("r'1") && !sql.contains("merge"), "{sql}");
        assert_eq!(params.as_array().unwrap().len(), 12);
        assert_eq!(params[0]["parameterValue"]["value"], "r'1");
        assert!(
            params[5]["parameterValue"]["value"].is_null(),
            "backlog NULL"
        );
        assert_eq!(params[1]["parameterValue"]["value"], "1767323045000");
    }
}
