//! [`Client`]: a user's device, connected to a node for as long as the app wants.
//!
//! The handle is cheap to clone. A hidden driver task owns the connection: when it is lost,
//! the driver reconnects with exponential backoff and jitter, the node resumes pushing from
//! the device's cursor, and the outbox writes every unanswered message again with its
//! original id. The app sees one continuous [`Events`] stream, with
//! [`crate::Event::Connection`] changes for its UI.
//!
//! An entry is acknowledged only when the app takes its [`crate::Event`] from [`Events::recv`], so
//! DELIVERED means the app really has it; entries the app already took (by `seq`) are
//! acknowledged again but not shown twice.

use crate::carrier::Carrier;
use crate::error::{ConnectError, SendError};
use crate::event::ConnectionState;
use crate::events::Events;
use crate::files::{FileOffer, FileSent, Progress, Transfer, TransferReport};
use crate::link::{handshake, Link};
pub use crate::options::ConnectOptions;
use crate::seal::{self, FriendKey};
pub use crate::send::{PendingSend, Sent};
use crate::state::{lock, random_u128, ControlCommand, Inner};
use quiver_proto::datagram::{ClientDatagram, PresenceState};
use quiver_proto::{ClientMsgId, ControlRequest, CursorTracker, DeviceId, GroupId, Seq, UserId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Events buffered before the SDK stops reading pushes (and so stops acknowledging).
const EVENT_BUFFER: usize = 1024;

/// How long [`Client::close`] waits for each step of a polite close.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

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

impl Client {
    /// Connects, says Hello, and starts receiving. Fails if this first attempt fails (so
    /// a bad token or address shows at once); after that the client reconnects by itself.
    /// Pushes begin right away: read the returned [`Events`], or the node stops pushing
    /// once its window is full.
    pub async fn connect(options: ConnectOptions) -> Result<(Client, Events), ConnectError> {
        let (options, endpoint, carrier) = prepare(options)?;
        let name = options.name_to_verify();
        let first = handshake(
            &endpoint,
            options.addr,
            &name,
            &options.token,
            options.connect_timeout,
            options
                .tcp_fallback
                .then_some((&carrier, options.fallback_after)),
        )
        .await?;
        let (user, device) = (first.user.clone(), first.device);
        assemble(options, endpoint, carrier, user, device, Some(first))
    }

    /// Starts a client for `user`'s `device` (from an earlier login) without waiting for
    /// the node: it connects in the background, as after a lost connection, and the app
    /// can queue messages meanwhile (kept in the store, if any). For an app that starts
    /// offline; a bad token shows as [`crate::Event::Disconnected`].
    pub fn start(
        options: ConnectOptions,
        user: UserId,
        device: DeviceId,
    ) -> Result<(Client, Events), ConnectError> {
        let (options, endpoint, carrier) = prepare(options)?;
        assemble(options, endpoint, carrier, user, device, None)
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

    /// Whether the connection travels over the TCP carrier now (UDP blocked), rather
    /// than QUIC over UDP.
    pub fn on_tcp(&self) -> bool {
        self.inner.carrier.on_tcp()
    }

    /// How many times the connection moved between UDP and TCP.
    pub fn carrier_moves(&self) -> u64 {
        self.inner.carrier.moves()
    }

    /// The local UDP address the client sends from.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// Moves the connection to a new local socket — call it when the OS says the network
    /// changed (Wi-Fi to 4G). QUIC migrates the live connection: no new handshake, nothing
    /// resent, nothing lost. Returns the new local address.
    /// The SDK does this by itself when the path to the node changes
    /// ([`ConnectOptions::watch_network`]).
    pub fn rebind(&self) -> std::io::Result<SocketAddr> {
        self.inner.rebind()
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
        let sealed =
            seal::seal(&key, &self.inner.user, to, id, body).map_err(|_| SendError::Seal)?;
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
            crate::files::Recipient::Friend(to.clone()),
            path.into(),
            media_type.to_owned(),
            Box::new(on_progress),
        )
    }

    /// Downloads a file from a message ([`crate::Message::file`],
    /// [`crate::GroupMessage::file`]) to `path`: chunk by chunk,
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

    /// Tells the sender of the message at `seq` (from an [`crate::Event::Message`]) that you read it.
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

/// Fills the options in from the store and makes the client's endpoint, on a socket
/// that carries UDP or the TCP tunnel.
fn prepare(
    mut options: ConnectOptions,
) -> Result<(ConnectOptions, quinn::Endpoint, Arc<Carrier>), ConnectError> {
    if let Some(store) = options.store.clone() {
        crate::persist::remember(&store, &mut options)
            .map_err(|e| ConnectError::Store(e.to_string()))?;
    }
    let config = crate::tls::quic_config(&options.ca_pem, options.keep_alive, options.idle_timeout)
        .map_err(ConnectError::Tls)?;
    let failed = |e: std::io::Error| ConnectError::Connect(e.to_string());
    let socket = crate::carrier::bind_udp(options.addr).map_err(failed)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let udp = quinn::Runtime::wrap_udp_socket(&*runtime, socket).map_err(failed)?;
    let carrier = Carrier::new(
        options.addr,
        options.name_to_verify(),
        &options.ca_pem,
        udp.clone(),
    )
    .map_err(ConnectError::Tls)?;
    if options.tcp_only {
        carrier.pin_tcp();
    }
    let mut endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        carrier.socket(udp),
        runtime,
    )
    .map_err(failed)?;
    endpoint.set_default_client_config(config);
    Ok((options, endpoint, carrier))
}

/// Builds the client's state, restores the store's outbox, and starts the driver — on
/// the connection `first`, or connecting in the background without one.
fn assemble(
    options: ConnectOptions,
    endpoint: quinn::Endpoint,
    carrier: Arc<Carrier>,
    user: UserId,
    device: DeviceId,
    first: Option<crate::link::Handshake>,
) -> Result<(Client, Events), ConnectError> {
    let cursor = first.as_ref().map_or(Seq(0), |f| f.cursor);
    let seen = CursorTracker::new(cursor.max(options.cursor.unwrap_or_default()));
    let (events, rx) = mpsc::channel(EVENT_BUFFER);
    let options_presence = options.presence;
    let inner = Arc::new(Inner {
        user,
        device,
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
        presence: Mutex::new(options_presence),
        network_changed: tokio::sync::Notify::new(),
        carrier,
    });
    if let Some(store) = &inner.options.store {
        let restored = crate::persist::restore(store, &mut lock(&inner.queues))
            .map_err(|e| ConnectError::Store(e.to_string()))?;
        tracing::debug!(restored, "outbox restored from the store");
    }
    let link = first.map(|first| {
        let link = Link::start(&inner, first, 1);
        inner.set_link(Some(link.clone()));
        link
    });
    tokio::spawn(crate::driver::drive(inner.clone(), link));
    tokio::spawn(crate::send::close_idle_streams(Arc::downgrade(&inner)));
    if inner.options.watch_network {
        tokio::spawn(crate::netwatch::follow(Arc::downgrade(&inner)));
    }
    if inner.options.tcp_fallback && !inner.options.tcp_only {
        tokio::spawn(crate::carrier::follow(
            Arc::downgrade(&inner.carrier),
            inner.endpoint.clone(),
            inner.closing.subscribe(),
            inner.options.udp_probe_every,
        ));
    }
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

/// Typing and presence (datagrams: see [`crate::ConnectOptions::presence`]).
impl Client {
    /// Tells `friend` you are typing (send again every few seconds while you are).
    /// Unreliable: it may not arrive, and nothing tells you.
    pub fn typing(&self, friend: &UserId) -> Result<(), SendError> {
        self.datagram(&ClientDatagram::Typing { to: friend.clone() })
    }

    /// Tells `group`'s members you are typing.
    pub fn group_typing(&self, group: &GroupId) -> Result<(), SendError> {
        self.datagram(&ClientDatagram::GroupTyping {
            group: group.clone(),
        })
    }

    /// Shows `state` to your friends from now on (and on every reconnection).
    pub fn set_presence(&self, state: PresenceState) -> Result<(), SendError> {
        let before = lock(&self.inner.presence).replace(state);
        let link = self
            .inner
            .link()
            .ok_or(SendError::Connection("offline".into()))?;
        if before.is_none() {
            let reader = crate::presence::read_datagrams(self.inner.clone(), link.conn.clone());
            tokio::spawn(reader);
        }
        crate::presence::send(&link.conn, &ClientDatagram::Presence { state })
    }

    fn datagram(&self, message: &ClientDatagram) -> Result<(), SendError> {
        let link = self
            .inner
            .link()
            .ok_or(SendError::Connection("offline".into()))?;
        crate::presence::send(&link.conn, message)
    }
}
