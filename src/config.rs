//! The organizations file (TOML): which Gupshup app belongs to which organization,
//! and where that organization's statuses go.
//!
//! ```toml
//! source = "gs://glific-callbacks/gupshup"        # optional; --source wins
//! unrouted_target = "sqlite:///var/lib/bsp/unrouted.db"  # dead letters of unknown apps
//!
//! [[organization]]
//! name = "org1"
//! apps = ["DemoAPI", "82ed52f4-30c0-4f12-81b4-e7ad07bd41de"]   # V2 app, V3 gs_app_id
//! target = "bigquery://my-project/org1/messages"
//! credentials = "/secrets/org1.json"                  # optional; else ADC
//! lookback = "31d"                                    # optional
//! timezone = "Asia/Kolkata"                           # optional; bq_inserted_at's zone
//! max_bytes_billed = 50000000000                      # optional; BigQuery's per-job cap
//! key_column = "bsp_message_id"                       # optional, and so are
//! # messages_table, status_column, errors_column, streamed_at_column
//! ```

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use serde::Deserialize;

use crate::error::UsageError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: Option<String>,
    /// Where callbacks whose app no organization claims are dead-lettered.
    pub unrouted_target: String,
    #[serde(rename = "organization")]
    pub organizations: Vec<Organization>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    pub name: String,
    pub apps: Vec<String>,
    pub target: String,
    pub credentials: Option<String>,
    pub lookback: Option<String>,
    pub messages_table: Option<String>,
    pub key_column: Option<String>,
    pub status_column: Option<String>,
    pub errors_column: Option<String>,
    pub streamed_at_column: Option<String>,
    pub timezone: Option<String>,
    /// BigQuery: `maximumBytesBilled` of this organization's query jobs (bytes).
    pub max_bytes_billed: Option<u64>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError::new(format!("config {}: {e}", path.display())))?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| UsageError::new(format!("config {}: {}", path.display(), e.message())))?;
        config
            .check()
            .map_err(|e| UsageError::new(format!("config {}: {e}", path.display())))?;
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.organizations.is_empty() {
            return Err("no [[organization]]".into());
        }
        let mut names = HashSet::new();
        let mut apps = HashSet::new();
        for org in &self.organizations {
            if !names.insert(&org.name) {
                return Err(format!("organization {:?} appears twice", org.name));
            }
            for app in &org.apps {
                if !apps.insert(app) {
                    return Err(format!("app {app:?} belongs to two organizations"));
                }
            }
        }
        Ok(())
    }

    /// Which organizations this task handles: all, or with Cloud Run's
    /// `CLOUD_RUN_TASK_INDEX`/`CLOUD_RUN_TASK_COUNT`, every COUNT-th from INDEX.
    pub fn mine(&self, task: Option<(usize, usize)>) -> Vec<bool> {
        (0..self.organizations.len())
            .map(|i| task.is_none_or(|(index, count)| i % count == index))
            .collect()
    }
}

/// This task's place among Cloud Run's tasks, if it runs as one of several.
pub fn cloud_run_task() -> Result<Option<(usize, usize)>> {
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    match (var("CLOUD_RUN_TASK_INDEX"), var("CLOUD_RUN_TASK_COUNT")) {
        (Some(index), Some(count)) => {
            let parse = |v: &str| v.parse::<usize>().ok();
            match (parse(&index), parse(&count)) {
                (Some(i), Some(c)) if c > 0 && i < c => Ok(Some((i, c))),
                _ => Err(UsageError::new(format!(
                    "CLOUD_RUN_TASK_INDEX={index} and CLOUD_RUN_TASK_COUNT={count} do not make sense"
                ))
                .into()),
            }
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        unrouted_target = "sqlite://u.db"
        [[organization]]
        name = "a"
        apps = ["A1", "A2"]
        target = "sqlite://a.db"
        [[organization]]
        name = "b"
        apps = ["B1"]
        target = "bigquery://p/b/messages"
        lookback = "10d"
        max_bytes_billed = 20000000000
        [[organization]]
        name = "c"
        apps = ["C1"]
        target = "sqlite://c.db"
    "#;

    #[test]
    fn a_config_parses_and_tasks_split_the_organizations() {
        let c: Config = toml::from_str(GOOD).unwrap();
        c.check().unwrap();
        assert_eq!(c.organizations[1].lookback.as_deref(), Some("10d"));
        assert_eq!(c.organizations[1].max_bytes_billed, Some(20_000_000_000));
        assert_eq!(c.organizations[0].max_bytes_billed, None);
        assert_eq!(c.mine(None), [true, true, true]);
        assert_eq!(c.mine(Some((0, 2))), [true, false, true]);
        assert_eq!(c.mine(Some((1, 2))), [false, true, false]);
    }

    #[test]
    fn write_time_settings_parse() {
        let c: Config = toml::from_str(&GOOD.replace(
            r#"lookback = "10d""#,
            "lookback = \"10d\"\ntimezone = \"Asia/Kolkata\"\nstreamed_at_column = \"written\"",
        ))
        .unwrap();
        assert_eq!(c.organizations[1].timezone.as_deref(), Some("Asia/Kolkata"));
        assert_eq!(
            c.organizations[1].streamed_at_column.as_deref(),
            Some("written")
        );
    }

    #[test]
    fn mistakes_are_reported() {
        let twice = GOOD.replace(r#"apps = ["B1"]"#, r#"apps = ["A1"]"#);
        assert!(
            toml::from_str::<Config>(&twice)
                .unwrap()
                .check()
                .unwrap_err()
                .contains("A1")
        );
        let typo = GOOD.replace("lookback", "lookbak");
        assert!(toml::from_str::<Config>(&typo).is_err());
    }
}
