//! Where a command's target is: the flags' own, or an organization's from the
//! organizations file, its settings falling back to the flags.

use anyhow::Result;

use crate::cli::{TargetArgs, parse_duration, parse_timezone};
use crate::config::{Config, Organization};
use crate::error::UsageError;
use crate::target::{Columns, Options};

/// One target with its names and settings.
pub struct Destination {
    pub name: String,
    pub url: String,
    pub columns: Columns,
    pub options: Options,
}

impl Destination {
    /// The target the flags name.
    pub fn of_flags(flags: &TargetArgs) -> Result<Destination> {
        Ok(Destination {
            name: "default".into(),
            url: flags.url()?.to_owned(),
            columns: flags.columns(),
            options: flags.options(),
        })
    }

    /// Every organization of a config file.
    pub fn of_config(config: &Config, flags: &TargetArgs) -> Result<Vec<Destination>> {
        config
            .organizations
            .iter()
            .map(|org| Destination::of_organization(org, flags))
            .collect()
    }

    /// An organization's target; what it leaves out comes from the flags.
    pub fn of_organization(org: &Organization, flags: &TargetArgs) -> Result<Destination> {
        let defaults = flags.columns();
        let setting = |value: &Option<String>, default: &String| {
            value.clone().unwrap_or_else(|| default.clone())
        };
        let invalid = |what: &str, e: String| {
            UsageError::new(format!("organization {}: {what} {e}", org.name))
        };
        Ok(Destination {
            name: org.name.clone(),
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
            },
        })
    }
}
