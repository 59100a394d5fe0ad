//! The embedded target: the same semantics as BigQuery on a local SQLite file.
//! One IMMEDIATE transaction per run makes the update and the bookkeeping atomic
//! and serialises overlapping runs.

use std::collections::HashSet;
use std::sync::Mutex;

use anyhow::{Context, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::health::{Dialect, Health, RunRecord, health_sql};
use super::order::beats_sql;
use super::schema::{self, Field, Table};
use super::views::{DELIVERY_DAILY, Dialect as ViewDialect, ViewNames, delivery_daily_sql};
use super::{Applied, Columns, DoneFiles, RunContext, Target, Watermark};
use super::{StagedRow, TimelineRow, timeline_fold_sql};
use crate::batch::Batch;
use crate::batch::Reason;
use crate::error::{Step, UsageError};
use crate::failpoint;
use crate::resolve::{TIMELINE_FIELDS, Timeline, Timelines, format_ms};
use crate::status::{Status, rank_sql};

pub struct Sqlite {
    conn: Mutex<Connection>,
    columns: Columns,
    path: String,
}

impl Sqlite {
    pub fn open(path: &str, columns: Columns) -> Result<Sqlite> {
        let conn = Connection::open(path).with_context(|| format!("opening sqlite://{path}"))?;
        conn.busy_timeout(std::time::Duration::from_secs(60))?;
        // WAL lets readers go on while a run writes. Switching needs the file alone
        // and does not wait for it (two runs starting at once): try again a while.
        for attempt in 0.. {
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            if mode.eq_ignore_ascii_case("wal") {
                break;
            }
            // Done once the switch is accepted (an in-memory database stays "memory").
            match conn.pragma_update(None, "journal_mode", "WAL") {
                Err(e) if attempt >= 200 => return Err(e).context("switching to WAL"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
                Ok(()) => break,
            }
        }
        Ok(Sqlite {
            conn: Mutex::new(conn),
            columns,
            path: path.into(),
        })
    }

    /// Direct access for tests and tools.
    pub fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.conn.lock().expect("no panics while locked"))
    }

    fn columns_of(conn: &Connection, table: &str) -> Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
        let names = stmt.query_map([], |row| row.get::<_, String>(1))?;
        Ok(names.collect::<rusqlite::Result<_>>()?)
    }
}

/// SQLite matches column names case-insensitively (ASCII), and so do we.
fn has_column(existing: &[String], name: &str) -> bool {
    existing.iter().any(|e| e.eq_ignore_ascii_case(name))
}

/// One column's definition. `strict`: REQUIRED becomes NOT NULL.
fn column_sql(f: &Field, strict: bool) -> String {
    let kind = match f.kind.as_str() {
        "INTEGER" | "INT64" | "BOOLEAN" | "BOOL" => "INTEGER",
        "FLOAT" | "FLOAT64" => "REAL",
        _ => "TEXT", // STRING; TIMESTAMP and DATETIME as fixed-format text
    };
    let null = if strict && f.required() {
        " NOT NULL"
    } else {
        ""
    };
    format!("\"{}\" {kind}{null}", f.name)
}

/// `CREATE TABLE` from a JSON schema. `strict`: REQUIRED becomes NOT NULL.
fn create_sql(name: &str, fields: &[Field], primary_key: &[&str], strict: bool) -> String {
    let mut cols: Vec<String> = fields.iter().map(|f| column_sql(f, strict)).collect();
    if !primary_key.is_empty() {
        cols.push(format!("PRIMARY KEY ({})", primary_key.join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS \"{name}\" ({})",
        cols.join(", ")
    )
}

fn own_tables() -> [(Table, &'static [&'static str]); 6] {
    [
        (schema::WATERMARKS, &["source"]),
        (schema::PENDING, &["bsp_message_id"]),
        (schema::TIMELINE, &["bsp_message_id"]),
        (schema::FILES, &["object_name", "generation"]),
        (schema::DEAD_LETTERS, &[]),
        (schema::RUNS, &[]),
    ]
}

/// Brings a table made by an earlier release to this release's shape: renamed
/// columns get their new names, new columns are added (NULL in old rows). New
/// columns come last in the schemas, so both shapes list columns in one order.
fn migrate(conn: &Connection, table: Table) -> Result<()> {
    let mut existing = Sqlite::columns_of(conn, table.name)?;
    for (old, new) in table.renamed {
        if has_column(&existing, old) && !has_column(&existing, new) {
            conn.execute(
                &format!(
                    "ALTER TABLE \"{}\" RENAME COLUMN \"{old}\" TO \"{new}\"",
                    table.name
                ),
                [],
            )?;
            existing = Sqlite::columns_of(conn, table.name)?;
        }
    }
    for field in table.fields() {
        if !has_column(&existing, &field.name) {
            // Added columns are NULL in old rows: never NOT NULL.
            let column = column_sql(&field, false);
            conn.execute(
                &format!("ALTER TABLE \"{}\" ADD COLUMN {column}", table.name),
                [],
            )?;
        }
    }
    Ok(())
}

/// TIMESTAMP columns are fixed-width UTC text here, so they compare as text.
fn dialect() -> Dialect {
    Dialect {
        table: Box::new(|name| format!("\"{name}\"")),
        time: |t| format!("'{}'", format_ms(t.timestamp_millis())),
        time_text: str::to_owned,
        text: "TEXT",
    }
}

#[async_trait]
impl Target for Sqlite {
    async fn init(&self, create_messages: bool) -> Result<()> {
        let conn = self.conn.lock().expect("no panics while locked");
        for (table, key) in own_tables() {
            conn.execute(&create_sql(table.name, &table.fields(), key, true), [])
                .with_context(|| format!("creating {}", table.name))?;
            migrate(&conn, table).with_context(|| format!("upgrading {}", table.name))?;
        }
        let c = &self.columns;
        let mut existing = Self::columns_of(&conn, &c.table)?;
        if existing.is_empty() {
            if !create_messages {
                return Err(UsageError::new(format!(
                    "sqlite://{}: no table {:?}; create it, or pass --create-messages",
                    self.path, c.table
                ))
                .into());
            }
            let fields = schema::MESSAGES.fields();
            conn.execute(&create_sql(&c.table, &fields, &[], false), [])?;
            existing = Self::columns_of(&conn, &c.table)?;
        }
        for column in [&c.key, &c.status] {
            if !has_column(&existing, column) {
                conn.execute(
                    &format!("ALTER TABLE \"{}\" ADD COLUMN \"{column}\" TEXT", c.table),
                    [],
                )?;
            }
        }
        conn.execute(
            &format!(
                "CREATE INDEX IF NOT EXISTS \"{t}__{k}\" ON \"{t}\" (\"{k}\")",
                t = c.table,
                k = c.key
            ),
            [],
        )?;
        Ok(())
    }

    async fn done(&self, from: &str) -> Result<DoneFiles> {
        let conn = self.conn.lock().expect("no panics while locked");
        // The primary key's index makes this a range scan.
        let mut stmt = conn.prepare(&format!(
            "SELECT object_name, generation, done_by FROM \"{}\" WHERE object_name >= ?1",
            schema::FILES.name
        ))?;
        let rows = stmt.query_map([from], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn watermark(&self, source: &str) -> Result<Option<Watermark>> {
        let conn = self.conn.lock().expect("no panics while locked");
        let row = conn
            .query_row(
                &format!(
                    "SELECT start, full_listed_at, forgotten_before FROM \"{}\" WHERE source = ?1",
                    schema::WATERMARKS.name
                ),
                [source],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((start, full, forgotten)) = row else {
            return Ok(None);
        };
        Ok(Some(Watermark {
            start,
            full_listed_at: parse_time(&full)?,
            forgotten_before: forgotten.as_deref().map(parse_time).transpose()?,
        }))
    }

    async fn set_watermark(&self, source: &str, w: &Watermark, now: DateTime<Utc>) -> Result<()> {
        let mut conn = self.conn.lock().expect("no panics while locked");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let time = |t: DateTime<Utc>| format_ms(t.timestamp_millis());
        tx.execute(
            &format!(
                "INSERT INTO \"{}\" (source, start, full_listed_at, forgotten_before, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (source) DO UPDATE SET start = excluded.start,
                   full_listed_at = excluded.full_listed_at,
                   forgotten_before = excluded.forgotten_before, updated_at = excluded.updated_at",
                schema::WATERMARKS.name
            ),
            params![
                source,
                w.start,
                time(w.full_listed_at),
                w.forgotten_before.map(time),
                time(now)
            ],
        )?;
        if let Some(before) = w.forgotten_before {
            tx.execute(
                &format!(
                    "DELETE FROM \"{}\" WHERE processed_at < ?1",
                    schema::FILES.name
                ),
                [time(before)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    async fn apply(&self, batch: &Batch, ctx: &RunContext) -> Result<Applied> {
        let mut conn = self.conn.lock().expect("no panics while locked");
        let has_errors = has_column(
            &Self::columns_of(&conn, &self.columns.table)?,
            &self.columns.errors,
        );
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .context("waiting for the target (another run holds it)")?;
        let now = format_ms(ctx.now.timestamp_millis());
        fold_into_pending(&tx, batch, &now).context(Step::Staging)?;
        fold_timelines(&tx, batch).context(Step::Staging)?;
        let rows_updated = update_messages(&tx, &self.columns, has_errors)?;
        failpoint::hit("after-update");
        let (pending, expired) = settle_pending(&tx, &self.columns, ctx, &now)?;
        record_batch(&tx, batch, ctx, &now)?;
        failpoint::hit("before-commit");
        tx.commit()?;
        Ok(Applied {
            rows_updated,
            pending,
            expired,
            bytes_processed: 0,
        })
    }

    async fn record_run(&self, r: &RunRecord) -> Result<()> {
        let conn = self.conn.lock().expect("no panics while locked");
        let (started, ended) = r.times();
        conn.execute(
            &format!(
                "INSERT INTO \"{}\" (run_id, started_at, ended_at, outcome, failed_step, backlog,
                   files, lines, dead_lettered, rows_updated, pending, bytes_processed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                schema::RUNS.name
            ),
            params![
                r.run_id,
                started,
                ended,
                r.outcome,
                r.failed_step,
                r.backlog.map(|b| b as i64),
                r.files as i64,
                r.lines as i64,
                r.dead_lettered as i64,
                r.rows_updated as i64,
                r.pending as i64,
                r.bytes_processed as i64,
            ],
        )?;
        Ok(())
    }

    async fn health(&self, now: chrono::DateTime<chrono::Utc>) -> Result<Health> {
        let conn = self.conn.lock().expect("no panics while locked");
        let mut stmt = conn
            .prepare(&health_sql(&dialect(), now))
            .with_context(|| {
                format!(
                    "sqlite://{}: reading the job's tables (run init first)",
                    self.path
                )
            })?;
        let rows = stmt.query_map([], |row| {
            (0..8)
                .map(|i| row.get::<_, Option<String>>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Health::from_rows(&rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    async fn create_views(&self, tz: chrono_tz::Tz) -> Result<()> {
        let conn = self.conn.lock().expect("no panics while locked");
        let c = &self.columns;
        let existing = Self::columns_of(&conn, &c.table)?;
        let names = ViewNames {
            messages: &c.table,
            key: &c.key,
            streamed_at: has_column(&existing, "bq_inserted_at").then_some("bq_inserted_at"),
        };
        let select = delivery_daily_sql(ViewDialect::Sqlite, &names, tz);
        conn.execute_batch(&format!(
            "DROP VIEW IF EXISTS \"{DELIVERY_DAILY}\"; CREATE VIEW \"{DELIVERY_DAILY}\" AS {select}"
        ))
        .context("creating the delivery view")?;
        Ok(())
    }

    async fn timelines(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<Timelines> {
        let conn = self.conn.lock().expect("no panics while locked");
        let ms = |t: DateTime<Utc>| format_ms(t.timestamp_millis());
        read_timelines(&conn, &ms(from), &ms(until))
    }
}

/// A time as the tables hold it (`format_ms` text) in epoch milliseconds.
fn parse_ms(text: &str) -> Result<i64> {
    Ok(parse_time(text)?.timestamp_millis())
}

fn parse_time(text: &str) -> Result<DateTime<Utc>> {
    Ok(chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("a stored time {text:?}"))?
        .to_utc())
}

/// Folds the batch into the pending table with the resolution order (`order::beats_sql`).
fn fold_into_pending(tx: &rusqlite::Transaction, batch: &Batch, now: &str) -> Result<()> {
    let p = schema::PENDING.name;
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS temp.stage; CREATE TEMP TABLE stage AS SELECT * FROM \"{p}\" WHERE 0"
    ))?;
    let mut put = tx.prepare(
        "INSERT INTO temp.stage (bsp_message_id, bsp_status, status_at, error_code, errors_note, first_seen_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for (key, r) in batch.resolution.iter() {
        let row = StagedRow::new(key, r);
        put.execute(params![
            row.key,
            row.status,
            row.status_at,
            row.code,
            row.errors_note,
            now
        ])?;
    }
    tx.execute(
        &format!(
            "INSERT INTO \"{p}\" SELECT * FROM temp.stage WHERE true
             ON CONFLICT (bsp_message_id) DO UPDATE SET bsp_status = excluded.bsp_status,
               status_at = excluded.status_at, error_code = excluded.error_code,
               errors_note = excluded.errors_note
             WHERE {beats}",
            beats = beats_sql("excluded", &format!("\"{p}\""))
        ),
        [],
    )?;
    tx.execute("DROP TABLE temp.stage", [])?;
    Ok(())
}

/// Timelines first reported in `[from, until)`.
fn read_timelines(conn: &Connection, from: &str, until: &str) -> Result<Timelines> {
    let mut stmt = conn.prepare(&format!(
        "SELECT bsp_message_id, {}, error_code FROM \"{}\" WHERE first_at >= ?1 AND first_at < ?2",
        TIMELINE_FIELDS.join(", "),
        schema::TIMELINE.name
    ))?;
    let mut rows = stmt.query(params![from, until])?;
    let mut out = Timelines::default();
    while let Some(row) = rows.next()? {
        let mut times = [None; 7];
        for (i, t) in times.iter_mut().enumerate() {
            *t = row
                .get::<_, Option<String>>(i + 1)?
                .as_deref()
                .map(parse_ms)
                .transpose()?;
        }
        let key: String = row.get(0)?;
        if let Some(t) = Timeline::from_parts(times, row.get(8)?) {
            out.insert(&key, t);
        }
    }
    Ok(out)
}

/// Folds the batch's timelines into the timeline table, each field at its minimum.
fn fold_timelines(tx: &rusqlite::Transaction, batch: &Batch) -> Result<()> {
    let t = schema::TIMELINE.name;
    let columns = schema::TIMELINE.field_names().join(", ");
    let mut put = tx.prepare(&format!(
        "INSERT INTO \"{t}\" ({columns}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (bsp_message_id) DO UPDATE SET {sets}",
        sets = timeline_fold_sql(&format!("\"{t}\""), "excluded", "MIN")
    ))?;
    for (key, timeline) in batch.timelines.iter() {
        let row = TimelineRow::new(key, timeline);
        let [a, b, c, d, e, f, g] = &row.times;
        put.execute(params![
            row.key,
            row.first_at,
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            row.error_code
        ])?;
    }
    Ok(())
}

/// Every copy of every known key, under the rank guard. Returns rows changed.
fn update_messages(tx: &rusqlite::Transaction, c: &Columns, has_errors: bool) -> Result<u64> {
    let err = Status::Error.written();
    // An `error` row whose note an earlier failure report changed is rewritten
    // too: the note, like the status, depends only on the set of callbacks.
    let (errors, note_changed) = if has_errors {
        (
            format!(
                ", \"{e}\" = CASE WHEN p.bsp_status = '{err}' THEN p.errors_note ELSE m.\"{e}\" END",
                e = c.errors,
            ),
            format!(
                " OR (m.\"{s}\" = '{err}' AND p.bsp_status = '{err}' AND m.\"{e}\" IS NOT p.errors_note)",
                s = c.status,
                e = c.errors,
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let sql = format!(
        "UPDATE \"{t}\" AS m SET \"{s}\" = p.bsp_status{errors}
         FROM \"{p}\" AS p
         WHERE m.\"{k}\" = p.bsp_message_id AND ({old} < {new}{note_changed})",
        t = c.table,
        s = c.status,
        k = c.key,
        p = schema::PENDING.name,
        old = rank_sql(&format!("m.\"{}\"", c.status)),
        new = rank_sql("p.bsp_status"),
    );
    Ok(tx.execute(&sql, [])? as u64)
}

/// Marks matched keys, dead-letters keys whose time-to-live ended without a row,
/// forgets expired ones. Returns (still pending, expired unmatched).
fn settle_pending(
    tx: &rusqlite::Transaction,
    c: &Columns,
    ctx: &RunContext,
    now: &str,
) -> Result<(u64, u64)> {
    let p = schema::PENDING.name;
    tx.execute(
        &format!(
            "UPDATE \"{p}\" SET matched_at = ?1 WHERE matched_at IS NULL
             AND EXISTS (SELECT 1 FROM \"{t}\" AS m WHERE m.\"{k}\" = \"{p}\".bsp_message_id)",
            t = c.table,
            k = c.key
        ),
        [now],
    )?;
    let cutoff = format_ms((ctx.now - ctx.pending_ttl).timestamp_millis());
    let expired = tx.execute(
        &format!(
            "INSERT INTO \"{d}\" (run_id, file, line, reason, raw, recorded_at)
             SELECT ?1, '', 0, ?2, json_object('bsp_message_id', bsp_message_id,
                 'bsp_status', bsp_status, 'status_at', status_at, 'error_code', error_code,
                 'first_seen_at', first_seen_at), ?3
             FROM \"{p}\" WHERE matched_at IS NULL AND first_seen_at < ?4",
            d = schema::DEAD_LETTERS.name
        ),
        params![ctx.run_id, Reason::PendingExpired.as_str(), now, cutoff],
    )? as u64;
    tx.execute(
        &format!("DELETE FROM \"{p}\" WHERE first_seen_at < ?1"),
        [&cutoff],
    )?;
    let pending = tx.query_row(
        &format!("SELECT COUNT(*) FROM \"{p}\" WHERE matched_at IS NULL"),
        [],
        |r| r.get::<_, i64>(0),
    )? as u64;
    Ok((pending, expired))
}

/// Dead letters of the batch and its files, marked done.
fn record_batch(
    tx: &rusqlite::Transaction,
    batch: &Batch,
    ctx: &RunContext,
    now: &str,
) -> Result<()> {
    // A file another run finished meanwhile (overlapping runs) or before (backfills)
    // has its dead letters already: keep each record once.
    let mut is_done = tx.prepare(&format!(
        "SELECT 1 FROM \"{}\" WHERE object_name = ?1 AND generation = ?2",
        schema::FILES.name
    ))?;
    let mut already: HashSet<&str> = HashSet::new();
    for f in &batch.files {
        if is_done.exists(params![f.name, f.generation])? {
            already.insert(&f.name);
        }
    }
    // Dead letters are unique per (file, line): a new generation of a file
    // replaces those of the older one.
    let mut forget = tx.prepare(&format!(
        "DELETE FROM \"{}\" WHERE file = ?1",
        schema::DEAD_LETTERS.name
    ))?;
    for f in batch
        .files
        .iter()
        .filter(|f| !already.contains(f.name.as_str()))
    {
        forget.execute([&f.name])?;
    }
    let mut dead = tx.prepare(&format!(
        "INSERT INTO \"{}\" (run_id, file, line, reason, raw, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        schema::DEAD_LETTERS.name
    ))?;
    for d in batch
        .dead_letters
        .iter()
        .filter(|d| !already.contains(d.file.as_str()))
    {
        dead.execute(params![
            ctx.run_id,
            d.file,
            d.line as i64,
            d.reason,
            d.raw,
            now
        ])?;
    }
    let mut file = tx.prepare(&format!(
        "INSERT INTO \"{}\" (object_name, generation, done_by, processed_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (object_name, generation) DO UPDATE SET done_by = excluded.done_by,
           processed_at = excluded.processed_at",
        schema::FILES.name
    ))?;
    for f in &batch.files {
        file.execute(params![f.name, f.generation, ctx.label, now])?;
    }
    Ok(())
}
