//! What BigQuery failures are worth retrying, and how long to wait.

use std::time::Duration;

/// A failed BigQuery call or job, reduced to what the retry policy needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The HTTP request itself failed (connection refused, timeout, unreadable answer).
    #[error("BigQuery unreachable: {0}")]
    Transport(String),
    /// BigQuery answered with an HTTP error.
    #[error("BigQuery answered HTTP {code} ({reason}): {message}")]
    Http {
        code: i64,
        reason: String,
        message: String,
    },
    /// A job ran and failed (`status.errorResult`).
    #[error("BigQuery job {job_id} failed ({reason}): {message}")]
    Job {
        job_id: String,
        reason: String,
        message: String,
    },
}

/// Error reasons BigQuery documents as transient.
const TRANSIENT_REASONS: [&str; 4] = [
    "backendError",
    "rateLimitExceeded",
    "internalError",
    "jobBackendError",
];
/// Concurrent DML on the same table aborts one of the statements; it may be run again.
const CONCURRENT_DML: [&str; 2] = ["Could not serialize access", "concurrent update"];

impl Failure {
    /// Worth another try (with a new job id when a job failed).
    pub fn is_transient(&self) -> bool {
        match self {
            Failure::Transport(_) => true,
            Failure::Http { code, reason, .. } => {
                *code >= 500 || *code == 429 || TRANSIENT_REASONS.contains(&reason.as_str())
            }
            Failure::Job {
                reason, message, ..
            } => {
                TRANSIENT_REASONS.contains(&reason.as_str())
                    || CONCURRENT_DML.iter().any(|m| message.contains(m))
            }
        }
    }

    /// The statement touched rows still in the streaming buffer (inserted by
    /// `tabledata.insertAll` in the last ~30 minutes).
    pub fn is_streaming_buffer(&self) -> bool {
        matches!(self, Failure::Job { message, .. } | Failure::Http { message, .. }
            if message.contains("streaming buffer"))
    }
}

/// How often and how long one call is tried.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_attempts: u32,
    /// No new attempt starts after this much time on one call.
    pub deadline: Duration,
    /// The first wait; each later one doubles, up to 32 times this.
    pub first_wait: Duration,
}

impl Default for Policy {
    /// Waits of 1, 2, 4, … 32 s (plus jitter): a dead endpoint fails within ~2 minutes.
    fn default() -> Self {
        Policy {
            max_attempts: 7,
            deadline: Duration::from_secs(150),
            first_wait: Duration::from_secs(1),
        }
    }
}

impl Policy {
    /// Whether to try again after `attempt` (0-based) failed with `f`, `elapsed` in.
    pub fn again(&self, f: &Failure, attempt: u32, elapsed: Duration) -> bool {
        f.is_transient() && attempt + 1 < self.max_attempts && elapsed < self.deadline
    }

    /// Exponential backoff with up to 50% jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.first_wait * (1 << attempt.min(5));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(reason: &str, message: &str) -> Failure {
        Failure::Job {
            job_id: "j".into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn transient_failures_are_retried_and_others_are_not() {
        let http = |code, reason: &str| Failure::Http {
            code,
            reason: reason.into(),
            message: String::new(),
        };
        assert!(http(503, "backendError").is_transient());
        assert!(http(500, "").is_transient());
        assert!(http(429, "").is_transient());
        assert!(http(403, "rateLimitExceeded").is_transient());
        assert!(!http(403, "accessDenied").is_transient());
        assert!(!http(404, "notFound").is_transient());
        assert!(!http(409, "duplicate").is_transient());
        assert!(Failure::Transport("connection refused".into()).is_transient());
        assert!(job("backendError", "").is_transient());
        assert!(
            job(
                "invalidQuery",
                "Could not serialize access to table p:d.messages due to concurrent update"
            )
            .is_transient()
        );
        assert!(!job("invalidQuery", "Syntax error").is_transient());
    }

    #[test]
    fn the_streaming_buffer_rejection_is_recognised() {
        // As BigQuery words it.
        let f = job(
            "invalidQuery",
            "UPDATE or DELETE statement over table p.d.messages would affect rows in the streaming buffer, which is not supported",
        );
        assert!(f.is_streaming_buffer());
        assert!(!f.is_transient());
        assert!(!job("invalidQuery", "Syntax error").is_streaming_buffer());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Policy::default();
        assert!(p.backoff(0) >= Duration::from_secs(1) && p.backoff(0) < Duration::from_secs(2));
        assert!(p.backoff(3) >= Duration::from_secs(8));
        assert!(p.backoff(20) <= Duration::from_secs(48));
        let total: Duration = (0..p.max_attempts - 1).map(|a| p.backoff(a)).sum();
        assert!(
            total < Duration::from_secs(150),
            "a dead endpoint fails well within 3 minutes"
        );
    }
}
