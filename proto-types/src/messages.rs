//! The messages of protocol version 1, one enum per stream direction.
//!
//! Note what is *not* here: no client frame carries a sender. The node stamps the sender of
//! every entry from the authenticated session, so there is nothing for a client to forge.

use crate::files::{BlobId, FileRef};
use crate::{ClientMsgId, DeviceId, ErrorCode, GroupChange, GroupId, Seq, UserId};
use serde::{Deserialize, Serialize};

/// Client → node on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// First frame of a connection. The token (from REST login) names user and device.
    Hello {
        /// Must equal [`crate::PROTOCOL_VERSION`].
        version: u16,
        /// The signed token from login.
        token: String,
    },
    /// This device has the entry `seq` (it was pushed and handed to the app).
    Ack {
        /// The acknowledged entry.
        seq: Seq,
    },
    /// The user read the chat message at `seq` of their inbox.
    Read {
        /// The chat entry that was read.
        seq: Seq,
    },
    /// This device has the entry `seq` of `group`'s log.
    GroupAck {
        /// The group.
        group: GroupId,
        /// The acknowledged entry.
        seq: Seq,
    },
    /// The user read `group`'s log up to `seq`.
    GroupRead {
        /// The group.
        group: GroupId,
        /// The last entry read.
        seq: Seq,
    },
}

/// Node → client on the control stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The session is authenticated; pushes start right after.
    Welcome {
        /// Who the node thinks you are (from the token).
        user: UserId,
        /// This device.
        device: DeviceId,
        /// The node's record of this device's cursor: pushes resume after it. The device
        /// drops (and acknowledges) entries it already has, by `seq`.
        cursor: Seq,
    },
    /// A control request was refused. For `Hello` the connection closes right after.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// Human-readable detail, never internal state.
        message: String,
    },
    /// An entry of `group`'s log, pushed to a member's device. Every group the user is
    /// in shares this one stream, each within its own push window.
    GroupEntry {
        /// The group.
        group: GroupId,
        /// The entry; its `seq` is the group log's.
        entry: Entry,
    },
}

/// Client → node on a client-opened bidirectional stream after the control stream. The
/// first frame says what the stream is: `Open` (a conversation: chats follow), `Upload` or
/// `Download` (one file transfer, see [`crate::files`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationRequest {
    /// First frame: this stream carries messages to `peer`.
    Open {
        /// The recipient of every chat on this stream.
        peer: UserId,
    },
    /// A sealed message. The node answers `Sent` once it is durable.
    Chat {
        /// Client-made id; a retry with the same id gets the same `seq`.
        id: ClientMsgId,
        /// Sender's clock when the message was written, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// Sealed body (nonce and ciphertext). The node never sees the plaintext.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// The file this message carries, uploaded before by the sender; its sealed
        /// description (name, type, hash) is the body.
        file: Option<FileRef>,
    },
    /// First frame: this stream uploads the sealed blob `blob` of `size` bytes.
    Upload {
        /// SHA-256 of the sealed bytes.
        blob: BlobId,
        /// How many sealed bytes.
        size: u64,
    },
    /// First frame: this stream downloads `blob`, which `owner` uploaded, from `offset` on.
    Download {
        /// The blob.
        blob: BlobId,
        /// Who uploaded it (the sender of the file message): it lives on their home node.
        owner: UserId,
        /// The first sealed byte wanted.
        offset: u64,
    },
    /// First frame: this stream carries messages to `group`.
    OpenGroup {
        /// The group.
        group: GroupId,
    },
    /// A message to the stream's group, sealed with the group key of `epoch`. The node
    /// answers `Sent` once it is durable in the group's log, or `Rejected` with
    /// `StaleEpoch` if the group has a newer key (fetch it and seal again).
    GroupChat {
        /// Client-made id; a retry with the same id gets the same `seq`.
        id: ClientMsgId,
        /// Sender's clock, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// The key epoch the body is sealed at.
        epoch: u32,
        /// Sealed body.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// First frame: one page of the user's own inbox, newest first: the entries below
    /// `before` (from the newest when `None`) about `peer` (every peer when `None`), at
    /// most `limit` (the node caps it at [`MAX_HISTORY_PAGE`]). Answered with
    /// [`ConversationResponse::HistoryEntry`] frames, then one
    /// [`ConversationResponse::HistoryEnd`]; then the node finishes the stream.
    History {
        /// Only entries whose `peer` is this user.
        peer: Option<UserId>,
        /// Only entries with a lower `seq`.
        before: Option<Seq>,
        /// Entries wanted.
        limit: u32,
    },
    /// First frame: one page of a group's log, newest first, within what the member may
    /// see (from the entry that added them to the one that removed them). Answered as
    /// [`ConversationRequest::History`].
    GroupHistory {
        /// The group.
        group: GroupId,
        /// Only entries with a lower `seq`.
        before: Option<Seq>,
        /// Entries wanted.
        limit: u32,
    },
    /// A file message to the stream's group: as [`ConversationRequest::GroupChat`], and
    /// `file`, a blob the sender uploaded before, sealed chunk by chunk with the group key
    /// of `epoch`; the body is its sealed description.
    GroupFile {
        /// Client-made id; a retry with the same id gets the same `seq`.
        id: ClientMsgId,
        /// Sender's clock, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// The key epoch the body and the file are sealed at.
        epoch: u32,
        /// Sealed description of the file.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// The file.
        file: FileRef,
    },
    /// First frame: this stream downloads the file of the [`EntryKind::GroupFile`] entry
    /// at `seq` of `group`'s log, which the downloader may see (it is within their range
    /// of the log), from `offset` on. Answered as [`ConversationRequest::Download`].
    GroupDownload {
        /// The group the file was sent to.
        group: GroupId,
        /// The entry that names the file.
        seq: Seq,
        /// The first sealed byte wanted.
        offset: u64,
    },
}

/// Most entries one history page carries.
pub const MAX_HISTORY_PAGE: u32 = 500;

/// Node → client on a conversation stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationResponse {
    /// The message is durable in the recipient's inbox at `seq`.
    Sent {
        /// The client's id for the message.
        id: ClientMsgId,
        /// Its position in the recipient's inbox.
        seq: Seq,
    },
    /// The stream is closing because of `code` (a bad frame); nothing follows.
    Error {
        /// Why the stream closes.
        code: ErrorCode,
    },
    /// The message was not stored.
    Rejected {
        /// The client's id for the message.
        id: ClientMsgId,
        /// Why; [`ErrorCode::is_retryable`] tells whether to try again.
        code: ErrorCode,
    },
    /// One entry of a history page (newest first).
    HistoryEntry {
        /// The entry, as it was pushed.
        entry: Entry,
    },
    /// The page is complete. `next` is the `before` of the next page, or `None` when
    /// nothing older is left (the start of the conversation, of retention or of the
    /// member's range). A page may hold fewer entries than asked and still have a `next`:
    /// the node bounds how far one page looks.
    HistoryEnd {
        /// Where the next page starts.
        next: Option<Seq>,
    },
}

/// One entry of a user's inbox, as stored and as pushed to each device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the owner's inbox.
    pub seq: Seq,
    /// The other side of the conversation: the sender of a chat, the reader of a receipt.
    pub peer: UserId,
    /// What happened.
    pub kind: EntryKind,
}

/// The kinds of inbox entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A message from `peer`, stamped by the node from `peer`'s session.
    Chat {
        /// The sender's id for the message.
        id: ClientMsgId,
        /// Sender's clock at writing, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// Sealed body.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// The file the message carries, if any.
        file: Option<FileRef>,
    },
    /// News about a message the owner sent to `peer`.
    Receipt {
        /// DELIVERED or READ.
        kind: ReceiptKind,
        /// The owner's id for the message.
        id: ClientMsgId,
        /// The message's `seq` in `peer`'s inbox (as returned in `Sent`).
        seq: Seq,
    },
    /// In a group's log: a message from `peer`, sealed with the group key of `epoch`.
    GroupChat {
        /// The sender's id for the message.
        id: ClientMsgId,
        /// Sender's clock at writing, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// The key epoch.
        epoch: u32,
        /// Sealed body.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// In a group's log: a membership change made by `peer`.
    Member(GroupChange),
    /// In a group's log: a file message from `peer`, its description and its chunks
    /// sealed with the group key of `epoch`.
    GroupFile {
        /// The sender's id for the message.
        id: ClientMsgId,
        /// Sender's clock at writing, milliseconds since the Unix epoch.
        sent_at_ms: u64,
        /// The key epoch.
        epoch: u32,
        /// Sealed description of the file.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// The file.
        file: FileRef,
    },
    /// News about several messages the owner sent to `peer`, all of one kind: what a node
    /// stores when `peer`'s devices acknowledge messages faster than one receipt each
    /// could be written. Means exactly what the same `Receipt`s, in this order, would.
    Receipts {
        /// DELIVERED or READ.
        kind: ReceiptKind,
        /// The messages, at least one.
        messages: Vec<ReceiptOf>,
    },
}

/// One message a [`EntryKind::Receipts`] is news about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptOf {
    /// The owner's id for the message.
    pub id: ClientMsgId,
    /// The message's `seq` in `peer`'s inbox (as returned in `Sent`).
    pub seq: Seq,
}

/// Receipts that travel back to a sender as inbox entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReceiptKind {
    /// A device of the recipient has the message.
    Delivered,
    /// The recipient's app reported it read.
    Read,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `EntryKind` as it was before bodies were (de)serialized as bytes: a plain
    /// `Vec<u8>`, which postcard writes as a sequence of `u8`.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum OldKind {
        Chat {
            id: ClientMsgId,
            sent_at_ms: u64,
            body: Vec<u8>,
            file: Option<FileRef>,
        },
    }

    /// Bodies as bytes are a memcpy instead of a call per byte, and on the wire (and in
    /// stored inbox logs) they are the very same bytes as before: old and new read each
    /// other.
    #[test]
    fn bodies_as_bytes_keep_the_wire_format() {
        let body: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let new = EntryKind::Chat {
            id: ClientMsgId(7),
            sent_at_ms: 1_700_000_000_000,
            body: body.clone(),
            file: None,
        };
        let old = OldKind::Chat {
            id: ClientMsgId(7),
            sent_at_ms: 1_700_000_000_000,
            body,
            file: None,
        };
        let new_bytes = postcard::to_stdvec(&new).unwrap();
        assert_eq!(new_bytes, postcard::to_stdvec(&old).unwrap());
        assert_eq!(postcard::from_bytes::<OldKind>(&new_bytes).unwrap(), old);
        let old_bytes = postcard::to_stdvec(&old).unwrap();
        assert_eq!(postcard::from_bytes::<EntryKind>(&old_bytes).unwrap(), new);
    }
}
