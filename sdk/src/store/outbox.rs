//! The durable outbox: a message is written here, with its sealed frame, before `send`
//! returns, and leaves when the node answers `Sent` or refuses it for good. On the next
//! start the client writes what is left again, in the order it was sent, with the
//! original ids — so the node stores each message once, whatever happened in between.

use super::messages::MessageState;
use super::{Conversation, Store, StoreError};
use quiver_proto::files::FileRef;
use quiver_proto::{ClientMsgId, Seq, UserId};
use rusqlite::params;

/// A message waiting for `Sent`, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Whom it goes to.
    pub conversation: Conversation,
    /// Its id.
    pub id: ClientMsgId,
    /// The encoded chat frame, sealed body included.
    pub frame: Vec<u8>,
}

/// An outgoing message as the app wrote it.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing<'a> {
    /// Whom it goes to.
    pub conversation: &'a Conversation,
    /// The sender: this user.
    pub from: &'a UserId,
    /// Its id.
    pub id: ClientMsgId,
    /// When it was written.
    pub sent_at_ms: u64,
    /// The plain body, for the history.
    pub body: &'a [u8],
    /// The encoded chat frame, for the node.
    pub frame: &'a [u8],
    /// The file it carries.
    pub file: Option<FileRef>,
    /// For a group's file message: the key epoch it is sealed at.
    pub epoch: Option<u32>,
}

impl Store {
    /// Keeps `message` in the outbox and in the history (as pending), at once. A second
    /// write with the same id changes nothing.
    pub(crate) fn outbox_add(&self, message: Outgoing<'_>) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let id = message.id.0.to_be_bytes();
        tx.execute(
            "INSERT OR IGNORE INTO outbox (conversation, id, frame) VALUES (?1, ?2, ?3)",
            params![message.conversation.key(), id.as_slice(), message.frame],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO messages
                 (conversation, sender, id, outgoing, seq, sent_at_ms, body, state, file, epoch)
             VALUES (?1, ?2, ?3, 1, NULL, ?4, ?5, ?6, ?7, ?8)",
            params![
                message.conversation.key(),
                message.from.as_str(),
                id.as_slice(),
                message.sent_at_ms as i64,
                message.body,
                MessageState::Pending as i64,
                super::messages::file_column(message.file),
                message.epoch,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Takes message `id` out of the outbox: stored at `seq`, or refused for good.
    pub(crate) fn outbox_settled(
        &self,
        conversation: &Conversation,
        id: ClientMsgId,
        outcome: Option<Seq>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let id = id.0.to_be_bytes();
        tx.execute("DELETE FROM outbox WHERE id = ?1", params![id.as_slice()])?;
        let (seq, state) = match outcome {
            Some(seq) => (Some(seq.0 as i64), MessageState::Sent),
            None => (None, MessageState::Failed),
        };
        // A receipt may have come first (another device's answer): never move back.
        tx.execute(
            "UPDATE messages SET seq = COALESCE(?1, seq), state = MAX(state, ?2)
             WHERE conversation = ?3 AND outgoing = 1 AND id = ?4",
            params![seq, state as i64, conversation.key(), id.as_slice()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every message waiting for `Sent`, in the order they were sent.
    pub fn outbox(&self) -> Result<Vec<Waiting>, StoreError> {
        let conn = self.lock();
        let mut rows = conn.prepare("SELECT conversation, id, frame FROM outbox ORDER BY pos")?;
        let rows = rows.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (conversation, id, frame) = row?;
            out.push(Waiting {
                conversation: Conversation::from_key(&conversation)?,
                id: id_from(&id)?,
                frame,
            });
        }
        Ok(out)
    }
}

/// A message id from its 16 stored bytes.
pub(crate) fn id_from(bytes: &[u8]) -> Result<ClientMsgId, StoreError> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a message id is not 16 bytes".into()))?;
    Ok(ClientMsgId(u128::from_be_bytes(bytes)))
}
