//! The router decides where a message goes and appends it there: the recipient's inbox for
//! chats, the original sender's inbox for receipts. It is the only writer of inboxes, so
//! the rules "only friends", "sender from the session" and "receipts once" live here.
//!
//! Every user has a home node, which keeps their inbox. In single-node mode that is always
//! this node; in mesh mode a receipt for a user homed elsewhere goes over the mesh (chats
//! for such users are relayed by the session, stream to stream).

use crate::blobs::Blobs;
use crate::directory::Directory;
use crate::disk::DiskBudget;
use crate::inbox::{Appended, Inbox};
use crate::mesh::Mesh;
use crate::metrics::{MeshKind, Metrics};
use crate::receipt_batch::ReceiptBatches;
use quiver_proto::files::FileRef;
use quiver_proto::mesh::MeshOpen;
use quiver_proto::{
    ClientMsgId, DeviceId, EntryKind, ErrorCode, ReceiptKind, ReceiptOf, Seq, UserId,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Where a user's inbox is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Home {
    /// On this node.
    Here,
    /// On the mesh peer with this id.
    Peer(String),
}

/// Routes chats and receipts into inboxes.
pub struct Router {
    inbox: Arc<Inbox>,
    blobs: Arc<Blobs>,
    directory: Arc<dyn Directory>,
    max_body_bytes: usize,
    mesh: Option<Arc<Mesh>>,
    metrics: Arc<Metrics>,
    disk: Arc<DiskBudget>,
    /// Homes looked up so far: a home never changes, so this is never stale.
    homes: Mutex<HashMap<UserId, String>>,
    /// DELIVERED receipts gathering for this node's inboxes; `None`: one entry each.
    receipts: Option<ReceiptBatches>,
}

impl Router {
    /// A router over this node's inbox, blobs and directory, and the mesh in mesh mode.
    pub fn new(
        inbox: Arc<Inbox>,
        blobs: Arc<Blobs>,
        directory: Arc<dyn Directory>,
        max_body_bytes: usize,
        mesh: Option<Arc<Mesh>>,
        metrics: Arc<Metrics>,
        disk: Arc<DiskBudget>,
    ) -> Self {
        Self {
            receipts: Some(ReceiptBatches::new(inbox.clone(), metrics.clone())),
            inbox,
            blobs,
            directory,
            max_body_bytes,
            mesh,
            metrics,
            disk,
            homes: Mutex::new(HashMap::new()),
        }
    }

    /// Whether DELIVERED receipts go in batches (the default), or one entry each, which
    /// protocol version 1 clients can read.
    pub fn batch_receipts(mut self, batch: bool) -> Self {
        if !batch {
            self.receipts = None;
        }
        self
    }

    /// The free space this node keeps: uploads ask it too.
    pub fn disk(&self) -> &DiskBudget {
        &self.disk
    }

    /// The inbox the router writes to.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The mesh, in mesh mode.
    pub fn mesh(&self) -> Option<&Arc<Mesh>> {
        self.mesh.as_ref()
    }

    /// Where `user`'s inbox is.
    pub async fn home(&self, user: &UserId) -> Result<Home, ErrorCode> {
        let Some(mesh) = &self.mesh else {
            return Ok(Home::Here);
        };
        let known = self
            .homes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned();
        let node = match known {
            Some(node) => node,
            None => {
                let node = match self.directory.home(user).await {
                    Ok(Some(node)) => node,
                    Ok(None) => return Err(ErrorCode::NotFriends),
                    Err(e) => {
                        tracing::warn!(error = %e, "directory lookup failed");
                        return Err(ErrorCode::Unavailable);
                    }
                };
                self.homes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(user.clone(), node.clone());
                node
            }
        };
        Ok(if node == mesh.node_id() {
            Home::Here
        } else {
            Home::Peer(node)
        })
    }

    /// Whether `from` may message `to`.
    pub async fn check_friends(&self, from: &UserId, to: &UserId) -> Result<(), ErrorCode> {
        if self.directory.known_friendship(from, to).is_some() {
            return Ok(());
        }
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
    /// inbox. The caller answers `Sent` only after [`Appended::durable`]. A file the chat
    /// carries must be a complete blob `from` uploaded; it is kept for the retention period.
    pub async fn chat(
        &self,
        from: &UserId,
        to: &UserId,
        id: ClientMsgId,
        sent_at_ms: u64,
        body: Vec<u8>,
        file: Option<FileRef>,
    ) -> Result<Appended, ErrorCode> {
        if body.len() > self.max_body_bytes {
            return Err(ErrorCode::BodyTooLarge);
        }
        if !self.disk.has_room() {
            return Err(ErrorCode::StorageFull);
        }
        self.check_friends(from, to).await?;
        if let Some(file) = &file {
            self.retain(from, file).await?;
        }
        let kind = EntryKind::Chat {
            id,
            sent_at_ms,
            body,
            file,
        };
        let appended = self.inbox.append(to, from, kind).map_err(storage_error)?;
        if appended.fresh {
            self.metrics.chats_stored.fetch_add(1, Ordering::Relaxed);
        }
        Ok(appended)
    }

    /// Keeps `owner`'s blob for a file message, on `owner`'s home node (where they
    /// uploaded it).
    pub async fn retain(&self, owner: &UserId, file: &FileRef) -> Result<(), ErrorCode> {
        match (self.home(owner).await?, &self.mesh) {
            (Home::Peer(node), Some(mesh)) => {
                let owner = owner.clone();
                self.metrics.mesh_request(MeshKind::File);
                mesh.ask(&node, MeshOpen::Retain { owner, file: *file })
                    .await
            }
            _ => self.blobs.retain(owner, file),
        }
    }

    /// `owner`'s device has entry `seq`: if it is a chat, its sender gets DELIVERED
    /// (once, however many devices acknowledge). Returns when the receipt is durable.
    /// `pushed` is what the feed remembers of the entry, to spare reading it back.
    pub async fn delivered(
        &self,
        owner: &UserId,
        seq: Seq,
        pushed: Option<Pushed>,
    ) -> Result<(), ErrorCode> {
        match pushed {
            Some(Pushed::Chat { from, id }) => {
                self.send_receipt(owner, seq, ReceiptKind::Delivered, from, id)
                    .await
            }
            Some(Pushed::Receipt) => Ok(()),
            None => {
                self.receipt(owner, seq, ReceiptKind::Delivered, false)
                    .await
            }
        }
    }

    /// A new device of `user`: its cursor starts at the inbox's durable head, on the
    /// user's home node (asked over the mesh from another). The device pages what came
    /// before instead of being pushed it.
    pub async fn start_device(&self, user: &UserId, device: DeviceId) -> Result<(), ErrorCode> {
        match (self.home(user).await?, &self.mesh) {
            (Home::Here, _) => {
                let head = self.inbox.head(user);
                self.inbox
                    .set_cursor(user, device, head)
                    .map_err(storage_error)
            }
            (Home::Peer(node), Some(mesh)) => {
                let ask = MeshOpen::StartDevice {
                    user: user.clone(),
                    device,
                };
                mesh.ask(&node, ask).await
            }
            (Home::Peer(_), None) => Err(ErrorCode::Unavailable),
        }
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
            // An ack of an entry retention removed since it was pushed owes nothing: its
            // sender's record of it is gone too, or about to be.
            let expired = !must_be_chat && seq <= self.inbox.floor(owner);
            return if expired {
                Ok(())
            } else {
                Err(ErrorCode::InvalidSeq)
            };
        };
        let EntryKind::Chat { id, .. } = entry.kind else {
            return if must_be_chat {
                Err(ErrorCode::InvalidSeq)
            } else {
                Ok(())
            };
        };
        self.send_receipt(owner, seq, kind, entry.peer, id).await
    }

    /// Gets receipt `kind` for the chat `seq` of `owner`'s inbox, `id` from `from`, to
    /// `from`'s home node and waits until it is durable there.
    async fn send_receipt(
        &self,
        owner: &UserId,
        seq: Seq,
        kind: ReceiptKind,
        from: UserId,
        id: ClientMsgId,
    ) -> Result<(), ErrorCode> {
        match (self.home(&from).await?, &self.mesh) {
            (Home::Peer(node), Some(mesh)) => {
                let receipt = MeshOpen::Receipt {
                    owner: from,
                    reader: owner.clone(),
                    kind,
                    id,
                    seq,
                };
                self.metrics.mesh_request(MeshKind::Receipt);
                // Boxed: every ack's task carries this future, and the mesh branch is the
                // large and rare one.
                Box::pin(mesh.ask(&node, receipt)).await
            }
            _ => self.store_receipt(&from, owner, kind, id, seq).await,
        }
    }

    /// Appends a receipt to `owner`'s inbox, homed here: `reader` received or read the
    /// message `id`, which is `seq` in the reader's inbox. Returns once it is durable.
    pub async fn store_receipt(
        &self,
        owner: &UserId,
        reader: &UserId,
        kind: ReceiptKind,
        id: ClientMsgId,
        seq: Seq,
    ) -> Result<(), ErrorCode> {
        if let (ReceiptKind::Delivered, Some(batches)) = (kind, &self.receipts) {
            // One per message acknowledged: these come in numbers, and go in batches.
            let message = ReceiptOf { id, seq };
            return batches
                .delivered(owner, reader, message)
                .await
                .map_err(storage_error);
        }
        let receipt = EntryKind::Receipt { kind, id, seq };
        let appended = self
            .inbox
            .append(owner, reader, receipt)
            .map_err(storage_error)?;
        if appended.fresh {
            self.metrics.receipts_stored.fetch_add(1, Ordering::Relaxed);
        }
        appended.durable().await.map_err(storage_error)?;
        Ok(())
    }
}

/// What a feed remembers of an entry it pushed, until the device acknowledges it.
#[derive(Debug, Clone)]
pub enum Pushed {
    /// A chat `id` from `from`: its ack earns `from` a DELIVERED.
    Chat {
        /// The sender.
        from: UserId,
        /// The sender's id for it.
        id: ClientMsgId,
    },
    /// A receipt: its ack moves the cursor, nothing more.
    Receipt,
}

impl Pushed {
    /// What to remember of `entry`.
    pub fn of(entry: &quiver_proto::Entry) -> Self {
        match &entry.kind {
            EntryKind::Chat { id, .. } => Pushed::Chat {
                from: entry.peer.clone(),
                id: *id,
            },
            // Group entries live in group logs, never in a user's inbox.
            EntryKind::Receipt { .. }
            | EntryKind::Receipts { .. }
            | EntryKind::GroupChat { .. }
            | EntryKind::GroupFile { .. }
            | EntryKind::Member(_) => Pushed::Receipt,
        }
    }
}

fn storage_error(e: crate::inbox::InboxError) -> ErrorCode {
    if let crate::inbox::InboxError::Full = e {
        return ErrorCode::QuotaExceeded;
    }
    tracing::error!(error = %e, "inbox failed");
    ErrorCode::Unavailable
}
