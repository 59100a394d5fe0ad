//! Crash injection for tests: `BSP_FAILPOINT=NAME` aborts the process at the
//! point of that name, as a kill would, so tests can prove a rerun converges.

/// Aborts if the failpoint `name` is armed.
pub fn hit(name: &str) {
    if std::env::var("BSP_FAILPOINT").is_ok_and(|armed| armed == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}
