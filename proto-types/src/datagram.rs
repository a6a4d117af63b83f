//! QUIC datagrams: typing indicators and presence. Unreliable by nature and by design:
//! never stored, never pushed, dropped when late. One message per datagram, no frame
//! header: the datagram's payload is the postcard encoding of the enum below (its tag,
//! then its fields), at most [`MAX_DATAGRAM`] bytes.

use crate::{GroupId, UserId};
use serde::{Deserialize, Serialize};

/// Largest datagram payload either side sends or accepts.
pub const MAX_DATAGRAM: usize = 256;

/// What a user shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PresenceState {
    /// Using the app now.
    Online,
    /// Connected but idle (the app is in the background).
    Away,
    /// Not connected (from the node only), or hiding presence (from a client: friends
    /// see `Offline` and no last-seen time moves).
    Offline,
}

impl PresenceState {
    /// Its name in JSON and in the bindings: `online`, `away`, `offline`.
    pub fn name(self) -> &'static str {
        match self {
            PresenceState::Online => "online",
            PresenceState::Away => "away",
            PresenceState::Offline => "offline",
        }
    }

    /// The state a name gives.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Online, Self::Away, Self::Offline]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// Client → node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientDatagram {
    /// You are typing to `to`, a friend. Send again every few seconds while typing.
    Typing {
        /// The friend.
        to: UserId,
    },
    /// You are typing in `group`.
    GroupTyping {
        /// The group.
        group: GroupId,
    },
    /// Your presence on this connection. The first one also subscribes the connection
    /// to friends' presence and typing; `Offline` hides you.
    Presence {
        /// What you show.
        state: PresenceState,
    },
}

/// Node → client (only to a connection that sent a `Presence`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeDatagram {
    /// A friend is typing to you.
    Typing {
        /// The friend.
        from: UserId,
    },
    /// A member is typing in a group you are in.
    GroupTyping {
        /// The group.
        group: GroupId,
        /// The member.
        from: UserId,
    },
    /// A friend's presence now.
    Presence {
        /// The friend.
        user: UserId,
        /// What they show.
        state: PresenceState,
        /// When they were last connected and not hidden, ms since the Unix epoch (0:
        /// never seen by this node).
        last_seen_ms: u64,
    },
}
