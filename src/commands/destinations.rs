//! Where a command's batches go or whose health it reads: the flags' target, or
//! the organizations of a config file (then the unrouted target).

use anyhow::Result;

use crate::cli::{TargetArgs, parse_duration, parse_timezone};
use crate::config::{Config, Organization};
use crate::error::UsageError;
use crate::pipeline::Routing;
use crate::target::{Columns, Options};

/// The unrouted target's name in logs and summaries.
pub const UNROUTED: &str = "(unrouted)";

/// One target, named: "default", an organization, or the unrouted one.
pub struct Destination {
    pub name: String,
    /// The target of callbacks whose app no organization claims: it gets a
    /// `messages` table of its own when it has none.
    pub unrouted: bool,
    pub url: String,
    pub columns: Columns,
    pub options: Options,
}

impl Destination {
    /// An organization's target; what it leaves out comes from the flags.
    pub fn of_organization(org: &Organization, flags: &TargetArgs) -> Result<Destination> {
        let defaults = flags.columns();
        let setting =
            |own: &Option<String>, default: &String| own.clone().unwrap_or_else(|| default.clone());
        let invalid = |what: &str, e: String| {
            UsageError::new(format!("organization {}: {what} {e}", org.name))
        };
        Ok(Destination {
            name: org.name.clone(),
            unrouted: false,
            url: org.target.clone(),
            columns: Columns {
                table: setting(&org.messages_table, &defaults.table),
                key: setting(&org.key_column, &defaults.key),
                status: setting(&org.status_column, &defaults.status),
                errors: setting(&org.errors_column, &defaults.errors),
            },
            options: Options {
                credentials: org.credentials.clone(),
                lookback: match &org.lookback {
                    Some(l) => parse_duration(l).map_err(|e| invalid("lookback", e))?,
                    None => flags.lookback,
                },
                streamed_at: setting(&org.streamed_at_column, &flags.streamed_at_column),
                timezone: match &org.timezone {
                    Some(tz) => parse_timezone(tz).map_err(|e| invalid("timezone", e))?,
                    None => flags.timezone,
                },
                max_bytes_billed: org.max_bytes_billed.or(flags.max_bytes_billed),
            },
        })
    }
}

pub fn flag_destination(args: &TargetArgs) -> Result<Destination> {
    Ok(Destination {
        name: "default".into(),
        unrouted: false,
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
        destinations.push(Destination::of_organization(org, args)?);
    }
    if keep_unrouted {
        destinations.push(Destination {
            name: UNROUTED.into(),
            unrouted: true,
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
