//! Sending: the outbox's queues written on conversation streams, in order, and the
//! node's answers read back ([`Sent`], refusals); idle streams closed so that new
//! conversations get one. What is written and when is decided here; the queues
//! themselves are [`crate::outbox`], the store's copy [`crate::persist`].

use crate::error::SendError;
use crate::outbox::{Conversation, Queue, Stream};
use crate::state::{lock, now_ms, Inner};
use quiver_proto::files::FileRef;
use quiver_proto::{
    encode_frame, ClientMsgId, ConversationRequest, ConversationResponse, Seq, UserId,
};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A message the node has made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Your id for it.
    pub id: ClientMsgId,
    /// Its position in the recipient's inbox; receipts name it.
    pub seq: Seq,
}

/// A message in the outbox; await it for SENT.
pub struct PendingSend {
    id: ClientMsgId,
    answer: oneshot::Receiver<Result<Seq, SendError>>,
}

impl PendingSend {
    /// The message's id.
    pub fn id(&self) -> ClientMsgId {
        self.id
    }
}

impl std::future::Future for PendingSend {
    type Output = Result<Sent, SendError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let id = self.id;
        std::pin::Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| match answer {
                Ok(Ok(seq)) => Ok(Sent { id, seq }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(SendError::Connection("client closed".into())),
            })
    }
}

impl Inner {
    /// Puts a sealed chat in `to`'s outbox queue and writes it if online.
    pub(crate) async fn enqueue_chat(
        self: &Arc<Self>,
        to: &UserId,
        id: ClientMsgId,
        body: Vec<u8>,
        file: Option<FileRef>,
        plain: &[u8],
    ) -> Result<PendingSend, SendError> {
        let chat = ConversationRequest::Chat {
            id,
            sent_at_ms: now_ms(),
            body,
            file,
        };
        self.enqueue(Conversation::Friend(to.clone()), id, &chat, plain)
            .await
    }

    /// Puts `request`, a chat of `conversation` with `id` whose opened body is `plain`, in
    /// the store (if any) and its outbox queue, and writes it if online.
    pub(crate) async fn enqueue(
        self: &Arc<Self>,
        conversation: Conversation,
        id: ClientMsgId,
        request: &ConversationRequest,
        plain: &[u8],
    ) -> Result<PendingSend, SendError> {
        let frame = encode_frame(request).map_err(|_| SendError::Seal)?;
        let (tx, rx) = oneshot::channel();
        let queue = self.queue(&conversation);
        let mut queue = queue.lock().await;
        // Kept under the queue's lock: the store's outbox has the queue's order.
        if let Some(store) = &self.options.store {
            crate::persist::outgoing(store, &self.user, &conversation, request, &frame, plain)?;
        }
        queue.push(id, frame, tx);
        self.flush(&conversation, &mut queue).await;
        Ok(PendingSend { id, answer: rx })
    }

    /// Writes the queue's unwritten messages, in order, on the conversation's stream of
    /// the current connection (opening it if needed). Does nothing while offline.
    async fn flush(self: &Arc<Self>, peer: &Conversation, queue: &mut Queue) {
        if queue.written >= queue.pending.len() {
            return;
        }
        let Some(link) = self.link() else { return };
        if queue.stream.as_ref().map(|s| s.link) != Some(link.id) {
            let opening = link.conn.open_bi();
            tokio::pin!(opening);
            // At the node's stream limit this waits: have idle conversations make room.
            let opened = match futures_now(&mut opening) {
                Some(opened) => opened,
                None => {
                    use std::sync::atomic::Ordering::Relaxed;
                    self.streams_waiting.fetch_add(1, Relaxed);
                    self.stream_wanted.notify_one();
                    let opened = opening.await;
                    self.streams_waiting.fetch_sub(1, Relaxed);
                    opened
                }
            };
            let Ok((mut send, recv)) = opened else {
                return;
            };
            let Ok(frame) = encode_frame(&peer.open()) else {
                return;
            };
            if send.write_all(&frame).await.is_err() {
                return;
            }
            tokio::spawn(read_answers(
                Arc::downgrade(self),
                peer.clone(),
                (link.id, send.id()),
                recv,
            ));
            queue.stream = Some(Stream {
                send,
                link: link.id,
            });
            queue.written = 0;
        }
        let Queue {
            pending,
            written,
            stream,
            ..
        } = queue;
        let Some(stream) = stream else { return };
        while let Some(message) = pending.get_mut(*written) {
            if stream.send.write_all(&message.frame).await.is_err() {
                queue.lose_stream(None);
                return;
            }
            message.written_at = Some(Instant::now());
            *written += 1;
        }
        queue.last_active = Some(Instant::now());
    }

    /// Writes every conversation's queue again (after a reconnect), or just the overdue
    /// and unwritten ones.
    pub(crate) async fn flush_all(self: &Arc<Self>, only_overdue: bool) {
        let queues: Vec<_> = lock(&self.queues)
            .iter()
            .map(|(peer, q)| (peer.clone(), q.clone()))
            .collect();
        let now = Instant::now();
        for (peer, queue) in queues {
            let mut queue = queue.lock().await;
            if only_overdue && queue.overdue(now, self.options.resend_after) {
                tracing::debug!(%peer, "no answer in time; writing the conversation again");
                queue.lose_stream(None);
            }
            self.flush(&peer, &mut queue).await;
        }
    }
}

/// The future's output if it is ready now, without waiting.
fn futures_now<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::pin::Pin::new(future).poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// Closes conversation streams that have nothing waiting: after
/// `close_idle_streams_after` of quiet, or at once when another conversation waits for a
/// stream. Runs until the client is gone.
pub(crate) async fn close_idle_streams(inner: Weak<Inner>) {
    loop {
        let (quiet, urgent) = {
            let Some(inner) = inner.upgrade() else { return };
            let after = inner.options.close_idle_streams_after;
            let tick = after.min(Duration::from_secs(1));
            let waiting = || {
                inner
                    .streams_waiting
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0
            };
            let urgent = tokio::select! {
                _ = tokio::time::sleep(tick) => waiting(),
                _ = inner.stream_wanted.notified() => true,
            };
            (after, urgent)
        };
        let Some(inner) = inner.upgrade() else { return };
        let queues: Vec<_> = lock(&inner.queues).values().cloned().collect();
        let (now, after) = (Instant::now(), if urgent { Duration::ZERO } else { quiet });
        for queue in queues {
            // A queue busy flushing is not idle; it is looked at next time.
            if let Ok(mut queue) = queue.try_lock() {
                queue.close_if_idle(now, after);
            }
        }
    }
}

/// Settles queued messages as the node answers on one conversation stream.
async fn read_answers(
    inner: Weak<Inner>,
    peer: Conversation,
    which: (u64, quinn::StreamId),
    recv: quinn::RecvStream,
) {
    let mut frames = crate::frames::FrameReader::new(recv);
    loop {
        let answer = frames.next::<ConversationResponse>().await;
        let Some(inner) = inner.upgrade() else { return };
        let queue = inner.queue(&peer);
        let mut queue = queue.lock().await;
        let store = inner.options.store.as_ref();
        match answer {
            Ok(Some(ConversationResponse::Sent { id, seq })) => {
                crate::persist::answered(store, &peer, id, Some(seq));
                queue.settle(id, Ok(seq))
            }
            Ok(Some(ConversationResponse::Rejected { id, code })) if code.is_retryable() => {
                // Not stored; the resend check writes it (and what followed) again.
                if let Some(at) = queue.pending.iter().position(|p| p.id == id) {
                    queue.written = queue.written.min(at);
                }
            }
            Ok(Some(ConversationResponse::Rejected { id, code })) => {
                crate::persist::answered(store, &peer, id, None);
                queue.settle(id, Err(SendError::Rejected(code)))
            }
            Ok(Some(ConversationResponse::Error { code })) => {
                queue.lose_stream(Some(which));
                if !code.is_retryable() {
                    for pending in &queue.pending {
                        crate::persist::answered(store, &peer, pending.id, None);
                    }
                    queue.fail_all(SendError::StreamClosed(code));
                }
                return;
            }
            // History frames belong on history streams: a node that sends them here is
            // broken, and the stream is written again on a new one.
            Ok(Some(
                ConversationResponse::HistoryEntry { .. } | ConversationResponse::HistoryEnd { .. },
            ))
            | Ok(None)
            | Err(_) => {
                queue.lose_stream(Some(which));
                return;
            }
        }
    }
}
