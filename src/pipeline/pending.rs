//! Hand-overs given out and not yet done. The queue closes when none are left, not
//! when the listing is handed out: a worker inflating a large gzip object hands
//! its stretches on to the others until it is done, and they must still be there.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Default)]
pub(super) struct Pending {
    count: AtomicUsize,
    /// A worker could not go on: the run fails, so everyone stops.
    failed: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Pending {
    /// A hand-over is about to be queued.
    pub fn given(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A hand-over is done (or was never queued), stretches it handed on counted.
    pub fn done(&self) {
        // AcqRel: whatever a worker queued before its last hand-over was done is
        // counted before the count can be seen at zero.
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.changed.notify_one();
        }
    }

    pub fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Waits until every hand-over is done, or a worker failed.
    pub async fn settled(&self) {
        // A change before the wait leaves `notify_one`'s permit: none is missed.
        while self.count.load(Ordering::Acquire) > 0 && !self.failed() {
            self.changed.notified().await;
        }
    }
}

/// Marks the run failed if its worker's thread unwinds, so no one waits for it.
pub(super) struct FailOnPanic<'a>(pub &'a Pending);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn settles_when_the_last_hand_over_is_done_or_one_fails() {
        let pending = Arc::new(Pending::default());
        pending.settled().await; // nothing given out
        pending.given();
        pending.given();
        let waiting = tokio::spawn({
            let pending = pending.clone();
            async move { pending.settled().await }
        });
        pending.done();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one hand-over is still out");
        pending.given(); // a stretch handed on before the last is done
        pending.done();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the stretch is still out");
        pending.done();
        waiting.await.unwrap();
        pending.given();
        let failing = tokio::spawn({
            let pending = pending.clone();
            async move { pending.settled().await }
        });
        pending.fail();
        failing.await.unwrap();
    }
}
