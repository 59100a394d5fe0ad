//! The dashboards' view: the timeline joined to Glific's messages, per day of
//! first report and `flow_name` (Glific's `flow` is the direction: only
//! outbound messages count). One SELECT for both stores, in their dialects;
//! percentiles are nearest-rank, computed with window functions.

use chrono::{Offset, Utc};
use chrono_tz::Tz;

use super::schema;

/// The view's name in both stores.
pub const DELIVERY_DAILY: &str = "bsp_delivery_daily";

/// Where the SELECT runs: table quoting, local dates, time differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect<'a> {
    /// `project.dataset`, the organization's zone by name.
    BigQuery { project: &'a str, dataset: &'a str },
    /// Times are UTC text; local dates by the zone's offset today (SQLite has no zone data).
    Sqlite,
}

/// What the view reads of `messages`.
#[derive(Debug, Clone)]
pub struct ViewNames<'a> {
    pub messages: &'a str,
    pub key: &'a str,
    /// Orders a message's copies (the newest counts), if the table has it.
    pub streamed_at: Option<&'a str>,
}

impl Dialect<'_> {
    fn table(&self, name: &str) -> String {
        match self {
            Dialect::BigQuery { project, dataset } => format!("`{project}.{dataset}.{name}`"),
            Dialect::Sqlite => format!("\"{name}\""),
        }
    }

    fn local_day(&self, column: &str, tz: Tz) -> String {
        match self {
            Dialect::BigQuery { .. } => format!("DATE({column}, '{}')", tz.name()),
            Dialect::Sqlite => {
                let offset = Utc::now()
                    .with_timezone(&tz)
                    .offset()
                    .fix()
                    .local_minus_utc()
                    / 60;
                format!("date({column}, '{offset:+} minutes')")
            }
        }
    }

    fn seconds_between(&self, from: &str, to: &str) -> String {
        match self {
            Dialect::BigQuery { .. } => format!("TIMESTAMP_DIFF({to}, {from}, SECOND)"),
            Dialect::Sqlite => {
                format!("CAST(ROUND((julianday({to}) - julianday({from})) * 86400) AS INTEGER)")
            }
        }
    }
}

/// The view's SELECT: per day and flow, messages, sent, delivered (delivered,
/// read or played), read (read or played), failed (final status error), and
/// the median and p90 seconds from sent to delivered and from delivered to read.
pub fn delivery_daily_sql(d: Dialect, n: &ViewNames, tz: Tz) -> String {
    let messages = d.table(n.messages);
    let timeline = d.table(schema::TIMELINE.name);
    let newest = n
        .streamed_at
        .map_or("id".to_owned(), |c| format!("{c} DESC, id"));
    let day = d.local_day("T.first_at", tz);
    let to_delivered = d.seconds_between("T.sent_at", "T.delivered_at");
    let to_read = d.seconds_between("T.delivered_at", "T.read_at");
    let count = |cond: &str| format!("SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)");
    let percentiles = |column: &str| {
        format!(
            "SELECT day, flow, MIN(CASE WHEN r >= 0.5 * n THEN s END) AS p50, \
             MIN(CASE WHEN r >= 0.9 * n THEN s END) AS p90 FROM (SELECT day, flow, {column} AS s, \
             ROW_NUMBER() OVER (PARTITION BY day, flow ORDER BY {column}) AS r, \
             COUNT(*) OVER (PARTITION BY day, flow) AS n FROM joined WHERE {column} IS NOT NULL) \
             GROUP BY day, flow"
        )
    };
    format!(
        "WITH latest AS (
  SELECT id, bsp_message_id, flow_name FROM (
    SELECT id, {key} AS bsp_message_id, flow_name,
      ROW_NUMBER() OVER (PARTITION BY id ORDER BY {newest}) AS copy
    FROM {messages} WHERE flow = 'outbound' AND {key} IS NOT NULL) WHERE copy = 1),
joined AS (
  SELECT {day} AS day, COALESCE(M.flow_name, '') AS flow, T.sent_at, T.delivered_at, T.read_at,
    T.played_at, T.error_at, T.deleted_at,
    {to_delivered} AS to_delivered, {to_read} AS to_read
  FROM latest M JOIN {timeline} T ON T.bsp_message_id = M.bsp_message_id),
delivered_latency AS ({delivered_latency}),
read_latency AS ({read_latency})
SELECT J.day, J.flow AS flow_name, COUNT(*) AS messages,
  {sent} AS sent, {delivered} AS delivered, {read} AS read, {failed} AS failed,
  MIN(D.p50) AS sent_to_delivered_median_s, MIN(D.p90) AS sent_to_delivered_p90_s,
  MIN(R.p50) AS delivered_to_read_median_s, MIN(R.p90) AS delivered_to_read_p90_s
FROM joined J
LEFT JOIN delivered_latency D ON D.day = J.day AND D.flow = J.flow
LEFT JOIN read_latency R ON R.day = J.day AND R.flow = J.flow
GROUP BY J.day, J.flow",
        key = n.key,
        delivered_latency = percentiles("to_delivered"),
        read_latency = percentiles("to_read"),
        sent = count("COALESCE(J.sent_at, J.delivered_at, J.read_at, J.played_at) IS NOT NULL"),
        delivered = count("COALESCE(J.delivered_at, J.read_at, J.played_at) IS NOT NULL"),
        read = count("COALESCE(J.read_at, J.played_at) IS NOT NULL"),
        failed = count(
            "J.error_at IS NOT NULL AND COALESCE(J.delivered_at, J.read_at, J.played_at, J.deleted_at) IS NULL"
        ),
    )
}
