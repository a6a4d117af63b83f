//! One client connection: authenticate on the control stream, then run three loops until
//! the connection ends —
//! - **control**: acks and read marks from the device;
//! - **conversations**: one client-opened stream per peer, chats in, `Sent` out;
//! - **push**: the device's inbox from its cursor on, in `seq` order, on one server-opened
//!   stream per peer, never more than `push_window` entries ahead of the acks.
//!
//! Backlog and live delivery are the same loop reading the same log, so nothing live can
//! overtake the backlog.

use crate::auth::unix_now;
use crate::inbox::Appended;
use crate::net::{read_frame, varint, write_frame, FrameReadError};
use crate::node::Shared;
use crate::rate::TokenBucket;
use quiver_proto::{
    ClientMsgId, ControlRequest, ControlResponse, ConversationRequest, ConversationResponse,
    CursorTracker, DeviceId, Entry, ErrorCode, Seq, UserId, PROTOCOL_VERSION,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Entries read from the inbox per step of the push loop.
const PUSH_BATCH: usize = 128;

/// Serves one incoming connection until it ends.
pub async fn run(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
    };
    let span =
        tracing::info_span!("conn", remote = %conn.remote_address(), user = tracing::field::Empty);
    async move {
        let (session, send, recv) = match hello(&conn, &shared).await {
            Ok(hello) => hello,
            Err((code, message)) => {
                tracing::info!(%code, %message, "hello refused");
                conn.close(varint(code), message.as_bytes());
                return;
            }
        };
        tracing::Span::current().record("user", session.user.as_str());
        shared
            .gauges
            .sessions_opened
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(device = %session.device, cursor = %session.cursor(), "session open");
        let reason = Arc::new(session).serve(&conn, send, recv).await;
        tracing::info!(%reason, "session closed");
    }
    .instrument(span)
    .await
}

/// An authenticated device on one connection.
struct Session {
    shared: Arc<Shared>,
    user: UserId,
    device: DeviceId,
    acks: Mutex<Acks>,
    /// The device's cursor; the push loop waits on it when its window is full.
    cursor_tx: watch::Sender<Seq>,
    /// Chat messages this connection may still send (all its conversations together).
    send_rate: Mutex<TokenBucket>,
}

/// What the device acknowledged and what it was sent.
struct Acks {
    tracker: CursorTracker,
    /// Highest `seq` handed to a push stream.
    pushed: Seq,
    /// Acks whose DELIVERED receipt is being written.
    in_progress: HashSet<Seq>,
    /// The session has ended and taken its share out of the push-backlog gauge.
    closed: bool,
}

/// How an incoming ack relates to what was pushed.
enum AckCheck {
    New,
    Repeat,
    Invalid,
}

/// A reply queued for a conversation stream, in the order of the requests.
enum Reply {
    Chat(ClientMsgId, Result<Appended, ErrorCode>),
    Close(ErrorCode),
}

type Refusal = (ErrorCode, String);

async fn hello(
    conn: &quinn::Connection,
    shared: &Arc<Shared>,
) -> Result<(Session, quinn::SendStream, quinn::RecvStream), Refusal> {
    let limits = &shared.config.limits;
    let wait = Duration::from_millis(limits.hello_timeout_ms);
    let late = || (ErrorCode::Unauthenticated, "no hello in time".to_string());
    let (mut send, mut recv) = tokio::time::timeout(wait, conn.accept_bi())
        .await
        .map_err(|_| late())?
        .map_err(|e| (ErrorCode::Malformed, e.to_string()))?;
    let request = tokio::time::timeout(wait, read_frame(&mut recv, limits.max_frame_bytes))
        .await
        .map_err(|_| late())?;
    let token = match request {
        Ok(ControlRequest::Hello { version, .. }) if version != PROTOCOL_VERSION => {
            let message = format!("this node speaks version {PROTOCOL_VERSION}");
            return Err(refuse(send, ErrorCode::VersionMismatch, message).await);
        }
        Ok(ControlRequest::Hello { token, .. }) => token,
        Ok(_) => {
            let message = "the first frame must be hello".to_string();
            return Err(refuse(send, ErrorCode::UnexpectedFrame, message).await);
        }
        Err(e) => return Err((e.code().unwrap_or(ErrorCode::Malformed), e.to_string())),
    };
    let claims = match shared.tokens.verify(&token, unix_now()) {
        Ok(claims) => claims,
        Err(e) => return Err(refuse(send, ErrorCode::Unauthenticated, e.to_string()).await),
    };
    match shared
        .directory
        .has_device(&claims.user, claims.device)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            let message = "token revoked: the device logged out".to_string();
            return Err(refuse(send, ErrorCode::Unauthenticated, message).await);
        }
        Err(e) => return Err((ErrorCode::Unavailable, e.to_string())),
    }
    let inbox = shared.router.inbox();
    let internal = |e: crate::inbox::InboxError| (ErrorCode::Internal, e.to_string());
    // Resume from the node's own record. It may lag the device (cursor writes are not
    // flushed on their own); the SDK drops and re-acknowledges what it already has, and
    // those acks are what give the senders their DELIVERED receipts.
    let start = inbox
        .cursor(&claims.user, claims.device)
        .map_err(internal)?;
    let welcome = ControlResponse::Welcome {
        user: claims.user.clone(),
        device: claims.device,
        cursor: start,
    };
    write_frame(&mut send, &welcome)
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    let acks = Acks {
        tracker: CursorTracker::new(start),
        pushed: start,
        in_progress: HashSet::new(),
        closed: false,
    };
    let session = Session {
        shared: shared.clone(),
        user: claims.user,
        device: claims.device,
        acks: Mutex::new(acks),
        cursor_tx: watch::channel(start).0,
        send_rate: Mutex::new(TokenBucket::new(
            f64::from(limits.messages_per_sec),
            limits.message_burst,
            Instant::now(),
        )),
    };
    Ok((session, send, recv))
}

/// Tells the client why its hello was refused, before the connection is closed.
async fn refuse(mut send: quinn::SendStream, code: ErrorCode, message: String) -> Refusal {
    let error = ControlResponse::Error {
        code,
        message: message.clone(),
    };
    if write_frame(&mut send, &error).await.is_ok() && send.finish().is_ok() {
        // The close that follows discards unsent data: let the frame leave first.
        let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
    }
    (code, message)
}

impl Session {
    fn cursor(&self) -> Seq {
        *self.cursor_tx.borrow()
    }

    fn acks(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn max_frame(&self) -> usize {
        self.shared.config.limits.max_frame_bytes
    }

    /// Runs the three loops until one ends; returns why.
    async fn serve(
        self: Arc<Self>,
        conn: &quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> String {
        let ended = tokio::select! {
            r = self.clone().control_loop(conn, send, recv) => r,
            r = self.clone().accept_conversations(conn) => r,
            r = self.clone().push_loop(conn) => r,
        };
        let mut acks = self.acks();
        let unacked = acks.pushed.0 - acks.tracker.cursor().0;
        self.shared
            .gauges
            .push_backlog
            .fetch_sub(unacked, Ordering::Relaxed);
        // An ack task still finishing must not subtract again.
        acks.closed = true;
        drop(acks);
        ended.err().unwrap_or_else(|| "finished".into())
    }

    async fn control_loop(
        self: Arc<Self>,
        conn: &quinn::Connection,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<(), String> {
        let mut acking = JoinSet::new();
        loop {
            while acking.try_join_next().is_some() {}
            let error = match read_frame(&mut recv, self.max_frame()).await {
                Ok(ControlRequest::Ack { seq }) => match self.begin_ack(seq) {
                    AckCheck::New => {
                        acking.spawn(self.clone().finish_ack(conn.clone(), seq));
                        continue;
                    }
                    AckCheck::Repeat => continue,
                    AckCheck::Invalid => {
                        (ErrorCode::InvalidSeq, format!("seq {seq} was not pushed"))
                    }
                },
                Ok(ControlRequest::Read { seq }) => {
                    match self.shared.router.read(&self.user, seq).await {
                        Ok(()) => continue,
                        Err(code) => (code, format!("cannot mark seq {seq} read")),
                    }
                }
                Ok(ControlRequest::Hello { .. }) => {
                    (ErrorCode::UnexpectedFrame, "hello twice".into())
                }
                Err(FrameReadError::Finished) => {
                    // A polite goodbye: record the acks already received, then close.
                    while acking.join_next().await.is_some() {}
                    conn.close(quinn::VarInt::from_u32(0), b"bye");
                    return Err("client finished its control stream".into());
                }
                Err(e) => {
                    if let Some(code) = e.code() {
                        conn.close(varint(code), e.to_string().as_bytes());
                    }
                    return Err(e.to_string());
                }
            };
            let (code, message) = error;
            tracing::debug!(%code, %message, "control request refused");
            write_frame(&mut send, &ControlResponse::Error { code, message })
                .await
                .map_err(|e| e.to_string())?;
        }
    }

    fn begin_ack(&self, seq: Seq) -> AckCheck {
        let mut acks = self.acks();
        if seq.0 == 0 || seq > acks.pushed {
            AckCheck::Invalid
        } else if acks.tracker.contains(seq) || !acks.in_progress.insert(seq) {
            AckCheck::Repeat
        } else {
            AckCheck::New
        }
    }

    /// Records DELIVERED for the sender, then moves this device's cursor.
    async fn finish_ack(self: Arc<Self>, conn: quinn::Connection, seq: Seq) {
        if let Err(code) = self.shared.router.delivered(&self.user, seq).await {
            conn.close(varint(code), b"could not record delivery");
            return;
        }
        self.record_ack(seq);
    }

    /// Marks `seq` acknowledged and moves the cursor (and the gauge) if it can.
    fn record_ack(&self, seq: Seq) {
        let mut acks = self.acks();
        acks.in_progress.remove(&seq);
        let before = acks.tracker.cursor();
        acks.tracker.mark(seq);
        let cursor = acks.tracker.cursor();
        if cursor > before {
            if !acks.closed {
                let acked = cursor.0 - before.0;
                self.shared
                    .gauges
                    .push_backlog
                    .fetch_sub(acked, Ordering::Relaxed);
            }
            // Under the lock, so cursor writes reach sled in order.
            let inbox = self.shared.router.inbox();
            if let Err(e) = inbox.set_cursor(&self.user, self.device, cursor) {
                tracing::warn!(error = %e, "cursor not saved");
            }
            self.cursor_tx.send_replace(cursor);
        }
    }

    async fn accept_conversations(self: Arc<Self>, conn: &quinn::Connection) -> Result<(), String> {
        let mut streams = JoinSet::new();
        loop {
            let (send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            while streams.try_join_next().is_some() {}
            let span = tracing::debug_span!("conversation", stream = %send.id());
            streams.spawn(self.clone().conversation(send, recv).instrument(span));
        }
    }

    /// One conversation stream: `Open`, then chats. Appends happen in stream order; a
    /// separate responder waits for durability, so a burst is pipelined, not stop-and-wait.
    async fn conversation(self: Arc<Self>, send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let _counted = Counted::new(&self.shared.gauges.open_conversations);
        let limits = &self.shared.config.limits;
        let (tx, rx) = mpsc::channel(limits.send_pipeline);
        let responder = tokio::spawn(respond(send, rx));
        let end = match read_frame(&mut recv, limits.max_frame_bytes).await {
            Ok(ConversationRequest::Open { peer }) => {
                match self.shared.router.check_friends(&self.user, &peer).await {
                    Ok(()) => self.chats(&peer, &mut recv, &tx).await,
                    Err(code) => Some(code),
                }
            }
            Ok(ConversationRequest::Chat { .. }) => Some(ErrorCode::UnexpectedFrame),
            Err(e) => e.code(),
        };
        if let Some(code) = end {
            tracing::debug!(%code, "closing conversation stream");
            let _ = recv.stop(varint(code));
            let _ = tx.send(Reply::Close(code)).await;
        }
        drop(tx);
        let _ = responder.await;
    }

    /// Reads chats until the stream ends; returns the code to close it with, if any.
    async fn chats(
        &self,
        peer: &UserId,
        recv: &mut quinn::RecvStream,
        tx: &mpsc::Sender<Reply>,
    ) -> Option<ErrorCode> {
        loop {
            match read_frame(recv, self.max_frame()).await {
                // Over the rate: close the stream here. Nothing after this frame is stored,
                // so when the client writes its queue again on a new stream (after a
                // pause) its messages still go in in order.
                Ok(ConversationRequest::Chat { .. }) if !self.take_send_token() => {
                    return Some(ErrorCode::RateLimited);
                }
                Ok(ConversationRequest::Chat {
                    id,
                    sent_at_ms,
                    body,
                }) => {
                    let appended = self
                        .shared
                        .router
                        .chat(&self.user, peer, id, sent_at_ms, body);
                    if tx.send(Reply::Chat(id, appended.await)).await.is_err() {
                        return None;
                    }
                }
                Ok(ConversationRequest::Open { .. }) => return Some(ErrorCode::UnexpectedFrame),
                Err(e) => return e.code(),
            }
        }
    }

    fn take_send_token(&self) -> bool {
        let mut bucket = self.send_rate.lock().unwrap_or_else(|p| p.into_inner());
        let allowed = bucket.try_take(Instant::now());
        if !allowed {
            self.shared
                .gauges
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Pushes the inbox from the cursor on, one stream per peer, within the window.
    async fn push_loop(self: Arc<Self>, conn: &quinn::Connection) -> Result<(), String> {
        let inbox = self.shared.router.inbox().clone();
        let window = self.shared.config.limits.push_window;
        let mut durable = inbox.subscribe(&self.user).map_err(|e| e.to_string())?;
        let mut acked = self.cursor_tx.subscribe();
        let mut next = self.cursor().next();
        let mut streams: HashMap<UserId, mpsc::UnboundedSender<Entry>> = HashMap::new();
        loop {
            let room = (acked.borrow_and_update().0 + window).saturating_sub(next.0 - 1);
            if room == 0 {
                acked.changed().await.map_err(|e| e.to_string())?;
                continue;
            }
            let head = *durable.borrow_and_update();
            if next > head {
                durable.changed().await.map_err(|e| e.to_string())?;
                continue;
            }
            let to = Seq(head.0.min(next.0 + room - 1));
            let entries = inbox
                .read(&self.user, next, to, PUSH_BATCH)
                .map_err(|e| e.to_string())?;
            let last = entries.last().map_or(to, |e| e.seq);
            let holes = holes(next, last, &entries);
            {
                // Under the acks lock, like every change to this session's share of the
                // gauge, so the gauge never dips below zero.
                let mut acks = self.acks();
                let newly = last.0 - std::mem::replace(&mut acks.pushed, last).0;
                self.shared
                    .gauges
                    .push_backlog
                    .fetch_add(newly, Ordering::Relaxed);
            }
            if !holes.is_empty() {
                // Only a damaged store has holes. Count them as delivered, or the cursor
                // would stop below them and the window would never open again.
                tracing::error!(?holes, "inbox has holes; skipping them");
                for seq in holes {
                    self.record_ack(seq);
                }
            }
            for entry in entries {
                let stream = streams.entry(entry.peer.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(push_stream(conn.clone(), rx));
                    tx
                });
                // Bounded by the window: at most `push_window` entries wait in all queues.
                if stream.send(entry).is_err() {
                    return Err("push stream ended".into());
                }
            }
            next = last.next();
        }
    }
}

/// Counts itself in a gauge while it lives.
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `seq`s from `from` through `to` that `entries` (read in order) lack.
fn holes(from: Seq, to: Seq, entries: &[Entry]) -> Vec<Seq> {
    let mut present = entries.iter().map(|e| e.seq).peekable();
    (from.0..=to.0)
        .map(Seq)
        .filter(|seq| {
            let here = present.peek() == Some(seq);
            if here {
                present.next();
            }
            !here
        })
        .collect()
}

/// Answers a conversation stream's requests in order.
async fn respond(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Reply>) {
    while let Some(reply) = rx.recv().await {
        let frame = match reply {
            Reply::Chat(id, Ok(appended)) => match appended.durable().await {
                Ok(seq) => ConversationResponse::Sent { id, seq },
                Err(e) => {
                    tracing::error!(error = %e, "append not durable");
                    ConversationResponse::Rejected {
                        id,
                        code: ErrorCode::Unavailable,
                    }
                }
            },
            Reply::Chat(id, Err(code)) => ConversationResponse::Rejected { id, code },
            Reply::Close(code) => ConversationResponse::Error { code },
        };
        if write_frame(&mut send, &frame).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// Writes one peer's entries to its own server-opened stream. A stream that fails closes
/// the connection: the device reconnects and resumes from its cursor.
async fn push_stream(conn: quinn::Connection, mut rx: mpsc::UnboundedReceiver<Entry>) {
    let mut send = match conn.open_uni().await {
        Ok(send) => send,
        Err(_) => return,
    };
    while let Some(entry) = rx.recv().await {
        if let Err(e) = write_frame(&mut send, &entry).await {
            tracing::debug!(error = %e, "push stream failed");
            conn.close(varint(ErrorCode::Internal), b"push stream failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::EntryKind;

    fn entry(seq: u64) -> Entry {
        let kind = EntryKind::Chat {
            id: quiver_proto::ClientMsgId(0),
            sent_at_ms: 0,
            body: vec![],
        };
        Entry {
            seq: Seq(seq),
            peer: UserId::parse("alice").unwrap(),
            kind,
        }
    }

    #[test]
    fn holes_are_the_missing_seqs_in_range() {
        let entries = [entry(3), entry(5), entry(6)];
        assert_eq!(holes(Seq(2), Seq(7), &entries), [Seq(2), Seq(4), Seq(7)]);
        assert!(holes(Seq(3), Seq(3), &entries[..1]).is_empty());
        assert_eq!(holes(Seq(1), Seq(2), &[]), [Seq(1), Seq(2)]);
    }
}
