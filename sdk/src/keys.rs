//! Friendship keys the client did not have: with a key source
//! ([`crate::ConnectOptions::key_source`]) a message that does not open makes the client
//! fetch its friends' keys once and try again — a friendship made after the client
//! started, or a key the store never had. Failed fetches are not repeated for every
//! entry: at most one every few seconds.

use crate::client::{lock, Inner};
use crate::seal::FriendKey;
use quiver_proto::UserId;
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
}
