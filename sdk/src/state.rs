//! The connection state of a [`crate::Client`], in one place: [`Inner`], shared by the
//! handle, the driver, the link tasks and the outbox writers, and the [`Link`] of the
//! connection now. Everything else in the SDK works on this state; this module depends
//! on none of them (as quinn keeps its connection state apart from the tasks that drive
//! it).

use crate::event::{ConnectionState, Event};
use crate::group_keys::GroupKeys;
use crate::options::ConnectOptions;
use crate::outbox::{Conversation, Queue};
use crate::seal::FriendKey;
use quiver_proto::{ControlRequest, CursorTracker, DeviceId, GroupId, Seq, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, watch};

/// Work for the control stream's writer task.
pub(crate) enum ControlCommand {
    /// Write this frame.
    Send(ControlRequest),
    /// Finish the stream after everything queued before, then say so.
    Finish(oneshot::Sender<()>),
}

/// A live connection.
pub(crate) struct Link {
    /// Counts up with each connection of a client.
    pub id: u64,
    pub conn: quinn::Connection,
    /// Everything for the control stream goes through one writer, in order.
    pub control: mpsc::UnboundedSender<ControlCommand>,
}

/// An acknowledgement to send once the app takes the event.
pub(crate) struct Ack {
    pub seq: Seq,
    /// The group whose log the entry is of; `None` for the user's inbox.
    pub group: Option<GroupId>,
    /// The control stream of the connection the entry came on. If that connection is gone
    /// the ack is dropped: the next connection pushes the entry again, and the SDK
    /// acknowledges the redelivery without showing it.
    pub control: mpsc::UnboundedSender<ControlCommand>,
    /// `false` for the events of a batch of receipts before its last: the entry is
    /// acknowledged when the app takes the last.
    pub ends_entry: bool,
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
    /// What this client shows its friends now (see [`ConnectOptions::presence`]).
    pub(crate) presence: Mutex<Option<quiver_proto::datagram::PresenceState>>,
    /// Conversations waiting for a stream now.
    pub(crate) streams_waiting: std::sync::atomic::AtomicUsize,
    /// Woken when the network changed to a path that works: a client waiting to
    /// reconnect tries at once.
    pub(crate) network_changed: tokio::sync::Notify,
    /// UDP or the TCP tunnel, under the endpoint.
    pub(crate) carrier: Arc<crate::carrier::Carrier>,
}

impl Inner {
    /// Moves the endpoint to a fresh UDP socket; QUIC sends from it at once, so the node
    /// migrates the live connection to the new path. Returns the new local address.
    pub(crate) fn rebind(&self) -> std::io::Result<std::net::SocketAddr> {
        let socket = crate::carrier::bind_udp(self.options.addr)?;
        let udp = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?;
        self.endpoint.rebind_abstract(self.carrier.socket(udp))?;
        self.endpoint.local_addr()
    }
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

    /// The outbox queue of `conversation`.
    pub(crate) fn queue(&self, conversation: &Conversation) -> Arc<tokio::sync::Mutex<Queue>> {
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
}
