//! The SQL texts of a BigQuery run. Only validated identifiers, our own run id
//! and times we format go into the text; every callback value arrives through
//! query parameters or staged tables.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::bounds::{Span, Unit, due_sql};
use crate::batch::Reason;
use crate::status::{Status, rank_sql};
use crate::target::order::{beats_sql, best_first_sql};
use crate::target::{schema, timeline_fold_sql};

/// A time column of messages: the partition column (`_PARTITIONTIME` for
/// ingestion-time partitioning) or the write-time column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeColumn {
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
    pub partitioning: Option<TimeColumn>,
    /// The partitions' size (with `partitioning`).
    pub unit: Unit,
    /// The write-time column of streamed rows, if the table has it.
    pub streamed: Option<TimeColumn>,
}

impl Names {
    pub fn table(&self, table: &str) -> String {
        format!("`{}.{}.{table}`", self.project, self.dataset)
    }
}

/// The run's staged batch, as the script reads it: each a table or a subquery
/// (`stage::Tables::sources`).
#[derive(Debug, Clone)]
pub struct Stage {
    pub pending: String,
    pub timeline: String,
    pub dead_letters: String,
    pub files: String,
}

/// Bounds of one run's MERGE on the partition column: the partitions it reads
/// (`bounds::spans`); none means no bound (an unpartitioned table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bounds {
    pub spans: Vec<Span>,
}

/// What one run's script may do to messages.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    pub bounds: Bounds,
    /// Rows written from this time on may be in the streaming buffer: no DML
    /// touches them and they do not count as a key's row yet.
    pub settled_before: Option<DateTime<Utc>>,
    /// Whether to update messages at all (else only pending and the books).
    pub messages: bool,
    /// Timeline rows whose first report is older are not read.
    pub timeline_from: Option<DateTime<Utc>>,
}

/// A literal of the column's type; DATETIME and DATE columns hold local times
/// of `tz` (Glific writes them in the organization's zone).
pub fn literal_in(kind: &str, t: DateTime<Utc>, tz: Tz) -> String {
    let local = t.with_timezone(&tz);
    match kind {
        "DATE" => format!("DATE '{}'", local.format("%Y-%m-%d")),
        "TIMESTAMP" => format!("TIMESTAMP '{}+00'", t.format("%Y-%m-%d %H:%M:%S")),
        _ => format!("DATETIME '{}'", local.format("%Y-%m-%d %H:%M:%S")),
    }
}

/// Partition bounds are computed in UTC (the lookback's slack covers any zone).
fn literal(kind: &str, t: DateTime<Utc>) -> String {
    literal_in(kind, t, Tz::UTC)
}

/// `AND` rows that are out of the streaming buffer (a NULL write time was never streamed).
fn settled_sql(n: &Names, r: &Reach, tz: Tz) -> String {
    match (&n.streamed, r.settled_before) {
        (Some(c), Some(t)) => format!(
            " AND (T.{col} IS NULL OR T.{col} < {lit})",
            col = c.column,
            lit = literal_in(&c.kind, t, tz)
        ),
        _ => String::new(),
    }
}

/// `AND` rows that may be in the streaming buffer; nothing matches without a write time.
fn buffered_sql(n: &Names, r: &Reach, tz: Tz) -> Option<String> {
    match (&n.streamed, r.settled_before) {
        (Some(c), Some(t)) => Some(format!(
            " AND T.{} >= {}",
            c.column,
            literal_in(&c.kind, t, tz)
        )),
        _ => None,
    }
}

/// The timelines first reported in `[from, until)`: key, each status's first
/// report in epoch ms, error code. Reads only the window's partitions.
pub fn timelines_sql(n: &Names, from: DateTime<Utc>, until: DateTime<Utc>) -> String {
    let times: Vec<String> = crate::resolve::TIMELINE_FIELDS
        .iter()
        .map(|c| format!("UNIX_MILLIS({c})"))
        .collect();
    format!(
        "SELECT bsp_message_id, {}, error_code FROM {} WHERE first_at >= {} AND first_at < {}",
        times.join(", "),
        n.table(schema::TIMELINE.name),
        timestamp(from),
        timestamp(until)
    )
}

/// Before the MERGE: how many rows within the bounds carry a key at all (none
/// means nobody fills the key column yet), and how many claim a write time
/// later than `now` (a sign of a wrong time zone).
pub fn rows_check_sql(n: &Names, b: &Bounds, now: DateTime<Utc>, tz: Tz) -> String {
    let future = match &n.streamed {
        Some(c) => format!(
            "COUNTIF(T.{} > {})",
            c.column,
            literal_in(&c.kind, now + chrono::Duration::minutes(5), tz)
        ),
        None => "0".into(),
    };
    format!(
        "SELECT COUNTIF(T.{key} IS NOT NULL), {future} FROM {messages} T WHERE TRUE{bounds}",
        key = n.key,
        messages = n.table(&n.messages),
        bounds = bounds_sql(n, b),
    )
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    format!("TIMESTAMP '{}+00'", t.format("%Y-%m-%d %H:%M:%S%.3f"))
}

/// The partition column as the statements on messages (alias T) name it.
fn partition_column(p: &TimeColumn) -> String {
    if p.column == "_PARTITIONTIME" {
        p.column.clone()
    } else {
        format!("T.{}", p.column)
    }
}

/// `AND (T.col >= lit AND T.col < lit OR …)`: literal bounds BigQuery prunes
/// partitions by, one range per span.
fn bounds_sql(n: &Names, b: &Bounds) -> String {
    let Some(p) = &n.partitioning else {
        return String::new();
    };
    if b.spans.is_empty() {
        return String::new();
    }
    let col = partition_column(p);
    let ranges: Vec<String> = b
        .spans
        .iter()
        .map(|s| {
            format!(
                "{col} >= {} AND {col} < {}",
                literal(&p.kind, s.from),
                literal(&p.kind, s.before)
            )
        })
        .collect();
    format!(" AND ({})", ranges.join(" OR "))
}

/// Whether a run with nothing new has anything to do: keys without a row that
/// are due to be looked for (`bounds::due_sql`), and keys whose time-to-live
/// has ended; then all keys without a row.
pub fn idle_check_sql(n: &Names, now: DateTime<Utc>, cutoff: DateTime<Utc>) -> String {
    format!(
        "SELECT COUNTIF(P.matched_at IS NULL AND {}), COUNTIF(P.first_seen_at < {}), \
         COUNTIF(P.matched_at IS NULL) FROM {} P",
        due_sql(now),
        timestamp(cutoff),
        n.table(schema::PENDING.name)
    )
}

/// One row per key, the best by the rank rule: a MERGE may match each target
/// row with one source row only, so no staged or pending duplicate (a re-sent
/// insert, an overlapping run) can ever stick the target.
fn best_per_key(table: &str, columns: &str) -> String {
    format!(
        "(SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY bsp_message_id \
         ORDER BY {}) AS best FROM {table}) WHERE best = 1)",
        best_first_sql()
    )
}

/// One run's script: where it stages, who it is, when, and what it may touch.
#[derive(Debug, Clone)]
pub struct Script<'a> {
    pub stage: &'a Stage,
    pub run_id: &'a str,
    pub label: &'a str,
    pub now: DateTime<Utc>,
    /// Keys first seen before this expire.
    pub cutoff: DateTime<Utc>,
    pub reach: Reach,
    /// The zone of the write-time column's local times.
    pub tz: Tz,
}

/// The run as one transaction: fold the staged batch into pending, update every
/// settled copy under the rank guard, mark keys whose rows are all settled as
/// found, expire, keep dead letters, mark files done. Its last statement returns
/// (rows_updated, expired, pending).
pub fn run_script(n: &Names, r: &Script) -> String {
    let pending = n.table(schema::PENDING.name);
    let dead = n.table(schema::DEAD_LETTERS.name);
    let files = n.table(schema::FILES.name);
    let now_ts = timestamp(r.now);
    let cutoff_ts = timestamp(r.cutoff);
    let (run_id, label) = (r.run_id, r.label);
    let expired_reason = Reason::PendingExpired.as_str();
    let resolved = "bsp_message_id, bsp_status, status_at, error_code, errors_note";
    let stage_pending = best_per_key(&r.stage.pending, resolved);
    let stage_dead = &r.stage.dead_letters;
    let stage_files = &r.stage.files;
    let messages = if r.reach.messages {
        messages_sql(n, r)
    } else {
        String::new()
    };
    let timeline = timeline_sql(n, r);
    // Looked for now (found or not, or no row has a key yet): not again this hour.
    let tried = format!(
        "UPDATE {pending} P SET last_tried_at = {now_ts} WHERE P.matched_at IS NULL AND {};\n",
        chosen_sql(r)
    );
    format!(
        "DECLARE updated INT64 DEFAULT 0;
DECLARE expired INT64 DEFAULT 0;
BEGIN TRANSACTION;
MERGE {pending} P USING {stage_pending} S ON P.bsp_message_id = S.bsp_message_id
WHEN MATCHED AND {beats} THEN UPDATE SET bsp_status = S.bsp_status, status_at = S.status_at,
  error_code = S.error_code, errors_note = S.errors_note
WHEN NOT MATCHED THEN INSERT (bsp_message_id, bsp_status, status_at, error_code, errors_note, first_seen_at, matched_at)
  VALUES (S.bsp_message_id, S.bsp_status, S.status_at, S.error_code, S.errors_note, {now_ts}, NULL);
{timeline}{messages}{tried}SET expired = (SELECT COUNT(*) FROM {pending} WHERE matched_at IS NULL AND first_seen_at < {cutoff_ts});
INSERT INTO {dead} (run_id, file, line, reason, raw, recorded_at)
  SELECT '{run_id}', '', 0, '{expired_reason}',
    TO_JSON_STRING(STRUCT(bsp_message_id, bsp_status, status_at, error_code, first_seen_at)), {now_ts}
  FROM {pending} WHERE matched_at IS NULL AND first_seen_at < {cutoff_ts};
DELETE FROM {pending} WHERE first_seen_at < {cutoff_ts};
DELETE FROM {dead} WHERE file IN (SELECT S.object_name FROM {stage_files} S
  WHERE NOT EXISTS (SELECT 1 FROM {files} F
    WHERE F.object_name = S.object_name AND F.generation = S.generation));
INSERT INTO {dead} (run_id, file, line, reason, raw, recorded_at)
  SELECT DISTINCT '{run_id}', D.file, D.line, D.reason, D.raw, {now_ts} FROM {stage_dead} D
  WHERE NOT EXISTS (SELECT 1 FROM {files} F JOIN {stage_files} S
    ON F.object_name = S.object_name AND F.generation = S.generation WHERE F.object_name = D.file);
MERGE {files} D USING (SELECT DISTINCT object_name, generation FROM {stage_files}) F ON D.object_name = F.object_name AND D.generation = F.generation
WHEN MATCHED THEN UPDATE SET done_by = '{label}', processed_at = {now_ts}
WHEN NOT MATCHED THEN INSERT (object_name, generation, done_by, processed_at)
  VALUES (F.object_name, F.generation, '{label}', {now_ts});
COMMIT TRANSACTION;
SELECT updated, expired, (SELECT COUNT(*) FROM {pending} WHERE matched_at IS NULL);",
        beats = beats_sql("S", "P"),
    )
}

/// The script's part on the timeline table: each staged timeline folded into its
/// key's row, every field at its minimum. The table is MONTH-partitioned on
/// `first_at` and clustered by key; the MERGE reads the partitions from the
/// batch's earliest report less `TIMELINE_REACH` on.
fn timeline_sql(n: &Names, r: &Script) -> String {
    let table = n.table(schema::TIMELINE.name);
    let stage = &r.stage.timeline;
    let columns = schema::TIMELINE.field_names().join(", ");
    let values = schema::TIMELINE
        .field_names()
        .iter()
        .map(|c| format!("S.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let bound = match r.reach.timeline_from {
        Some(from) => format!(" AND T.first_at >= {}", timestamp(from)),
        None => String::new(),
    };
    format!(
        "MERGE {table} T USING (SELECT DISTINCT * FROM {stage}) S
ON T.bsp_message_id = S.bsp_message_id{bound}
WHEN MATCHED THEN UPDATE SET {sets}
WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values});
",
        sets = timeline_fold_sql("T", "S", "LEAST"),
    )
}

/// SQL predicate over pending row `P`: the keys this run merges, the batch's
/// and the due pending ones (as `bounds::candidates_sql` counts them).
fn chosen_sql(r: &Script) -> String {
    format!(
        "({} OR P.bsp_message_id IN (SELECT bsp_message_id FROM {}))",
        due_sql(r.now),
        r.stage.pending
    )
}

/// The script's part on messages: count, MERGE every settled copy under the
/// guard, mark keys found whose rows within the bounds are all settled.
fn messages_sql(n: &Names, r: &Script) -> String {
    let pending = n.table(schema::PENDING.name);
    let messages = n.table(&n.messages);
    let chosen = chosen_sql(r);
    let merged = best_per_key(
        &format!("(SELECT * FROM {pending} P WHERE {chosen})"),
        "bsp_message_id, bsp_status, status_at, error_code, errors_note",
    );
    let (key, status) = (&n.key, &n.status);
    let now_ts = timestamp(r.now);
    let bounds = bounds_sql(n, &r.reach.bounds);
    let settled = settled_sql(n, &r.reach, r.tz);
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
    // Keys with a row that may still be in the streaming buffer.
    let settled_only = |alias: &str| {
        buffered_sql(n, &r.reach, r.tz).map(|buffered| format!(
            "{alias}bsp_message_id NOT IN (SELECT T.{key} FROM {messages} T WHERE T.{key} IS NOT NULL{bounds}{buffered})"
        ))
    };
    // A key is found once its rows (within the bounds) are all settled; on a
    // partitioned table it remembers its row's partition, so later runs read
    // that partition only (the earliest, should copies differ).
    let found = match &n.partitioning {
        Some(p) => {
            let col = partition_column(p);
            let value = if p.kind == "TIMESTAMP" {
                col
            } else {
                format!("TIMESTAMP({col})")
            };
            format!(
                "UPDATE {pending} P SET matched_at = COALESCE(P.matched_at, {now_ts}), partition_at = M.part
  FROM (SELECT T.{key} AS k, MIN({value}) AS part FROM {messages} T WHERE T.{key} IS NOT NULL{bounds}{settled} GROUP BY T.{key}) M
  WHERE P.bsp_message_id = M.k AND P.partition_at IS NULL{settled_only};
",
                settled_only = match settled_only("P.") {
                    Some(c) => format!(" AND (P.matched_at IS NOT NULL OR {c})"),
                    None => String::new(),
                },
            )
        }
        None => format!(
            "UPDATE {pending} SET matched_at = {now_ts} WHERE matched_at IS NULL
  AND bsp_message_id IN (SELECT T.{key} FROM {messages} T WHERE T.{key} IS NOT NULL{bounds}{settled}){};
",
            settled_only("").map_or_else(String::new, |c| format!("\n  AND {c}"))
        ),
    };
    format!(
        "SET updated = (SELECT COUNT(*) FROM {messages} T JOIN {merged} S ON T.{key} = S.bsp_message_id{bounds}{settled} WHERE {guard});
MERGE {messages} T USING {merged} S
ON T.{key} = S.bsp_message_id{bounds}{settled}
WHEN MATCHED AND {guard} THEN UPDATE SET {status} = S.bsp_status{errors};
{found}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(partitioning: Option<TimeColumn>) -> Names {
        Names {
            project: "demo".into(),
            dataset: "org1".into(),
            messages: "messages".into(),
            key: "bsp_message_id".into(),
            status: "bsp_status".into(),
            errors: Some("errors".into()),
            partitioning,
            unit: Unit::Month,
            streamed: Some(TimeColumn {
                column: "bq_inserted_at".into(),
                kind: "DATETIME".into(),
            }),
        }
    }

    fn stage() -> Stage {
        Stage {
            pending: "`demo.org1_bsp_staging.s_p`".into(),
            timeline: "`demo.org1_bsp_staging.s_t`".into(),
            dead_letters: "`demo.org1_bsp_staging.s_d`".into(),
            files: "`demo.org1_bsp_staging.s_f`".into(),
        }
    }

    /// The script of run "r1" at 2025-11-22T01:00Z with a week's time-to-live.
    fn script(partitioning: Option<TimeColumn>, reach: Reach, tz: Tz) -> String {
        let (now, cutoff) = (t("2025-11-22T01:00:00Z"), t("2025-11-15T01:00:00Z"));
        let args = Script {
            stage: &stage(),
            run_id: "r1",
            label: "r1",
            now,
            cutoff,
            reach,
            tz,
        };
        run_script(&names(partitioning), &args)
    }

    fn all(bounds: Bounds) -> Reach {
        Reach {
            bounds,
            settled_before: None,
            messages: true,
            timeline_from: None,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn inserted_at() -> TimeColumn {
        TimeColumn {
            column: "inserted_at".into(),
            kind: "DATETIME".into(),
        }
    }

    fn span(from: &str, before: &str) -> Span {
        Span {
            from: t(from),
            before: t(before),
        }
    }

    #[test]
    fn a_partitioned_table_gets_literal_bounds_in_every_statement_that_reads_it() {
        let b = Bounds {
            spans: vec![
                span("2011-04-01T00:00:00Z", "2011-06-01T00:00:00Z"),
                span("2025-10-01T00:00:00Z", "2025-12-01T00:00:00Z"),
            ],
        };
        let sql = script(Some(inserted_at()), all(b), Tz::UTC);
        let bound = "AND (T.inserted_at >= DATETIME '2011-04-01 00:00:00' AND T.inserted_at < DATETIME '2011-06-01 00:00:00' \
                     OR T.inserted_at >= DATETIME '2025-10-01 00:00:00' AND T.inserted_at < DATETIME '2025-12-01 00:00:00')";
        // The count, the MERGE, and finding keys (with their rows' partition).
        assert_eq!(sql.matches(bound).count(), 3, "{sql}");
        assert!(sql.contains("partition_at = M.part"), "{sql}");
        assert!(
            sql.contains("MIN(TIMESTAMP(T.inserted_at)) AS part"),
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
        let sql = script(None, all(Bounds::default()), Tz::UTC);
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
            &Script {
                stage: &stage(),
                run_id: "r1",
                label: "r1",
                now: t("2025-11-22T01:00:00Z"),
                cutoff: t("2025-11-15T01:00:00Z"),
                reach: all(Bounds::default()),
                tz: Tz::UTC,
            },
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
        let sql = script(None, all(Bounds::default()), Tz::UTC);
        let delete = sql
            .find("DELETE FROM `demo.org1.bsp_loader_dead_letters` WHERE file IN (SELECT S.object_name FROM `demo.org1_bsp_staging.s_f` S")
            .expect("a delete of the staged files' old dead letters");
        let insert = sql
            .find("INSERT INTO `demo.org1.bsp_loader_dead_letters` (run_id, file, line, reason, raw, recorded_at)\n  SELECT DISTINCT 'r1', D.file")
            .expect("the insert of the staged dead letters");
        assert!(delete < insert, "{sql}");
        assert!(sql[delete..insert].contains("F.generation = S.generation"));
    }

    #[test]
    fn every_merge_source_is_one_row_per_key_by_the_rank_rule() {
        let sql = script(None, all(Bounds::default()), Tz::UTC);
        let best = format!("ORDER BY {}) AS best", best_first_sql());
        // The staged batch into pending, pending into messages, and its count.
        assert_eq!(sql.matches(&best).count(), 3, "{sql}");
        assert!(sql.contains("USING (SELECT DISTINCT object_name, generation FROM"));
        assert!(sql.contains("SELECT DISTINCT '"));
    }

    #[test]
    fn an_upper_bound_has_the_columns_type() {
        for (kind, lit) in [
            ("TIMESTAMP", "TIMESTAMP '2025-11-21 01:00:00+00'"),
            ("DATE", "DATE '2025-11-21'"),
        ] {
            let p = TimeColumn {
                column: "created".into(),
                kind: kind.into(),
            };
            let b = Bounds {
                spans: vec![span("2025-10-01T00:00:00Z", "2025-11-21T01:00:00Z")],
            };
            let sql = script(Some(p), all(b), Tz::UTC);
            assert!(sql.contains(&format!("T.created < {lit}")), "{sql}");
        }
    }

    #[test]
    fn rows_in_the_streaming_buffer_are_left_out_in_the_organizations_local_time() {
        let reach = Reach {
            settled_before: Some(t("2025-11-21T23:30:00Z")),
            ..all(Bounds::default())
        };
        // 23:30 UTC is 05:00 the next day in Kolkata.
        let sql = script(None, reach, chrono_tz::Asia::Kolkata);
        let settled =
            "(T.bq_inserted_at IS NULL OR T.bq_inserted_at < DATETIME '2025-11-22 05:00:00')";
        // Counted, merged and marked found only when settled.
        assert_eq!(sql.matches(settled).count(), 3, "{sql}");
        assert!(sql.contains("NOT IN (SELECT T.bsp_message_id FROM `demo.org1.messages` T WHERE T.bsp_message_id IS NOT NULL AND T.bq_inserted_at >= DATETIME '2025-11-22 05:00:00')"), "{sql}");
    }

    #[test]
    fn only_the_batchs_and_the_due_keys_are_merged_and_marked_tried() {
        let sql = script(None, all(Bounds::default()), Tz::UTC);
        let due = "(P.matched_at IS NOT NULL OR P.first_seen_at >= TIMESTAMP '2025-11-21 01:00:00.000+00' \
                   OR P.last_tried_at IS NULL OR P.last_tried_at < TIMESTAMP '2025-11-22 01:00:00.000+00')";
        let chosen = format!(
            "({due} OR P.bsp_message_id IN (SELECT bsp_message_id FROM `demo.org1_bsp_staging.s_p`))"
        );
        // The count and the MERGE read the chosen keys only; they are marked tried.
        assert_eq!(
            sql.matches(&format!("P WHERE {chosen}")).count(),
            2,
            "{sql}"
        );
        assert!(sql.contains(&format!(
            "SET last_tried_at = TIMESTAMP '2025-11-22 01:00:00.000+00' WHERE P.matched_at IS NULL AND {chosen}"
        )));
        // Even when messages is not touched (no keyed rows yet).
        let books = script(
            None,
            Reach {
                messages: false,
                ..all(Bounds::default())
            },
            Tz::UTC,
        );
        assert!(books.contains("SET last_tried_at"));
    }

    #[test]
    fn without_messages_the_script_keeps_only_pending_and_the_books() {
        let reach = Reach {
            messages: false,
            ..all(Bounds::default())
        };
        let sql = script(None, reach, Tz::UTC);
        assert!(!sql.contains("`demo.org1.messages`"), "{sql}");
        assert!(sql.contains("MERGE `demo.org1.bsp_loader_pending`"));
        assert!(sql.contains("MERGE `demo.org1.bsp_loader_files`"));
    }

    #[test]
    fn the_rows_check_counts_keys_and_future_write_times() {
        let sql = rows_check_sql(
            &names(Some(inserted_at())),
            &Bounds {
                spans: vec![span("2025-10-01T00:00:00Z", "2025-12-01T00:00:00Z")],
            },
            t("2025-11-22T01:00:00Z"),
            chrono_tz::Asia::Kolkata,
        );
        assert!(sql.contains("COUNTIF(T.bsp_message_id IS NOT NULL)"));
        assert!(
            sql.contains("COUNTIF(T.bq_inserted_at > DATETIME '2025-11-22 06:35:00')"),
            "{sql}"
        );
        assert!(sql.contains("T.inserted_at >= DATETIME '2025-10-01 00:00:00'"));
    }
}
