//! Helpers shared by the integration tests: the built binary, scratch folders,
//! and reading a SQLite target back.
#![allow(dead_code)]

#[cfg(feature = "emulator-tests")]
pub mod emulators;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_bsp-status-loader");

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Runs the binary with JSON logs and no inherited emulator settings.
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("BSP_LOG_FORMAT", "json")
        .env_remove("RUST_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

/// `run` from `src` into the SQLite database `db`, with `extra` arguments.
pub fn run_job(src: &Path, db: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    run_into(src, &format!("sqlite://{}", db.display()), extra, envs)
}

/// `run` from `src` into the target URL `target`, with `extra` arguments.
pub fn run_into(src: &Path, target: &str, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut args = vec!["run", "--source", src.to_str().unwrap(), "--target", target];
    args.extend_from_slice(extra);
    run(&args, envs)
}

/// `init` of `target` twice: it must succeed both times (it is safe to repeat).
pub fn init_twice(target: &str) {
    for _ in 0..2 {
        let out = run(&["init", "--target", target], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// Starts the binary twice at once with the same arguments and waits for both.
pub fn run_twice_at_once(args: &[&str], envs: &[(&str, &str)]) -> (Output, Output) {
    let spawn = || {
        Command::new(BIN)
            .args(args)
            .env("BSP_LOG_FORMAT", "json")
            .envs(envs.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs")
    };
    let (a, b) = (spawn(), spawn());
    (a.wait_with_output().unwrap(), b.wait_with_output().unwrap())
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The summary record of a `run` (the log line with `"summary":true`).
pub fn summary(out: &Output) -> serde_json::Value {
    stderr(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["summary"] == true)
        .unwrap_or_else(|| panic!("no summary in {}", stderr(out)))
}

/// Copies fixture callback files (paths relative to fixtures/callbacks) into `dir`.
pub fn copy_callbacks(dir: &Path, files: &[&str]) {
    for f in files {
        let to = dir.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixtures().join("callbacks").join(f), to).unwrap();
    }
}

/// A SQLite target seeded with fixtures/messages.sql.
pub fn seeded_db(dir: &Path) -> PathBuf {
    let path = dir.join("target.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&std::fs::read_to_string(fixtures().join("messages.sql")).unwrap())
        .unwrap();
    path
}

/// A messages row as (id, key, bsp_status, errors).
pub type Row = (i64, Option<String>, Option<String>, Option<String>);

/// Every messages row, in a stable order.
pub fn messages(db: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, bsp_message_id, bsp_status, errors FROM messages ORDER BY id, bsp_status, rowid")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

pub const FIXTURE_FILES: [&str; 6] = [
    "2025/11/22/01/v2.ndjson",
    "2025/11/22/02/v3.ndjson",
    "2025/11/22/03/wrapped.ndjson",
    "2025/11/22/04/late.ndjson.gz",
    "2025/11/22/05/no-suffix.ndjson",
    "2025/11/22/06/bad.ndjson",
];

/// A V2 callback line: `status` of message `id` at `ts` (seconds), with an error
/// code for failures.
pub fn v2_line(id: &str, status: &str, ts: i64, code: Option<i64>) -> String {
    let code = code.map_or(String::new(), |c| format!(r#","code":{c}"#));
    format!(
        r#"{{"app":"DemoAPI","timestamp":{ms},"version":2,"type":"message-event","payload":{{"id":"{id}","type":"{status}","destination":"91XXXXXXXX10","payload":{{"ts":{ts}{code}}}}}}}"#,
        ms = ts * 1000
    )
}

/// 2025-11-22T00:00:00Z in seconds.
pub const FUNNEL_DAY: i64 = 1_763_769_600;

/// Callbacks whose funnel for 2025-11-22 (UTC) is known: six messages of ours
/// (one only enqueued and failed), an inbound deletion, one message of the next day.
pub fn funnel_callbacks() -> String {
    let t = FUNNEL_DAY;
    let lines = [
        v2_line("m1", "sent", t, None),
        v2_line("m1", "delivered", t + 10, None),
        v2_line("m1", "read", t + 100, None),
        v2_line("m2", "sent", t, None),
        v2_line("m2", "delivered", t + 30, None),
        v2_line("m3", "sent", t, None),
        v2_line("m3", "failed", t + 5, Some(470)),
        v2_line("m4", "enqueued", t, None),
        v2_line("m4", "failed", t + 2, Some(470)),
        v2_line("m4", "failed", t + 1, Some(131026)),
        v2_line("m5", "deleted", t + 50, None),
        v2_line("m6", "sent", t, None),
        v2_line("m6", "delivered", t + 20, None),
        v2_line("m6", "read", t + 2 * 86_400, None),
        v2_line("m7", "sent", t + 86_400 + 3600, None),
    ];
    lines.join("\n") + "\n"
}

/// What `report --from 2025-11-22 --to 2025-11-22` prints for `funnel_callbacks`
/// (UTC), worked out by hand.
pub fn funnel_expected() -> serde_json::Value {
    serde_json::json!({
        "from": "2025-11-22", "to": "2025-11-22", "timezone": "UTC",
        "messages": 5, "sent": 4,
        "delivered_pct": 60.0, "read_pct": 40.0, "failed_pct": 40.0,
        "sent_to_delivered_median_s": 20.0, "sent_to_delivered_p90_s": 30.0,
        "delivered_to_read_median_s": 90.0, "delivered_to_read_p90_s": 172780.0,
        "read_within_24h_pct": 25.0,
        "top_error_codes": [ { "code": 470, "messages": 1 }, { "code": 131026, "messages": 1 } ],
    })
}

/// Glific rows for the funnel's messages: m1 twice (a copy), m2 … m6 once,
/// flows "welcome" (m1, m2, m3) and "survey" (m4, m6); an inbound row too.
pub fn view_seed_sql(messages: &str) -> String {
    let row = |id: i64, key: &str, flow_name: &str, flow: &str, at: &str| {
        format!(
            "INSERT INTO {messages} (id, type, flow, status, sender_phone, receiver_phone, contact_phone, bsp_message_id, flow_name, inserted_at, bq_inserted_at) \
             VALUES ({id}, 'text', '{flow}', 'sent', 'x', 'x', 'x', '{key}', '{flow_name}', '2025-11-22T00:00:00', '{at}');"
        )
    };
    [
        row(1, "m1", "welcome", "outbound", "2025-11-22T00:00:00"),
        row(1, "m1", "welcome", "outbound", "2025-11-22T00:05:00"),
        row(2, "m2", "welcome", "outbound", "2025-11-22T00:00:00"),
        row(3, "m3", "welcome", "outbound", "2025-11-22T00:00:00"),
        row(4, "m4", "survey", "outbound", "2025-11-22T00:00:00"),
        row(6, "m6", "survey", "outbound", "2025-11-22T00:00:00"),
        row(9, "m5", "welcome", "inbound", "2025-11-22T00:00:00"),
    ]
    .concat()
}

/// The view's rows for `view_seed_sql` and `funnel_callbacks` (UTC), by
/// flow_name, every value as text: worked out by hand.
pub fn view_expected() -> Vec<Vec<String>> {
    let row = |cells: &[&str]| cells.iter().map(|c| c.to_string()).collect();
    vec![
        // survey: m4 (enqueued, failed), m6 (sent 0, delivered 20, read 2 days later)
        row(&[
            "2025-11-22",
            "survey",
            "2",
            "1",
            "1",
            "1",
            "1",
            "20",
            "20",
            "172780",
            "172780",
        ]),
        // welcome: m1 (10, read 90 later), m2 (30), m3 (failed)
        row(&[
            "2025-11-22",
            "welcome",
            "3",
            "3",
            "2",
            "1",
            "1",
            "10",
            "30",
            "90",
            "90",
        ]),
    ]
}

/// An organizations file in `dir`: (name, app, SQLite target) each, unrouted.db beside it.
pub fn write_config(dir: &Path, orgs: &[(&str, &str, &Path)]) -> std::path::PathBuf {
    let mut text = format!(
        "unrouted_target = \"sqlite://{}\"\n",
        dir.join("unrouted.db").display()
    );
    for (name, app, db) in orgs {
        text += &format!(
            "[[organization]]\nname = \"{name}\"\napps = [\"{app}\"]\ntarget = \"sqlite://{}\"\n",
            db.display()
        );
    }
    let path = dir.join("orgs.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every summary record a run logged, in order.
pub fn summaries(out: &Output) -> Vec<serde_json::Value> {
    stderr(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["summary"] == true)
        .collect()
}

/// The V2 and V3 apps of the fixtures.
pub const V2_APP: &str = "DemoAPI";
pub const V3_APP: &str = "82ed52f4-30c0-4f12-81b4-e7ad07bd41de";

/// Two seeded SQLite organizations in `dir`, "v2-org" and "v3-org" (one per
/// fixture app), and their organizations file: (v2's db, v3's db, config).
pub fn two_organizations(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (a, b) = (seeded_db(&a), seeded_db(&b));
    let config = write_config(dir, &[("v2-org", V2_APP, &a), ("v3-org", V3_APP, &b)]);
    (a, b, config)
}

/// `run` from `src` for the organizations of `config`.
pub fn run_orgs(src: &Path, config: &Path, envs: &[(&str, &str)]) -> Output {
    let args = [
        "run",
        "--source",
        src.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    run(&args, envs)
}

/// `report` of one day for a target.
pub fn report_of_day(target: &str, day: &str, envs: &[(&str, &str)]) -> Output {
    let args = ["report", "--target", target, "--from", day, "--to", day];
    run(&args, envs)
}
