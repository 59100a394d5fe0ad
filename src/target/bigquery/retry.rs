//! What BigQuery failures are worth retrying, how long to wait, and the one
//! retry loop that calls and jobs share.

use std::future::Future;
use std::time::{Duration, Instant};

use tracing::warn;

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

/// Error reasons Google's own client retries.
const TRANSIENT_REASONS: [&str; 5] = [
    "backendError",
    "rateLimitExceeded",
    "jobRateLimitExceeded",
    "jobInternalError",
    "internalError",
];
/// A transaction that lost a race with another one on the same table: the whole
/// script may be run again.
const CONCURRENT_UPDATE: [&str; 2] = ["Could not serialize access", "due to concurrent update"];

/// What one retry loop retries: HTTP calls, or jobs that ran and failed (their
/// calls retry their own HTTP failures, so no failure is retried twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Call,
    Job,
}

impl Failure {
    /// Worth another try (with a new job id when a job failed).
    pub fn is_transient(&self) -> bool {
        match self {
            Failure::Transport(_) => true,
            Failure::Http { code, reason, .. } => {
                *code >= 500 || *code == 429 || TRANSIENT_REASONS.contains(&reason.as_str())
            }
            Failure::Job { reason, .. } => {
                TRANSIENT_REASONS.contains(&reason.as_str()) || self.is_concurrent_update()
            }
        }
    }

    /// A transaction aborted because another one changed the same table.
    pub fn is_concurrent_update(&self) -> bool {
        matches!(self, Failure::Job { message, .. }
            if CONCURRENT_UPDATE.iter().any(|m| message.contains(m)))
    }

    /// The statement touched rows still in the streaming buffer (inserted by
    /// `tabledata.insertAll` in the last ~30 minutes).
    pub fn is_streaming_buffer(&self) -> bool {
        matches!(self, Failure::Job { message, .. } | Failure::Http { message, .. }
            if message.contains("streaming buffer"))
    }

    fn in_scope(&self, scope: Scope) -> bool {
        matches!(
            (self, scope),
            (Failure::Job { .. }, Scope::Job)
                | (Failure::Transport(_) | Failure::Http { .. }, Scope::Call)
        )
    }
}

/// How often and how long one call or job is tried.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_attempts: u32,
    /// No new attempt starts after this much time on one call.
    pub deadline: Duration,
    /// The first wait; each later one doubles, up to 32 times this.
    pub first_wait: Duration,
    /// Reruns of a script aborted for a concurrent update: a long script may
    /// lose several races, so these do not count against the deadline.
    pub concurrent_reruns: u32,
}

impl Default for Policy {
    /// Waits of 1, 2, 4, … 32 s (plus jitter): a dead endpoint fails within ~2 minutes.
    fn default() -> Self {
        Policy {
            max_attempts: 7,
            deadline: Duration::from_secs(150),
            first_wait: Duration::from_secs(1),
            concurrent_reruns: 5,
        }
    }
}

impl Policy {
    /// Whether to try again after `attempt` (0-based) failed with `f`, `elapsed` in.
    pub fn again(&self, f: &Failure, attempt: u32, elapsed: Duration) -> bool {
        if f.is_concurrent_update() {
            return attempt < self.concurrent_reruns;
        }
        f.is_transient() && attempt + 1 < self.max_attempts && elapsed < self.deadline
    }

    /// Exponential backoff with up to 50% jitter, never past 32 times the first wait.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.first_wait * (1 << attempt.min(5));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)).min(self.first_wait * 32)
    }

    /// Runs `op(attempt)` until it succeeds, fails for good, or the policy gives
    /// up; only failures of `scope` are retried.
    pub async fn retry<T, F, Fut>(&self, scope: Scope, mut op: F) -> Result<T, Failure>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            match op(attempt).await {
                Err(f) if f.in_scope(scope) && self.again(&f, attempt, started.elapsed()) => {
                    let wait = self.backoff(attempt);
                    warn!(error = %f, wait_seconds = wait.as_secs_f64(), "BigQuery {}; retrying",
                        if scope == Scope::Job { "job failed" } else { "call failed" });
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
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
        assert!(job("jobInternalError", "").is_transient());
        assert!(job("jobRateLimitExceeded", "").is_transient());
        assert!(job("internalError", "").is_transient());
        assert!(!job("accessDenied", "").is_transient());
        assert!(!job("notFound", "").is_transient());
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
    fn a_concurrent_update_abort_is_rerun_five_times_whatever_the_deadline() {
        let p = Policy::default();
        let abort = job(
            "invalidQuery",
            "Transaction is aborted due to concurrent update against table p.d.messages",
        );
        assert!(abort.is_concurrent_update());
        let late = p.deadline * 3;
        assert!((0..5).all(|a| p.again(&abort, a, late)));
        assert!(!p.again(&abort, 5, late));
        // Other transient failures stop at the deadline.
        assert!(!p.again(&job("backendError", ""), 0, late));
        assert!(p.again(&job("backendError", ""), 0, Duration::ZERO));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Policy::default();
        assert!(p.backoff(0) >= Duration::from_secs(1) && p.backoff(0) < Duration::from_secs(2));
        assert!(p.backoff(3) >= Duration::from_secs(8));
        assert!(p.backoff(20) <= Duration::from_secs(32));
        assert!(p.backoff(4) >= Duration::from_secs(16));
        let total: Duration = (0..p.max_attempts - 1).map(|a| p.backoff(a)).sum();
        assert!(
            total < Duration::from_secs(150),
            "a dead endpoint fails well within 3 minutes"
        );
    }
}
