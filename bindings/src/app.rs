//! [`QuiverApp`]: the app's one object — open it on a store file and a node, log in once,
//! connect with a listener, send and read. Everything the SDK keeps (session, keys,
//! outbox, history, cursor) is in the store file, so a killed app started again goes on
//! where it was: what it had not sent goes out, once, in order.

use crate::error::{user, QuiverError};
use crate::event::{hex_id, EventListener, QuiverEvent};
use quiver_sdk::store::StoredMessage;
use quiver_sdk::{App, Client, Conversation, Event, FileOffer, Seq, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A message the node has made durable.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SentMessage {
    /// Your id for it.
    pub id: String,
    /// Its `seq` in the recipient's inbox.
    pub seq: u64,
}

impl From<quiver_sdk::Sent> for SentMessage {
    fn from(sent: quiver_sdk::Sent) -> Self {
        Self {
            id: hex_id(sent.id),
            seq: sent.seq.0,
        }
    }
}

/// One message of the store's history.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct HistoryMessage {
    /// The sender (you, for yours).
    pub sender: String,
    /// Whether you sent it.
    pub outgoing: bool,
    /// The sender's id for it.
    pub id: String,
    /// Its `seq` (for yours, once SENT).
    pub seq: Option<u64>,
    /// The body as text.
    pub text: String,
    /// `pending`, `sent`, `delivered`, `read`, `failed` (yours); `unread`, `seen` (theirs).
    pub state: String,
    /// The file's name, for a file message.
    pub file_name: Option<String>,
}

/// One line of the conversation list.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ConversationLine {
    /// The friend (or group) the conversation is with.
    pub peer: String,
    /// Its newest message.
    pub last: HistoryMessage,
    /// Their messages not yet marked read.
    pub unread: u64,
}

/// The app's client.
#[derive(uniffi::Object)]
pub struct QuiverApp {
    app: App,
    client: Mutex<Option<Client>>,
    /// How long `connect` waits for the node before starting offline.
    connect_timeout: Mutex<Option<std::time::Duration>>,
    /// File messages seen, by `seq`, for [`QuiverApp::download`].
    offers: Arc<Mutex<HashMap<u64, FileOffer>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl QuiverApp {
    pub(crate) fn client(&self) -> Result<Client, QuiverError> {
        lock(&self.client).clone().ok_or(QuiverError::NotConnected)
    }

    pub(crate) fn app(&self) -> &App {
        &self.app
    }

    pub(crate) fn rest(&self) -> &quiver_sdk::Rest {
        self.app.rest()
    }

    /// The saved session's token, for REST calls.
    pub(crate) fn token(&self) -> Result<String, QuiverError> {
        Ok(self.app.session()?.token)
    }
}

#[uniffi::export(async_runtime = "tokio")]
impl QuiverApp {
    /// Opens the store at `store_path` (made if missing) for the node whose REST address
    /// is `server_url` (`https://host:port`), verified with `ca_pem`.
    #[uniffi::constructor]
    pub fn open(
        store_path: String,
        server_url: String,
        ca_pem: String,
    ) -> Result<Arc<Self>, QuiverError> {
        let store = Store::open(store_path)?;
        Ok(Arc::new(Self {
            app: App::new(store, &server_url, &ca_pem)?,
            client: Mutex::new(None),
            connect_timeout: Mutex::new(None),
            offers: Arc::new(Mutex::new(HashMap::new())),
        }))
    }

    /// Creates an account.
    pub async fn register(&self, user: String, password: String) -> Result<(), QuiverError> {
        Ok(self.app.register(&user, &password).await?)
    }

    /// Logs in and keeps the session in the store; returns this device's id.
    pub async fn login(&self, user: String, password: String) -> Result<u64, QuiverError> {
        Ok(self.app.login(&user, &password).await?.device.0)
    }

    /// How long `connect` waits for the node before it starts offline (10 s unless set).
    pub fn set_connect_timeout_ms(&self, ms: u64) {
        *lock(&self.connect_timeout) = Some(std::time::Duration::from_millis(ms));
    }

    /// Whether the store holds a session (no login needed).
    pub fn logged_in(&self) -> Result<bool, QuiverError> {
        Ok(self.app.store().session()?.is_some())
    }

    /// Asks `user` to be friends; returns `"pending"` or `"friends"`.
    pub async fn request_friend(&self, user: String) -> Result<String, QuiverError> {
        Ok(self.app.request_friend(&user).await?.status)
    }

    /// Accepts `user`'s request; returns `"friends"`.
    pub async fn accept_friend(&self, user: String) -> Result<String, QuiverError> {
        Ok(self.app.accept_friend(&user).await?.status)
    }

    /// Your friends.
    pub async fn friends(&self) -> Result<Vec<String>, QuiverError> {
        let friends = self.app.friends().await?;
        Ok(friends.friends.iter().map(|f| f.user.to_string()).collect())
    }

    /// Connects with the saved session. Messages the last run left unsent go out; events
    /// go to `listener`, each kept in the store first.
    pub async fn connect(&self, listener: Arc<dyn EventListener>) -> Result<(), QuiverError> {
        let timeout = *lock(&self.connect_timeout);
        let (client, mut events) = self
            .app
            .connect_with(|o| {
                if let Some(timeout) = timeout {
                    o.connect_timeout = timeout;
                }
            })
            .await?;
        let offers = self.offers.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Event::Message(m) = &event {
                    if let Some(offer) = &m.file {
                        lock(&offers).insert(m.seq.0, offer.clone());
                    }
                }
                listener.on_event(QuiverEvent::from(&event));
            }
        });
        if let Some(old) = lock(&self.client).replace(client) {
            tokio::spawn(async move { old.close().await });
        }
        Ok(())
    }

    /// Sends `text` to `to`; returns once it is durable on the node (SENT).
    pub async fn send(&self, to: String, text: String) -> Result<SentMessage, QuiverError> {
        let sent = self.client()?.send(&user(&to)?, text.as_bytes()).await?;
        Ok(sent.into())
    }

    /// Puts `text` for `to` in the outbox and returns its id at once: it is in the store,
    /// so it goes out even if the app is killed now (at the next start).
    pub async fn enqueue(&self, to: String, text: String) -> Result<String, QuiverError> {
        let pending = self.client()?.enqueue(&user(&to)?, text.as_bytes()).await?;
        Ok(hex_id(pending.id()))
    }

    /// Sends the file at `path` to `to`; returns once the message naming it is SENT.
    pub async fn send_file(
        &self,
        to: String,
        path: String,
        media_type: String,
    ) -> Result<SentMessage, QuiverError> {
        let client = self.client()?;
        let sent = client
            .send_file(&user(&to)?, path, &media_type, |_| {})
            .await?;
        Ok(sent.sent.into())
    }

    /// Downloads the file of the message at `seq` of your inbox (a `Message` event or a
    /// history message with a file name) to `path`; returns its size in sealed bytes.
    pub async fn download(&self, seq: u64, path: String) -> Result<u64, QuiverError> {
        let seen = lock(&self.offers).get(&seq).cloned();
        let offer = match seen {
            Some(offer) => offer,
            None => self
                .app
                .store()
                .inbox_message(Seq(seq))?
                .as_ref()
                .and_then(FileOffer::from_stored)
                .ok_or_else(|| QuiverError::Invalid {
                    message: format!("no file message at seq {seq}"),
                })?,
        };
        let report = self.client()?.download(&offer, path, |_| {}).await?;
        Ok(report.size)
    }

    /// Tells `friend` you are typing (unreliable; send again every few seconds).
    pub async fn typing(&self, friend: String) -> Result<(), QuiverError> {
        Ok(self.client()?.typing(&user(&friend)?)?)
    }

    /// Shows `state` (`"online"`, `"away"`, or `"offline"` to hide) to your friends, and
    /// starts receiving their presence and typing.
    pub async fn set_presence(&self, state: String) -> Result<(), QuiverError> {
        let state =
            quiver_sdk::PresenceState::from_name(&state).ok_or_else(|| QuiverError::Invalid {
                message: format!("presence {state:?}: online, away or offline"),
            })?;
        Ok(self.client()?.set_presence(state)?)
    }

    /// Tells the sender of the message at `seq` that you read it.
    pub fn mark_read(&self, seq: u64) -> Result<(), QuiverError> {
        Ok(self.client()?.mark_read(Seq(seq))?)
    }

    /// Every conversation, newest first, with its last message and unread count.
    pub fn conversations(&self) -> Result<Vec<ConversationLine>, QuiverError> {
        let lines = self.app.store().conversations()?;
        Ok(lines
            .into_iter()
            .map(|line| ConversationLine {
                peer: line.conversation.to_string(),
                last: history_message(&line.last),
                unread: line.unread,
            })
            .collect())
    }

    /// The newest `limit` messages with `friend`, newest first.
    pub fn messages(&self, friend: String, limit: u32) -> Result<Vec<HistoryMessage>, QuiverError> {
        let with = Conversation::Friend(user(&friend)?);
        let page = self.app.store().messages(&with, None, limit)?;
        Ok(page.messages.iter().map(history_message).collect())
    }

    /// Messages in the store waiting for SENT.
    pub fn outbox_len(&self) -> Result<u64, QuiverError> {
        Ok(self.app.store().outbox()?.len() as u64)
    }

    /// Closes the connection politely (acknowledgements first).
    pub async fn close(&self) {
        let client = lock(&self.client).take();
        if let Some(client) = client {
            client.close().await;
        }
    }
}

fn history_message(m: &StoredMessage) -> HistoryMessage {
    HistoryMessage {
        sender: m.from.to_string(),
        outgoing: m.outgoing,
        id: hex_id(m.id),
        seq: m.seq.map(|s| s.0),
        text: m.text(),
        file_name: FileOffer::from_stored(m).map(|f| f.info.safe_name()),
        state: m.state.name().into(),
    }
}
