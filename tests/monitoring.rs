//! The metrics and alerts in cron/monitoring/ read fields of the run summary
//! records: every field they read must be in the records the binary writes, so
//! renaming a summary field fails here rather than silently in production.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn monitoring(kind: &str) -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cron/monitoring")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no files in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, v)
        })
        .collect()
}

/// Every string anywhere in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The names following `prefix` in `text` (`jsonPayload.rows_updated` → `rows_updated`).
fn names_after(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_field_a_metric_reads_is_in_the_summaries_the_job_logs() {
    let mut fields = BTreeSet::new();
    let mut metrics = BTreeSet::new();
    for (path, metric) in monitoring("metrics") {
        let name = metric["name"].as_str().unwrap().to_owned();
        assert_eq!(path.file_stem().unwrap().to_str(), Some(name.as_str()));
        let mut texts = vec![];
        strings(&metric, &mut texts);
        for t in &texts {
            fields.extend(names_after(t, "jsonPayload."));
        }
        metrics.insert(name);
    }
    for needed in [
        "rows_updated",
        "dead_lettered",
        "pending",
        "expired",
        "bytes_processed",
        "seconds",
        "organization",
        "outcome",
    ] {
        assert!(
            fields.contains(needed),
            "no metric reads {needed}: {fields:?}"
        );
    }

    // The real binary on the fixtures, with organizations (whose records carry
    // `organization`) and the run's own record.
    let dir = tempfile::tempdir().unwrap();
    let (_, _, config) = two_organizations(dir.path());
    let out = run_orgs(&fixtures().join("callbacks"), &config, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summaries = summaries(&out);
    let (orgs, runs): (Vec<&Value>, Vec<&Value>) = summaries
        .iter()
        .partition(|s| s.get("organization").is_some());
    assert_eq!((orgs.len(), runs.len()), (3, 1), "{summaries:?}");
    for field in &fields {
        for s in &orgs {
            assert!(
                s.get(field).is_some(),
                "an organization's summary lacks {field}: {s}"
            );
        }
        if field != "organization" {
            assert!(
                runs[0].get(field).is_some(),
                "the run's summary lacks {field}: {}",
                runs[0]
            );
        }
    }

    // And every policy reads a metric defined here.
    for (path, policy) in monitoring("policies") {
        let mut texts = vec![];
        strings(&policy, &mut texts);
        let used: Vec<String> = texts
            .iter()
            .flat_map(|t| {
                let mut n = names_after(t, "logging.googleapis.com/user/");
                n.extend(
                    names_after(t, "logging_googleapis_com:user_")
                        .into_iter()
                        .map(|m| m.trim_end_matches("_sum").to_owned()),
                );
                n
            })
            .collect();
        assert!(!used.is_empty(), "{} reads no metric", path.display());
        for m in used {
            assert!(
                metrics.contains(&m),
                "{} reads unknown metric {m}",
                path.display()
            );
        }
    }
}
