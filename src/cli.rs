//! The command line. Every flag can also come from the environment variable named
//! in its help.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::error::UsageError;
use crate::logging::LogFormat;
use crate::target::{Columns, Options};

#[derive(Debug, Parser)]
#[command(
    name = "bsp-status-loader",
    version,
    about = "Resolve Gupshup status callbacks and write each message's bsp_status to Glific's messages table",
    long_about = "Reads Gupshup status callbacks (V2 and V3, NDJSON, optionally gzip) from a bucket \
or folder, works out each message's status (the highest of enqueued < sent < error < delivered < \
read < played < deleted, at the earliest time it was seen), and MERGEs it into the messages table \
without ever moving a status backwards.\n\nExit codes: 0 success (dead-lettered records do not \
fail a run), 1 failure (a rerun is safe), 2 usage or configuration error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format: text on a terminal and JSON lines for Cloud Logging otherwise (auto),
    /// or forced. RUST_LOG sets the level.
    #[arg(
        long,
        global = true,
        env = "BSP_LOG_FORMAT",
        value_enum,
        default_value = "auto"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The scheduled job: process the files not done yet, retry pending keys, update the table.
    Run(RunArgs),
    /// Reprocess the files of a date window, whatever the bookkeeping says.
    Backfill(BackfillArgs),
    /// Parse and resolve only: print one JSON line per message, sorted by id. Writes no target.
    Resolve(ResolveArgs),
    /// Create what the target needs (the job's tables, the key column). Safe to run again.
    Init(InitArgs),
    /// The delivery funnel of a window of days, from the timeline table.
    Report(ReportArgs),
    /// Is the job keeping up? The lag since the last successful run, the backlog it left,
    /// pending keys by age, dead letters, the last run. Exit 1 past --max-lag.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Where the callback files are: gs://BUCKET/PREFIX, file:///DIR, or a path (folder or file).
    /// Every file below it is read; gzip is recognised by content.
    #[arg(long, env = "BSP_SOURCE")]
    pub source: Option<String>,

    /// How many files of a bucket are fetched at once (a folder's are read by the parsing
    /// threads themselves).
    #[arg(long, env = "BSP_CONCURRENCY", default_value_t = default_concurrency())]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Where statuses go: sqlite://PATH, or bigquery://PROJECT/DATASET[/TABLE] (TABLE defaults
    /// to messages). Not with --config, whose organizations name their targets.
    #[arg(long, env = "BSP_TARGET")]
    pub target: Option<String>,

    /// The messages table (for sqlite; in a bigquery URL the table is part of the URL).
    #[arg(long, env = "BSP_MESSAGES_TABLE", default_value = "messages")]
    pub messages_table: String,

    /// Column holding the Gupshup message id.
    #[arg(long, env = "BSP_KEY_COLUMN", default_value = "bsp_message_id")]
    pub key_column: String,

    /// Column the resolved status is written to.
    #[arg(long, env = "BSP_STATUS_COLUMN", default_value = "bsp_status")]
    pub status_column: String,

    /// Column that receives a JSON note (code, time) when a message becomes `error`;
    /// left alone if the table has no such column.
    #[arg(long, env = "BSP_ERRORS_COLUMN", default_value = "errors")]
    pub errors_column: String,

    /// Create an empty Glific-shaped messages table if there is none (for trials and tests).
    #[arg(long, env = "BSP_CREATE_MESSAGES")]
    pub create_messages: bool,

    /// BigQuery: a service-account key file. Without it, Application Default Credentials
    /// (GOOGLE_APPLICATION_CREDENTIALS, or Cloud Run's service account).
    #[arg(long, env = "BSP_CREDENTIALS")]
    pub credentials: Option<String>,

    /// BigQuery, partitioned tables: the MERGE reads partitions from the earliest status time
    /// of the batch less this (message rows are older than their statuses). Keys whose rows
    /// are older stay pending.
    #[arg(long, env = "BSP_LOOKBACK", default_value = "31d", value_parser = parse_duration)]
    pub lookback: chrono::Duration,

    /// BigQuery: the column with each row's write time (Glific's `bq_inserted_at`). Rows
    /// written in the last 90 minutes may still be in the streaming buffer, which DML cannot
    /// touch: they are left alone and their keys stay pending until a later run.
    #[arg(long, env = "BSP_STREAMED_AT_COLUMN", default_value = "bq_inserted_at")]
    pub streamed_at_column: String,

    /// The organization's time zone (IANA name, e.g. Asia/Kolkata): the zone of the
    /// write-time column, which Glific fills in local time.
    #[arg(long, env = "BSP_TIMEZONE", default_value = "UTC", value_parser = parse_timezone)]
    pub timezone: chrono_tz::Tz,

    /// BigQuery: the most bytes any one query job may bill (`maximumBytesBilled`). BigQuery
    /// refuses a job that would bill more, and the run fails saying so; a guard against a
    /// MERGE reading far more partitions than expected. Unset: no cap.
    #[arg(long, env = "BSP_MAX_BYTES_BILLED")]
    pub max_bytes_billed: Option<u64>,
}

impl SourceArgs {
    /// The source URL: the flag, else the config file's.
    pub fn url<'a>(&'a self, config: Option<&'a Config>) -> Result<&'a str, UsageError> {
        self.source
            .as_deref()
            .or(config.and_then(|c| c.source.as_deref()))
            .ok_or_else(|| UsageError::new("no source: pass --source (or BSP_SOURCE)"))
    }
}

impl TargetArgs {
    /// The target URL; a usage error when none is given.
    pub fn url(&self) -> Result<&str, UsageError> {
        self.target
            .as_deref()
            .ok_or_else(|| UsageError::new("no target: pass --target (or BSP_TARGET)"))
    }

    pub fn options(&self) -> Options {
        Options {
            credentials: self.credentials.clone(),
            lookback: self.lookback,
            streamed_at: self.streamed_at_column.clone(),
            timezone: self.timezone,
            max_bytes_billed: self.max_bytes_billed,
        }
    }

    pub fn columns(&self) -> Columns {
        Columns {
            table: self.messages_table.clone(),
            key: self.key_column.clone(),
            status: self.status_column.clone(),
            errors: self.errors_column.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub target: TargetArgs,

    /// How long a key without a messages row stays pending (counted from the run that first
    /// saw it) before it is dead-lettered: e.g. 7d, 36h, 90m.
    #[arg(long, env = "BSP_PENDING_TTL", default_value = "7d", value_parser = parse_duration)]
    pub pending_ttl: chrono::Duration,

    /// Organizations file (TOML): routes each Gupshup app to its organization's target;
    /// organizations are processed concurrently. See README, "Many organizations".
    #[arg(long, env = "BSP_CONFIG", conflicts_with = "target")]
    pub config: Option<PathBuf>,

    /// `run` lists from where the last run safely ended, less this window for files a
    /// receiver writes late under an earlier name (e.g. 2h, 90m); the whole source is
    /// listed once a day anyway. Names that do not grow with time need a window as long
    /// as the lateness (a huge one lists everything every run).
    #[arg(long, env = "BSP_LIST_GRACE", default_value = "2h", value_parser = parse_duration)]
    pub list_grace: chrono::Duration,

    /// Pretend the run starts at this time (RFC 3339). For tests and replays.
    #[arg(long, env = "BSP_NOW", hide = true)]
    pub now: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// First day of the window (YYYY-MM-DD), by the date in the file's path, else its time.
    #[arg(long, env = "BSP_FROM")]
    pub from: NaiveDate,

    /// Last day of the window, inclusive.
    #[arg(long, env = "BSP_TO")]
    pub to: NaiveDate,

    /// Files per committed chunk: an interrupted backfill resumes after the last chunk it
    /// committed, and memory stays bounded by one chunk's messages.
    #[arg(long, env = "BSP_CHUNK_FILES", default_value_t = 2000)]
    pub chunk_files: usize,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Write the resolution here instead of standard output (replacing the file;
    /// it is whole only when the run exits 0).
    #[arg(long, short, env = "BSP_OUTPUT")]
    pub output: Option<PathBuf>,

    /// Bound memory to about this many MiB (48 or more): past it, state spills to disk,
    /// partitioned by key hash; the output is the same. For backfills larger than memory.
    #[arg(long, env = "BSP_MEMORY_LIMIT", value_parser = clap::value_parser!(u64).range(48..))]
    pub memory_limit: Option<u64>,

    /// Bytes of map each worker keeps before spilling, instead of its share of
    /// --memory-limit: for tests, which force spilling on small inputs.
    #[arg(long, hide = true, requires = "memory_limit")]
    pub spill_worker_budget: Option<usize>,

    /// Print each message's timeline instead of its status: the earliest time each status was
    /// reported (enqueued_at … deleted_at, null when never) and the earliest failure's error_code.
    #[arg(long, env = "BSP_TIMELINE", conflicts_with = "memory_limit")]
    pub timeline: bool,

    /// Keep dead-lettered records here as JSON lines (file, line, reason, raw). Without it they
    /// are only counted.
    #[arg(long, env = "BSP_DEAD_LETTERS")]
    pub dead_letters: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Organizations file (TOML): one report per organization, each in its time zone.
    #[arg(long, env = "BSP_CONFIG", conflicts_with = "target")]
    pub config: Option<PathBuf>,

    /// First day of the window (YYYY-MM-DD): messages first reported from that day on, in
    /// the organization's time zone (--timezone).
    #[arg(long, env = "BSP_FROM")]
    pub from: NaiveDate,

    /// Last day of the window, inclusive.
    #[arg(long, env = "BSP_TO")]
    pub to: NaiveDate,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Organizations file (TOML): the status of every organization's target.
    #[arg(long, env = "BSP_CONFIG", conflicts_with = "target")]
    pub config: Option<PathBuf>,

    /// Exit 1 when the last successful run ended longer ago than this (e.g. 1h, 90m).
    /// Without it, exit 1 only when no run ever succeeded.
    #[arg(long, env = "BSP_MAX_LAG", value_parser = parse_duration)]
    pub max_lag: Option<chrono::Duration>,

    /// Pretend it is this time (RFC 3339). For tests and replays.
    #[arg(long, env = "BSP_NOW", hide = true)]
    pub now: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Also create (or replace) the dashboards' view `bsp_delivery_daily`: per day of first
    /// report (--timezone) and flow_name, sent, delivered, read, failed and latency percentiles.
    #[arg(long, env = "BSP_VIEWS")]
    pub views: bool,
}

/// Requests in flight to a bucket. GCS answers a GET in tens of milliseconds while a
/// parsing thread needs a body every millisecond or so (Little's law: in flight =
/// rate × latency), and every request in flight holds a body in memory: 16 per thread.
fn default_concurrency() -> usize {
    crate::pipeline::workers().max(2) * 16
}

/// An IANA time zone name.
pub fn parse_timezone(text: &str) -> Result<chrono_tz::Tz, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IANA time zone name (e.g. Asia/Kolkata, UTC)"))
}

/// The `--log-format` a command line asks for, read without clap (which refused
/// the line): the flag, else `BSP_LOG_FORMAT`, else auto.
pub fn log_format_hint(args: impl IntoIterator<Item = String>) -> LogFormat {
    use clap::ValueEnum;
    let args: Vec<String> = args.into_iter().collect();
    let flag = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix("--log-format") {
            Some(rest) if rest.starts_with('=') => Some(rest[1..].to_owned()),
            Some("") => args.get(i + 1).cloned(),
            _ => None,
        });
    flag.or_else(|| std::env::var("BSP_LOG_FORMAT").ok())
        .and_then(|f| LogFormat::from_str(&f, true).ok())
        .unwrap_or(LogFormat::Auto)
}

/// clap's message up to its usage block, in one line without the `error:` prefix.
pub fn one_line(rendered: &str) -> String {
    let head = rendered.split("\n\n").next().unwrap_or(rendered);
    let words: Vec<&str> = head.split_whitespace().collect();
    let line = words.join(" ");
    line.strip_prefix("error: ")
        .map(str::to_owned)
        .unwrap_or(line)
}

/// Longest duration accepted: nothing this job waits for or looks back over is
/// older, and larger values would overflow time arithmetic.
const MAX_DURATION_DAYS: i64 = 3650;

/// `7d`, `36h`, `90m`, `45s`; at most 3650 days.
pub fn parse_duration(text: &str) -> Result<chrono::Duration, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and d, h, m or s"))?;
    let unit_seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" | "" => 1,
        _ => return Err(format!("{text:?}: the unit must be d, h, m or s")),
    };
    n.checked_mul(unit_seconds)
        .filter(|&s| s <= MAX_DURATION_DAYS * 86_400)
        .map(chrono::Duration::seconds)
        .ok_or_else(|| format!("{text:?}: at most {MAX_DURATION_DAYS} days"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(chrono::Duration::days(7)));
        assert_eq!(parse_duration("90m"), Ok(chrono::Duration::minutes(90)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3w").is_err());
        assert_eq!(parse_duration("3650d"), Ok(chrono::Duration::days(3650)));
        for absurd in [
            "3651d",
            "100000000d",
            "999999999999999d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(absurd).is_err(), "{absurd}");
        }
    }

    #[test]
    fn time_zones() {
        assert_eq!(parse_timezone("Asia/Kolkata"), Ok(chrono_tz::Asia::Kolkata));
        assert!(parse_timezone("IST+5").is_err());
    }
}
