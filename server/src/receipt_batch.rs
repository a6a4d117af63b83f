//! DELIVERED receipts written in batches. A receipt is a whole inbox entry for the sender
//! (written, made durable, pushed, acknowledged), and a busy conversation makes one per
//! message — as much work again as the messages themselves. So receipts between the same
//! two users gather while the last batch commits, and go as one [`EntryKind::Receipts`]
//! entry; nothing waits longer than it would have behind that commit.
//!
//! How soon a batch is flushed: a lone receipt ([`Urgency::Soon`]) waits up to a
//! millisecond to share the fsync of the next chat, as single receipts always did. A
//! batch that comes while another of the pair commits, or that is a crowd
//! ([`SOON_CROWD`]), is [`Urgency::Now`]: receipts are streaming in (a device draining a
//! backlog, whose push window moves only as its receipts are durable), and a wait would
//! hold up every one of them. Two batches of a pair commit at a time.
//!
//! [`EntryKind::Receipts`]: quiver_proto::EntryKind::Receipts

use crate::commit::{Urgency, SOON_CROWD};
use crate::inbox::{Inbox, InboxError};
use crate::metrics::Metrics;
use futures_util::stream::{FuturesUnordered, StreamExt};
use quiver_proto::{ReceiptKind, ReceiptOf, UserId};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Notify};

/// At most this many receipts in one entry: a few kilobytes.
const MAX_BATCH: usize = 256;

/// Batches of one pair committing at once.
const IN_FLIGHT: usize = 2;

/// The receipts waiting, by sender (the inbox they go to) and reader; one task writes
/// each pair's while it has any.
pub struct ReceiptBatches {
    inbox: Arc<Inbox>,
    metrics: Arc<Metrics>,
    pending: Arc<Mutex<ByPair>>,
}

/// The owner of the inbox the receipts go to, and the reader they are from.
type Pair = (UserId, UserId);

/// Receipts waiting, by owner, then reader: looked up by borrowed names, so a receipt
/// that joins its pair's batch copies neither name.
type ByPair = HashMap<UserId, HashMap<UserId, Pending>>;

/// Receipts of one pair not yet written, each with who waits for it.
#[derive(Default)]
struct Pending {
    receipts: Vec<Receipt>,
    /// Told of each receipt that joins, for a writer waiting on its commits.
    arrived: Arc<Notify>,
}

/// A receipt, and who waits for it to be durable.
type Receipt = (ReceiptOf, oneshot::Sender<Result<(), InboxError>>);

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
        let first = {
            let mut pending = lock(&self.pending);
            let (waiting, first) = match pending.get_mut(owner).and_then(|r| r.get_mut(reader)) {
                Some(known) => (known, None),
                None => {
                    let readers = pending.entry(owner.clone()).or_default();
                    let slot = readers.entry(reader.clone()).or_default();
                    (slot, Some((owner.clone(), reader.clone())))
                }
            };
            waiting.receipts.push((message, tx));
            waiting.arrived.notify_one();
            first.map(|pair| (pair, waiting.arrived.clone()))
        };
        if let Some((pair, arrived)) = first {
            let writer = Writer {
                inbox: self.inbox.clone(),
                metrics: self.metrics.clone(),
                pending: self.pending.clone(),
                pair,
                arrived,
                done: false,
            };
            tokio::spawn(writer.run());
        }
        rx.await
            .unwrap_or_else(|_| Err(InboxError::Storage("receipt writer stopped".into())))
    }
}

fn lock(pending: &Mutex<ByPair>) -> std::sync::MutexGuard<'_, ByPair> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes `pair`'s batch out of `pending` (and its owner, left with none).
fn remove(pending: &mut ByPair, (owner, reader): &Pair) {
    if let Some(readers) = pending.get_mut(owner) {
        readers.remove(reader);
        if readers.is_empty() {
            pending.remove(owner);
        }
    }
}

/// Writes one pair's receipts, a batch at a time, until none wait.
struct Writer {
    inbox: Arc<Inbox>,
    metrics: Arc<Metrics>,
    pending: Arc<Mutex<ByPair>>,
    pair: Pair,
    /// Its pair's [`Pending::arrived`].
    arrived: Arc<Notify>,
    /// It took its pair out of `pending`, which from then on may be another writer's.
    done: bool,
}

/// What a writer found waiting.
enum Taken {
    /// Receipts, each with who waits for it.
    Batch(Vec<Receipt>),
    /// None now, but batches are still committing.
    Nothing,
    /// None, and the writer has let go of its pair.
    End,
}

impl Writer {
    async fn run(mut self) {
        let mut committing = FuturesUnordered::new();
        loop {
            if committing.len() >= IN_FLIGHT {
                committing.next().await;
                continue;
            }
            match self.take(committing.is_empty()) {
                Taken::Batch(batch) => {
                    let streaming = !committing.is_empty() || batch.len() >= SOON_CROWD;
                    let urgency = if streaming {
                        Urgency::Now
                    } else {
                        Urgency::Soon
                    };
                    committing.push(self.commit(batch, urgency));
                }
                Taken::Nothing => {
                    let arrived = self.arrived.clone();
                    tokio::select! {
                        _ = committing.next() => {}
                        _ = arrived.notified() => {}
                    }
                }
                Taken::End => return,
            }
        }
    }

    /// Up to [`MAX_BATCH`] waiting receipts. With none waiting and `may_end` (nothing
    /// committing), lets go of the pair — under the lock, so a receipt that comes after
    /// this starts a writer of its own.
    fn take(&mut self, may_end: bool) -> Taken {
        let mut pending = lock(&self.pending);
        let (owner, reader) = &self.pair;
        let Some(batch) = pending.get_mut(owner).and_then(|r| r.get_mut(reader)) else {
            return Taken::End;
        };
        if batch.receipts.is_empty() {
            if !may_end {
                return Taken::Nothing;
            }
            remove(&mut pending, &self.pair);
            self.done = true;
            return Taken::End;
        }
        let n = batch.receipts.len().min(MAX_BATCH);
        Taken::Batch(batch.receipts.drain(..n).collect())
    }

    /// Appends `batch`'s receipts now (batches go to the log in the order taken), and
    /// returns what tells their waiters once they are durable.
    fn commit(
        &self,
        batch: Vec<Receipt>,
        urgency: Urgency,
    ) -> impl std::future::Future<Output = ()> + use<> {
        let (messages, waiting): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let (owner, reader) = &self.pair;
        let kind = ReceiptKind::Delivered;
        let appended = self
            .inbox
            .append_receipts(owner, reader, kind, messages, urgency);
        if let Ok((_, new)) = &appended {
            self.metrics
                .receipts_stored
                .fetch_add(*new as u64, Ordering::Relaxed);
        }
        async move {
            let outcome = match appended {
                Ok((appended, _)) => appended.durable().await.map(drop),
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
            remove(&mut lock(&self.pending), &self.pair);
        }
    }
}
