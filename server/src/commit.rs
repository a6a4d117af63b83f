//! Group commit: many writers, one fsync.
//!
//! A writer inserts into sled (fast, not yet durable) and then asks [`GroupCommit`] to call
//! it back once a flush that *started after its insert* has finished. One task runs
//! flushes back to back; every request that arrived while a flush was running rides on the
//! next one. Under load, N concurrent senders cost one fsync, not N.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Called once with the outcome of the flush that covers the request.
pub type OnDurable = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Handle to the flush task. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<OnDurable>,
}

impl GroupCommit {
    /// Starts the flush task for `db`. The task ends when every handle is dropped.
    pub fn spawn(db: sled::Db) -> (Self, JoinHandle<()>) {
        let (requests, rx) = mpsc::unbounded_channel();
        (Self { requests }, tokio::spawn(run(db, rx)))
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

async fn run(db: sled::Db, mut rx: mpsc::UnboundedReceiver<OnDurable>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let db = db.clone();
        let outcome = match tokio::task::spawn_blocking(move || db.flush()).await {
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
