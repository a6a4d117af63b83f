//! DELIVERED receipts written in batches. A receipt is a whole inbox entry for the sender
//! (written, made durable, pushed, acknowledged), and a busy conversation makes one per
//! message — as much work again as the messages themselves. So a receipt waits its turn:
//! while one entry of a reader's receipts to a sender waits for its group commit, the
//! next receipts between the same two gather, and then go as one [`EntryKind::Receipts`]
//! entry. The first receipt goes at once; a batch is only as large as what came during
//! the last one's commit, so nothing waits longer than it would have behind that commit.
//!
//! [`EntryKind::Receipts`]: quiver_proto::EntryKind::Receipts

use crate::inbox::{Inbox, InboxError};
use crate::metrics::Metrics;
use quiver_proto::{ReceiptKind, ReceiptOf, UserId};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// At most this many receipts in one entry: a few kilobytes.
const MAX_BATCH: usize = 256;

/// The receipts waiting, by sender (the inbox they go to) and reader; one task writes
/// each pair's while it has any.
pub struct ReceiptBatches {
    inbox: Arc<Inbox>,
    metrics: Arc<Metrics>,
    pending: Arc<Mutex<HashMap<Pair, Pending>>>,
}

/// The owner of the inbox the receipts go to, and the reader they are from.
type Pair = (UserId, UserId);

/// Receipts of one pair not yet written, each with who waits for it.
#[derive(Default)]
struct Pending {
    messages: Vec<ReceiptOf>,
    waiting: Vec<oneshot::Sender<Result<(), InboxError>>>,
}

impl ReceiptBatches {
    /// Batches for `inbox`, counting the receipts stored in `metrics`.
    pub fn new(inbox: Arc<Inbox>, metrics: Arc<Metrics>) -> Self {
        Self {
            inbox,
            metrics,
            pending: Arc::default(),
        }
    }

    /// Stores DELIVERED for `message` in `owner`'s inbox (homed here), from `reader`.
    /// Returns once it is durable, in an entry of its own or with others.
    pub async fn delivered(
        &self,
        owner: &UserId,
        reader: &UserId,
        message: ReceiptOf,
    ) -> Result<(), InboxError> {
        let (tx, rx) = oneshot::channel();
        let pair = (owner.clone(), reader.clone());
        let first = {
            let mut pending = lock(&self.pending);
            let first = !pending.contains_key(&pair);
            let waiting = pending.entry(pair.clone()).or_default();
            waiting.messages.push(message);
            waiting.waiting.push(tx);
            first
        };
        if first {
            let writer = Writer {
                inbox: self.inbox.clone(),
                metrics: self.metrics.clone(),
                pending: self.pending.clone(),
                pair,
                done: false,
            };
            tokio::spawn(writer.run());
        }
        rx.await
            .unwrap_or_else(|_| Err(InboxError::Storage("receipt writer stopped".into())))
    }
}

fn lock(
    pending: &Mutex<HashMap<Pair, Pending>>,
) -> std::sync::MutexGuard<'_, HashMap<Pair, Pending>> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Writes one pair's receipts, a batch at a time, until none wait.
struct Writer {
    inbox: Arc<Inbox>,
    metrics: Arc<Metrics>,
    pending: Arc<Mutex<HashMap<Pair, Pending>>>,
    pair: Pair,
    /// It took its pair out of `pending`, which from then on may be another writer's.
    done: bool,
}

impl Writer {
    async fn run(mut self) {
        loop {
            let (messages, waiting) = {
                let mut pending = lock(&self.pending);
                let Some(batch) = pending.get_mut(&self.pair) else {
                    return;
                };
                if batch.messages.is_empty() {
                    // Under the lock: a receipt that comes after this starts a writer.
                    pending.remove(&self.pair);
                    self.done = true;
                    return;
                }
                let n = batch.messages.len().min(MAX_BATCH);
                let messages: Vec<ReceiptOf> = batch.messages.drain(..n).collect();
                let waiting: Vec<_> = batch.waiting.drain(..n).collect();
                (messages, waiting)
            };
            let (owner, reader) = &self.pair;
            let appended =
                self.inbox
                    .append_receipts(owner, reader, ReceiptKind::Delivered, messages);
            let outcome = match appended {
                Ok((appended, new)) => {
                    self.metrics
                        .receipts_stored
                        .fetch_add(new as u64, Ordering::Relaxed);
                    appended.durable().await.map(drop)
                }
                Err(e) => Err(e),
            };
            for waiter in waiting {
                let _ = waiter.send(outcome.clone());
            }
        }
    }
}

impl Drop for Writer {
    /// A writer stopped before its pair's receipts ran out (the runtime is going): the
    /// ones waiting are told so, and a later receipt starts a new writer.
    fn drop(&mut self) {
        if !self.done {
            lock(&self.pending).remove(&self.pair);
        }
    }
}
