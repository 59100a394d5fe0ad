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
    let report = |tz: &str| {
        run(
            &[
                "report",
                "--target",
                &target,
                "--from",
                "2025-11-22",
                "--to",
                "2025-11-22",
            ],
            &[("BSP_TIMEZONE", tz)],
        )
    };
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
    let before = run(
        &[
            "report",
            "--target",
            &target,
            "--from",
            "2025-11-21",
            "--to",
            "2025-11-21",
        ],
        &[],
    );
    let got: serde_json::Value = serde_json::from_str(stdout(&before).trim()).unwrap();
    assert_eq!(got["messages"], 0);
}
