//! [`GroupState`]: one group's membership, roles, invitations and keys, and the rules for
//! changing them — pure data, so every rule is tested without a node.
//!
//! Each change the rules allow becomes a [`GroupChange`] entry of the group's log (made by
//! the caller, which then records the entry's `seq` here with [`GroupState::applied`]).
//! The key epoch moves on at every removal or leave: the one who is gone never gets the
//! new key, so they cannot open what is sent after.

use quiver_proto::{ErrorCode, GroupChange, Role, Seq, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A 32-byte group key.
pub type GroupKey = [u8; 32];

/// A member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// What they may do.
    pub role: Role,
    /// The `seq` of the entry that added them: their devices start there.
    pub since: Seq,
    /// The first key epoch they were given.
    pub first_epoch: u32,
}

/// One group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Its name.
    pub name: String,
    /// The key epoch chats must be sealed at now (from 1).
    pub epoch: u32,
    /// The key of each epoch: `keys[epoch - 1]`.
    pub keys: Vec<GroupKey>,
    /// Who is in it.
    pub members: BTreeMap<UserId, Member>,
    /// Who was removed or left: the `seq` of the entry that added them and of the one
    /// that removed them, the first and last their devices get.
    pub gone: BTreeMap<UserId, (Seq, Seq)>,
    /// Pending invitations: who was invited, by whom.
    pub invited: BTreeMap<UserId, UserId>,
}

/// Why a change is not allowed.
pub type Refusal = (ErrorCode, &'static str);

fn refuse<T>(code: ErrorCode, why: &'static str) -> Result<T, Refusal> {
    Err((code, why))
}

impl GroupState {
    /// A new group made by `owner`, with the first key.
    pub fn new(name: String, owner: &UserId, key: GroupKey) -> Self {
        let mut members = BTreeMap::new();
        let first = Member {
            role: Role::Owner,
            since: Seq(1),
            first_epoch: 1,
        };
        members.insert(owner.clone(), first);
        Self {
            name,
            epoch: 1,
            keys: vec![key],
            members,
            gone: BTreeMap::new(),
            invited: BTreeMap::new(),
        }
    }

    /// `user`'s role, if a member.
    pub fn role(&self, user: &UserId) -> Option<Role> {
        self.members.get(user).map(|m| m.role)
    }

    /// Whether `user` may send a chat sealed at `epoch` now.
    pub fn may_send(&self, user: &UserId, epoch: u32) -> Result<(), Refusal> {
        if !self.members.contains_key(user) {
            return refuse(ErrorCode::NotMember, "not a member of this group");
        }
        if epoch != self.epoch {
            return refuse(ErrorCode::StaleEpoch, "the group has a newer key");
        }
        Ok(())
    }

    fn manager(&self, actor: &UserId) -> Result<Role, Refusal> {
        match self.role(actor) {
            Some(role) if role.manages() => Ok(role),
            Some(_) => refuse(
                ErrorCode::NotMember,
                "only the owner and admins may do this",
            ),
            None => refuse(ErrorCode::NotMember, "not a member of this group"),
        }
    }

    /// `actor` adds `user` directly (they are friends) — the change to append.
    pub fn add(&self, actor: &UserId, user: &UserId, max: usize) -> Result<GroupChange, Refusal> {
        self.manager(actor)?;
        if self.members.contains_key(user) {
            return refuse(ErrorCode::UnexpectedFrame, "already a member");
        }
        if self.members.len() >= max {
            return refuse(ErrorCode::QuotaExceeded, "the group is full");
        }
        Ok(GroupChange::Added {
            user: user.clone(),
            role: Role::Member,
        })
    }

    /// `actor` invites `user` (not a friend of theirs): they join when they accept.
    pub fn invite(&mut self, actor: &UserId, user: &UserId, max: usize) -> Result<(), Refusal> {
        self.add(actor, user, max)?;
        if self.invited.contains_key(user) {
            return refuse(ErrorCode::UnexpectedFrame, "already invited");
        }
        if self.invited.len() >= max {
            return refuse(ErrorCode::QuotaExceeded, "too many invitations are waiting");
        }
        self.invited.insert(user.clone(), actor.clone());
        Ok(())
    }

    /// `user` accepts their invitation — the change to append.
    pub fn accept(&mut self, user: &UserId, max: usize) -> Result<GroupChange, Refusal> {
        if !self.invited.contains_key(user) {
            return refuse(ErrorCode::NotMember, "no invitation to this group");
        }
        if self.members.len() >= max {
            return refuse(ErrorCode::QuotaExceeded, "the group is full");
        }
        self.invited.remove(user);
        Ok(GroupChange::Added {
            user: user.clone(),
            role: Role::Member,
        })
    }

    /// `actor` removes `user` — the change to append (a new epoch starts with it).
    pub fn remove(&self, actor: &UserId, user: &UserId) -> Result<GroupChange, Refusal> {
        let role = self.manager(actor)?;
        match self.role(user) {
            None => refuse(ErrorCode::NotMember, "not a member of this group"),
            Some(Role::Owner) => refuse(ErrorCode::NotMember, "the owner cannot be removed"),
            Some(Role::Admin) if role != Role::Owner => {
                refuse(ErrorCode::NotMember, "only the owner removes admins")
            }
            Some(_) => Ok(GroupChange::Removed {
                user: user.clone(),
                epoch: self.epoch + 1,
            }),
        }
    }

    /// `user` leaves — the change to append. The owner hands the group over first.
    pub fn leave(&self, user: &UserId) -> Result<GroupChange, Refusal> {
        match self.role(user) {
            None => refuse(ErrorCode::NotMember, "not a member of this group"),
            Some(Role::Owner) if self.members.len() > 1 => refuse(
                ErrorCode::NotMember,
                "the owner hands the group to someone else before leaving",
            ),
            Some(_) => Ok(GroupChange::Left {
                epoch: self.epoch + 1,
            }),
        }
    }

    /// `actor` renames the group (any member may).
    pub fn rename(&self, actor: &UserId, name: String) -> Result<GroupChange, Refusal> {
        if !self.members.contains_key(actor) {
            return refuse(ErrorCode::NotMember, "not a member of this group");
        }
        Ok(GroupChange::Renamed { name })
    }

    /// `actor` gives `user` `role`: the owner names admins and members, and hands over
    /// ownership by giving `Owner` (becoming an admin).
    pub fn set_role(
        &self,
        actor: &UserId,
        user: &UserId,
        role: Role,
    ) -> Result<GroupChange, Refusal> {
        if self.role(actor) != Some(Role::Owner) {
            return refuse(ErrorCode::NotMember, "only the owner changes roles");
        }
        if actor == user || !self.members.contains_key(user) {
            return refuse(ErrorCode::NotMember, "not another member of this group");
        }
        Ok(GroupChange::RoleChanged {
            user: user.clone(),
            role,
        })
    }

    /// Records `change`, made by `actor`, as entry `seq`; `key` is the new epoch's key
    /// when the change starts one.
    pub fn applied(&mut self, actor: &UserId, change: &GroupChange, seq: Seq, key: GroupKey) {
        match change {
            GroupChange::Created { .. } => {}
            GroupChange::Added { user, role } => {
                self.gone.remove(user);
                let member = Member {
                    role: *role,
                    since: seq,
                    first_epoch: self.epoch,
                };
                self.members.insert(user.clone(), member);
            }
            GroupChange::Removed { user, epoch } => self.depart(user, *epoch, seq, key),
            GroupChange::Left { epoch } => self.depart(actor, *epoch, seq, key),
            GroupChange::Renamed { name } => self.name = name.clone(),
            GroupChange::RoleChanged { user, role } => {
                if *role == Role::Owner {
                    if let Some(old) = self.members.get_mut(actor) {
                        old.role = Role::Admin;
                    }
                }
                if let Some(member) = self.members.get_mut(user) {
                    member.role = *role;
                }
            }
        }
    }

    fn depart(&mut self, user: &UserId, epoch: u32, seq: Seq, key: GroupKey) {
        let since = self.members.remove(user).map_or(seq, |m| m.since);
        self.gone.insert(user.clone(), (since, seq));
        self.epoch = epoch;
        self.keys.push(key);
    }

    /// Whether `change` starts a new key epoch.
    pub fn rotates(change: &GroupChange) -> bool {
        matches!(
            change,
            GroupChange::Removed { .. } | GroupChange::Left { .. }
        )
    }

    /// The keys `user` may hold, by epoch: those from when they joined on, while a member.
    pub fn keys_for(&self, user: &UserId) -> Vec<(u32, GroupKey)> {
        let Some(member) = self.members.get(user) else {
            return Vec::new();
        };
        (member.first_epoch..=self.epoch)
            .filter_map(|e| Some((e, *self.keys.get(e as usize - 1)?)))
            .collect()
    }

    /// The entries `user`'s devices get: from `since` on while a member, up to their
    /// removal once gone. `None` for someone who was never in the group.
    pub fn range(&self, user: &UserId) -> Option<(Seq, Option<Seq>)> {
        if let Some(member) = self.members.get(user) {
            return Some((member.since, None));
        }
        self.gone
            .get(user)
            .map(|&(since, until)| (since, Some(until)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn roles_decide_who_manages_and_removal_rotates_the_key() {
        let (owner, admin, bob, eve) = (user("owner"), user("admin"), user("bob"), user("eve"));
        let mut g = GroupState::new("g".into(), &owner, [1; 32]);
        let change = g.add(&owner, &admin, 10).unwrap();
        g.applied(&owner, &change, Seq(2), [0; 32]);
        let change = g.set_role(&owner, &admin, Role::Admin).unwrap();
        g.applied(&owner, &change, Seq(3), [0; 32]);
        let change = g.add(&admin, &bob, 10).unwrap();
        g.applied(&admin, &change, Seq(4), [0; 32]);
        assert_eq!(g.add(&bob, &eve, 10).unwrap_err().0, ErrorCode::NotMember);
        assert_eq!(g.add(&eve, &bob, 10).unwrap_err().0, ErrorCode::NotMember);
        assert_eq!(
            g.remove(&admin, &owner).unwrap_err().0,
            ErrorCode::NotMember
        );
        assert_eq!(
            g.add(&owner, &eve, 3).unwrap_err().0,
            ErrorCode::QuotaExceeded
        );
        assert_eq!(g.keys_for(&bob), [(1, [1; 32])]);
        assert_eq!(g.may_send(&bob, 1), Ok(()));

        let change = g.remove(&admin, &bob).unwrap();
        assert_eq!(
            change,
            GroupChange::Removed {
                user: bob.clone(),
                epoch: 2
            }
        );
        g.applied(&admin, &change, Seq(5), [2; 32]);
        assert_eq!(g.may_send(&bob, 2).unwrap_err().0, ErrorCode::NotMember);
        assert_eq!(g.may_send(&admin, 1).unwrap_err().0, ErrorCode::StaleEpoch);
        assert!(g.keys_for(&bob).is_empty(), "no key after removal");
        assert_eq!(g.keys_for(&admin), [(1, [1; 32]), (2, [2; 32])]);
        assert_eq!(g.range(&bob), Some((Seq(4), Some(Seq(5)))), "from his add");
        assert_eq!(g.range(&eve), None);

        // The owner leaves only after handing the group over.
        assert!(g.leave(&owner).is_err());
        let change = g.set_role(&owner, &admin, Role::Owner).unwrap();
        g.applied(&owner, &change, Seq(6), [0; 32]);
        assert_eq!(
            (g.role(&admin), g.role(&owner)),
            (Some(Role::Owner), Some(Role::Admin))
        );
        let change = g.leave(&owner).unwrap();
        g.applied(&owner, &change, Seq(7), [3; 32]);
        assert_eq!(g.epoch, 3);
    }

    #[test]
    fn an_invitation_is_needed_to_join_by_acceptance() {
        let (owner, eve) = (user("owner"), user("eve"));
        let mut g = GroupState::new("g".into(), &owner, [1; 32]);
        assert_eq!(g.accept(&eve, 10).unwrap_err().0, ErrorCode::NotMember);
        g.invite(&owner, &eve, 10).unwrap();
        let change = g.accept(&eve, 10).unwrap();
        g.applied(&eve, &change, Seq(2), [0; 32]);
        assert_eq!(g.range(&eve), Some((Seq(2), None)));
        assert!(g.invited.is_empty());
    }
}
