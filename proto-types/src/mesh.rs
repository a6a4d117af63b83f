//! Node-to-node messages of the mesh (ALPN [`MESH_ALPN`]). Only a node that presents a
//! certificate of the cluster CA gets to send these; clients never speak them.
//!
//! Every stream a node opens to a peer starts with one [`MeshOpen`] frame naming what the
//! stream is for. The sender of a chat is named here, because the opening node took it from
//! its own authenticated client session: peers trust each other, never clients.

use crate::files::{BlobId, FileRef};
use crate::{ClientMsgId, DeviceId, Entry, ErrorCode, GroupId, ReceiptKind, Role, Seq, UserId};
use serde::{Deserialize, Serialize};

/// ALPN protocol id of node-to-node links.
pub const MESH_ALPN: &[u8] = b"quiver-mesh/1";

/// First frame of every stream one node opens to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshOpen {
    /// Chats from `from` to `to`, whose home is the receiving node. Then the stream carries
    /// [`crate::ConversationRequest::Chat`] frames up and
    /// [`crate::ConversationResponse`] frames down, exactly like a client's conversation
    /// stream: `Sent` only once the entry is durable here.
    Conversation {
        /// The sender, authenticated by the opening node.
        from: UserId,
        /// The recipient, homed on the receiving node.
        to: UserId,
    },
    /// Append a receipt to `owner`'s inbox (the original sender, homed on the receiving
    /// node). Answered with one [`ReceiptAnswer`].
    Receipt {
        /// The sender of the original message.
        owner: UserId,
        /// Who received or read it.
        reader: UserId,
        /// DELIVERED or READ.
        kind: ReceiptKind,
        /// The owner's id for the message.
        id: ClientMsgId,
        /// The message's `seq` in `reader`'s inbox.
        seq: Seq,
    },
    /// A device of `user` (homed on the receiving node) is connected to the opening node:
    /// push it its inbox from its cursor on. Then [`crate::ControlRequest::Ack`] and
    /// [`crate::ControlRequest::Read`] frames go up and [`AttachDown`] frames come down.
    Attach {
        /// The user, authenticated by the opening node.
        user: UserId,
        /// The device.
        device: DeviceId,
    },
    /// `user` logged out one device (or all, when `device` is `None`) through the opening
    /// node: close their sessions here. Answered with one [`ReceiptAnswer`] once done.
    Logout {
        /// The user.
        user: UserId,
        /// The device, or every device.
        device: Option<DeviceId>,
    },
    /// `user` (homed on the receiving node) uploads a blob through the opening node. Then
    /// the stream is exactly a client's upload stream after its first frame.
    Upload {
        /// The uploader, authenticated by the opening node.
        user: UserId,
        /// The blob.
        blob: BlobId,
        /// Its sealed size.
        size: u64,
    },
    /// `user` downloads a blob that `owner` (homed on the receiving node) uploaded. Then
    /// the stream is exactly a client's download stream after its first frame.
    Download {
        /// The reader, authenticated by the opening node.
        user: UserId,
        /// The uploader.
        owner: UserId,
        /// The blob.
        blob: BlobId,
        /// First byte wanted.
        offset: u64,
    },
    /// A file message from `owner` (homed on the receiving node) names `file`: check the
    /// blob is theirs and complete, and keep it for the retention period. Answered with
    /// one [`ReceiptAnswer`].
    Retain {
        /// The uploader and sender.
        owner: UserId,
        /// The blob and its size.
        file: FileRef,
    },
    /// `user` (homed on the receiving node) logged a new device in through the opening
    /// node: start its cursor at the inbox's head, so it pages history instead of being
    /// pushed everything. Answered with one [`ReceiptAnswer`].
    StartDevice {
        /// The user.
        user: UserId,
        /// The new device.
        device: DeviceId,
    },
    /// A page of `user`'s inbox (homed on the receiving node), asked through the opening
    /// node. Then the stream is exactly a client's history stream after its first frame.
    History {
        /// The user, authenticated by the opening node.
        user: UserId,
        /// Only entries about this peer.
        peer: Option<UserId>,
        /// Only entries below this `seq`.
        before: Option<Seq>,
        /// Entries wanted.
        limit: u32,
    },
    /// Typing or a presence change for users with connections on the receiving node:
    /// hand `message` to each one's connections there that announced presence. Nothing
    /// is answered; the opener finishes the stream and does not wait.
    Datagram {
        /// Whom it is for (friends of its sender, checked by the opening node).
        to: Vec<UserId>,
        /// What they get.
        message: crate::datagram::NodeDatagram,
    },
    /// Chats from `from` to `group`, homed on the receiving node. Then the stream is
    /// exactly a client's group conversation after `OpenGroup`: `Sent` only once the
    /// entry is durable in the group's log here.
    GroupConversation {
        /// The sender, authenticated by the opening node.
        from: UserId,
        /// The group, homed on the receiving node.
        group: GroupId,
    },
    /// A device of `user` is connected to the opening node: push it the logs of its
    /// groups homed on the receiving node. Then [`crate::ControlRequest::GroupAck`] and
    /// [`crate::ControlRequest::GroupRead`] frames go up, and
    /// [`crate::ControlResponse::GroupEntry`] and [`crate::ControlResponse::Error`]
    /// frames come down, as on the device's control stream.
    GroupAttach {
        /// The user, authenticated by the opening node.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// The opening node's id: where the home's typing for `user` goes
        /// ([`MeshOpen::Datagram`]) while the attachment lasts.
        node: String,
    },
    /// A membership request of `user` (REST on the opening node) for `group`, homed on
    /// the receiving node. Answered with one [`GroupAnswer`].
    GroupCall {
        /// The user, authenticated by the opening node.
        user: UserId,
        /// The group.
        group: GroupId,
        /// What they ask.
        call: GroupCall,
    },
    /// What of `user`'s groups and invitations the receiving node homes, as the REST
    /// API's group list. Answered with one [`GroupAnswer`].
    GroupList {
        /// The user, authenticated by the opening node.
        user: UserId,
    },
    /// A page of `group`'s log (homed on the receiving node) for `user`. Then the stream
    /// is exactly a client's history stream after its first frame.
    GroupHistory {
        /// The user, authenticated by the opening node.
        user: UserId,
        /// The group.
        group: GroupId,
        /// Only entries below this `seq`.
        before: Option<Seq>,
        /// Entries wanted.
        limit: u32,
    },
    /// `user` now has a group (or an invitation) on `node`, which is new for them: their
    /// sessions on the receiving node attach to `node` for its group logs. Answered with
    /// one [`ReceiptAnswer`].
    GroupHomeAdded {
        /// The user.
        user: UserId,
        /// The node that homes the group.
        node: String,
    },
    /// `from`, connected to the opening node, is typing in `group`, homed on the
    /// receiving node: if `from` is a member, tell the other members wherever they are
    /// connected. Nothing is answered; the opener finishes the stream and does not wait.
    GroupTyping {
        /// Who is typing, authenticated by the opening node.
        from: UserId,
        /// The group.
        group: GroupId,
    },
    /// A group chat is durable in `group`'s log (on the opening node) for `owner`, a
    /// member homed on the receiving node: notify their devices that are away, as for
    /// a chat to their inbox. Answered with one [`ReceiptAnswer`].
    GroupNotice {
        /// The member to tell.
        owner: UserId,
        /// The sender.
        from: UserId,
        /// The group.
        group: GroupId,
        /// The chat's place in the group's log.
        seq: Seq,
        /// Entries of the group the member has not had on any device.
        unread: u64,
    },
    /// `user` downloads the file of the entry at `seq` of `group`'s log, homed on the
    /// receiving node, which checks that `user` may see that entry before it serves or
    /// relays the blob. Then the stream is exactly a client's download stream after its
    /// first frame.
    GroupDownload {
        /// The reader, authenticated by the opening node.
        user: UserId,
        /// The group the file was sent to.
        group: GroupId,
        /// The entry that names the file.
        seq: Seq,
        /// First byte wanted.
        offset: u64,
    },
    /// As [`MeshOpen::Download`], but the opening node (the group's home) has already
    /// checked that `user` may read the blob: it was sent to a group they see it in.
    GrantedDownload {
        /// The reader.
        user: UserId,
        /// The uploader (homed on the receiving node).
        owner: UserId,
        /// The blob.
        blob: BlobId,
        /// First byte wanted.
        offset: u64,
    },
}

/// A membership request carried by [`MeshOpen::GroupCall`]: the REST API's group routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupCall {
    /// The group as the user sees it.
    Info,
    /// Add `user` (a friend of the asker) or invite them.
    Add {
        /// Whom.
        user: UserId,
    },
    /// Accept an invitation.
    Accept,
    /// Remove `user`.
    Remove {
        /// Whom.
        user: UserId,
    },
    /// Leave.
    Leave,
    /// Rename.
    Rename {
        /// The new name.
        name: String,
    },
    /// Give `user` `role`.
    Role {
        /// Whom.
        user: UserId,
        /// The role.
        role: Role,
    },
    /// How far the members are with entry `seq`.
    Receipts {
        /// The entry.
        seq: Seq,
    },
}

/// The answer to [`MeshOpen::GroupCall`] and [`MeshOpen::GroupList`]: the REST answer the home node gives, which the
/// opening node hands its client as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub json: Vec<u8>,
}

/// The answer to [`MeshOpen::Receipt`], [`MeshOpen::Logout`] and [`MeshOpen::Retain`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptAnswer {
    /// The receipt is durable (or was already there).
    Stored,
    /// It was not stored.
    Refused {
        /// Why.
        code: ErrorCode,
    },
}

/// Home node → serving node on an [`MeshOpen::Attach`] stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachDown {
    /// The attachment is up; entries after `cursor` follow.
    Welcome {
        /// The device's cursor on the home node.
        cursor: Seq,
    },
    /// The next inbox entry for the device.
    Entry(Entry),
    /// An ack or read mark was refused; the attachment stays up.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Detail for the device.
        message: String,
    },
}
