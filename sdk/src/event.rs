//! What the app receives: the [`Event`]s of the [`crate::Events`] stream. Data only.

use quiver_proto::datagram::PresenceState;
use quiver_proto::{ClientMsgId, ErrorCode, GroupChange, GroupId, ReceiptKind, Seq, UserId};

/// A message from a friend, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender, as stamped by the node.
    pub from: UserId,
    /// Position in your inbox: pass it to [`crate::Client::mark_read`].
    pub seq: Seq,
    /// The sender's id for the message.
    pub id: ClientMsgId,
    /// The sender's clock at writing, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// The opened body (for a file message, its encoded description).
    pub body: Vec<u8>,
    /// The file this message carries: pass it to [`crate::Client::download`].
    pub file: Option<crate::FileOffer>,
}

impl Message {
    /// The body as text (lossy for bodies that are not UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// News about a message you sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The recipient of your message.
    pub peer: UserId,
    /// DELIVERED or READ.
    pub kind: ReceiptKind,
    /// Your id for the message.
    pub id: ClientMsgId,
    /// The message's `seq` in the recipient's inbox (as in [`crate::Sent`]).
    pub seq: Seq,
}

/// The state of the client's connection, for app UIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Trying to (re)connect.
    Connecting,
    /// Connected and authenticated; unsent messages are being resent.
    Online,
    /// The connection was lost; the client will reconnect by itself.
    Offline {
        /// Why the connection ended.
        reason: String,
    },
}

/// Something that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A friend's message.
    Message(Message),
    /// A receipt for one of your messages.
    Receipt(Receipt),
    /// A message whose body did not open (tampered, or sealed with another key). It is
    /// acknowledged like any other, so it is not redelivered.
    Undecryptable {
        /// The sender, as stamped by the node.
        from: UserId,
        /// Position in your inbox.
        seq: Seq,
        /// Why it did not open.
        reason: String,
    },
    /// The node refused a control request (an invalid ack or read mark).
    ServerError {
        /// The node's code.
        code: ErrorCode,
        /// Its detail.
        message: String,
    },
    /// The connection changed state (lost, reconnecting, back online). The event stream
    /// itself goes on across reconnects, with no gap and no repeat.
    Connection(ConnectionState),
    /// The client stopped for good: closed by the app, or the node refused to take it back
    /// (an expired or revoked token). No more events follow.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A message in a group.
    GroupMessage(GroupMessage),
    /// A membership change in a group, at its place in the group's order. After a
    /// `Removed` or `Left` the group has a new key: fetch it (`Rest::group`) and give it
    /// to [`crate::Client::set_group_keys`].
    GroupChange {
        /// The group.
        group: GroupId,
        /// Position in the group's log.
        seq: Seq,
        /// Who made the change.
        by: UserId,
        /// What changed.
        change: GroupChange,
    },
    /// A group message whose body did not open (no key of its epoch, or tampered).
    GroupUndecryptable {
        /// The group.
        group: GroupId,
        /// The sender.
        from: UserId,
        /// Position in the group's log.
        seq: Seq,
        /// Why it did not open.
        reason: String,
    },
    /// A friend is typing to you (`group: None`), or a member in a group. It lasts a
    /// few seconds unless another comes. Only with [`crate::ConnectOptions::presence`].
    Typing {
        /// Who.
        from: UserId,
        /// In which group, if in one.
        group: Option<GroupId>,
    },
    /// A friend's presence changed (or, right after connecting, what it is). Only with
    /// [`crate::ConnectOptions::presence`].
    Presence {
        /// The friend.
        user: UserId,
        /// Online, away or offline.
        state: PresenceState,
        /// When they were last seen, ms since the Unix epoch (0: unknown).
        last_seen_ms: u64,
    },
}

/// A message in a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMessage {
    /// The group.
    pub group: GroupId,
    /// The sender, as stamped by the node.
    pub from: UserId,
    /// Position in the group's log: the same for every member.
    pub seq: Seq,
    /// The sender's id for it.
    pub id: ClientMsgId,
    /// The sender's clock when written, milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The opened body (for a file message, its encoded description).
    pub body: Vec<u8>,
    /// The file this message carries: pass it to [`crate::Client::download`].
    pub file: Option<crate::FileOffer>,
}

impl GroupMessage {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
