//! Logs: readable text on a terminal, otherwise JSON lines Cloud Logging reads
//! (`severity`, `message`, `time`, `run_id`, then the event's fields).
//! Callers log counts and names, never a callback's content.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use clap::ValueEnum;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

static RUN_ID: OnceLock<String> = OnceLock::new();

/// Starts the Debug text of a `json` field (invisible on a terminal).
const JSON_MARK: char = '\0';

/// A field value carried as JSON, null included (`field = ?logging::json(&v)`):
/// tracing itself has no null, and summaries need one (`failed_step`).
pub fn json<T: serde::Serialize>(value: &T) -> JsonField {
    JsonField(serde_json::to_string(value).unwrap_or_else(|_| "null".into()))
}

pub struct JsonField(String);

impl fmt::Debug for JsonField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{JSON_MARK}{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

/// Installs the global subscriber; `RUST_LOG` refines the level (default `info`).
pub fn init(format: LogFormat, run_id: &str) {
    let _ = RUN_ID.set(run_id.to_owned());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.event_format(CloudLogging).try_init()
    } else {
        builder.with_target(false).try_init()
    };
}

struct CloudLogging;

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writeln!(w, "{}", Value::Object(record(event)))
    }
}

/// The JSON object of one log event.
fn record(event: &Event<'_>) -> Map<String, Value> {
    let mut fields = Fields(Map::new());
    event.record(&mut fields);
    let mut out = Map::new();
    out.insert(
        "severity".into(),
        severity(*event.metadata().level()).into(),
    );
    out.insert(
        "message".into(),
        fields.0.remove("message").unwrap_or_default(),
    );
    out.insert("time".into(), chrono::Utc::now().to_rfc3339().into());
    if let Some(id) = RUN_ID.get() {
        out.insert("run_id".into(), id.clone().into());
    }
    out.extend(fields.0);
    out
}

fn severity(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        let text = format!("{v:?}");
        let value = match text.strip_prefix(JSON_MARK) {
            Some(json) => serde_json::from_str(json).unwrap_or(Value::Null),
            None => text.into(),
        };
        self.0.insert(f.name().into(), value);
    }
}
