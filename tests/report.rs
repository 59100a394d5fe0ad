//! `report` on the SQLite target with timelines worked out by hand.

mod common;

use common::*;

#[test]
fn the_report_of_known_timelines_is_what_was_worked_out_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("callbacks");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.ndjson"), funnel_callbacks()).unwrap();
    let db = dir.path().join("t.db");
    let out = run_job(&src, &db, &["--create-messages"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = format!("sqlite://{}", db.display());
    let report = |tz: &str| report_of_day(&target, "2025-11-22", &[("BSP_TIMEZONE", tz)]);
    let utc = report("UTC");
    assert!(utc.status.success(), "{}", stderr(&utc));
    let got: serde_json::Value = serde_json::from_str(stdout(&utc).trim()).unwrap();
    assert_eq!(got, funnel_expected());

    // In Kolkata the 22nd ends at 18:30 UTC: the same six reports, the next day's not.
    let kolkata = report("Asia/Kolkata");
    let got: serde_json::Value = serde_json::from_str(stdout(&kolkata).trim()).unwrap();
    assert_eq!(got["messages"], 5);
    assert_eq!(got["timezone"], "Asia/Kolkata");
    // And the window is its days: the 21st has nothing.
    let before = report_of_day(&target, "2025-11-21", &[]);
    let got: serde_json::Value = serde_json::from_str(stdout(&before).trim()).unwrap();
    assert_eq!(got["messages"], 0);
}

#[test]
fn the_delivery_view_counts_each_glific_message_once_per_day_and_flow() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("callbacks");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.ndjson"), funnel_callbacks()).unwrap();
    let db = dir.path().join("t.db");
    let target = format!("sqlite://{}", db.display());
    let init = run(&["init", "--target", &target, "--create-messages"], &[]);
    assert!(init.status.success(), "{}", stderr(&init));
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&view_seed_sql("\"messages\""))
        .unwrap();
    assert!(run_job(&src, &db, &[], &[]).status.success());
    let views = run(&["init", "--target", &target, "--views"], &[]);
    assert!(views.status.success(), "{}", stderr(&views));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare("SELECT * FROM bsp_delivery_daily ORDER BY flow_name")
        .unwrap();
    let rows: Vec<Vec<String>> = stmt
        .query_map([], |r| {
            (0..11)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        other => format!("{other:?}"),
                    })
                })
                .collect()
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, view_expected(), "{rows:#?}");
}

#[test]
fn with_an_organizations_file_each_organization_gets_its_report_in_its_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("callbacks");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f.ndjson"), funnel_callbacks()).unwrap();
    let db = dir.path().join("t.db");
    assert!(
        run_job(&src, &db, &["--create-messages"], &[])
            .status
            .success()
    );
    let config = dir.path().join("orgs.toml");
    let org = |name: &str, tz: &str| {
        format!(
            "[[organization]]\nname = \"{name}\"\napps = [\"{name}\"]\ntarget = \"sqlite://{}\"\ntimezone = \"{tz}\"\n",
            db.display()
        )
    };
    let text = format!(
        "unrouted_target = \"sqlite://{}\"\n{}{}",
        dir.path().join("u.db").display(),
        org("utc-org", "UTC"),
        org("la-org", "America/Los_Angeles")
    );
    std::fs::write(&config, text).unwrap();
    let out = run(
        &[
            "report",
            "--config",
            config.to_str().unwrap(),
            "--from",
            "2025-11-22",
            "--to",
            "2025-11-22",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reports: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 2);
    let mut utc = reports[0].clone();
    assert_eq!(utc["organization"], "utc-org");
    utc.as_object_mut().unwrap().remove("organization");
    assert_eq!(utc, funnel_expected());
    // Los Angeles' 22nd starts at 08:00 UTC: only the next day's message is in it.
    assert_eq!(reports[1]["organization"], "la-org");
    assert_eq!(reports[1]["timezone"], "America/Los_Angeles");
    assert_eq!(reports[1]["messages"], 1);
}
