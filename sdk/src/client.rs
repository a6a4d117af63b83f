//! [`Client`]: a user's device, connected to a node for as long as the app wants.
//!
//! The handle is cheap to clone. A hidden driver task owns the connection: when it is lost,
//! the driver reconnects with exponential backoff and jitter, the node resumes pushing from
//! the device's cursor, and the outbox writes every unanswered message again with its
//! original id. The app sees one continuous [`Events`] stream, with
//! [`Event::Connection`] changes for its UI.
//!
//! An entry is acknowledged only when the app takes its [`Event`] from [`Events::recv`], so
//! DELIVERED means the app really has it; entries the app already took (by `seq`) are
//! acknowledged again but not shown twice.

use crate::error::{ConnectError, SendError};
use crate::event::{Ack, ConnectionState, Event, Events, Message, Receipt};
use crate::files::{FileOffer, FileSent, Progress, Transfer, TransferReport};
use crate::groups::GroupKeys;
use crate::link::{handshake, ControlCommand, Link};
pub use crate::options::ConnectOptions;
use crate::outbox::{Conversation, Queue, Stream};
use crate::seal::{self, FriendKey};
use quiver_proto::files::FileRef;
use quiver_proto::{
    encode_frame, ClientMsgId, ControlRequest, ConversationRequest, ConversationResponse,
    CursorTracker, DeviceId, Entry, EntryKind, GroupId, Seq, UserId,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Events buffered before the SDK stops reading pushes (and so stops acknowledging).
const EVENT_BUFFER: usize = 1024;

/// How long [`Client::close`] waits for each step of a polite close.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

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

/// A connected client. Clone it freely; every clone drives the same connection, which
/// closes when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    _stop_on_drop: Arc<StopOnDrop>,
}

/// Stops the driver when the app drops its last [`Client`]; the driver's own reference
/// would otherwise keep the connection alive on keep-alives forever.
struct StopOnDrop(Weak<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.closing.send_replace(true);
            if let Some(link) = inner.link() {
                link.conn.close(0u32.into(), b"client dropped");
            }
        }
    }
}

/// State shared by the handle, the driver and the link tasks.
pub(crate) struct Inner {
    pub(crate) options: ConnectOptions,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) user: UserId,
    pub(crate) device: DeviceId,
    pub(crate) keys: RwLock<HashMap<UserId, FriendKey>>,
    pub(crate) seen: Arc<Mutex<CursorTracker>>,
    pub(crate) link: RwLock<Option<Arc<Link>>>,
    pub(crate) queues: Mutex<HashMap<Conversation, Arc<tokio::sync::Mutex<Queue>>>>,
    /// Group keys by group and epoch, and the epoch to seal at.
    pub(crate) group_keys: RwLock<HashMap<GroupId, GroupKeys>>,
    /// When a fetch of friendship keys last failed to give a key a message needed.
    pub(crate) friend_key_failed: Mutex<Option<Instant>>,
    /// When a fetch of each group's keys last failed to give a key an entry needed.
    pub(crate) group_key_failed: Mutex<HashMap<GroupId, Instant>>,
    pub(crate) events: mpsc::Sender<(Event, Option<Ack>)>,
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) closing: watch::Sender<bool>,
    /// Woken when a conversation waits for the node to allow another stream.
    pub(crate) stream_wanted: tokio::sync::Notify,
    /// Conversations waiting for a stream now.
    pub(crate) streams_waiting: std::sync::atomic::AtomicUsize,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn random_u128() -> u128 {
    use rand::Rng;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    u128::from_be_bytes(bytes)
}

impl Client {
    /// Connects, says Hello, and starts receiving. Fails if this first attempt fails (so
    /// a bad token or address shows at once); after that the client reconnects by itself.
    /// Pushes begin right away: read the returned [`Events`], or the node stops pushing
    /// once its window is full.
    pub async fn connect(mut options: ConnectOptions) -> Result<(Client, Events), ConnectError> {
        if let Some(store) = options.store.clone() {
            crate::persist::remember(&store, &mut options)
                .map_err(|e| ConnectError::Store(e.to_string()))?;
        }
        let config =
            crate::tls::quic_config(&options.ca_pem, options.keep_alive, options.idle_timeout)
                .map_err(ConnectError::Tls)?;
        let mut endpoint = quinn::Endpoint::client(unspecified(options.addr))
            .map_err(|e| ConnectError::Connect(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let name = options
            .server_name
            .clone()
            .unwrap_or_else(|| options.addr.ip().to_string());
        let first = handshake(
            &endpoint,
            options.addr,
            &name,
            &options.token,
            options.connect_timeout,
        )
        .await?;
        let seen = CursorTracker::new(first.cursor.max(options.cursor.unwrap_or_default()));
        let (events, rx) = mpsc::channel(EVENT_BUFFER);
        let inner = Arc::new(Inner {
            user: first.user.clone(),
            device: first.device,
            keys: RwLock::new(options.keys.clone()),
            group_keys: RwLock::new(options.group_keys.clone()),
            group_key_failed: Mutex::new(HashMap::new()),
            friend_key_failed: Mutex::new(None),
            options,
            endpoint,
            seen: Arc::new(Mutex::new(seen)),
            link: RwLock::new(None),
            queues: Mutex::new(HashMap::new()),
            events,
            state: watch::channel(ConnectionState::Connecting).0,
            closing: watch::channel(false).0,
            stream_wanted: tokio::sync::Notify::new(),
            streams_waiting: std::sync::atomic::AtomicUsize::new(0),
        });
        if let Some(store) = &inner.options.store {
            let restored = crate::persist::restore(store, &mut lock(&inner.queues))
                .map_err(|e| ConnectError::Store(e.to_string()))?;
            tracing::debug!(restored, "outbox restored from the store");
        }
        let link = Link::start(&inner, first, 1);
        inner.set_link(Some(link.clone()));
        tokio::spawn(crate::driver::drive(inner.clone(), link));
        tokio::spawn(close_idle_streams(Arc::downgrade(&inner)));
        let events = Events {
            store: inner.options.store.clone(),
            rx,
            seen: inner.seen.clone(),
            seen_groups: HashMap::new(),
        };
        let stop = Arc::new(StopOnDrop(Arc::downgrade(&inner)));
        Ok((
            Client {
                inner,
                _stop_on_drop: stop,
            },
            events,
        ))
    }

    /// Who the node says you are.
    pub fn user(&self) -> &UserId {
        &self.inner.user
    }

    /// This device.
    pub fn device(&self) -> DeviceId {
        self.inner.device
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// The highest `seq` up to which every entry was taken by the app. Keep it and pass it
    /// as [`ConnectOptions::cursor`] to never see an entry twice across restarts.
    pub fn cursor(&self) -> Seq {
        self.inner.seen().cursor()
    }

    /// The current QUIC connection, if online (for statistics and tests).
    pub fn connection(&self) -> Option<quinn::Connection> {
        self.inner.link().map(|link| link.conn.clone())
    }

    /// The local UDP address the client sends from.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// Moves the connection to a new local socket — call it when the OS says the network
    /// changed (Wi-Fi to 4G). QUIC migrates the live connection: no new handshake, nothing
    /// resent, nothing lost. Returns the new local address.
    pub fn rebind(&self) -> std::io::Result<SocketAddr> {
        let socket = std::net::UdpSocket::bind(unspecified(self.inner.options.addr))?;
        self.inner.endpoint.rebind(socket)?;
        self.inner.endpoint.local_addr()
    }

    /// Adds or replaces a friendship key (after a new friendship).
    pub fn set_key(&self, friend: UserId, key: FriendKey) {
        self.inner.remember_key(friend, key);
    }

    /// A fresh random message id.
    pub fn new_message_id() -> ClientMsgId {
        ClientMsgId(random_u128())
    }

    /// Seals and sends `body` to `to`; returns once the node has it durably (SENT).
    ///
    /// The message waits in the outbox across lost connections and is written again (same
    /// id, so stored once) until the node answers; only a refusal for good (not friends,
    /// too large) or [`Client::close`] ends the wait with an error.
    pub async fn send(&self, to: &UserId, body: &[u8]) -> Result<Sent, SendError> {
        self.send_with_id(to, Self::new_message_id(), body).await
    }

    /// Like [`Client::send`] with your own id. Sending again with the same id returns the
    /// first `seq`; the recipient gets one copy.
    pub async fn send_with_id(
        &self,
        to: &UserId,
        id: ClientMsgId,
        body: &[u8],
    ) -> Result<Sent, SendError> {
        self.enqueue_with_id(to, id, body).await?.await
    }

    /// Puts a message in the outbox (and on the wire, if online) and returns at once with
    /// a [`PendingSend`] that resolves to SENT. Messages enqueued one after another keep
    /// that order, so an app can pipeline a burst without awaiting each SENT.
    pub async fn enqueue(&self, to: &UserId, body: &[u8]) -> Result<PendingSend, SendError> {
        self.enqueue_with_id(to, Self::new_message_id(), body).await
    }

    /// [`Client::enqueue`] with your own id.
    pub async fn enqueue_with_id(
        &self,
        to: &UserId,
        id: ClientMsgId,
        body: &[u8],
    ) -> Result<PendingSend, SendError> {
        let key = self
            .inner
            .key(to)
            .ok_or_else(|| SendError::NoKey(to.to_string()))?;
        let sealed = seal::seal(&key, &self.inner.user, to, id, body);
        self.inner.enqueue_chat(to, id, sealed, None, body).await
    }

    /// Uploads the file at `path` and sends `to` a message that names it; resolves once
    /// the message is durable (SENT). The file is sealed chunk by chunk with the
    /// friendship key; its bytes travel on their own stream below chat, so messages sent
    /// meanwhile are not held up. A lost connection resumes where the node stopped.
    /// `on_progress` sees the sealed bytes the node has; cancel through
    /// [`Transfer::canceller`].
    pub fn send_file(
        &self,
        to: &UserId,
        path: impl Into<PathBuf>,
        media_type: &str,
        on_progress: impl FnMut(Progress) + Send + 'static,
    ) -> Transfer<FileSent> {
        crate::files::send_file(
            self.inner.clone(),
            to.clone(),
            path.into(),
            media_type.to_owned(),
            Box::new(on_progress),
        )
    }

    /// Downloads a file from a message ([`Message::file`]) to `path`: chunk by chunk,
    /// each opened and checked as it arrives, resuming from `<path>.part` after a lost
    /// connection (or an earlier run), and renamed to `path` once the whole file matches
    /// its hash.
    pub fn download(
        &self,
        offer: &FileOffer,
        path: impl Into<PathBuf>,
        on_progress: impl FnMut(Progress) + Send + 'static,
    ) -> Transfer<TransferReport> {
        crate::files::download(
            self.inner.clone(),
            offer.clone(),
            path.into(),
            Box::new(on_progress),
        )
    }

    /// The client's store, if it has one.
    pub fn store(&self) -> Option<&crate::Store> {
        self.inner.options.store.as_ref()
    }

    /// Tells the sender of the message at `seq` (from an [`Event::Message`]) that you read it.
    /// Queued behind the acknowledgements already due, so READ never overtakes DELIVERED.
    pub fn mark_read(&self, seq: Seq) -> Result<(), SendError> {
        if let Some(store) = self.store() {
            let marked = store
                .inbox_conversation(seq)
                .and_then(|c| c.map_or(Ok(()), |c| store.mark_read(&c, seq)));
            if let Err(e) = marked {
                tracing::error!(error = %e, "store: could not mark read");
            }
        }
        self.send_control(ControlRequest::Read { seq })
    }

    /// Queues `request` on the control stream of the connection now.
    pub(crate) fn send_control(&self, request: ControlRequest) -> Result<(), SendError> {
        let offline = || SendError::Connection("offline".into());
        let link = self.inner.link().ok_or_else(offline)?;
        let request = ControlCommand::Send(request);
        link.control.send(request).map_err(|_| offline())
    }

    /// Stops the client: acknowledgements and read marks already queued reach the node
    /// first (it closes once it has handled them), within a few seconds at most. Messages
    /// still in the outbox fail with [`SendError::Connection`].
    pub async fn close(&self) {
        self.inner.closing.send_replace(true);
        if let Some(link) = self.inner.link() {
            let (tx, rx) = oneshot::channel();
            if link.control.send(ControlCommand::Finish(tx)).is_ok() {
                let _ = tokio::time::timeout(CLOSE_WAIT, rx).await;
                let _ = tokio::time::timeout(CLOSE_WAIT, link.conn.closed()).await;
            }
            link.conn.close(0u32.into(), b"bye");
        }
        let queues: Vec<_> = lock(&self.inner.queues).values().cloned().collect();
        for queue in queues {
            queue
                .lock()
                .await
                .fail_all(SendError::Connection("client closed".into()));
        }
        self.inner.endpoint.wait_idle().await;
    }
}

/// The unspecified address of `addr`'s family, port 0.
fn unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

impl Inner {
    pub(crate) fn seen(&self) -> std::sync::MutexGuard<'_, CursorTracker> {
        lock(&self.seen)
    }

    pub(crate) fn link(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_link(&self, link: Option<Arc<Link>>) {
        *self.link.write().unwrap_or_else(|p| p.into_inner()) = link;
    }

    /// The friendship key with `friend`, if known.
    pub(crate) fn key(&self, friend: &UserId) -> Option<FriendKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(friend)
            .cloned()
    }

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

    fn queue(&self, conversation: &Conversation) -> Arc<tokio::sync::Mutex<Queue>> {
        lock(&self.queues)
            .entry(conversation.clone())
            .or_default()
            .clone()
    }

    /// Announces a state change. Never waits: a full event buffer (an app that stopped
    /// reading) must not stall reconnection; [`Client::state`] always has the truth.
    pub(crate) fn announce(&self, state: ConnectionState) {
        self.state.send_replace(state.clone());
        let _ = self.events.try_send((Event::Connection(state), None));
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

    /// Opens `body`, a chat from `from` with `id`, with the friendship key.
    fn open_chat(&self, from: &UserId, id: ClientMsgId, body: &[u8]) -> Result<Vec<u8>, String> {
        match self.key(from) {
            Some(key) => seal::open(&key, from, &self.user, id, body).map_err(|e| e.to_string()),
            None => Err(format!("no friendship key for {from}")),
        }
    }

    /// The event for an inbox entry: a chat opened (fetching the friendship keys once if
    /// it does not open and there is a key source), or a receipt.
    pub(crate) async fn open_entry(&self, entry: Entry) -> Event {
        match entry.kind {
            EntryKind::Chat {
                id,
                sent_at_ms,
                body,
                file,
            } => {
                let mut opened = self.open_chat(&entry.peer, id, &body);
                if opened.is_err() && self.refresh_friend_key(&entry.peer).await {
                    opened = self.open_chat(&entry.peer, id, &body);
                }
                let opened = opened.and_then(|body| {
                    let Some(file) = file else {
                        return Ok((body, None));
                    };
                    let offer = FileOffer::read(entry.peer.clone(), file, &body)?;
                    Ok((body, Some(offer)))
                });
                match opened {
                    Ok((body, file)) => Event::Message(Message {
                        from: entry.peer,
                        seq: entry.seq,
                        id,
                        sent_at_ms,
                        body,
                        file,
                    }),
                    Err(reason) => Event::Undecryptable {
                        from: entry.peer,
                        seq: entry.seq,
                        reason,
                    },
                }
            }
            EntryKind::Receipt { kind, id, seq } => Event::Receipt(Receipt {
                peer: entry.peer,
                kind,
                id,
                seq,
            }),
            // A user's inbox holds no group entries; a node that sent one is wrong.
            EntryKind::GroupChat { .. } | EntryKind::Member(_) => Event::Undecryptable {
                from: entry.peer,
                seq: entry.seq,
                reason: "a group entry in a user's inbox".into(),
            },
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
async fn close_idle_streams(inner: Weak<Inner>) {
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
    mut recv: quinn::RecvStream,
) {
    loop {
        let answer = crate::frames::read_frame::<ConversationResponse>(&mut recv).await;
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
