//! Staging a run's batch: NDJSON load jobs (free of charge, atomic, no
//! streaming buffer, a few hundred MB each) into per-run tables of the job's
//! own staging dataset, which expire after a day. Nothing is created in the
//! organization's dataset; the run's script reads the staged tables.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::api::{Api, Cell};
use crate::batch::Batch;
use crate::status::STATUSES;
use crate::target::{StagedRow, schema};

/// The job's own dataset beside the organization's `dataset`: same project,
/// same location, every table in it expires.
pub fn staging_dataset(dataset: &str) -> String {
    format!("{dataset}_bsp_staging")
}

/// Tables in it expire this long after they are made (the dataset's default
/// too, in case a run dies between creating and naming one).
pub const EXPIRY: chrono::Duration = chrono::Duration::days(1);

/// The staged columns of each table.
const PENDING: [&str; 5] = [
    "bsp_message_id",
    "bsp_status",
    "status_at",
    "error_code",
    "errors_note",
];
const DEAD: [&str; 4] = ["file", "line", "reason", "raw"];
const FILES: [&str; 2] = ["object_name", "generation"];

/// NDJSON per load job: few jobs for millions of rows, well under the
/// emulator's 1 GiB per upload (BigQuery takes far more).
const PART_BYTES: usize = 256 << 20;
/// Longer raw dead-letter texts are cut (SQLite keeps them whole).
const MAX_RAW_BYTES: usize = 1 << 20;

/// One run's staging tables, by table id in the staging dataset.
#[derive(Debug, Clone)]
pub struct Tables {
    pub dataset: String,
    pub pending: String,
    pub timeline: String,
    pub dead_letters: String,
    pub files: String,
}

impl Tables {
    /// The tables of the run whose job ids start with `run`.
    pub fn new(dataset: &str, run: &str) -> Tables {
        Tables {
            dataset: staging_dataset(dataset),
            pending: format!("{run}_stage_pending"),
            timeline: format!("{run}_stage_timeline"),
            dead_letters: format!("{run}_stage_dead_letters"),
            files: format!("{run}_stage_files"),
        }
    }

    /// How the script reads them: with times back as TIMESTAMPs.
    pub fn sources(&self, project: &str) -> super::sql::Stage {
        let read = |table: &str, schema: schema::Table, names: &[&str]| {
            let cols = columns(schema, names, "");
            let select: Vec<String> = cols
                .iter()
                .map(|c| format!("{} AS {}", c.select, c.name))
                .collect();
            format!(
                "(SELECT {} FROM `{project}.{}.{table}`)",
                select.join(", "),
                self.dataset
            )
        };
        let timeline = schema::TIMELINE.field_names();
        let timeline: Vec<&str> = timeline.iter().map(String::as_str).collect();
        super::sql::Stage {
            pending: read(&self.pending, schema::PENDING, &PENDING),
            timeline: read(&self.timeline, schema::TIMELINE, &timeline),
            dead_letters: format!("`{project}.{}.{}`", self.dataset, self.dead_letters),
            files: format!("`{project}.{}.{}`", self.dataset, self.files),
        }
    }
}

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

/// Creates the staging tables and fills each by load jobs.
pub async fn write(api: &Api, t: &Tables, batch: &Batch, now: DateTime<Utc>) -> Result<()> {
    let pending = batch.resolution.iter().map(|(k, r)| {
        let row = StagedRow::new(k, r);
        vec![
            Some(row.key.to_owned()),
            Some(row.status.to_owned()),
            Some(r.at_ms.to_string()),
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
    let timeline = schema::TIMELINE.field_names();
    let timeline: Vec<&str> = timeline.iter().map(String::as_str).collect();
    let fill = |table: &str, schema, names: &[&str]| Fill {
        api,
        dataset: &t.dataset,
        table: table.to_owned(),
        columns: columns(schema, names, ""),
        now,
    };
    fill(&t.timeline, schema::TIMELINE, &timeline)
        .run(timelines)
        .await?;
    fill(&t.pending, schema::PENDING, &PENDING)
        .run(pending)
        .await?;
    fill(&t.dead_letters, schema::DEAD_LETTERS, &DEAD)
        .run(dead)
        .await?;
    fill(&t.files, schema::FILES, &FILES).run(files).await
}

/// One staging table to create and load.
struct Fill<'a> {
    api: &'a Api,
    dataset: &'a str,
    table: String,
    columns: Vec<Column>,
    now: DateTime<Utc>,
}

impl Fill<'_> {
    /// Creates the table (empty ones need no load job) and loads its rows in
    /// parts; each part's job id is the table's name and the part's number.
    async fn run(self, rows: impl Iterator<Item = Vec<Cell>>) -> Result<()> {
        self.api.create_table(self.resource()).await?;
        for (i, part) in parts(&self.columns, rows).into_iter().enumerate() {
            let job = format!("{}_{i}", self.table);
            self.api
                .load(&job, self.dataset, &self.table, &part)
                .await?;
        }
        Ok(())
    }

    /// The table's REST representation: all columns NULLABLE, gone after a day.
    fn resource(&self) -> Value {
        let fields: Vec<Value> = self
            .columns
            .iter()
            .map(|c| json!({ "name": c.name, "type": c.kind, "mode": "NULLABLE" }))
            .collect();
        json!({
            "tableReference": { "projectId": self.api.project, "datasetId": self.dataset, "tableId": self.table },
            "schema": { "fields": fields },
            "expirationTime": (self.now + EXPIRY).timestamp_millis().to_string(),
        })
    }
}

/// Rows as NDJSON, in parts of at most `PART_BYTES` (a longer row alone).
fn parts(columns: &[Column], rows: impl Iterator<Item = Vec<Cell>>) -> Vec<Vec<u8>> {
    let mut out = vec![];
    let mut current: Vec<u8> = vec![];
    for row in rows {
        let line = ndjson_line(columns, row);
        if current.len() + line.len() > PART_BYTES && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(&line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// One row as a JSON object and a newline; INT64 cells as numbers, NULLs left out.
fn ndjson_line(columns: &[Column], row: Vec<Cell>) -> Vec<u8> {
    let object: serde_json::Map<String, Value> = columns
        .iter()
        .zip(row)
        .filter_map(|(c, cell)| {
            let cell = cell?;
            let value = match c.kind {
                "INT64" => cell.parse::<i64>().map_or(Value::String(cell), Value::from),
                _ => Value::String(cell),
            };
            Some((c.name.clone(), value))
        })
        .collect();
    let mut line = serde_json::to_vec(&object).expect("JSON of strings and numbers");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_parted_under_the_upload_size_and_none_is_lost() {
        let dead = columns(schema::DEAD_LETTERS, &DEAD, "");
        let row = |i: usize| {
            vec![
                Some(format!("file-{i}")),
                Some("1".into()),
                Some("r".into()),
                Some("x".repeat(PART_BYTES / 3)),
            ]
        };
        let parts = parts(&dead, (0..7).map(row));
        assert_eq!(parts.len(), 4, "two rows a part");
        assert!(parts.iter().all(|p| p.len() <= PART_BYTES));
        let lines: usize = parts
            .iter()
            .map(|p| p.split(|&b| b == b'\n').count() - 1)
            .sum();
        assert_eq!(lines, 7);
    }

    #[test]
    fn three_million_messages_stage_in_a_handful_of_loads() {
        // A pending row is ~120 bytes of NDJSON, a timeline ~250: each table of a
        // 3-million-message chunk takes at most 3 parts.
        for row_bytes in [120, 250] {
            assert!(3_000_000 * row_bytes / PART_BYTES < 3);
        }
    }

    #[test]
    fn a_row_is_one_json_line_numbers_as_numbers_nulls_left_out() {
        let pending = columns(schema::PENDING, &PENDING, "");
        let row = vec![
            Some("k\"1\n".into()),
            Some("read".into()),
            Some("1763773200000".into()),
            None,
            None,
        ];
        let line = ndjson_line(&pending, row);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            v,
            json!({ "bsp_message_id": "k\"1\n", "bsp_status": "read", "status_at": 1_763_773_200_000_i64 })
        );
    }

    #[test]
    fn the_script_reads_staged_times_back_as_timestamps_from_the_staging_dataset() {
        let t = Tables::new("org1", "bsp_org1_r1_0");
        assert_eq!(t.dataset, "org1_bsp_staging");
        let s = t.sources("demo");
        assert!(
            s.pending
                .contains("TIMESTAMP_MILLIS(status_at) AS status_at"),
            "{}",
            s.pending
        );
        assert!(
            s.pending
                .ends_with("FROM `demo.org1_bsp_staging.bsp_org1_r1_0_stage_pending`)")
        );
        assert_eq!(s.files, "`demo.org1_bsp_staging.bsp_org1_r1_0_stage_files`");
    }
}
