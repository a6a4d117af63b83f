//! The conversation history a chat screen shows: both directions of every conversation,
//! the conversation list with each one's last message and unread count, and pages of
//! messages newest first.
//!
//! Order within a conversation is the sender's clock (`sent_at_ms`), then the order this
//! store learned of them: the two directions of a 1:1 conversation live in two inboxes
//! with two `seq` orders, so no one `seq` orders both. One sender's messages keep their
//! order as long as that sender's clock does not step back.

use super::outbox::id_from;
use super::{set_meta, Conversation, Store, StoreError};
use quiver_proto::files::FileRef;
use quiver_proto::{ClientMsgId, ReceiptKind, Seq, UserId};
use rusqlite::{params, Row};

/// Where a message stands. The numbers are stored: stable, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MessageState {
    /// Yours, in the outbox: not yet durable on the node.
    Pending = 0,
    /// Yours, durable on the node (SENT).
    Sent = 1,
    /// Yours, taken by a device of the recipient.
    Delivered = 2,
    /// Yours, read by the recipient.
    Read = 3,
    /// Yours, refused by the node for good.
    Failed = 4,
    /// Theirs, not yet marked read here.
    Unread = 10,
    /// Theirs, marked read.
    Seen = 11,
}

impl MessageState {
    /// Its name in JSON and in the bindings: `pending`, `sent`, `delivered`, `read`,
    /// `failed`, `unread`, `seen`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
            Self::Unread => "unread",
            Self::Seen => "seen",
        }
    }

    fn from_i64(n: i64) -> Option<Self> {
        Some(match n {
            0 => Self::Pending,
            1 => Self::Sent,
            2 => Self::Delivered,
            3 => Self::Read,
            4 => Self::Failed,
            10 => Self::Unread,
            11 => Self::Seen,
            _ => return None,
        })
    }
}

/// One message of the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// The conversation.
    pub conversation: Conversation,
    /// Its sender (you, for yours).
    pub from: UserId,
    /// The sender's id for it.
    pub id: ClientMsgId,
    /// Whether you sent it.
    pub outgoing: bool,
    /// Its `seq`: in your inbox or the group's log for theirs; in the recipient's inbox
    /// (or the group's log) for yours, once SENT.
    pub seq: Option<Seq>,
    /// The sender's clock when written, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// The opened body (for a file message, its encoded description).
    pub body: Vec<u8>,
    /// The file it carries: [`crate::FileOffer::from_stored`] makes it downloadable.
    pub file: Option<FileRef>,
    /// For a group's file message: the group key epoch it is sealed at.
    pub epoch: Option<u32>,
    /// Where it stands.
    pub state: MessageState,
    /// Where it is in the store's order: pass [`StoredMessage::cursor`] as `before`.
    pos: i64,
}

impl StoredMessage {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Where the page after this message starts.
    pub fn cursor(&self) -> MessageCursor {
        MessageCursor {
            sent_at_ms: self.sent_at_ms,
            pos: self.pos,
        }
    }
}

/// A place in a conversation's order: pages start below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageCursor {
    sent_at_ms: u64,
    pos: i64,
}

/// A page of one conversation, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessagePage {
    /// The messages.
    pub messages: Vec<StoredMessage>,
    /// The `before` of the next page; `None` when this page reached the oldest.
    pub next: Option<MessageCursor>,
}

/// One line of the conversation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationSummary {
    /// The conversation.
    pub conversation: Conversation,
    /// Its newest message.
    pub last: StoredMessage,
    /// Their messages not yet marked read.
    pub unread: u64,
}

/// A message received, to keep.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Incoming<'a> {
    pub conversation: &'a Conversation,
    pub from: &'a UserId,
    pub id: ClientMsgId,
    pub seq: Seq,
    pub sent_at_ms: u64,
    pub body: &'a [u8],
    pub file: Option<FileRef>,
    pub epoch: Option<u32>,
}

const COLUMNS: &str =
    "conversation, sender, id, outgoing, seq, sent_at_ms, body, state, pos, file, epoch";

/// A file reference as stored.
pub(crate) fn file_column(file: Option<FileRef>) -> Option<Vec<u8>> {
    file.and_then(|f| postcard::to_stdvec(&f).ok())
}

fn message(row: &Row<'_>) -> rusqlite::Result<Result<StoredMessage, StoreError>> {
    let conversation: String = row.get(0)?;
    let sender: String = row.get(1)?;
    let id: Vec<u8> = row.get(2)?;
    let state: i64 = row.get(7)?;
    let seq: Option<i64> = row.get(4)?;
    let (outgoing, sent_at_ms, body, pos) = (
        row.get::<_, bool>(3)?,
        row.get::<_, i64>(5)?,
        row.get::<_, Vec<u8>>(6)?,
        row.get::<_, i64>(8)?,
    );
    let file: Option<Vec<u8>> = row.get(9)?;
    let epoch: Option<i64> = row.get(10)?;
    Ok((|| {
        Ok(StoredMessage {
            conversation: Conversation::from_key(&conversation)?,
            from: UserId::parse(&sender)
                .map_err(|_| StoreError::Corrupt(format!("bad sender {sender:?}")))?,
            id: id_from(&id)?,
            outgoing,
            seq: seq.map(|s| Seq(s as u64)),
            sent_at_ms: sent_at_ms as u64,
            body,
            file: match file {
                Some(bytes) => Some(
                    postcard::from_bytes(&bytes)
                        .map_err(|_| StoreError::Corrupt("a bad file reference".into()))?,
                ),
                None => None,
            },
            epoch: epoch.and_then(|e| u32::try_from(e).ok()),
            state: MessageState::from_i64(state)
                .ok_or_else(|| StoreError::Corrupt(format!("bad state {state}")))?,
            pos,
        })
    })())
}

impl Store {
    /// Keeps a message received, and (for the inbox) the cursor the app has taken up to,
    /// in one transaction. A message already kept (a redelivery, a history page) stays
    /// as it is.
    pub(crate) fn save_incoming(
        &self,
        message: Incoming<'_>,
        cursor: Option<Seq>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO messages
                 (conversation, sender, id, outgoing, seq, sent_at_ms, body, state, file, epoch)
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                message.conversation.key(),
                message.from.as_str(),
                message.id.0.to_be_bytes().as_slice(),
                message.seq.0 as i64,
                message.sent_at_ms as i64,
                message.body,
                MessageState::Unread as i64,
                file_column(message.file),
                message.epoch,
            ],
        )?;
        if let Some(cursor) = cursor {
            set_meta(&tx, "cursor", &cursor.0.to_string())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a receipt for a message you sent to `peer`.
    pub(crate) fn save_receipt(
        &self,
        peer: &UserId,
        id: ClientMsgId,
        kind: ReceiptKind,
    ) -> Result<(), StoreError> {
        let state = match kind {
            ReceiptKind::Delivered => MessageState::Delivered,
            ReceiptKind::Read => MessageState::Read,
        };
        self.lock().execute(
            "UPDATE messages SET state = MAX(state, ?1)
             WHERE conversation = ?2 AND outgoing = 1 AND id = ?3 AND state < ?4",
            params![
                state as i64,
                Conversation::Friend(peer.clone()).key(),
                id.0.to_be_bytes().as_slice(),
                MessageState::Failed as i64,
            ],
        )?;
        Ok(())
    }

    /// Marks their messages in `conversation` up to `seq` read.
    pub fn mark_read(&self, conversation: &Conversation, seq: Seq) -> Result<(), StoreError> {
        self.lock().execute(
            "UPDATE messages SET state = ?1
             WHERE conversation = ?2 AND outgoing = 0 AND state = ?3 AND seq <= ?4",
            params![
                MessageState::Seen as i64,
                conversation.key(),
                MessageState::Unread as i64,
                seq.0 as i64,
            ],
        )?;
        Ok(())
    }

    /// Which conversation of the inbox the entry at `seq` belongs to, if kept.
    pub(crate) fn inbox_conversation(&self, seq: Seq) -> Result<Option<Conversation>, StoreError> {
        let conn = self.lock();
        let mut rows = conn.prepare(
            "SELECT conversation FROM messages
             WHERE outgoing = 0 AND seq = ?1 AND conversation LIKE 'u:%' LIMIT 1",
        )?;
        let mut rows = rows.query([seq.0 as i64])?;
        match rows.next()? {
            Some(row) => Ok(Some(Conversation::from_key(&row.get::<_, String>(0)?)?)),
            None => Ok(None),
        }
    }

    /// The message of `seq` in your inbox (from a friend), if kept.
    pub fn inbox_message(&self, seq: Seq) -> Result<Option<StoredMessage>, StoreError> {
        let conn = self.lock();
        let mut rows = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM messages
             WHERE outgoing = 0 AND seq = ?1 AND conversation LIKE 'u:%' LIMIT 1"
        ))?;
        let mut rows = rows.query_map([seq.0 as i64], message)?;
        match rows.next() {
            Some(row) => Ok(Some(row??)),
            None => Ok(None),
        }
    }

    /// The message at `seq` of `conversation` (a group's log, or your inbox for a
    /// friend's), yours or theirs, if kept.
    pub fn message_at(
        &self,
        conversation: &Conversation,
        seq: Seq,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let conn = self.lock();
        let mut rows = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation = ?1 AND seq = ?2 LIMIT 1"
        ))?;
        let mut rows = rows.query_map(params![conversation.key(), seq.0 as i64], message)?;
        match rows.next() {
            Some(row) => Ok(Some(row??)),
            None => Ok(None),
        }
    }

    /// Every conversation with a message, newest first, with its last message and how
    /// many of theirs are unread. Two indexed lookups per conversation, whatever the
    /// number of messages.
    pub fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        let conn = self.lock();
        let keys: Vec<String> = conn
            .prepare("SELECT DISTINCT conversation FROM messages")?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut last = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM messages WHERE conversation = ?1
             ORDER BY sent_at_ms DESC, pos DESC LIMIT 1"
        ))?;
        let mut unread = conn.prepare(
            "SELECT COUNT(*) FROM messages
             WHERE conversation = ?1 AND outgoing = 0 AND state = ?2",
        )?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(message) = last.query_map([&key], message)?.next() else {
                continue;
            };
            let last = message??;
            let count: i64 =
                unread.query_row(params![key, MessageState::Unread as i64], |row| row.get(0))?;
            out.push(ConversationSummary {
                conversation: last.conversation.clone(),
                last,
                unread: count as u64,
            });
        }
        out.sort_by_key(|c| std::cmp::Reverse((c.last.sent_at_ms, c.last.pos)));
        Ok(out)
    }

    /// A page of `conversation`, newest first: messages below `before` (from the newest
    /// when `None`), at most `limit`.
    pub fn messages(
        &self,
        conversation: &Conversation,
        before: Option<MessageCursor>,
        limit: u32,
    ) -> Result<MessagePage, StoreError> {
        let (at, pos) = before.map_or((i64::MAX, i64::MAX), |c| (c.sent_at_ms as i64, c.pos));
        let conn = self.lock();
        let mut rows = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM messages
             WHERE conversation = ?1 AND (sent_at_ms < ?2 OR (sent_at_ms = ?2 AND pos < ?3))
             ORDER BY sent_at_ms DESC, pos DESC LIMIT ?4"
        ))?;
        let limit = limit.max(1);
        let rows = rows.query_map(
            params![conversation.key(), at, pos, i64::from(limit) + 1],
            message,
        )?;
        let mut messages = Vec::new();
        for row in rows {
            messages.push(row??);
        }
        let more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        let next = more
            .then(|| messages.last().map(StoredMessage::cursor))
            .flatten();
        Ok(MessagePage { messages, next })
    }
}
