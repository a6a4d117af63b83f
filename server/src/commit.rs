//! Group commit: many writers, one fsync.
//!
//! A writer appends (fast, not yet durable) and then asks [`GroupCommit`] to call it back
//! once a flush that *started after its append* has finished. One task runs
//! flushes back to back; every request that arrived while a flush was running rides on the
//! next one. Under load, N concurrent senders cost one fsync, not N.

use crate::metrics::Metrics;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Called once with the outcome of the flush that covers the request.
pub type OnDurable = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Handle to the flush task. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<OnDurable>,
    flushes: Arc<AtomicU64>,
}

impl GroupCommit {
    /// Starts the flush task, which makes writes durable with `flush`. The task ends when
    /// every handle is dropped.
    pub fn spawn(
        flush: impl Fn() -> std::io::Result<()> + Send + Sync + 'static,
        metrics: Arc<Metrics>,
    ) -> (Self, JoinHandle<()>) {
        let (requests, rx) = mpsc::unbounded_channel();
        let flushes = Arc::new(AtomicU64::new(0));
        (
            Self {
                requests,
                flushes: flushes.clone(),
            },
            tokio::spawn(run(Arc::new(flush), rx, flushes, metrics)),
        )
    }

    /// How many flushes have run so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Calls `then` after everything written before this call is on disk (or failed to be).
    pub fn then(&self, then: OnDurable) {
        if let Err(mpsc::error::SendError(then)) = self.requests.send(then) {
            then(Err("storage is shutting down".into()));
        }
    }
}

/// Most callbacks one flush answers; bounds the time between a flush and its callbacks.
const MAX_BATCH: usize = 4096;

async fn run(
    flush: Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>,
    mut rx: mpsc::UnboundedReceiver<OnDurable>,
    flushes: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let flush = flush.clone();
        let started = std::time::Instant::now();
        let outcome = tokio::task::spawn_blocking(move || flush()).await;
        metrics.flush(started.elapsed());
        flushes.fetch_add(1, Ordering::Relaxed);
        let outcome = match outcome {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "inbox flush failed");
        }
        for then in batch.drain(..) {
            then(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let flushed = db.clone();
        let (commit, _task) = GroupCommit::spawn(
            move || flushed.flush().map(drop).map_err(std::io::Error::other),
            Arc::default(),
        );
        let writers = 200;
        let mut done = Vec::new();
        for i in 0u32..writers {
            db.insert(i.to_be_bytes(), &[0u8; 64][..]).unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel();
            commit.then(Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }));
            done.push(rx);
        }
        for rx in done {
            rx.await.unwrap().unwrap();
        }
        // Every writer was answered after a flush, and they shared far fewer than one each.
        let flushes = commit.flushes();
        assert!(
            flushes >= 1 && flushes < u64::from(writers) / 4,
            "{flushes} flushes"
        );
    }
}
