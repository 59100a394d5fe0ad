//! The SQL texts of a BigQuery run. Only validated identifiers, our own run id
//! and times we format go into the text; every callback value arrives through
//! query parameters or staged tables.

use chrono::{DateTime, Utc};

use crate::callback::Reason;
use crate::resolve::beats_sql;
use crate::status::{Status, rank_sql};
use crate::target::schema;

/// How the messages table is partitioned, as far as the bounds need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// The partition column; `_PARTITIONTIME` for ingestion-time partitioning.
    pub column: String,
    /// Its type: DATETIME, TIMESTAMP or DATE.
    pub kind: String,
}

/// Everything the script names.
#[derive(Debug, Clone)]
pub struct Names {
    pub project: String,
    pub dataset: String,
    pub messages: String,
    pub key: String,
    pub status: String,
    /// The errors column, if the table has it.
    pub errors: Option<String>,
    pub partitioning: Option<Partitioning>,
}

impl Names {
    pub fn table(&self, table: &str) -> String {
        format!("`{}.{}.{table}`", self.project, self.dataset)
    }
}

/// The per-run staging tables.
#[derive(Debug, Clone)]
pub struct Stage {
    pub pending: String,
    pub dead_letters: String,
    pub files: String,
}

/// Bounds of one run's MERGE on the partition column.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    /// Rows before this are not read (derived from the batch and the lookback).
    pub from: Option<DateTime<Utc>>,
    /// Rows from this on are not touched (the streaming-buffer fallback).
    pub before: Option<DateTime<Utc>>,
}

fn literal(kind: &str, t: DateTime<Utc>) -> String {
    match kind {
        "DATE" => format!("DATE '{}'", t.format("%Y-%m-%d")),
        "TIMESTAMP" => format!("TIMESTAMP '{}+00'", t.format("%Y-%m-%d %H:%M:%S")),
        _ => format!("DATETIME '{}'", t.format("%Y-%m-%d %H:%M:%S")),
    }
}

fn timestamp(t: DateTime<Utc>) -> String {
    format!("TIMESTAMP '{}+00'", t.format("%Y-%m-%d %H:%M:%S%.3f"))
}

/// `AND T.col >= lit AND T.col < lit` for the bounds that apply.
fn bounds_sql(n: &Names, b: Bounds) -> String {
    let Some(p) = &n.partitioning else {
        return String::new();
    };
    let col = if p.column == "_PARTITIONTIME" {
        p.column.clone()
    } else {
        format!("T.{}", p.column)
    };
    let mut out = String::new();
    if let Some(from) = b.from {
        out += &format!(" AND {col} >= {}", literal(&p.kind, from));
    }
    if let Some(before) = b.before {
        out += &format!(" AND {col} < {}", literal(&p.kind, before));
    }
    out
}

/// Whether a run with nothing new has anything to do: keys still without a row,
/// and keys whose time-to-live has ended.
pub fn idle_check_sql(n: &Names, cutoff: DateTime<Utc>) -> String {
    format!(
        "SELECT SUM(CASE WHEN matched_at IS NULL THEN 1 ELSE 0 END), \
         SUM(CASE WHEN first_seen_at < {} THEN 1 ELSE 0 END) FROM {}",
        timestamp(cutoff),
        n.table(schema::PENDING.name)
    )
}

/// The earliest resolution time among pending keys, in epoch milliseconds.
pub fn min_pending_sql(n: &Names) -> String {
    format!(
        "SELECT UNIX_MILLIS(MIN(status_at)) FROM {}",
        n.table(schema::PENDING.name)
    )
}

pub fn done_files_sql(n: &Names) -> String {
    format!(
        "SELECT object_name, generation, run_id FROM {}",
        n.table(schema::FILES.name)
    )
}

/// The run as one transaction: fold the staged batch into pending, update every
/// copy under the rank guard, mark matches, expire, keep dead letters, mark files
/// done. Its last statement returns (rows_updated, expired, pending).
pub fn run_script(
    n: &Names,
    stage: &Stage,
    run_id: &str,
    label: &str,
    now: DateTime<Utc>,
    cutoff: DateTime<Utc>,
    b: Bounds,
) -> String {
    let pending = n.table(schema::PENDING.name);
    let dead = n.table(schema::DEAD_LETTERS.name);
    let files = n.table(schema::FILES.name);
    let messages = n.table(&n.messages);
    let (key, status) = (&n.key, &n.status);
    let now_ts = timestamp(now);
    let cutoff_ts = timestamp(cutoff);
    let bounds = bounds_sql(n, b);
    let guard = format!(
        "{} < {}",
        rank_sql(&format!("T.{status}")),
        rank_sql("S.bsp_status")
    );
    let err = Status::Error.written();
    // An `error` row whose note an earlier failure report changed is rewritten
    // too: the note, like the status, depends only on the set of callbacks.
    let (errors, guard) = match &n.errors {
        Some(e) => (
            format!(", {e} = IF(S.bsp_status = '{err}', S.errors_note, T.{e})"),
            format!(
                "({guard} OR (T.{status} = '{err}' AND S.bsp_status = '{err}' \
                 AND T.{e} IS DISTINCT FROM S.errors_note))"
            ),
        ),
        None => (String::new(), guard),
    };
    let expired_reason = Reason::PendingExpired.as_str();
    let stage_pending = n.table(&stage.pending);
    let stage_dead = n.table(&stage.dead_letters);
    let stage_files = n.table(&stage.files);
    format!(
        "DECLARE updated INT64 DEFAULT 0;
DECLARE expired INT64 DEFAULT 0;
BEGIN TRANSACTION;
MERGE {pending} P USING {stage_pending} S ON P.bsp_message_id = S.bsp_message_id
WHEN MATCHED AND {beats} THEN UPDATE SET bsp_status = S.bsp_status, status_at = S.status_at,
  error_code = S.error_code, errors_note = S.errors_note
WHEN NOT MATCHED THEN INSERT (bsp_message_id, bsp_status, status_at, error_code, errors_note, first_seen_at, matched_at)
  VALUES (S.bsp_message_id, S.bsp_status, S.status_at, S.error_code, S.errors_note, {now_ts}, NULL);
SET updated = (SELECT COUNT(*) FROM {messages} T JOIN {pending} S ON T.{key} = S.bsp_message_id{bounds} WHERE {guard});
MERGE {messages} T USING (SELECT bsp_message_id, bsp_status, errors_note FROM {pending}) S
ON T.{key} = S.bsp_message_id{bounds}
WHEN MATCHED AND {guard} THEN UPDATE SET {status} = S.bsp_status{errors};
UPDATE {pending} SET matched_at = {now_ts} WHERE matched_at IS NULL
  AND bsp_message_id IN (SELECT T.{key} FROM {messages} T WHERE T.{key} IS NOT NULL{bounds});
SET expired = (SELECT COUNT(*) FROM {pending} WHERE matched_at IS NULL AND first_seen_at < {cutoff_ts});
INSERT INTO {dead} (run_id, file, line, reason, raw, recorded_at)
  SELECT '{run_id}', '', 0, '{expired_reason}',
    TO_JSON_STRING(STRUCT(bsp_message_id, bsp_status, status_at, error_code, first_seen_at)), {now_ts}
  FROM {pending} WHERE matched_at IS NULL AND first_seen_at < {cutoff_ts};
DELETE FROM {pending} WHERE first_seen_at < {cutoff_ts};
DELETE FROM {dead} WHERE file IN (SELECT S.object_name FROM {stage_files} S
  WHERE NOT EXISTS (SELECT 1 FROM {files} F
    WHERE F.object_name = S.object_name AND F.generation = S.generation));
INSERT INTO {dead} (run_id, file, line, reason, raw, recorded_at)
  SELECT '{run_id}', D.file, D.line, D.reason, D.raw, {now_ts} FROM {stage_dead} D
  WHERE NOT EXISTS (SELECT 1 FROM {files} F JOIN {stage_files} S
    ON F.object_name = S.object_name AND F.generation = S.generation WHERE F.object_name = D.file);
MERGE {files} D USING {stage_files} F ON D.object_name = F.object_name AND D.generation = F.generation
WHEN MATCHED THEN UPDATE SET run_id = '{label}', processed_at = {now_ts}
WHEN NOT MATCHED THEN INSERT (object_name, generation, run_id, processed_at)
  VALUES (F.object_name, F.generation, '{label}', {now_ts});
COMMIT TRANSACTION;
SELECT updated, expired, (SELECT COUNT(*) FROM {pending} WHERE matched_at IS NULL);",
        beats = beats_sql("S", "P"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(partitioning: Option<Partitioning>) -> Names {
        Names {
            project: "demo".into(),
            dataset: "org1".into(),
            messages: "messages".into(),
            key: "bsp_message_id".into(),
            status: "bsp_status".into(),
            errors: Some("errors".into()),
            partitioning,
        }
    }

    fn stage() -> Stage {
        Stage {
            pending: "s_p".into(),
            dead_letters: "s_d".into(),
            files: "s_f".into(),
        }
    }

    /// The script of run "r1" at 2025-11-22T01:00Z with a week's time-to-live.
    fn script(partitioning: Option<Partitioning>, bounds: Bounds) -> String {
        let (now, cutoff) = (t("2025-11-22T01:00:00Z"), t("2025-11-15T01:00:00Z"));
        run_script(
            &names(partitioning),
            &stage(),
            "r1",
            "r1",
            now,
            cutoff,
            bounds,
        )
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_partitioned_table_gets_literal_bounds_in_every_statement_that_reads_it() {
        let p = Partitioning {
            column: "inserted_at".into(),
            kind: "DATETIME".into(),
        };
        let b = Bounds {
            from: Some(t("2025-10-22T00:00:00Z")),
            before: None,
        };
        let sql = script(Some(p), b);
        assert_eq!(
            sql.matches("T.inserted_at >= DATETIME '2025-10-22 00:00:00'")
                .count(),
            3,
            "{sql}"
        );
        assert!(!sql.contains("NOT MATCHED BY SOURCE"));
        assert_eq!(
            sql.matches("MERGE `demo.org1.messages`").count(),
            1,
            "one MERGE on messages"
        );
    }

    #[test]
    fn the_guard_and_the_status_values_come_from_the_rank_table() {
        let sql = script(None, Bounds::default());
        assert!(sql.contains(&format!(
            "{} < {}",
            rank_sql("T.bsp_status"),
            rank_sql("S.bsp_status")
        )));
        assert!(sql.contains("errors = IF(S.bsp_status = 'error', S.errors_note, T.errors)"));
        // The note is rewritten when an earlier failure changes it, the count agrees.
        let note = "OR (T.bsp_status = 'error' AND S.bsp_status = 'error' \
                    AND T.errors IS DISTINCT FROM S.errors_note))";
        assert_eq!(sql.matches(note).count(), 2, "{sql}");
        assert!(sql.contains(&format!("WHEN MATCHED AND ({}", rank_sql("T.bsp_status"))));
        let mut no_errors = names(None);
        no_errors.errors = None;
        let plain = run_script(
            &no_errors,
            &stage(),
            "r1",
            "r1",
            t("2025-11-22T01:00:00Z"),
            t("2025-11-15T01:00:00Z"),
            Bounds::default(),
        );
        assert!(!plain.contains("IS DISTINCT FROM"));
        assert!(sql.contains(&beats_sql("S", "P")));
        assert!(!sql.contains(" >= DATETIME"), "unpartitioned: no bounds");
        assert!(
            sql.starts_with("DECLARE")
                && sql.contains("BEGIN TRANSACTION;")
                && sql.contains("COMMIT TRANSACTION;")
        );
    }

    #[test]
    fn a_new_generation_replaces_the_dead_letters_of_the_older_one_before_the_insert() {
        let sql = script(None, Bounds::default());
        let delete = sql
            .find("DELETE FROM `demo.org1.bsp_loader_dead_letters` WHERE file IN (SELECT S.object_name FROM `demo.org1.s_f` S")
            .expect("a delete of the staged files' old dead letters");
        let insert = sql
            .find("INSERT INTO `demo.org1.bsp_loader_dead_letters` (run_id, file, line, reason, raw, recorded_at)\n  SELECT 'r1', D.file")
            .expect("the insert of the staged dead letters");
        assert!(delete < insert, "{sql}");
        assert!(sql[delete..insert].contains("F.generation = S.generation"));
    }

    #[test]
    fn the_streaming_buffer_fallback_adds_an_upper_bound_of_the_columns_type() {
        for (kind, lit) in [
            ("TIMESTAMP", "TIMESTAMP '2025-11-21 01:00:00+00'"),
            ("DATE", "DATE '2025-11-21'"),
        ] {
            let p = Partitioning {
                column: "created".into(),
                kind: kind.into(),
            };
            let b = Bounds {
                from: None,
                before: Some(t("2025-11-21T01:00:00Z")),
            };
            let sql = script(Some(p), b);
            assert!(sql.contains(&format!("T.created < {lit}")), "{sql}");
        }
    }
}
