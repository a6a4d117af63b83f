//! The outbox: every message the app sends stays here, per conversation and in order,
//! until the node answers `Sent` (or refuses it for good).
//!
//! Each conversation has one queue and at most one open stream. Writes happen under the
//! queue's lock and always in queue order; when a stream or connection is lost the whole
//! queue is written again on the next stream, so a later message can never be stored
//! before an earlier one. Rewrites are safe: the node answers a repeated client message id
//! with the `seq` it already gave.

use crate::error::SendError;
pub(crate) use crate::store::Conversation;
use quiver_proto::{ClientMsgId, ConversationRequest, Seq};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

impl Conversation {
    /// The first frame of this conversation's stream.
    pub fn open(&self) -> ConversationRequest {
        match self {
            Conversation::Friend(peer) => ConversationRequest::Open { peer: peer.clone() },
            Conversation::Group(group) => ConversationRequest::OpenGroup {
                group: group.clone(),
            },
        }
    }
}

/// A message written (or not yet) but not yet answered with `Sent`.
pub(crate) struct Pending {
    pub id: ClientMsgId,
    /// The encoded `Chat` frame, sealed body included: rewrites send identical bytes.
    pub frame: Vec<u8>,
    pub waiters: Vec<oneshot::Sender<Result<Seq, SendError>>>,
    /// When it was last written to a stream.
    pub written_at: Option<Instant>,
}

/// One conversation's stream on one connection.
pub(crate) struct Stream {
    pub send: quinn::SendStream,
    /// Which connection it belongs to.
    pub link: u64,
}

impl Stream {
    /// Which stream of which connection this is: a conversation may have had several on
    /// one connection (idle ones are closed and new ones opened).
    pub fn key(&self) -> (u64, quinn::StreamId) {
        (self.link, self.send.id())
    }
}

/// One conversation's queue.
#[derive(Default)]
pub(crate) struct Queue {
    pub pending: VecDeque<Pending>,
    /// How many of `pending` (from the front) were written to `stream`.
    pub written: usize,
    pub stream: Option<Stream>,
    /// When a message was last written or answered.
    pub last_active: Option<Instant>,
}

impl Queue {
    /// Adds a message, or a waiter to a message already queued under the same id.
    pub fn push(
        &mut self,
        id: ClientMsgId,
        frame: Vec<u8>,
        waiter: oneshot::Sender<Result<Seq, SendError>>,
    ) {
        match self.pending.iter_mut().find(|p| p.id == id) {
            Some(pending) => pending.waiters.push(waiter),
            None => self.pending.push_back(Pending {
                id,
                frame,
                waiters: vec![waiter],
                written_at: None,
            }),
        }
    }

    /// Settles the message `id` with `outcome` and takes it out of the queue.
    pub fn settle(&mut self, id: ClientMsgId, outcome: Result<Seq, SendError>) {
        self.last_active = Some(Instant::now());
        let Some(at) = self.pending.iter().position(|p| p.id == id) else {
            return; // an answer to a rewrite of something already settled
        };
        if at < self.written {
            self.written -= 1;
        }
        if let Some(pending) = self.pending.remove(at) {
            for waiter in pending.waiters {
                let _ = waiter.send(outcome.clone());
            }
        }
    }

    /// Forgets the stream (if it is `which`, or any when `None`): everything pending
    /// will be written again on the next one.
    pub fn lose_stream(&mut self, which: Option<(u64, quinn::StreamId)>) {
        if which.is_none() || self.stream.as_ref().map(Stream::key) == which {
            self.stream = None;
            self.written = 0;
        }
    }

    /// Settles every message with `error` (the conversation is refused for good).
    pub fn fail_all(&mut self, error: SendError) {
        for pending in self.pending.drain(..) {
            for waiter in pending.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        self.written = 0;
    }

    /// Closes the stream if nothing waits for an answer and it was quiet for `after` (or
    /// at all, with `after` zero); returns whether it did.
    pub fn close_if_idle(&mut self, now: Instant, after: Duration) -> bool {
        let quiet = self
            .last_active
            .is_none_or(|t| now.duration_since(t) >= after);
        if !self.pending.is_empty() || !quiet {
            return false;
        }
        match self.stream.take() {
            Some(mut stream) => {
                // A clean end: the node answers what it has and ends its side too.
                let _ = stream.send.finish();
                true
            }
            None => false,
        }
    }

    /// Whether a written message has waited longer than `after` for its answer.
    pub fn overdue(&self, now: Instant, after: Duration) -> bool {
        self.pending
            .iter()
            .take(self.written)
            .any(|p| p.written_at.is_some_and(|t| now.duration_since(t) > after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Answer = Result<Seq, SendError>;

    fn waiter() -> (oneshot::Sender<Answer>, oneshot::Receiver<Answer>) {
        oneshot::channel()
    }

    #[test]
    fn answers_settle_in_any_order_and_lost_streams_rewrite_everything() {
        let mut q = Queue::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        let (b2, mut rb2) = waiter();
        q.push(ClientMsgId(1), vec![1], a);
        q.push(ClientMsgId(2), vec![2], b);
        q.push(ClientMsgId(2), vec![2], b2);
        assert_eq!(q.pending.len(), 2, "same id, one message");
        q.written = 2;
        q.settle(ClientMsgId(2), Ok(Seq(8)));
        assert_eq!((q.written, q.pending.len()), (1, 1));
        assert_eq!(rb.try_recv().unwrap(), Ok(Seq(8)));
        assert_eq!(rb2.try_recv().unwrap(), Ok(Seq(8)));
        q.settle(ClientMsgId(2), Ok(Seq(8)));
        q.lose_stream(None);
        assert_eq!(q.written, 0);
        assert!(ra.try_recv().is_err(), "still pending");
        q.fail_all(SendError::StreamClosed(quiver_proto::ErrorCode::NotFriends));
        assert!(matches!(
            ra.try_recv().unwrap(),
            Err(SendError::StreamClosed(_))
        ));
    }

    #[test]
    fn overdue_counts_only_written_messages() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.push(ClientMsgId(1), vec![], waiter().0);
        q.pending[0].written_at = Some(t0);
        assert!(
            !q.overdue(t0 + Duration::from_secs(20), Duration::from_secs(10)),
            "not written"
        );
        q.written = 1;
        assert!(q.overdue(t0 + Duration::from_secs(20), Duration::from_secs(10)));
        assert!(!q.overdue(t0 + Duration::from_secs(5), Duration::from_secs(10)));
    }
}
