//! `status`: is the job keeping up? Reads each target's own tables (never
//! `messages`), prints a table on a terminal or one JSON object otherwise, and
//! fails (exit 1) when a target's last successful run ended too long ago.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::destinations::{Destination, flag_destination, organizations};
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::error::UsageError;
use crate::logging::LogFormat;
use crate::resolve::format_ms;
use crate::target::health::{LastRun, PendingAges};
use crate::target::{self, Health};

pub async fn status(args: &StatusArgs, format: LogFormat) -> Result<()> {
    let now = args.now.unwrap_or_else(Utc::now);
    let max_lag = args.max_lag.map(|d| d.num_seconds());
    let reports = match &args.config {
        None => {
            // One target: what stops it from being read is the command's error.
            let d = flag_destination(&args.target)?;
            vec![Report::new(
                None,
                &d,
                now,
                max_lag,
                Ok(read(&d, now).await?),
            )]
        }
        Some(path) => {
            let config = Config::load(path)?;
            let (destinations, _) = organizations(&args.target, &config, None, false)?;
            let mut reports = Vec::new();
            for d in &destinations {
                let health = read(d, now).await.map_err(|e| format!("{e:#}"));
                reports.push(Report::new(Some(&d.name), d, now, max_lag, health));
            }
            reports
        }
    };
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let healthy = reports.iter().all(|r| r.healthy);
    match (json, args.config.is_some()) {
        (true, false) => println!("{}", serde_json::to_string(&reports[0])?),
        (true, true) => println!(
            "{}",
            serde_json::json!({ "now": format_ms(now.timestamp_millis()), "healthy": healthy, "organizations": reports })
        ),
        (false, _) => print!("{}", table(&reports)),
    }
    if healthy {
        return Ok(());
    }
    let late: Vec<&str> = reports
        .iter()
        .filter(|r| !r.healthy)
        .map(|r| r.organization.as_deref().unwrap_or(&r.target))
        .collect();
    Err(anyhow!(
        "{}: no successful run{}",
        late.join(", "),
        match &args.max_lag {
            Some(_) => " within --max-lag",
            None => " recorded",
        }
    ))
}

/// A target's health; never creates a SQLite file that is not there.
async fn read(d: &Destination, now: DateTime<Utc>) -> Result<Health> {
    if let Some(path) = d.url.strip_prefix("sqlite://")
        && !std::path::Path::new(path).exists()
    {
        return Err(UsageError::new(format!("target {}: no such file", d.url)).into());
    }
    let target = target::open(&d.url, d.columns.clone(), &d.options).await?;
    target.health(now).await
}

/// One target's status, as JSON prints it (README, "status").
#[derive(Debug, Serialize)]
struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    organization: Option<String>,
    target: String,
    now: String,
    /// A successful run ended within `--max-lag` (or at all, without it).
    healthy: bool,
    lag_seconds: Option<i64>,
    max_lag_seconds: Option<i64>,
    last_success_at: Option<String>,
    /// Objects the last successful run listed but left undone.
    backlog: Option<u64>,
    files_24h: u64,
    pending: PendingAges,
    expired_24h: u64,
    dead_letters_24h: BTreeMap<String, u64>,
    last_run: Option<LastRun>,
    /// What reading this status cost on BigQuery.
    bytes_processed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Report {
    fn new(
        organization: Option<&str>,
        d: &Destination,
        now: DateTime<Utc>,
        max_lag: Option<i64>,
        health: Result<Health, String>,
    ) -> Report {
        let (h, error) = match health {
            Ok(h) => (h, None),
            Err(e) => (Health::default(), Some(e)),
        };
        let success = h.last_success.as_ref();
        let lag = success
            .and_then(LastRun::ended)
            .map(|t| (now - t).num_seconds().max(0));
        Report {
            organization: organization.map(str::to_owned),
            target: d.url.clone(),
            now: format_ms(now.timestamp_millis()),
            healthy: lag.is_some_and(|l| max_lag.is_none_or(|m| l <= m)),
            lag_seconds: lag,
            max_lag_seconds: max_lag,
            last_success_at: success.map(|r| r.ended_at.clone()),
            backlog: success.and_then(|r| r.backlog),
            files_24h: h.files_24h,
            pending: h.pending,
            expired_24h: h.expired_24h(),
            dead_letters_24h: h.dead_letters_24h.clone(),
            last_run: h.last_run,
            bytes_processed: h.bytes_processed,
            error,
        }
    }
}

/// The terminal's view: one row per target, then dead letters and errors.
fn table(reports: &[Report]) -> String {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut rows = vec![
        [
            "TARGET",
            "OK",
            "LAG",
            "BACKLOG",
            "FILES 24H",
            "PENDING <1h/<1d/<7d/all",
            "EXPIRED 24H",
            "DEAD 24H",
            "LAST RUN",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for r in reports {
        let p = &r.pending;
        rows.push(vec![
            r.organization.clone().unwrap_or_else(|| r.target.clone()),
            if r.healthy { "yes" } else { "NO" }.into(),
            or_dash(r.lag_seconds.map(human)),
            or_dash(r.backlog.map(|b| b.to_string())),
            r.files_24h.to_string(),
            format!("{}/{}/{}/{}", p.under_1h, p.under_1d, p.under_7d, p.total),
            r.expired_24h.to_string(),
            r.dead_letters_24h.values().sum::<u64>().to_string(),
            or_dash(r.last_run.as_ref().map(|l| {
                let step = l.failed_step.as_deref().map(|s| format!(" ({s})"));
                format!(
                    "{} {}{} at {}, {} bytes",
                    l.run_id,
                    l.outcome,
                    step.unwrap_or_default(),
                    l.ended_at,
                    l.bytes_processed
                )
            })),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    for r in reports {
        let name = r.organization.as_deref().unwrap_or(&r.target);
        for (reason, n) in &r.dead_letters_24h {
            out += &format!("{name}: {n} dead letters in 24 h: {reason}\n");
        }
        if let Some(e) = &r.error {
            out += &format!("{name}: could not be read: {e}\n");
        }
        if r.bytes_processed > 0 {
            out += &format!(
                "{name}: this status processed {} bytes\n",
                r.bytes_processed
            );
        }
    }
    out
}

/// `3d 4h`, `2h 05m`, `7m 03s`, `12s`.
fn human(seconds: i64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3_600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s:02}s"),
        (0, _, _) => format!("{h}h {m:02}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lags_read_at_a_glance() {
        assert_eq!(super::human(12), "12s");
        assert_eq!(super::human(423), "7m 03s");
        assert_eq!(super::human(7500), "2h 05m");
        assert_eq!(super::human(3 * 86_400 + 4 * 3_600 + 5), "3d 4h");
    }
}
