//! [`Client`]: one authenticated QUIC connection to a node.
//!
//! The handle is cheap to clone. Hidden tasks own the streams: one reads control replies,
//! one accepts the node's push streams and one reads each of them; each conversation has a
//! reader that matches `Sent` answers to waiting senders. An entry is acknowledged only when
//! the app takes its [`Event`] from [`Events::recv`], so DELIVERED means the app really has
//! it; entries the app already took (by `seq`) are acknowledged again but not repeated.

use crate::error::{ConnectError, SendError};
use crate::event::{Event, Events, Message, Receipt};
use crate::frames::{read_frame, write_frame};
use crate::seal::{self, FriendKey};
use quiver_proto::{
    ClientMsgId, ControlRequest, ControlResponse, ConversationRequest, ConversationResponse,
    CursorTracker, DeviceId, Entry, EntryKind, ErrorCode, Seq, UserId, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock, Weak};
use tokio::sync::{mpsc, oneshot};

/// Events buffered before the SDK stops reading pushes (and so stops acknowledging).
const EVENT_BUFFER: usize = 1024;

/// How long [`Client::close`] waits for each step of a polite close.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How to reach a node and who to be.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The node's QUIC address (from login: `LoginResponse::quic_addr`).
    pub addr: SocketAddr,
    /// Name to verify in the node's certificate; the address's IP when `None`.
    pub server_name: Option<String>,
    /// PEM of the CA that signed the node's certificate.
    pub ca_pem: String,
    /// Token from login.
    pub token: String,
    /// The highest contiguous `seq` the app has already processed, if it keeps one
    /// ([`Client::cursor`] from an earlier run). The node may push such entries again after
    /// a crash; the SDK acknowledges them without showing them twice.
    pub cursor: Option<Seq>,
    /// Friendship keys, by friend.
    pub keys: HashMap<UserId, FriendKey>,
}

/// A message the node has made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Your id for it.
    pub id: ClientMsgId,
    /// Its position in the recipient's inbox; receipts name it.
    pub seq: Seq,
}

/// A connected client. Clone it freely; every clone drives the same connection, which
/// closes when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _close_on_drop: Arc<CloseOnDrop>,
}

/// Closes the connection when the app drops its last [`Client`]; the background tasks hold
/// the connection too, so without this it would live on on keep-alives.
struct CloseOnDrop(quinn::Connection);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(0u32.into(), b"client dropped");
    }
}

type Waiters = HashMap<ClientMsgId, Vec<oneshot::Sender<Result<Seq, SendError>>>>;

struct Inner {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    user: UserId,
    device: DeviceId,
    keys: RwLock<HashMap<UserId, FriendKey>>,
    /// Everything for the control stream goes through one writer, in order.
    control: mpsc::UnboundedSender<ControlCommand>,
    conversations: tokio::sync::Mutex<HashMap<UserId, Arc<Conversation>>>,
    seen: Arc<Mutex<CursorTracker>>,
}

/// Work for the control stream's writer task.
pub(crate) enum ControlCommand {
    /// Write this frame.
    Send(ControlRequest),
    /// Finish the stream after everything queued before, then say so.
    Finish(oneshot::Sender<()>),
}

/// The sending half of one conversation stream and the senders waiting for `Sent`.
struct Conversation {
    send: tokio::sync::Mutex<quinn::SendStream>,
    waiting: Mutex<Waiters>,
}

impl Conversation {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail_all(&self, error: SendError) {
        for (_, senders) in self.waiting().drain() {
            for tx in senders {
                let _ = tx.send(Err(error.clone()));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Client {
    /// Connects, says Hello, and starts receiving. Pushes begin right away: read the
    /// returned [`Events`], or the node stops pushing once its window is full.
    pub async fn connect(options: ConnectOptions) -> Result<(Client, Events), ConnectError> {
        let config = crate::tls::quic_config(&options.ca_pem).map_err(ConnectError::Tls)?;
        let bind: SocketAddr = if options.addr.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let mut endpoint =
            quinn::Endpoint::client(bind).map_err(|e| ConnectError::Connect(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let name = options
            .server_name
            .clone()
            .unwrap_or_else(|| options.addr.ip().to_string());
        let conn = endpoint
            .connect(options.addr, &name)
            .map_err(|e| ConnectError::Connect(e.to_string()))?
            .await
            .map_err(|e| ConnectError::Connect(e.to_string()))?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| ConnectError::Connect(e.to_string()))?;
        let hello = ControlRequest::Hello {
            version: PROTOCOL_VERSION,
            token: options.token.clone(),
        };
        write_frame(&mut send, &hello)
            .await
            .map_err(ConnectError::Connect)?;
        let (user, device, cursor) = match read_frame::<ControlResponse>(&mut recv).await {
            Ok(Some(ControlResponse::Welcome {
                user,
                device,
                cursor,
            })) => (user, device, cursor),
            Ok(Some(ControlResponse::Error { code, message })) => {
                return Err(ConnectError::Refused { code, message })
            }
            Ok(None) => return Err(ConnectError::Protocol("no welcome".into())),
            Err(e) => return Err(refusal(&conn).unwrap_or(ConnectError::Protocol(e))),
        };
        let seen = CursorTracker::new(cursor.max(options.cursor.unwrap_or_default()));
        let seen = Arc::new(Mutex::new(seen));
        let (control, control_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            endpoint,
            conn,
            user,
            device,
            keys: RwLock::new(options.keys),
            control: control.clone(),
            conversations: tokio::sync::Mutex::new(HashMap::new()),
            seen: seen.clone(),
        });
        let (events_tx, rx) = mpsc::channel(EVENT_BUFFER);
        tokio::spawn(read_control(recv, events_tx.clone()));
        tokio::spawn(accept_pushes(inner.clone(), events_tx));
        tokio::spawn(write_control(send, control_rx));
        let events = Events { rx, seen, control };
        let close = Arc::new(CloseOnDrop(inner.conn.clone()));
        Ok((
            Client {
                inner,
                _close_on_drop: close,
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

    /// The highest `seq` up to which every entry was handed to the app. Keep it and pass it
    /// as [`ConnectOptions::cursor`] to never see an entry twice across restarts.
    pub fn cursor(&self) -> Seq {
        lock(&self.inner.seen).cursor()
    }

    /// The underlying QUIC connection (for statistics and tests).
    pub fn connection(&self) -> &quinn::Connection {
        &self.inner.conn
    }

    /// Adds or replaces a friendship key (after a new friendship).
    pub fn set_key(&self, friend: UserId, key: FriendKey) {
        self.inner
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(friend, key);
    }

    /// A fresh random message id.
    pub fn new_message_id() -> ClientMsgId {
        use chacha20poly1305::aead::rand_core::RngCore;
        let mut bytes = [0u8; 16];
        chacha20poly1305::aead::OsRng.fill_bytes(&mut bytes);
        ClientMsgId(u128::from_be_bytes(bytes))
    }

    /// Seals and sends `body` to `to`; returns once the node has it durably (SENT).
    pub async fn send(&self, to: &UserId, body: &[u8]) -> Result<Sent, SendError> {
        self.send_with_id(to, Self::new_message_id(), body).await
    }

    /// Like [`Client::send`] with your own id. Sending again with the same id (after a
    /// timeout or a lost connection) returns the first `seq`; the recipient gets one copy.
    pub async fn send_with_id(
        &self,
        to: &UserId,
        id: ClientMsgId,
        body: &[u8],
    ) -> Result<Sent, SendError> {
        let key = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(to)
            .cloned()
            .ok_or_else(|| SendError::NoKey(to.to_string()))?;
        let sealed = seal::seal(&key, &self.inner.user, to, id, body);
        let chat = ConversationRequest::Chat {
            id,
            sent_at_ms: now_ms(),
            body: sealed,
        };
        let conversation = self.conversation(to).await?;
        let (tx, rx) = oneshot::channel();
        conversation.waiting().entry(id).or_default().push(tx);
        let written = write_frame(&mut *conversation.send.lock().await, &chat).await;
        if let Err(e) = written {
            conversation.waiting().remove(&id);
            self.forget_conversation(to, &conversation).await;
            return Err(SendError::Connection(e));
        }
        let seq = rx
            .await
            .map_err(|_| SendError::Connection("conversation ended".into()))??;
        Ok(Sent { id, seq })
    }

    /// Tells the sender of the message at `seq` (from an [`Event::Message`]) that you read it.
    /// Queued behind the acknowledgements already due, so READ never overtakes DELIVERED.
    pub fn mark_read(&self, seq: Seq) -> Result<(), SendError> {
        let read = ControlCommand::Send(ControlRequest::Read { seq });
        self.inner
            .control
            .send(read)
            .map_err(|_| SendError::Connection("connection ended".into()))
    }

    /// Closes the connection politely: acknowledgements and read marks already queued reach
    /// the node first (it closes once it has handled them), within a few seconds at most.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.control.send(ControlCommand::Finish(tx)).is_ok() {
            let _ = tokio::time::timeout(CLOSE_WAIT, rx).await;
            let _ = tokio::time::timeout(CLOSE_WAIT, self.inner.conn.closed()).await;
        }
        self.inner.conn.close(0u32.into(), b"bye");
        self.inner.endpoint.wait_idle().await;
    }

    /// The open stream to `to`, opened on first use.
    async fn conversation(&self, to: &UserId) -> Result<Arc<Conversation>, SendError> {
        let mut conversations = self.inner.conversations.lock().await;
        if let Some(conversation) = conversations.get(to) {
            return Ok(conversation.clone());
        }
        let lost = |e: quinn::ConnectionError| SendError::Connection(e.to_string());
        let (mut send, recv) = self.inner.conn.open_bi().await.map_err(lost)?;
        let open = ConversationRequest::Open { peer: to.clone() };
        write_frame(&mut send, &open)
            .await
            .map_err(SendError::Connection)?;
        let conversation = Arc::new(Conversation {
            send: tokio::sync::Mutex::new(send),
            waiting: Mutex::new(HashMap::new()),
        });
        conversations.insert(to.clone(), conversation.clone());
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(read_conversation(
            weak,
            to.clone(),
            conversation.clone(),
            recv,
        ));
        Ok(conversation)
    }

    async fn forget_conversation(&self, to: &UserId, which: &Arc<Conversation>) {
        forget(&self.inner, to, which).await;
    }
}

async fn forget(inner: &Inner, to: &UserId, which: &Arc<Conversation>) {
    let mut conversations = inner.conversations.lock().await;
    if conversations.get(to).is_some_and(|c| Arc::ptr_eq(c, which)) {
        conversations.remove(to);
    }
}

/// The node's close code, if it closed the connection on purpose.
fn refusal(conn: &quinn::Connection) -> Option<ConnectError> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = u32::try_from(close.error_code.into_inner()).ok()?;
            Some(ConnectError::Refused {
                code: ErrorCode::from_u32(code)?,
                message: String::from_utf8_lossy(&close.reason).into_owned(),
            })
        }
        _ => None,
    }
}

/// Matches a conversation's answers to waiting senders until the stream ends.
async fn read_conversation(
    inner: Weak<Inner>,
    peer: UserId,
    conversation: Arc<Conversation>,
    mut recv: quinn::RecvStream,
) {
    let error = loop {
        let (id, outcome) = match read_frame::<ConversationResponse>(&mut recv).await {
            Ok(Some(ConversationResponse::Sent { id, seq })) => (id, Ok(seq)),
            Ok(Some(ConversationResponse::Rejected { id, code })) => {
                (id, Err(SendError::Rejected(code)))
            }
            Ok(Some(ConversationResponse::Error { code })) => break SendError::StreamClosed(code),
            Ok(None) => break SendError::Connection("conversation finished".into()),
            Err(e) => break SendError::Connection(e),
        };
        for tx in conversation.waiting().remove(&id).unwrap_or_default() {
            let _ = tx.send(outcome.clone());
        }
    };
    tracing::debug!(%peer, %error, "conversation stream ended");
    if let Some(inner) = inner.upgrade() {
        forget(&inner, &peer, &conversation).await;
    }
    conversation.fail_all(error);
}

/// Reads the node's control replies (errors for refused acks or read marks).
async fn read_control(mut recv: quinn::RecvStream, events: mpsc::Sender<(Event, Option<Seq>)>) {
    while let Ok(Some(response)) = read_frame::<ControlResponse>(&mut recv).await {
        if let ControlResponse::Error { code, message } = response {
            if events
                .send((Event::ServerError { code, message }, None))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Writes the control stream: acknowledgements (as the app takes events, or for dropped
/// redeliveries) and read marks, in the order they were queued.
async fn write_control(
    mut send: quinn::SendStream,
    mut commands: mpsc::UnboundedReceiver<ControlCommand>,
) {
    while let Some(command) = commands.recv().await {
        match command {
            ControlCommand::Send(frame) => {
                if write_frame(&mut send, &frame).await.is_err() {
                    return;
                }
            }
            ControlCommand::Finish(done) => {
                let _ = send.finish();
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Accepts the node's push streams until the connection ends, then says so.
async fn accept_pushes(inner: Arc<Inner>, events: mpsc::Sender<(Event, Option<Seq>)>) {
    let reason = loop {
        match inner.conn.accept_uni().await {
            Ok(recv) => {
                tokio::spawn(read_pushes(inner.clone(), recv, events.clone()));
            }
            Err(e) => break e.to_string(),
        }
    };
    let _ = events.send((Event::Disconnected { reason }, None)).await;
}

/// Turns one push stream's entries into events; [`Events::recv`] acknowledges them.
async fn read_pushes(
    inner: Arc<Inner>,
    mut recv: quinn::RecvStream,
    events: mpsc::Sender<(Event, Option<Seq>)>,
) {
    while let Ok(Some(entry)) = read_frame::<Entry>(&mut recv).await {
        let seq = entry.seq;
        if lock(&inner.seen).contains(seq) {
            // The app has it already (a redelivery after reconnect): acknowledge, don't repeat.
            let _ = inner
                .control
                .send(ControlCommand::Send(ControlRequest::Ack { seq }));
        } else if events
            .send((inner.open_entry(entry), Some(seq)))
            .await
            .is_err()
        {
            return;
        }
    }
}

impl Inner {
    fn open_entry(&self, entry: Entry) -> Event {
        match entry.kind {
            EntryKind::Chat {
                id,
                sent_at_ms,
                body,
            } => {
                let key = self
                    .keys
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&entry.peer)
                    .cloned();
                let opened = match key {
                    Some(key) => seal::open(&key, &entry.peer, &self.user, id, &body)
                        .map_err(|e| e.to_string()),
                    None => Err(format!("no friendship key for {}", entry.peer)),
                };
                match opened {
                    Ok(body) => Event::Message(Message {
                        from: entry.peer,
                        seq: entry.seq,
                        id,
                        sent_at_ms,
                        body,
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
        }
    }
}
