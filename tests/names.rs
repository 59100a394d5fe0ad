//! Whatever names the webhook receiver gives its files, every file is read and
//! marked done: spaces, `#`, `?`, `%`, backslashes, non-ASCII, `#` and digits at
//! the end (which object_store's local store hides), control characters.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use proptest::prelude::*;

/// One file-name segment a Linux file system accepts (no `/`, no NUL, not `.`/`..`).
fn segment() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z0-9]{1,4}",
        Just(" ".to_owned()),
        Just("#".to_owned()),
        Just("?".to_owned()),
        Just("%".to_owned()),
        Just("%20".to_owned()),
        Just("\\".to_owned()),
        Just("é".to_owned()),
        Just("नमस्ते".to_owned()),
        Just("😀".to_owned()),
        Just("\u{1}\t".to_owned()),
        Just("*[]:".to_owned()),
        Just("#123".to_owned()),
        Just("..".to_owned()),
    ];
    proptest::collection::vec(piece, 1..5)
        .prop_map(|p| p.concat())
        .prop_filter("not a relative segment", |s| s != "." && s != "..")
}

fn names() -> impl Strategy<Value = BTreeSet<Vec<String>>> {
    proptest::collection::btree_set(proptest::collection::vec(segment(), 1..3), 1..8)
        // A name may not be both a file and a folder.
        .prop_filter("no file is another's folder", |set| {
            set.iter()
                .all(|a| !set.iter().any(|b| b.len() > a.len() && b.starts_with(a)))
        })
}

fn callback(key: &str) -> String {
    format!(
        r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"statuses":[{{"gs_id":"{key}","status":"sent","timestamp":"1763773200"}}]}}}}]}}]}}"#
    )
}

fn write_files(dir: &Path, names: &BTreeSet<Vec<String>>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (i, segments) in names.iter().enumerate() {
        let path = segments.iter().fold(dir.to_owned(), |p, s| p.join(s));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let key = format!("key-{i}");
        std::fs::write(&path, callback(&key) + "\n").unwrap();
        keys.insert(key);
    }
    keys
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_name_a_file_system_accepts_is_read_and_marked_done(names in names()) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("callbacks");
        std::fs::create_dir(&src).unwrap();
        let keys = write_files(&src, &names);

        let out = run(&["resolve", "--source", src.to_str().unwrap()], &[]);
        prop_assert!(out.status.success(), "{}", stderr(&out));
        let resolved: BTreeSet<String> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| v["bsp_message_id"].as_str().unwrap().to_owned())
            .collect();
        prop_assert_eq!(&resolved, &keys);

        let db = dir.path().join("t.db");
        let out = run_job(&src, &db, &["--create-messages"], &[]);
        prop_assert!(out.status.success(), "{}", stderr(&out));
        prop_assert_eq!(summary(&out)["files"].as_u64(), Some(names.len() as u64));
        prop_assert_eq!(count(&db, "SELECT COUNT(*) FROM bsp_loader_files"), names.len() as i64);
        prop_assert_eq!(count(&db, "SELECT COUNT(*) FROM bsp_loader_pending"), keys.len() as i64);
        prop_assert_eq!(count(&db, "SELECT COUNT(*) FROM bsp_loader_dead_letters"), 0);
        // Done means done: the next run reads nothing.
        let out = run_job(&src, &db, &[], &[]);
        prop_assert!(out.status.success(), "{}", stderr(&out));
        prop_assert_eq!(summary(&out)["files"].as_u64(), Some(0));
    }
}

#[test]
fn a_name_that_is_not_utf8_is_read_under_its_lossy_name() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.ndjson");
    std::fs::write(dir.path().join(name), callback("latin1") + "\n").unwrap();
    let out = run(&["resolve", "--source", dir.path().to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"latin1\""), "{}", stdout(&out));
}
