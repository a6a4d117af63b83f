//! # quiver-sdk — the Quiver client library
//!
//! What an app embeds to talk to a Quiver node:
//! - [`Rest`]: accounts over HTTPS — register, log in, friend requests, friendship keys.
//! - [`Client`]: one QUIC connection — send sealed messages and await SENT, receive
//!   [`Event`]s (messages, DELIVERED / READ receipts), mark messages read.
//! - files: [`Client::send_file`] and [`Client::download`] move files of any size on
//!   their own streams, sealed chunk by chunk, resumable ([`files`]).
//! - [`seal`]: XChaCha20-Poly1305 with the friendship key; the node only ever sees
//!   ciphertext.
//!
//! ## A whole exchange
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use quiver_sdk::{Client, ConnectOptions, Event, FriendKey, Rest, UserId};
//! let ca_pem = std::fs::read_to_string("quiver-data/certs/ca.pem")?;
//! let rest = Rest::new("https://127.0.0.1:8443", &ca_pem)?;
//! rest.register("alice", "alice-password").await?;
//! let login = rest.login("alice", "alice-password", None).await?;
//! rest.request_friend(&login.token, "bob").await?; // bob accepts on his side
//! let keys = rest.friends(&login.token).await?.friends.iter()
//!     .filter_map(|f| Some((f.user.clone(), FriendKey(quiver_sdk::key_from_hex(&f.key)?))))
//!     .collect();
//! let mut options = ConnectOptions::new(login.quic_addr.parse()?, ca_pem, &login.token);
//! options.keys = keys;
//! let (client, mut events) = Client::connect(options).await?;
//! let sent = client.send(&UserId::parse("bob")?, b"hi bob").await?; // durable: SENT
//! while let Some(event) = events.recv().await {
//!     match event {
//!         Event::Receipt(r) if r.seq == sent.seq => println!("{:?}", r.kind),
//!         Event::Message(m) => client.mark_read(m.seq)?,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//! Within a conversation, messages arrive in the order they were sent, each once per
//! device. SENT means durable on the node. A message is acknowledged (and DELIVERED goes
//! to its sender) only after the app took it from [`Events`].
//!
//! What survives what:
//! - a lost connection, a node restart, a network change: the client reconnects (or
//!   migrates) by itself; unanswered messages are written again from the in-memory outbox
//!   with their ids, so they are stored once and in order; the event stream goes on.
//! - an app restart or kill: with a [`Store`] ([`App`], or [`ConnectOptions::store`]) every
//!   message is in the store before `send` returns and goes out again at the next start,
//!   same id, in order; the cursor, keys and history are there too. Without a store the
//!   outbox is in memory: keep [`Client::cursor`] and pass it back in
//!   [`ConnectOptions::cursor`] so nothing already shown is shown twice.
//!
//! ## Inside
//! The connection state has one home, `state` (the `Inner` every task shares and the
//! current `Link`); the tasks that work on it sit above it and never import each other in
//! a circle: `link` (a connection's handshake, control and push streams), `driver`
//! (reconnects), `send` (the outbox on conversation streams), `keys`, `group_open` and
//! `unbatch` (opening entries; a batch of receipts is an event per message), `events`
//! (the app's stream), `persist` (what goes to the store), `files`, `netwatch` (moves
//! the connection when the network changes), `carrier` (UDP, or QUIC in TLS over TCP
//! where UDP is blocked, under the endpoint). [`Client`] assembles them; `groups`,
//! `history` and [`App`] build on it.

mod app;
mod carrier;
mod client;
mod driver;
mod error;
mod event;
mod events;
mod file_seal;
pub mod files;
mod frames;
mod group_keys;
mod group_open;
mod group_rest;
mod groups;
mod history;
mod keys;
mod link;
mod netwatch;
mod options;
mod outbox;
mod persist;
mod presence;
mod private_file;
mod rest;
pub mod seal;
mod send;
mod state;
pub mod store;
pub mod text;
pub mod tls;
mod unbatch;
mod xchacha;

pub use app::{App, AppError};
pub use carrier::tcp_endpoint;
pub use client::{Client, ConnectOptions, PendingSend, Sent};
pub use error::{ConnectError, HistoryError, RestError, SendError};
pub use event::{ConnectionState, Event, GroupMessage, Message, Receipt};
pub use events::Events;
pub use files::{
    Cancel, FileError, FileInfo, FileOffer, FileSent, GroupFile, Progress, Transfer, TransferReport,
};
pub use group_keys::GroupKeys;
pub use history::{HistoryOf, HistoryPage};
pub use quiver_proto::datagram::PresenceState;
pub use quiver_proto::files::{BlobId, FileRef};
pub use quiver_proto::rest::{
    key_from_hex, FriendInfo, FriendsResponse, GroupChangeResponse, GroupInfo, GroupInvitation,
    GroupKeyInfo, GroupMember, GroupReceipts, GroupsResponse, LoginResponse, MemberReceipt,
    PushTarget,
};
pub use quiver_proto::{
    ClientMsgId, DeviceId, ErrorCode, GroupChange, GroupId, ReceiptKind, Role, Seq, UserId,
    MAX_HISTORY_PAGE,
};
pub use rest::Rest;
pub use seal::FriendKey;
pub use store::{Conversation, Session, Store, StoreError};
