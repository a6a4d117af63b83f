//! The router decides where a message goes and appends it there: the recipient's inbox for
//! chats, the original sender's inbox for receipts. It is the only writer of inboxes, so
//! the rules "only friends", "sender from the session" and "receipts once" live here.
//!
//! In single-node mode every user is homed on this node; mesh forwarding plugs in here.

use crate::directory::Directory;
use crate::inbox::{Appended, Idempotency, Inbox};
use quiver_proto::{ClientMsgId, EntryKind, ErrorCode, ReceiptKind, Seq, UserId};
use std::sync::Arc;

/// Routes chats and receipts into inboxes.
pub struct Router {
    inbox: Arc<Inbox>,
    directory: Arc<dyn Directory>,
    max_body_bytes: usize,
}

impl Router {
    /// A router over this node's inbox and directory.
    pub fn new(inbox: Arc<Inbox>, directory: Arc<dyn Directory>, max_body_bytes: usize) -> Self {
        Self {
            inbox,
            directory,
            max_body_bytes,
        }
    }

    /// The inbox the router writes to.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Whether `from` may message `to`.
    pub async fn check_friends(&self, from: &UserId, to: &UserId) -> Result<(), ErrorCode> {
        match self.directory.friendship(from, to).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(ErrorCode::NotFriends),
            Err(e) => {
                tracing::error!(error = %e, "directory lookup failed");
                Err(ErrorCode::Unavailable)
            }
        }
    }

    /// Appends a chat from `from` (taken from the session, never from the client) to `to`'s
    /// inbox. The caller answers `Sent` only after [`Appended::durable`].
    pub async fn chat(
        &self,
        from: &UserId,
        to: &UserId,
        id: ClientMsgId,
        sent_at_ms: u64,
        body: Vec<u8>,
    ) -> Result<Appended, ErrorCode> {
        if body.len() > self.max_body_bytes {
            return Err(ErrorCode::BodyTooLarge);
        }
        self.check_friends(from, to).await?;
        let kind = EntryKind::Chat {
            id,
            sent_at_ms,
            body,
        };
        self.inbox
            .append(to, from, kind, &Idempotency::Chat(from.clone(), id))
            .map_err(storage_error)
    }

    /// `owner`'s device has entry `seq`: if it is a chat, its sender gets DELIVERED
    /// (once, however many devices acknowledge). Returns when the receipt is durable.
    pub async fn delivered(&self, owner: &UserId, seq: Seq) -> Result<(), ErrorCode> {
        self.receipt(owner, seq, ReceiptKind::Delivered, false)
            .await
    }

    /// `owner` read the chat at `seq`: its sender gets READ. Reading implies having it,
    /// so DELIVERED is appended first if no device acknowledged yet (the read mark can
    /// overtake the ack): the sender always sees DELIVERED before READ.
    pub async fn read(&self, owner: &UserId, seq: Seq) -> Result<(), ErrorCode> {
        self.receipt(owner, seq, ReceiptKind::Delivered, true)
            .await?;
        self.receipt(owner, seq, ReceiptKind::Read, true).await
    }

    async fn receipt(
        &self,
        owner: &UserId,
        seq: Seq,
        kind: ReceiptKind,
        must_be_chat: bool,
    ) -> Result<(), ErrorCode> {
        let entry = self.inbox.get(owner, seq).map_err(storage_error)?;
        let Some(entry) = entry else {
            return Err(ErrorCode::InvalidSeq);
        };
        let EntryKind::Chat { id, .. } = entry.kind else {
            return if must_be_chat {
                Err(ErrorCode::InvalidSeq)
            } else {
                Ok(())
            };
        };
        let receipt = EntryKind::Receipt { kind, id, seq };
        let idem = Idempotency::Receipt(owner.clone(), kind, seq);
        self.inbox
            .append(&entry.peer, owner, receipt, &idem)
            .map_err(storage_error)?
            .durable()
            .await
            .map_err(storage_error)?;
        Ok(())
    }
}

fn storage_error(e: crate::inbox::InboxError) -> ErrorCode {
    tracing::error!(error = %e, "inbox failed");
    ErrorCode::Unavailable
}
