//! [`App`]: the one entry point an app needs — a store on disk and a node's address. Log
//! in once; after that, every start connects with the saved session, and the SDK fetches,
//! keeps and refreshes friendship and group keys itself: the app never handles a key.

use crate::client::Client;
use crate::error::{ConnectError, RestError};
use crate::events::Events;
use crate::options::ConnectOptions;
use crate::rest::Rest;
use crate::seal::FriendKey;
use crate::store::{Session, Store, StoreError};
use quiver_proto::rest::{FriendStatus, FriendsResponse};

/// How long connecting waits for fresh keys before using the stored ones (an app that
/// starts offline should not wait for REST's own timeout).
const KEY_REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Why an [`App`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No session in the store: log in first.
    #[error("not logged in")]
    NotLoggedIn,
    /// A REST call failed.
    #[error(transparent)]
    Rest(#[from] RestError),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store belongs to another user: one store per account (open another file).
    #[error("this store is {0}'s")]
    OtherUser(String),
}

/// An app's client: a store, and the node it talks to.
#[derive(Clone, Debug)]
pub struct App {
    store: Store,
    rest: Rest,
    ca_pem: String,
}

impl App {
    /// An app on `store`, talking to the node at `server_url` (`https://host:port`, its
    /// REST address), whose certificate `ca_pem` signed.
    pub fn new(store: Store, server_url: &str, ca_pem: &str) -> Result<Self, AppError> {
        Ok(Self {
            store,
            rest: Rest::new(server_url, ca_pem)?,
            ca_pem: ca_pem.to_owned(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The REST client, for calls this type does not wrap (groups, blocks, logout).
    pub fn rest(&self) -> &Rest {
        &self.rest
    }

    /// The session saved at the last login.
    pub fn session(&self) -> Result<Session, AppError> {
        self.store.session()?.ok_or(AppError::NotLoggedIn)
    }

    /// Creates an account.
    pub async fn register(&self, user: &str, password: &str) -> Result<(), AppError> {
        Ok(self.rest.register(user, password).await?)
    }

    /// Logs in and keeps the session. Logging in again as the same user stays the same
    /// device (its cursor and history go on); another user needs another store.
    pub async fn login(&self, user: &str, password: &str) -> Result<Session, AppError> {
        let stored = self.store.session()?;
        if let Some(other) = stored.as_ref().filter(|s| s.user.as_str() != user) {
            return Err(AppError::OtherUser(other.user.to_string()));
        }
        let device = stored.map(|s| s.device);
        let login = self.rest.login(user, password, device).await?;
        let session = Session {
            user: login.user,
            device: login.device,
            token: login.token,
        };
        self.store.save_session(&session)?;
        self.store.save_node(&login.quic_addr)?;
        Ok(session)
    }

    /// Asks `user` to be friends (or accepts, if they asked first).
    pub async fn request_friend(&self, user: &str) -> Result<FriendStatus, AppError> {
        Ok(self
            .rest
            .request_friend(&self.session()?.token, user)
            .await?)
    }

    /// Accepts `user`'s friend request.
    pub async fn accept_friend(&self, user: &str) -> Result<FriendStatus, AppError> {
        Ok(self
            .rest
            .accept_friend(&self.session()?.token, user)
            .await?)
    }

    /// Friends, requests and blocks; the friendship keys it carries are kept.
    pub async fn friends(&self) -> Result<FriendsResponse, AppError> {
        let friends = self.rest.friends(&self.session()?.token).await?;
        for f in &friends.friends {
            if let Some(key) = crate::key_from_hex(&f.key) {
                self.store.save_friend_key(&f.user, &FriendKey(key))?;
            }
        }
        Ok(friends)
    }

    /// Connects with the saved session: the keys are refreshed first when the node
    /// answers (the stored ones are used when it does not), messages the last run left
    /// unsent go out, and the client fetches keys by itself when a message needs one.
    /// When the node cannot be reached the client starts offline (after the first
    /// attempt's `connect_timeout`) and connects by itself later; a refusal (a bad token)
    /// is an error.
    pub async fn connect(&self) -> Result<(Client, Events), AppError> {
        self.connect_with(|_| {}).await
    }

    /// [`App::connect`] after `adjust` has changed the options (timings, for example).
    pub async fn connect_with(
        &self,
        adjust: impl FnOnce(&mut ConnectOptions),
    ) -> Result<(Client, Events), AppError> {
        let session = self.session()?;
        match tokio::time::timeout(KEY_REFRESH_WAIT, self.friends()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "keys not refreshed; using the stored ones"),
            Err(_) => tracing::debug!("keys not refreshed in time; using the stored ones"),
        }
        let node = self.store.node()?.ok_or(AppError::NotLoggedIn)?;
        let addr = node
            .parse()
            .map_err(|_| ConnectError::Connect(format!("bad node address {node:?}")))?;
        let mut options = ConnectOptions::new(addr, self.ca_pem.clone(), session.token);
        options.store = Some(self.store.clone());
        options.key_source = Some(self.rest.clone());
        adjust(&mut options);
        match Client::connect(options.clone()).await {
            // The node is out of reach (no network, or it is down): start anyway, so the
            // app can show its store and queue messages; the client connects when it can.
            Err(ConnectError::Connect(reason)) => {
                tracing::info!(%reason, "starting offline");
                Ok(Client::start(options, session.user, session.device)?)
            }
            other => Ok(other?),
        }
    }
}
