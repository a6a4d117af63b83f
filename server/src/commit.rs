//! Group commit: many writers, one fsync.
//!
//! A writer appends (fast, not yet durable) and then asks [`GroupCommit`] to answer it
//! once a flush that *started after its append* has finished. One task runs
//! flushes back to back; every request that arrived while a flush was running rides on the
//! next one. Under load, N concurrent senders cost one fsync, not N.

use crate::metrics::Metrics;
use quiver_proto::Seq;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Who the flush that covers a request answers: a log's head to raise once it is
/// durable, and the writer waiting. A struct rather than a boxed callback: one is made
/// for every append (every message, every batch of receipts), and a box would be an
/// allocation each.
pub struct OnDurable {
    /// Raised to `seq` (if that is newer) when the flush succeeds.
    pub head: watch::Sender<Seq>,
    /// The request's entry.
    pub seq: Seq,
    /// Told the flush's outcome, after `head` moved.
    pub done: oneshot::Sender<Result<(), String>>,
}

impl OnDurable {
    fn answer(self, outcome: Result<(), String>) {
        if outcome.is_ok() {
            self.head.send_if_modified(|durable| {
                let newer = self.seq > *durable;
                if newer {
                    *durable = self.seq;
                }
                newer
            });
        }
        let _ = self.done.send(outcome);
    }
}

/// How soon a request needs its flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Flush as soon as the flush running now (if any) is done: someone waits for it.
    Now,
    /// The next flush will do, or one within [`SOON`] if nothing urgent comes: a
    /// DELIVERED receipt, whose only waiter is a device's cursor.
    Soon,
}

/// How long a flush that only a few [`Urgency::Soon`] requests asked for waits for an
/// urgent one to share it (tokio's timers round it up to the next millisecond). In a
/// one-to-one chat the DELIVERED of one message and the next message then share one
/// fsync, instead of the message waiting behind the receipt's.
pub const SOON: std::time::Duration = std::time::Duration::from_millis(1);

/// A batch of this many [`Urgency::Soon`] requests is flushed without waiting.
pub const SOON_CROWD: usize = 16;

/// Handle to the flush task. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<(Urgency, OnDurable)>,
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

    /// Answers `then` after everything written before this call is on disk (or failed to
    /// be), by a flush as soon as `urgency` asks.
    pub fn then(&self, urgency: Urgency, then: OnDurable) {
        if let Err(mpsc::error::SendError((_, then))) = self.requests.send((urgency, then)) {
            then.answer(Err("storage is shutting down".into()));
        }
    }
}

/// Most callbacks one flush answers; bounds the time between a flush and its callbacks.
const MAX_BATCH: usize = 4096;

async fn run(
    flush: Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>,
    mut rx: mpsc::UnboundedReceiver<(Urgency, OnDurable)>,
    flushes: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A few receipts wait for company; a crowd of them (a device draining a backlog,
        // whose window moves only as its receipts are durable) goes at once.
        if batch.len() < SOON_CROWD && batch.iter().all(|(urgency, _)| *urgency == Urgency::Soon) {
            let deadline = tokio::time::Instant::now() + SOON;
            while let Ok(Some(request)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                let urgent = request.0 == Urgency::Now;
                batch.push(request);
                if urgent || batch.len() >= SOON_CROWD {
                    break;
                }
            }
        }
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
        for (_, then) in batch.drain(..) {
            then.answer(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks `commit` for a flush of `urgency`; the receiver resolves once it is done.
    fn request(commit: &GroupCommit, urgency: Urgency) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let (head, _) = watch::channel(Seq(0));
        let seq = Seq(1);
        commit.then(urgency, OnDurable { head, seq, done });
        rx
    }

    /// A group commit whose flush does nothing.
    fn idle_commit() -> GroupCommit {
        GroupCommit::spawn(|| Ok(()), Arc::default()).0
    }

    #[tokio::test(start_paused = true)]
    async fn a_receipt_shares_the_flush_of_a_chat_that_follows_it() {
        let commit = idle_commit();
        let receipt = request(&commit, Urgency::Soon);
        // The flush task takes the receipt and waits for company.
        tokio::task::yield_now().await;
        let chat = request(&commit, Urgency::Now);
        chat.await.unwrap().unwrap();
        receipt.await.unwrap().unwrap();
        assert_eq!(commit.flushes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_receipt_is_flushed_after_the_wait() {
        let commit = idle_commit();
        let started = tokio::time::Instant::now();
        request(&commit, Urgency::Soon).await.unwrap().unwrap();
        assert!(started.elapsed() >= SOON, "{:?}", started.elapsed());
        assert_eq!(commit.flushes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crowd_of_receipts_and_a_chat_go_at_once() {
        let commit = idle_commit();
        let started = tokio::time::Instant::now();
        let crowd: Vec<_> = (0..SOON_CROWD)
            .map(|_| request(&commit, Urgency::Soon))
            .collect();
        for receipt in crowd {
            receipt.await.unwrap().unwrap();
        }
        request(&commit, Urgency::Now).await.unwrap().unwrap();
        assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    }

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
            done.push(request(&commit, Urgency::Now));
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
