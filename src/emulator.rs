//! Google's emulator convention: `STORAGE_EMULATOR_HOST` / `BIGQUERY_EMULATOR_HOST`
//! name a `host:port` (or a URL) to talk to without authentication.

/// The emulator's base URL named by the variable `var`, if set: `http://` is
/// assumed when no scheme is given; no trailing `/`.
pub fn base_url(var: &str) -> Option<String> {
    let host = std::env::var(var).ok().filter(|h| !h.is_empty())?;
    let base = if host.contains("://") {
        host
    } else {
        format!("http://{host}")
    };
    Some(base.trim_end_matches('/').to_owned())
}
