//! [`SledDirectory`]: the embedded directory of single-node mode, in the node's own sled.

use super::friend_cache::{FriendCache, Lookup};
use super::{
    Directory, DirectoryError, Friend, FriendKey, FriendRequestOutcome, Relations,
    MAX_PENDING_REQUESTS,
};
use async_trait::async_trait;
use quiver_proto::rest::PushTarget;
use quiver_proto::{DeviceId, GroupId, UserId};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::Mutex;

/// The embedded directory: sled trees in the node's own database.
pub struct SledDirectory {
    db: sled::Db,
    /// This node's id: the home of every user it keeps.
    node_id: String,
    /// user name → argon2 hash.
    users: sled::Tree,
    /// `user/device` for each device.
    devices: sled::Tree,
    /// `a/b` → key, stored under both orders so each user's friends are one prefix scan.
    friends: sled::Tree,
    /// `from/to` for each pending request.
    requests_out: sled::Tree,
    /// `to/from` for each pending request (the same requests, indexed by recipient).
    requests_in: sled::Tree,
    /// `user/other` for each user `user` blocked.
    blocks: sled::Tree,
    /// `user/` then the device id → the device's push target (JSON).
    push: sled::Tree,
    /// `user/group` for each group whose push notifications `user` muted.
    muted: sled::Tree,
    /// Serializes mutes, so two at once cannot both pass the limit.
    mute_lock: Mutex<()>,
    /// Requests one user may have waiting, each way.
    max_pending: usize,
    rng: SystemRandom,
    /// Serializes friendship changes, so request-then-accept races cannot make two keys.
    friend_lock: Mutex<()>,
    /// Friendships read from `friends`, for the check every chat makes.
    known_friends: FriendCache,
}

/// `user/`: the prefix of everything stored under a user. No user name contains `/`.
fn prefix(user: &UserId) -> Vec<u8> {
    let mut p = user.as_str().as_bytes().to_vec();
    p.push(b'/');
    p
}

/// `a/b`.
fn pair(a: &UserId, b: &UserId) -> Vec<u8> {
    let mut key = prefix(a);
    key.extend_from_slice(b.as_str().as_bytes());
    key
}

/// `user/` then the device id.
fn device_key(user: &UserId, device: DeviceId) -> Vec<u8> {
    let mut key = prefix(user);
    key.extend_from_slice(&device.0.to_be_bytes());
    key
}

/// `user/group`: a group `user` muted.
fn muted_key(user: &UserId, group: &GroupId) -> Vec<u8> {
    let mut key = prefix(user);
    key.extend_from_slice(group.as_str().as_bytes());
    key
}

fn user_after_prefix(key: &[u8], prefix_len: usize) -> Option<UserId> {
    UserId::parse(std::str::from_utf8(key.get(prefix_len..)?).ok()?).ok()
}

impl SledDirectory {
    /// Opens the directory's trees in `db`.
    pub fn open(db: &sled::Db, node_id: &str) -> Result<Self, DirectoryError> {
        Ok(Self {
            db: db.clone(),
            node_id: node_id.to_string(),
            users: db.open_tree("users")?,
            devices: db.open_tree("devices")?,
            friends: db.open_tree("friends")?,
            requests_out: db.open_tree("friend_requests_out")?,
            requests_in: db.open_tree("friend_requests_in")?,
            blocks: db.open_tree("blocks")?,
            push: db.open_tree("push_targets")?,
            muted: db.open_tree("muted_groups")?,
            mute_lock: Mutex::new(()),
            max_pending: MAX_PENDING_REQUESTS,
            rng: SystemRandom::new(),
            friend_lock: Mutex::new(()),
            known_friends: FriendCache::default(),
        })
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], DirectoryError> {
        let mut out = [0u8; N];
        self.rng
            .fill(&mut out)
            .map_err(|_| DirectoryError::Storage("no randomness".into()))?;
        Ok(out)
    }

    fn stored_key(&self, a: &UserId, b: &UserId) -> Result<Option<FriendKey>, DirectoryError> {
        Ok(self
            .friends
            .get(pair(a, b))?
            .and_then(|v| v.as_ref().try_into().ok()))
    }

    /// Makes the friendship and removes requests both ways. Caller holds `friend_lock`.
    fn befriend(&self, a: &UserId, b: &UserId) -> Result<FriendKey, DirectoryError> {
        let key: FriendKey = self.random()?;
        let mut batch = sled::Batch::default();
        batch.insert(pair(a, b), &key[..]);
        batch.insert(pair(b, a), &key[..]);
        self.friends.apply_batch(batch)?;
        for (x, y) in [(a, b), (b, a)] {
            self.requests_out.remove(pair(x, y))?;
            self.requests_in.remove(pair(y, x))?;
        }
        Ok(key)
    }

    /// Ends the friendship of `a` and `b` and any request between them; returns whether
    /// they were friends. Caller holds `friend_lock`.
    fn unfriend(&self, a: &UserId, b: &UserId) -> Result<bool, DirectoryError> {
        let was = self.stored_key(a, b)?.is_some();
        let mut batch = sled::Batch::default();
        batch.remove(pair(a, b));
        batch.remove(pair(b, a));
        self.friends.apply_batch(batch)?;
        self.known_friends.forget(a, b);
        for (x, y) in [(a, b), (b, a)] {
            self.requests_out.remove(pair(x, y))?;
            self.requests_in.remove(pair(y, x))?;
        }
        Ok(was)
    }

    /// Whether `user` has all the requests in `tree` they may have.
    fn full(&self, tree: &sled::Tree, user: &UserId) -> bool {
        tree.scan_prefix(prefix(user))
            .take(self.max_pending)
            .count()
            >= self.max_pending
    }

    async fn flush(&self) -> Result<(), DirectoryError> {
        crate::sled_flush::flush(&self.db).await?;
        Ok(())
    }
}

#[async_trait]
impl Directory for SledDirectory {
    async fn create_user(
        &self,
        user: &UserId,
        password_hash: &str,
        _home: &str,
    ) -> Result<(), DirectoryError> {
        let created = self.users.compare_and_swap(
            user.as_str(),
            None::<&[u8]>,
            Some(password_hash.as_bytes()),
        )?;
        if created.is_err() {
            return Err(DirectoryError::UserExists);
        }
        self.flush().await
    }

    async fn home(&self, user: &UserId) -> Result<Option<String>, DirectoryError> {
        Ok(self
            .users
            .contains_key(user.as_str())?
            .then(|| self.node_id.clone()))
    }

    async fn password_hash(&self, user: &UserId) -> Result<Option<String>, DirectoryError> {
        Ok(self
            .users
            .get(user.as_str())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    async fn register_device(
        &self,
        user: &UserId,
        requested: Option<DeviceId>,
    ) -> Result<DeviceId, DirectoryError> {
        if let Some(device) = requested {
            if self.devices.contains_key(device_key(user, device))? {
                return Ok(device);
            }
        }
        let device = DeviceId(u64::from_be_bytes(self.random()?));
        self.devices.insert(device_key(user, device), &[])?;
        self.flush().await?;
        Ok(device)
    }

    async fn has_device(&self, user: &UserId, device: DeviceId) -> Result<bool, DirectoryError> {
        Ok(self.devices.contains_key(device_key(user, device))?)
    }

    async fn remove_devices(
        &self,
        user: &UserId,
        device: Option<DeviceId>,
    ) -> Result<(), DirectoryError> {
        match device {
            Some(device) => {
                self.devices.remove(device_key(user, device))?;
                self.push.remove(device_key(user, device))?;
            }
            None => {
                for tree in [&self.devices, &self.push] {
                    for key in tree.scan_prefix(prefix(user)).keys() {
                        tree.remove(key?)?;
                    }
                }
            }
        }
        self.flush().await
    }

    async fn set_push_target(
        &self,
        user: &UserId,
        device: DeviceId,
        target: &PushTarget,
    ) -> Result<(), DirectoryError> {
        self.push
            .insert(device_key(user, device), super::encode_target(target)?)?;
        self.flush().await
    }

    async fn remove_push_target(
        &self,
        user: &UserId,
        device: DeviceId,
    ) -> Result<(), DirectoryError> {
        self.push.remove(device_key(user, device))?;
        self.flush().await
    }

    async fn push_targets(
        &self,
        user: &UserId,
    ) -> Result<Vec<(DeviceId, PushTarget)>, DirectoryError> {
        let start = prefix(user).len();
        let mut out = Vec::new();
        for item in self.push.scan_prefix(prefix(user)) {
            let (key, value) = item?;
            let Some(id) = key.get(start..).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                continue;
            };
            out.push((
                DeviceId(u64::from_be_bytes(id)),
                super::decode_target(&value)?,
            ));
        }
        Ok(out)
    }

    async fn set_group_muted(
        &self,
        user: &UserId,
        group: &GroupId,
        muted: bool,
        max: usize,
    ) -> Result<(), DirectoryError> {
        let key = muted_key(user, group);
        {
            let _one_at_a_time = self.mute_lock.lock().unwrap_or_else(|p| p.into_inner());
            if !muted {
                self.muted.remove(key)?;
            } else if !self.muted.contains_key(&key)? {
                if self.muted.scan_prefix(prefix(user)).take(max).count() >= max {
                    return Err(DirectoryError::TooManyMuted);
                }
                self.muted.insert(key, sled::IVec::default())?;
            }
        }
        self.flush().await
    }

    async fn muted_groups(&self, user: &UserId) -> Result<Vec<GroupId>, DirectoryError> {
        let start = prefix(user).len();
        let mut out = Vec::new();
        for item in self.muted.scan_prefix(prefix(user)) {
            let (key, _) = item?;
            let group = std::str::from_utf8(key.get(start..).unwrap_or_default())
                .ok()
                .and_then(|id| GroupId::parse(id).ok());
            out.extend(group);
        }
        Ok(out)
    }

    async fn group_muted(&self, user: &UserId, group: &GroupId) -> Result<bool, DirectoryError> {
        Ok(self.muted.contains_key(muted_key(user, group))?)
    }

    async fn request_friend(
        &self,
        from: &UserId,
        to: &UserId,
    ) -> Result<FriendRequestOutcome, DirectoryError> {
        if from == to {
            return Err(DirectoryError::SelfFriend);
        }
        if !self.users.contains_key(to.as_str())? {
            return Err(DirectoryError::NoSuchUser);
        }
        let outcome = {
            let _guard = self.friend_lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(key) = self.stored_key(from, to)? {
                return Ok(FriendRequestOutcome::AlreadyFriends(key));
            }
            if self.requests_out.contains_key(pair(to, from))? {
                FriendRequestOutcome::Accepted(self.befriend(from, to)?)
            } else if self.blocks.contains_key(pair(to, from))?
                || self.requests_out.contains_key(pair(from, to))?
            {
                // Blocked (not told), or asked already: nothing new to store.
                return Ok(FriendRequestOutcome::Pending);
            } else if self.full(&self.requests_out, from) || self.full(&self.requests_in, to) {
                return Err(DirectoryError::TooManyRequests);
            } else {
                self.requests_out.insert(pair(from, to), &[])?;
                self.requests_in.insert(pair(to, from), &[])?;
                FriendRequestOutcome::Pending
            }
        };
        self.flush().await?;
        Ok(outcome)
    }

    async fn accept_friend(
        &self,
        user: &UserId,
        from: &UserId,
    ) -> Result<FriendKey, DirectoryError> {
        let key = {
            let _guard = self.friend_lock.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(key) = self.stored_key(user, from)? {
                return Ok(key);
            }
            if !self.requests_out.contains_key(pair(from, user))? {
                return Err(DirectoryError::NoRequest);
            }
            self.befriend(user, from)?
        };
        self.flush().await?;
        Ok(key)
    }

    async fn remove_friend(&self, user: &UserId, other: &UserId) -> Result<bool, DirectoryError> {
        let was = {
            let _guard = self.friend_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.unfriend(user, other)?
        };
        self.flush().await?;
        Ok(was)
    }

    async fn block(&self, user: &UserId, other: &UserId) -> Result<(), DirectoryError> {
        if user == other {
            return Err(DirectoryError::SelfFriend);
        }
        if !self.users.contains_key(other.as_str())? {
            return Err(DirectoryError::NoSuchUser);
        }
        {
            let _guard = self.friend_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.unfriend(user, other)?;
            self.blocks.insert(pair(user, other), &[])?;
        }
        self.flush().await
    }

    async fn unblock(&self, user: &UserId, other: &UserId) -> Result<(), DirectoryError> {
        self.blocks.remove(pair(user, other))?;
        self.flush().await
    }

    async fn friendship(
        &self,
        a: &UserId,
        b: &UserId,
    ) -> Result<Option<FriendKey>, DirectoryError> {
        let generation = match self.known_friends.lookup(a, b) {
            Lookup::Friends(key) => return Ok(Some(key)),
            Lookup::Unknown(generation) => generation,
        };
        let key = self.stored_key(a, b)?;
        if let Some(key) = key {
            self.known_friends.remember(a, b, key, generation);
        }
        Ok(key)
    }

    fn known_friendship(&self, a: &UserId, b: &UserId) -> Option<FriendKey> {
        match self.known_friends.lookup(a, b) {
            Lookup::Friends(key) => Some(key),
            Lookup::Unknown(_) => None,
        }
    }

    async fn relations(&self, user: &UserId) -> Result<Relations, DirectoryError> {
        let mine = prefix(user);
        let mut out = Relations::default();
        for item in self.friends.scan_prefix(&mine) {
            let (k, v) = item?;
            let key = v.as_ref().try_into();
            if let (Some(friend), Ok(key)) = (user_after_prefix(&k, mine.len()), key) {
                out.friends.push(Friend { user: friend, key });
            }
        }
        for item in self.requests_out.scan_prefix(&mine) {
            out.outgoing.extend(user_after_prefix(&item?.0, mine.len()));
        }
        for item in self.requests_in.scan_prefix(&mine) {
            out.incoming.extend(user_after_prefix(&item?.0, mine.len()));
        }
        for item in self.blocks.scan_prefix(&mine) {
            out.blocked.extend(user_after_prefix(&item?.0, mine.len()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[tokio::test]
    async fn friendship_needs_both_sides_and_has_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let directory = SledDirectory::open(&sled::open(dir.path()).unwrap(), "n1").unwrap();
        let (alice, bob) = (user("alice"), user("bob"));
        directory.create_user(&alice, "h", "n1").await.unwrap();
        directory.create_user(&bob, "h", "n1").await.unwrap();
        assert!(matches!(
            directory.create_user(&bob, "h", "n1").await,
            Err(DirectoryError::UserExists)
        ));
        assert!(matches!(
            directory.accept_friend(&bob, &alice).await,
            Err(DirectoryError::NoRequest)
        ));
        assert_eq!(
            directory.request_friend(&alice, &bob).await.unwrap(),
            FriendRequestOutcome::Pending
        );
        assert_eq!(directory.friendship(&alice, &bob).await.unwrap(), None);
        let incoming = directory.relations(&bob).await.unwrap().incoming;
        assert_eq!(incoming, std::slice::from_ref(&alice));
        let key = directory.accept_friend(&bob, &alice).await.unwrap();
        assert_eq!(directory.friendship(&alice, &bob).await.unwrap(), Some(key));
        assert_eq!(directory.friendship(&bob, &alice).await.unwrap(), Some(key));
        let relations = directory.relations(&alice).await.unwrap();
        assert_eq!(
            relations.friends,
            [Friend {
                user: bob.clone(),
                key
            }]
        );
        assert!(relations.outgoing.is_empty() && relations.incoming.is_empty());
        assert!(matches!(
            directory.request_friend(&alice, &user("nobody")).await,
            Err(DirectoryError::NoSuchUser)
        ));
    }

    #[tokio::test]
    async fn a_blocked_user_is_unfriended_and_their_requests_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let directory = SledDirectory::open(&sled::open(dir.path()).unwrap(), "n1").unwrap();
        let (alice, mallory) = (user("alice"), user("mallory"));
        directory.create_user(&alice, "h", "n1").await.unwrap();
        directory.create_user(&mallory, "h", "n1").await.unwrap();
        directory.request_friend(&mallory, &alice).await.unwrap();
        directory.accept_friend(&alice, &mallory).await.unwrap();
        directory.block(&alice, &mallory).await.unwrap();
        assert_eq!(directory.friendship(&alice, &mallory).await.unwrap(), None);
        // Mallory is told what anyone is told; Alice sees nothing.
        assert_eq!(
            directory.request_friend(&mallory, &alice).await.unwrap(),
            FriendRequestOutcome::Pending
        );
        let relations = directory.relations(&alice).await.unwrap();
        assert!(relations.incoming.is_empty());
        assert_eq!(relations.blocked, std::slice::from_ref(&mallory));
        assert!(directory
            .relations(&mallory)
            .await
            .unwrap()
            .outgoing
            .is_empty());
        directory.unblock(&alice, &mallory).await.unwrap();
        directory.request_friend(&mallory, &alice).await.unwrap();
        let incoming = directory.relations(&alice).await.unwrap().incoming;
        assert_eq!(incoming, std::slice::from_ref(&mallory));
    }

    #[tokio::test]
    async fn waiting_requests_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut directory = SledDirectory::open(&sled::open(dir.path()).unwrap(), "n1").unwrap();
        directory.max_pending = 3;
        let (spammer, victim) = (user("spammer"), user("victim"));
        for u in [&spammer, &victim] {
            directory.create_user(u, "h", "n1").await.unwrap();
        }
        let mut answers = Vec::new();
        for n in 0..4 {
            let other = user(&format!("user{n}"));
            directory.create_user(&other, "h", "n1").await.unwrap();
            answers.push(directory.request_friend(&spammer, &other).await.ok());
            directory
                .request_friend(&other, &victim)
                .await
                .unwrap_or_else(|_| {
                    assert_eq!(n, 3, "the victim's fourth waiting request");
                    FriendRequestOutcome::Pending
                });
        }
        let pending = Some(FriendRequestOutcome::Pending);
        assert_eq!(
            answers,
            [pending.clone(), pending.clone(), pending.clone(), None]
        );
        assert_eq!(
            directory.relations(&victim).await.unwrap().incoming.len(),
            3
        );
        // Asking again is not a new request.
        let first = user("user0");
        assert_eq!(
            directory.request_friend(&spammer, &first).await.unwrap(),
            FriendRequestOutcome::Pending
        );
    }
}
