//! The client store: what a device keeps across app restarts, in one SQLite file (WAL
//! mode) or in memory for tests.
//!
//! - [`schema`]: the tables and their migrations, by schema version;
//! - [`outbox`]: messages written before `send` returns, until the node answers `Sent`
//!   — so an app killed with messages in flight sends them again, same ids, in order;
//! - [`messages`]: the conversation history (both directions), the conversation list
//!   with unread counts, pages newest first;
//! - here: the session (user, device, token), friendship keys and the inbox cursor.
//!
//! SQLite is what mobile platforms ship and what matrix-rust-sdk moved to from sled; the
//! rusqlite major is the one the planned MLS store (openmls_sqlite_storage) pins, so both
//! can share one SQLite. Writes are small and run on the caller's thread under one lock:
//! a chat is one short transaction. `synchronous = NORMAL` in WAL mode survives the app
//! being killed (the OS has the write); a power cut may lose the last transactions.

pub mod messages;
pub mod outbox;
pub mod schema;

use crate::seal::FriendKey;
use quiver_proto::{DeviceId, GroupId, Seq, UserId};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

pub use messages::{ConversationSummary, MessageCursor, MessagePage, MessageState, StoredMessage};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (disk full, a locked or unreadable file).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file holds something this SDK cannot read: a newer schema, or a bad value.
    #[error("store: {0}")]
    Corrupt(String),
}

/// Whom a conversation is with: a friend, or a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Conversation {
    /// A 1:1 conversation.
    Friend(UserId),
    /// A group.
    Group(GroupId),
}

impl Conversation {
    /// How the store names it: `u:<user>` or `g:<group>`.
    pub(crate) fn key(&self) -> String {
        match self {
            Conversation::Friend(user) => format!("u:{user}"),
            Conversation::Group(group) => format!("g:{group}"),
        }
    }

    /// The conversation a stored key names.
    pub(crate) fn from_key(key: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::Corrupt(format!("bad conversation {key:?}"));
        match key.split_once(':') {
            Some(("u", user)) => Ok(Conversation::Friend(
                UserId::parse(user).map_err(|_| bad())?,
            )),
            Some(("g", group)) => Ok(Conversation::Group(
                GroupId::parse(group).map_err(|_| bad())?,
            )),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conversation::Friend(peer) => peer.fmt(f),
            Conversation::Group(group) => group.fmt(f),
        }
    }
}

/// Who this device is, once logged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The user.
    pub user: UserId,
    /// This device.
    pub device: DeviceId,
    /// The token from login.
    pub token: String,
}

/// A client store. Clone it freely: clones share one connection.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (or makes) the store at `path`, migrating it to this SDK's schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Self::ready(conn)
    }

    /// A store that lives as long as the process: for tests and throwaway clients.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::ready(Connection::open_in_memory()?)
    }

    fn ready(mut conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema version of the file.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        schema::version(&self.lock())
    }

    /// The saved session, if this device logged in before.
    pub fn session(&self) -> Result<Option<Session>, StoreError> {
        let conn = self.lock();
        let (Some(user), Some(device), Some(token)) = (
            meta(&conn, "user")?,
            meta(&conn, "device")?,
            meta(&conn, "token")?,
        ) else {
            return Ok(None);
        };
        let bad = |what: &str| StoreError::Corrupt(format!("bad {what} in the session"));
        Ok(Some(Session {
            user: UserId::parse(&user).map_err(|_| bad("user"))?,
            device: DeviceId(device.parse().map_err(|_| bad("device"))?),
            token,
        }))
    }

    /// Saves the session (after a login).
    pub fn save_session(&self, session: &Session) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        set_meta(&tx, "user", session.user.as_str())?;
        set_meta(&tx, "device", &session.device.0.to_string())?;
        set_meta(&tx, "token", &session.token)?;
        tx.commit()?;
        Ok(())
    }

    /// The QUIC address of the node the last login named.
    pub fn node(&self) -> Result<Option<String>, StoreError> {
        meta(&self.lock(), "node")
    }

    /// Saves the QUIC address of the user's node.
    pub fn save_node(&self, quic_addr: &str) -> Result<(), StoreError> {
        set_meta(&self.lock(), "node", quic_addr)
    }

    /// The friendship keys saved.
    pub fn friend_keys(&self) -> Result<HashMap<UserId, FriendKey>, StoreError> {
        let conn = self.lock();
        let mut rows = conn.prepare("SELECT user, key FROM friend_keys")?;
        let rows = rows.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?;
        let mut keys = HashMap::new();
        for row in rows {
            let (user, key) = row?;
            let user = UserId::parse(&user)
                .map_err(|_| StoreError::Corrupt(format!("bad friend {user:?}")))?;
            let key: [u8; 32] = key
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("bad key for {user}")))?;
            keys.insert(user, FriendKey(key));
        }
        Ok(keys)
    }

    /// Saves (or replaces) the friendship key with `friend`.
    pub fn save_friend_key(&self, friend: &UserId, key: &FriendKey) -> Result<(), StoreError> {
        self.lock().execute(
            "INSERT INTO friend_keys (user, key) VALUES (?1, ?2)
             ON CONFLICT (user) DO UPDATE SET key = excluded.key",
            params![friend.as_str(), key.0.as_slice()],
        )?;
        Ok(())
    }

    /// Saves the inbox cursor: every entry up to it was taken by the app.
    pub(crate) fn save_cursor(&self, cursor: Seq) -> Result<(), StoreError> {
        set_meta(&self.lock(), "cursor", &cursor.0.to_string())
    }

    /// The highest inbox `seq` up to which every entry is in the store.
    pub fn cursor(&self) -> Result<Seq, StoreError> {
        let value = meta(&self.lock(), "cursor")?;
        value
            .map_or(Ok(0), |v| v.parse())
            .map(Seq)
            .map_err(|_| StoreError::Corrupt("bad cursor".into()))
    }
}

/// One value of the `meta` table.
fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()?)
}

/// Sets one value of the `meta` table.
fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
