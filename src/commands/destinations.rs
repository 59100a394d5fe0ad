//! Where a command's batches go or whose health it reads: the flags' target, or
//! the organizations of a config file (then the unrouted target).

use anyhow::Result;

use crate::cli::{TargetArgs, parse_duration, parse_timezone};
use crate::config::Config;
use crate::error::UsageError;
use crate::pipeline::Routing;
use crate::target::{Columns, Options};

pub const UNROUTED: &str = "(unrouted)";

/// One target, named: "default", an organization, or the unrouted one.
pub struct Destination {
    pub name: String,
    pub url: String,
    pub columns: Columns,
    pub options: Options,
}

pub fn flag_destination(args: &TargetArgs) -> Result<Destination> {
    Ok(Destination {
        name: "default".into(),
        url: args.url()?.to_owned(),
        columns: args.columns(),
        options: args.options(),
    })
}

/// The organizations a task handles (`task`: Cloud Run's index and count; None:
/// all), then the unrouted target when `with_unrouted`, and the routing of apps.
pub fn organizations(
    args: &TargetArgs,
    config: &Config,
    task: Option<(usize, usize)>,
    with_unrouted: bool,
) -> Result<(Vec<Destination>, Routing)> {
    let mine = config.mine(task);
    let keep_unrouted = with_unrouted && task.is_none_or(|(index, _)| index == 0);
    let defaults = args.columns();
    let mut destinations = Vec::new();
    for (org, _) in config.organizations.iter().zip(&mine).filter(|(_, m)| **m) {
        let lookback = match &org.lookback {
            Some(l) => parse_duration(l)
                .map_err(|e| UsageError::new(format!("organization {}: lookback {e}", org.name)))?,
            None => args.lookback,
        };
        let or_default =
            |own: &Option<String>, default: &String| own.clone().unwrap_or_else(|| default.clone());
        destinations.push(Destination {
            name: org.name.clone(),
            url: org.target.clone(),
            columns: Columns {
                table: or_default(&org.messages_table, &defaults.table),
                key: or_default(&org.key_column, &defaults.key),
                status: or_default(&org.status_column, &defaults.status),
                errors: or_default(&org.errors_column, &defaults.errors),
            },
            options: Options {
                credentials: org.credentials.clone(),
                lookback,
                streamed_at: or_default(&org.streamed_at_column, &args.streamed_at_column),
                timezone: match &org.timezone {
                    Some(tz) => parse_timezone(tz).map_err(|e| {
                        UsageError::new(format!("organization {}: timezone {e}", org.name))
                    })?,
                    None => args.timezone,
                },
            },
        });
    }
    if keep_unrouted {
        destinations.push(Destination {
            name: UNROUTED.into(),
            url: config.unrouted_target.clone(),
            columns: defaults,
            options: args.options(),
        });
    }
    let orgs: Vec<(Vec<String>, bool)> = config
        .organizations
        .iter()
        .zip(mine)
        .map(|(o, m)| (o.apps.clone(), m))
        .collect();
    Ok((destinations, Routing::organizations(&orgs, keep_unrouted)))
}
