//! Many organizations from one config file: callbacks routed by app, unknown apps
//! dead-lettered, a failing organization failing alone, Cloud Run tasks splitting.

mod common;

use std::path::Path;

use common::*;

fn status(db: &Path, id: i64) -> Option<String> {
    messages(db)
        .into_iter()
        .find(|r| r.0 == id)
        .and_then(|r| r.2)
}

fn run_config(config: &Path, envs: &[(&str, &str)]) -> std::process::Output {
    run_orgs(&fixtures().join("callbacks"), config, envs)
}

#[test]
fn callbacks_go_to_their_organization_and_unknown_apps_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, config) = two_organizations(dir.path());
    let out = run_config(&config, &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    assert_eq!(
        status(&a, 2).as_deref(),
        Some("error"),
        "a V2-only failure reaches the V2 organization"
    );
    assert_eq!(status(&b, 2), None, "... and not the other");
    assert_eq!(
        status(&a, 7).as_deref(),
        Some("sent"),
        "V3-only events stay out of the V2 organization"
    );
    assert_eq!(status(&b, 7).as_deref(), Some("read"));
    assert_eq!(status(&a, 1).as_deref(), Some("read"));
    assert_eq!(
        status(&b, 1).as_deref(),
        Some("read"),
        "the V3 twin of a V2 read"
    );

    // Unreadable lines have no app: they go to the unrouted target's dead letters.
    let unrouted = dir.path().join("unrouted.db");
    assert!(
        count(
            &unrouted,
            "SELECT COUNT(*) FROM bsp_loader_dead_letters WHERE reason = 'not JSON'"
        ) >= 1
    );
    // A summary per organization and one for the run.
    let summaries = summaries(&out);
    let orgs: Vec<_> = summaries
        .iter()
        .map(|s| s["organization"].as_str().unwrap_or("run").to_owned())
        .collect();
    assert_eq!(orgs, ["v2-org", "v3-org", "(unrouted)", "run"]);

    // With only the V2 organization configured, V3 callbacks belong to nobody: dead letters.
    let dir2 = tempfile::tempdir().unwrap();
    let a2 = seeded_db(dir2.path());
    let config = write_config(dir2.path(), &[("v2-org", V2_APP, &a2)]);
    assert!(run_config(&config, &[]).status.success());
    let unknown = count(
        &dir2.path().join("unrouted.db"),
        "SELECT COUNT(*) FROM bsp_loader_dead_letters WHERE reason = 'no organization is configured for this app'",
    );
    assert!(unknown >= 10, "every V3 line is kept: {unknown}");
    assert_eq!(status(&a2, 7).as_deref(), Some("sent"));
}

#[test]
fn a_failing_organization_fails_alone_and_tasks_split_the_organizations() {
    let dir = tempfile::tempdir().unwrap();
    let a_dir = dir.path().join("a");
    std::fs::create_dir_all(&a_dir).unwrap();
    let a = seeded_db(&a_dir);
    let broken = dir.path().join("broken.db");
    std::fs::write(&broken, vec![b'x'; 4096]).unwrap();
    let config = write_config(
        dir.path(),
        &[("broken-org", V3_APP, &broken), ("v2-org", V2_APP, &a)],
    );
    let out = run_config(&config, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        status(&a, 2).as_deref(),
        Some("error"),
        "the healthy organization is updated"
    );
    let errors: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["severity"] == "ERROR")
        .collect();
    assert!(
        errors.iter().any(|e| e["organization"] == "broken-org"),
        "{errors:?}"
    );

    // Task 1 of 2 handles the second organization only, and leaves unknown apps to task 0.
    let dir2 = tempfile::tempdir().unwrap();
    let (x, y, config) = two_organizations(dir2.path());
    let out = run_config(
        &config,
        &[("CLOUD_RUN_TASK_INDEX", "1"), ("CLOUD_RUN_TASK_COUNT", "2")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        status(&x, 7).as_deref(),
        Some("sent"),
        "not this task's organization"
    );
    assert_eq!(status(&y, 7).as_deref(), Some("read"));
    assert!(!dir2.path().join("unrouted.db").exists());
}

#[test]
fn a_bad_config_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orgs.toml");
    std::fs::write(
        &config,
        "unrouted_target = \"sqlite://u.db\"\n[[organization]]\nname = \"a\"\napps = [\"A\"]\n",
    )
    .unwrap();
    let out = run_config(&config, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("target"), "{}", stderr(&out));
}
