//! Groups on the wire: the group's id, members' roles and the membership changes that are
//! entries of the group's log (so every member sees them at the same place in the order).
//!
//! A group's log lives on its home node and has its own `seq`. Its entries are chats
//! sealed with the group key of an *epoch* ([`crate::EntryKind::GroupChat`]) and changes
//! ([`crate::EntryKind::Member`]); the key changes (a new epoch) at every removal or
//! leave, so a member who is gone cannot open what is sent after.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A group, named by its home node at creation: `g` and 16 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct GroupId(String);

/// Not a group id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a group id is 'g' and 16 lowercase hex digits")]
pub struct BadGroupId;

impl GroupId {
    /// The group id of 64 random bits.
    pub fn from_bits(bits: u64) -> Self {
        Self(format!("g{bits:016x}"))
    }

    /// Validates a group id.
    pub fn parse(id: &str) -> Result<Self, BadGroupId> {
        let hex = id.strip_prefix('g').ok_or(BadGroupId)?;
        let ok = hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(BadGroupId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for GroupId {
    type Error = BadGroupId;

    fn try_from(id: String) -> Result<Self, BadGroupId> {
        Self::parse(&id)?;
        Ok(Self(id))
    }
}

impl From<GroupId> for String {
    fn from(id: GroupId) -> String {
        id.0
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a member may do. Tags on the wire: owner 0, admin 1, member 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Made the group or was handed it; one per group. Adds, removes, names admins.
    Owner,
    /// Adds and removes members.
    Admin,
    /// Sends and reads.
    Member,
}

impl Role {
    /// Whether this role may add and remove members.
    pub fn manages(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// A membership change, as an entry of the group's log; the entry's `peer` is who made
/// it. Tags: Created 0, Added 1, Removed 2, Left 3, Renamed 4, RoleChanged 5.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupChange {
    /// The group was made, named `name`; its maker is the owner, at epoch 1.
    Created {
        /// The group's name.
        name: String,
    },
    /// `user` joined with `role`.
    Added {
        /// Who joined.
        user: crate::UserId,
        /// Their role.
        role: Role,
    },
    /// `user` was removed; chats from here on are sealed at `epoch`, a key they never get.
    Removed {
        /// Who was removed.
        user: crate::UserId,
        /// The epoch that starts here.
        epoch: u32,
    },
    /// The entry's `peer` left; chats from here on are sealed at `epoch`.
    Left {
        /// The epoch that starts here.
        epoch: u32,
    },
    /// The group was renamed.
    Renamed {
        /// The new name.
        name: String,
    },
    /// `user` has `role` now (ownership handed over: the old owner becomes an admin).
    RoleChanged {
        /// Whose role changed.
        user: crate::UserId,
        /// The new role.
        role: Role,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_validated_on_the_wire_too() {
        let id = GroupId::from_bits(0xabc);
        assert_eq!(id.as_str(), "g0000000000000abc");
        assert_eq!(GroupId::parse(id.as_str()), Ok(id.clone()));
        for bad in [
            "",
            "g",
            "gABC0000000000000",
            "x0000000000000abc",
            "g000000000000abc",
        ] {
            assert_eq!(GroupId::parse(bad), Err(BadGroupId), "{bad:?}");
            let bytes = postcard::to_allocvec(bad).unwrap();
            assert!(postcard::from_bytes::<GroupId>(&bytes).is_err());
        }
    }
}
