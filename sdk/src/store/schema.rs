//! The store's tables, and the migrations that bring any older file to the current
//! version. Each migration runs once, in a transaction, and records its version in
//! SQLite's `user_version`; a file from a newer SDK is refused rather than misread.
//!
//! Numbers stored in columns are stable (see [`super::MessageState`]); a new meaning gets a
//! new number, never a reused one.

use super::StoreError;
use rusqlite::Connection;

/// The migrations, in order: `MIGRATIONS[n]` takes a file from version `n` to `n + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: session, keys, outbox and history.
    "CREATE TABLE meta (
         key TEXT PRIMARY KEY,
         value TEXT NOT NULL
     );
     CREATE TABLE friend_keys (
         user TEXT PRIMARY KEY,
         key BLOB NOT NULL
     );
     CREATE TABLE outbox (
         pos INTEGER PRIMARY KEY AUTOINCREMENT,
         conversation TEXT NOT NULL,
         id BLOB NOT NULL UNIQUE,
         frame BLOB NOT NULL
     );
     CREATE TABLE messages (
         pos INTEGER PRIMARY KEY AUTOINCREMENT,
         conversation TEXT NOT NULL,
         sender TEXT NOT NULL,
         id BLOB NOT NULL,
         outgoing INTEGER NOT NULL,
         seq INTEGER,
         sent_at_ms INTEGER NOT NULL,
         body BLOB NOT NULL,
         state INTEGER NOT NULL,
         UNIQUE (conversation, sender, id)
     );
     CREATE INDEX messages_in_order ON messages (conversation, sent_at_ms, pos);
     CREATE INDEX messages_unread ON messages (conversation, outgoing, state);",
    // 2: the file a message carries (its FileRef, postcard): its description is the body.
    "ALTER TABLE messages ADD COLUMN file BLOB;",
    // 3: the group key epoch a group message is sealed at (its file is opened with it).
    "ALTER TABLE messages ADD COLUMN epoch INTEGER;",
];

/// The schema version this SDK writes.
pub const CURRENT: u32 = MIGRATIONS.len() as u32;

/// The file's version.
pub fn version(conn: &Connection) -> Result<u32, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Brings the file to [`CURRENT`].
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let from = version(conn)?;
    if from > CURRENT {
        return Err(StoreError::Corrupt(format!(
            "the store is at schema {from}, newer than this SDK's {CURRENT}"
        )));
    }
    for (at, migration) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", at as u32 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
