//! `report`: the delivery funnel of a window of days, read from the timeline
//! table alone. The window is the days of each message's first report in the
//! organization's time zone.

use std::collections::HashMap;
use std::io::IsTerminal;

use anyhow::Result;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::destinations::{flag_destination, organizations};
use crate::cli::ReportArgs;
use crate::config::Config;
use crate::error::UsageError;
use crate::resolve::{Timeline, Timelines};
use crate::status::Status;
use crate::target;

/// How many error codes the report lists.
const TOP_CODES: usize = 10;

/// The funnel of one window. Shares are percentages of `messages`, except
/// `read_within_24h_pct`, a percentage of `sent`. Latencies are in seconds,
/// nearest-rank percentiles, null without a pair to measure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Funnel {
    /// With `--config`: whose funnel this is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub timezone: String,
    pub messages: u64,
    pub sent: u64,
    pub delivered_pct: f64,
    pub read_pct: f64,
    pub failed_pct: f64,
    pub sent_to_delivered_median_s: Option<f64>,
    pub sent_to_delivered_p90_s: Option<f64>,
    pub delivered_to_read_median_s: Option<f64>,
    pub delivered_to_read_p90_s: Option<f64>,
    pub read_within_24h_pct: f64,
    pub top_error_codes: Vec<ErrorCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    pub code: i64,
    pub messages: u64,
}

pub async fn report(args: &ReportArgs) -> Result<()> {
    if args.from > args.to {
        return Err(UsageError::new(format!(
            "--from {} is after --to {}: the window is empty",
            args.from, args.to
        ))
        .into());
    }
    let destinations = match &args.config {
        None => vec![flag_destination(&args.target)?],
        Some(path) => organizations(&args.target, &Config::load(path)?, None, false)?.0,
    };
    let after = next_day(args.to)?;
    for d in destinations {
        let tz = d.options.timezone;
        let target = target::open(&d.url, d.columns, &d.options).await?;
        let (from, until) = (day_start(args.from, tz), day_start(after, tz));
        let timelines = target.timelines(from, until).await?;
        let mut funnel = Funnel::of(&timelines, args.from, args.to, tz);
        funnel.organization = args.config.is_some().then_some(d.name);
        if std::io::stdout().is_terminal() {
            print!("{}", funnel.table());
        } else {
            println!("{}", serde_json::to_string(&funnel)?);
        }
    }
    Ok(())
}

fn next_day(d: NaiveDate) -> Result<NaiveDate> {
    d.succ_opt()
        .ok_or_else(|| UsageError::new(format!("--to {d} is the last day there is")).into())
}

/// Midnight of `day` in `tz`, in UTC (the first instant of the day where a
/// daylight-saving change skips midnight).
fn day_start(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    tz.from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
        })
        .expect("a day has a first hour")
        .with_timezone(&Utc)
}

impl Funnel {
    pub fn of(timelines: &Timelines, from: NaiveDate, to: NaiveDate, tz: Tz) -> Funnel {
        // Inbound `deleted` (a user deleting their own message) is no message we sent.
        let sent_by_us = |t: &Timeline| {
            [
                Status::Enqueued,
                Status::Sent,
                Status::Error,
                Status::Delivered,
                Status::Read,
                Status::Played,
            ]
            .iter()
            .any(|s| t.at(*s).is_some())
        };
        let ours: Vec<&Timeline> = timelines
            .iter()
            .map(|(_, t)| t)
            .filter(|t| sent_by_us(t))
            .collect();
        let reached = |t: &Timeline, s: &[Status]| s.iter().any(|s| t.at(*s).is_some());
        let count = |f: &dyn Fn(&Timeline) -> bool| ours.iter().filter(|t| f(t)).count() as u64;
        let messages = ours.len() as u64;
        let sent = count(&|t| {
            reached(
                t,
                &[
                    Status::Sent,
                    Status::Delivered,
                    Status::Read,
                    Status::Played,
                ],
            )
        });
        let delivered = count(&|t| reached(t, &[Status::Delivered, Status::Read, Status::Played]));
        let read = count(&|t| reached(t, &[Status::Read, Status::Played]));
        let failed = count(&|t| t.resolved().status == Status::Error);
        let seconds = |a: Status, b: Status| -> Vec<f64> {
            ours.iter()
                .filter_map(|t| Some((t.at(b)? - t.at(a)?).max(0) as f64 / 1000.0))
                .collect()
        };
        let (to_delivered, to_read) = (
            seconds(Status::Sent, Status::Delivered),
            seconds(Status::Delivered, Status::Read),
        );
        let day_ms = 86_400_000;
        let read_in_a_day = count(&|t| match (t.at(Status::Sent), t.at(Status::Read)) {
            (Some(s), Some(r)) => r - s <= day_ms,
            _ => false,
        });
        let mut codes: HashMap<i64, u64> = HashMap::new();
        for code in ours.iter().filter_map(|t| t.error_code()) {
            *codes.entry(code).or_default() += 1;
        }
        let mut top: Vec<ErrorCount> = codes
            .into_iter()
            .map(|(code, messages)| ErrorCount { code, messages })
            .collect();
        top.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.code.cmp(&b.code)));
        top.truncate(TOP_CODES);
        Funnel {
            organization: None,
            from,
            to,
            timezone: tz.name().to_owned(),
            messages,
            sent,
            delivered_pct: pct(delivered, messages),
            read_pct: pct(read, messages),
            failed_pct: pct(failed, messages),
            sent_to_delivered_median_s: nearest_rank(&to_delivered, 0.5),
            sent_to_delivered_p90_s: nearest_rank(&to_delivered, 0.9),
            delivered_to_read_median_s: nearest_rank(&to_read, 0.5),
            delivered_to_read_p90_s: nearest_rank(&to_read, 0.9),
            read_within_24h_pct: pct(read_in_a_day, sent),
            top_error_codes: top,
        }
    }

    /// The funnel as a person reads it.
    fn table(&self) -> String {
        let secs = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.0} s"));
        let whose = self
            .organization
            .as_deref()
            .map_or(String::new(), |o| format!("{o}: "));
        let mut out = format!(
            "{whose}Delivery report {} .. {} ({})\n\
             messages             {}\n\
             sent                 {}\n\
             delivered            {:.1} %\n\
             read                 {:.1} %\n\
             failed               {:.1} %\n\
             sent -> delivered    median {}, p90 {}\n\
             delivered -> read    median {}, p90 {}\n\
             read within 24 h     {:.1} % of sent\n",
            self.from,
            self.to,
            self.timezone,
            self.messages,
            self.sent,
            self.delivered_pct,
            self.read_pct,
            self.failed_pct,
            secs(self.sent_to_delivered_median_s),
            secs(self.sent_to_delivered_p90_s),
            secs(self.delivered_to_read_median_s),
            secs(self.delivered_to_read_p90_s),
            self.read_within_24h_pct,
        );
        for e in &self.top_error_codes {
            out += &format!("error {:<14} {} messages\n", e.code, e.messages);
        }
        out
    }
}

/// A share in percent, one decimal; 0 of nothing is 0.
fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// The nearest-rank percentile: the smallest value with at least `p` of all at or below it.
fn nearest_rank(values: &[f64], p: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 0.5), Some(5.0));
        assert_eq!(nearest_rank(&v, 0.9), Some(9.0));
        assert_eq!(nearest_rank(&[7.0], 0.9), Some(7.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn a_day_starts_at_local_midnight() {
        let d = NaiveDate::from_ymd_opt(2025, 11, 22).unwrap();
        assert_eq!(
            day_start(d, chrono_tz::Asia::Kolkata).to_rfc3339(),
            "2025-11-21T18:30:00+00:00"
        );
    }
}
