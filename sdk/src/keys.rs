//! Friendship keys, and opening what they seal: an inbox entry becomes an [`Event`].
//!
//! Keys the client did not have: with a key source
//! ([`crate::ConnectOptions::key_source`]) a message that does not open makes the client
//! fetch its friends' keys once and try again — a friendship made after the client
//! started, or a key the store never had. Failed fetches are not repeated for every
//! entry: at most one every few seconds.

use crate::event::{Event, Message, Receipt};
use crate::files::FileOffer;
use crate::seal;
use crate::seal::FriendKey;
use crate::state::{lock, Inner};
use crate::unbatch::{receipt_events, Opened};
use quiver_proto::UserId;
use quiver_proto::{ClientMsgId, Entry, EntryKind};
use std::time::{Duration, Instant};

/// The least time between two fetches that did not give the key wanted.
const REFETCH_AFTER: Duration = Duration::from_secs(5);

impl Inner {
    /// Fetches the friendship keys from the key source; returns whether `friend`'s key
    /// is now a different one than before.
    pub(crate) async fn refresh_friend_key(&self, friend: &UserId) -> bool {
        let Some(source) = &self.options.key_source else {
            return false;
        };
        if lock(&self.friend_key_failed).is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return false;
        }
        let before = self.key(friend).map(|k| k.0);
        match source.friends(&self.options.token).await {
            Ok(friends) => {
                for f in friends.friends {
                    if let Some(key) = crate::key_from_hex(&f.key) {
                        self.remember_key(f.user, FriendKey(key));
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not fetch friendship keys"),
        }
        let changed = self.key(friend).map(|k| k.0) != before;
        *lock(&self.friend_key_failed) = (!changed).then(Instant::now);
        changed
    }

    /// Uses `key` for `friend` from now on, and keeps it in the store.
    pub(crate) fn remember_key(&self, friend: UserId, key: FriendKey) {
        if let Some(store) = &self.options.store {
            if let Err(e) = store.save_friend_key(&friend, &key) {
                tracing::error!(error = %e, "store: could not keep a friendship key");
            }
        }
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(friend, key);
    }

    /// Opens `body`, a chat from `from` with `id`, with the friendship key.
    fn open_chat(&self, from: &UserId, id: ClientMsgId, body: &[u8]) -> Result<Vec<u8>, String> {
        match self.key(from) {
            Some(key) => seal::open(&key, from, &self.user, id, body).map_err(|e| e.to_string()),
            None => Err(format!("no friendship key for {from}")),
        }
    }

    /// The events of an inbox entry: a chat opened (fetching the friendship keys once if
    /// it does not open and there is a key source), a receipt, or a batch of receipts.
    pub(crate) async fn open_entry(&self, entry: Entry) -> Opened {
        Opened::one(match entry.kind {
            EntryKind::Chat {
                id,
                sent_at_ms,
                body,
                file,
            } => {
                let mut opened = self.open_chat(&entry.peer, id, &body);
                if opened.is_err() && self.refresh_friend_key(&entry.peer).await {
                    opened = self.open_chat(&entry.peer, id, &body);
                }
                let opened = opened.and_then(|body| {
                    let Some(file) = file else {
                        return Ok((body, None));
                    };
                    let offer = FileOffer::read(entry.peer.clone(), file, &body, None)?;
                    Ok((body, Some(offer)))
                });
                match opened {
                    Ok((body, file)) => Event::Message(Message {
                        from: entry.peer,
                        seq: entry.seq,
                        id,
                        sent_at_ms,
                        body,
                        file,
                    }),
                    Err(reason) => Event::Undecryptable {
                        from: entry.peer,
                        seq: entry.seq,
                        reason,
                    },
                }
            }
            EntryKind::Receipt { kind, id, seq } => Event::Receipt(Receipt {
                peer: entry.peer,
                kind,
                id,
                seq,
            }),
            EntryKind::Receipts { kind, messages } => {
                return receipt_events(entry.peer, entry.seq, kind, messages);
            }
            // A user's inbox holds no group entries; a node that sent one is wrong.
            EntryKind::GroupChat { .. } | EntryKind::GroupFile { .. } | EntryKind::Member(_) => {
                Event::Undecryptable {
                    from: entry.peer,
                    seq: entry.seq,
                    reason: "a group entry in a user's inbox".into(),
                }
            }
        })
    }
}
