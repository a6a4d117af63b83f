//! What is connected to this node right now, for the limits and actions that depend on it:
//! connections per client address, conversation and transfer streams per user (all
//! capped), sessions by user and device (closed when the device logs out), and the devices
//! whose feed is open here (not notified by push).
//!
//! Each holder gets a [`Slot`] that gives its place back when dropped, so counts cannot
//! leak on any exit path.

use quiver_proto::{DeviceId, UserId};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many holders each key has now, each key capped.
pub struct Counts<K: Hash + Eq + Clone> {
    held: Arc<Mutex<HashMap<K, u32>>>,
}

/// One place taken in [`Counts`]; given back on drop.
pub struct Slot<K: Hash + Eq + Clone> {
    held: Arc<Mutex<HashMap<K, u32>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Clone for Counts<K> {
    /// Another handle on the same counts.
    fn clone(&self) -> Self {
        Self {
            held: self.held.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone> Default for Counts<K> {
    fn default() -> Self {
        Self {
            held: Arc::default(),
        }
    }
}

impl<K: Hash + Eq + Clone> Counts<K> {
    /// Takes a place for `key` if it holds fewer than `limit`.
    pub fn take(&self, key: &K, limit: u32) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                held.remove(key);
            }
            return None;
        }
        *count += 1;
        Some(Slot {
            held: self.held.clone(),
            key: key.clone(),
        })
    }

    /// How many places `key` holds now.
    pub fn count(&self, key: &K) -> u32 {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

type SessionMap = HashMap<UserId, Vec<(u64, DeviceId, quinn::Connection)>>;

/// Live sessions by user, so logging out can close them.
#[derive(Default)]
pub struct Sessions {
    by_user: Arc<Mutex<SessionMap>>,
    next_id: AtomicU64,
}

/// A registered session; unregisters on drop.
pub struct SessionEntry {
    by_user: Arc<Mutex<SessionMap>>,
    user: UserId,
    id: u64,
}

impl Sessions {
    /// Records that `device` of `user` is connected on `conn`.
    pub fn register(
        &self,
        user: &UserId,
        device: DeviceId,
        conn: &quinn::Connection,
    ) -> SessionEntry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut by_user = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        by_user
            .entry(user.clone())
            .or_default()
            .push((id, device, conn.clone()));
        SessionEntry {
            by_user: self.by_user.clone(),
            user: user.clone(),
            id,
        }
    }

    /// The connections of `user`'s sessions among `ids`.
    pub fn connections_of(&self, user: &UserId, ids: &[u64]) -> Vec<quinn::Connection> {
        let by_user = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter(|(id, _, _)| ids.contains(id))
            .map(|(_, _, conn)| conn.clone())
            .collect()
    }

    /// The connections of every live session.
    pub fn connections(&self) -> Vec<quinn::Connection> {
        let by_user = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        by_user
            .values()
            .flatten()
            .map(|(_, _, conn)| conn.clone())
            .collect()
    }

    /// Closes the sessions of one device of `user`, or of all its devices, with `code`.
    /// Returns how many were closed.
    pub fn close(
        &self,
        user: &UserId,
        device: Option<DeviceId>,
        code: quinn::VarInt,
        reason: &[u8],
    ) -> usize {
        let by_user = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        let mut closed = 0;
        for (_, d, conn) in by_user.get(user).into_iter().flatten() {
            if device.is_none_or(|device| device == *d) {
                conn.close(code, reason);
                closed += 1;
            }
        }
        closed
    }
}

impl SessionEntry {
    /// The session's id on this node.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for SessionEntry {
    fn drop(&mut self) {
        let mut by_user = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = by_user.get_mut(&self.user) {
            list.retain(|(id, _, _)| *id != self.id);
            if list.is_empty() {
                by_user.remove(&self.user);
            }
        }
    }
}

/// Everything this module tracks, for one node.
#[derive(Default)]
pub struct Live {
    /// Connections per client address.
    pub connections: Counts<IpAddr>,
    /// Conversation streams per user, over all of the user's connections.
    pub conversations: Counts<UserId>,
    /// File transfer streams (uploads, downloads) per user.
    pub transfers: Counts<UserId>,
    /// Sessions by user and device.
    pub sessions: Sessions,
    /// Devices with a feed open on this node, their user's home (wherever the device is
    /// connected): the ones push notifications skip.
    pub feeds: Counts<(UserId, DeviceId)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_key_and_given_back_on_drop() {
        let counts = Counts::default();
        let a = counts.take(&"a", 2).expect("first");
        let b = counts.take(&"a", 2).expect("second");
        assert!(counts.take(&"a", 2).is_none(), "third is over the cap");
        let other = counts.take(&"b", 2).expect("another key is not affected");
        drop(a);
        assert_eq!(counts.count(&"a"), 1);
        let c = counts.take(&"a", 2).expect("a place was given back");
        drop((b, c, other));
        assert_eq!(counts.count(&"a"), 0);
        assert!(
            counts.held.lock().unwrap().is_empty(),
            "no empty entries left"
        );
        assert!(counts.take(&"z", 0).is_none());
        assert!(counts.held.lock().unwrap().is_empty());
    }
}
