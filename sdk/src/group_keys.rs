//! [`GroupKeys`]: one group's keys by epoch, and the epoch new messages are sealed at.

use crate::seal::FriendKey;
use quiver_proto::rest::{key_from_hex, GroupInfo};
use std::collections::HashMap;

/// One group's keys.
#[derive(Clone, Debug, Default)]
pub struct GroupKeys {
    /// The epoch new messages are sealed at.
    pub epoch: u32,
    keys: HashMap<u32, FriendKey>,
}

impl GroupKeys {
    /// The keys a group's description holds.
    pub fn from_info(info: &GroupInfo) -> Self {
        let keys = info
            .keys
            .iter()
            .filter_map(|k| Some((k.epoch, FriendKey(key_from_hex(&k.key)?))))
            .collect();
        Self {
            epoch: info.epoch,
            keys,
        }
    }

    /// The key of `epoch`, if known.
    pub(crate) fn get(&self, epoch: u32) -> Option<&FriendKey> {
        self.keys.get(&epoch)
    }
}
