//! The directory: accounts, devices, friendships and each user's home node.
//!
//! [`Directory`] is the boundary; [`SledDirectory`] is the embedded version used by a
//! single node, [`RedisDirectory`] the shared one of mesh mode. Friendship keys are made
//! here at acceptance and returned only to the two friends.

mod embedded;
mod friend_cache;
mod redis_backed;

pub use embedded::SledDirectory;
pub use redis_backed::{connect as connect_redis, RedisDirectory};

use async_trait::async_trait;
use quiver_proto::rest::PushTarget;
use quiver_proto::{DeviceId, GroupId, UserId};
use ring::rand::{SecureRandom, SystemRandom};

/// A 32-byte symmetric key shared by two friends.
pub type FriendKey = [u8; 32];

/// What can go wrong in the directory.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Registration under a name that is taken.
    #[error("user already exists")]
    UserExists,
    /// The named user does not exist.
    #[error("no such user")]
    NoSuchUser,
    /// Accepting a friend request that nobody made.
    #[error("no such friend request")]
    NoRequest,
    /// Befriending oneself.
    #[error("cannot befriend yourself")]
    SelfFriend,
    /// The requester has [`MAX_PENDING_REQUESTS`] requests waiting, or the recipient has
    /// that many waiting for them.
    #[error("too many friend requests are waiting")]
    TooManyRequests,
    /// Muting one more group's push notifications would pass the user's limit.
    #[error("too many groups muted")]
    TooManyMuted,
    /// The storage behind the directory failed.
    #[error("directory storage: {0}")]
    Storage(String),
}

impl From<sled::Error> for DirectoryError {
    fn from(e: sled::Error) -> Self {
        DirectoryError::Storage(e.to_string())
    }
}

impl From<redis::RedisError> for DirectoryError {
    fn from(e: redis::RedisError) -> Self {
        DirectoryError::Storage(e.to_string())
    }
}

/// Friend requests one user may have waiting, made or received: a spammer fills their
/// own list, or their victim's, and then waits; neither grows without bound.
pub const MAX_PENDING_REQUESTS: usize = 1000;

/// A new random friendship key.
pub(crate) fn new_key() -> Result<FriendKey, DirectoryError> {
    let mut key = [0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| DirectoryError::Storage("no randomness".into()))?;
    Ok(key)
}

/// The outcome of a friend request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FriendRequestOutcome {
    /// The request waits for the other user to accept.
    Pending,
    /// The other user had already asked: the two are now friends.
    Accepted(FriendKey),
    /// They were friends already.
    AlreadyFriends(FriendKey),
}

/// A friend and the key of the friendship.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Friend {
    /// The friend.
    pub user: UserId,
    /// The friendship key.
    pub key: FriendKey,
}

/// Friends and pending requests of one user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relations {
    /// Accepted friendships.
    pub friends: Vec<Friend>,
    /// Requests others made to this user.
    pub incoming: Vec<UserId>,
    /// Requests this user made to others.
    pub outgoing: Vec<UserId>,
    /// Users this user blocked.
    pub blocked: Vec<UserId>,
}

/// Accounts, devices and friendships.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Creates an account with an already-hashed password, homed on node `home`.
    async fn create_user(
        &self,
        user: &UserId,
        password_hash: &str,
        home: &str,
    ) -> Result<(), DirectoryError>;
    /// The id of the node that keeps `user`'s inbox, if the user exists.
    async fn home(&self, user: &UserId) -> Result<Option<String>, DirectoryError>;
    /// The stored password hash, if the user exists.
    async fn password_hash(&self, user: &UserId) -> Result<Option<String>, DirectoryError>;
    /// Returns `requested` if it is already one of `user`'s devices, else a new device id.
    async fn register_device(
        &self,
        user: &UserId,
        requested: Option<DeviceId>,
    ) -> Result<DeviceId, DirectoryError>;
    /// `from` asks `to` to be friends. If `to` blocked `from`, nothing is stored and the
    /// answer is `Pending`, as for any request: a blocked user is not told.
    async fn request_friend(
        &self,
        from: &UserId,
        to: &UserId,
    ) -> Result<FriendRequestOutcome, DirectoryError>;
    /// `user` accepts the request `from` made; returns the new friendship key.
    async fn accept_friend(
        &self,
        user: &UserId,
        from: &UserId,
    ) -> Result<FriendKey, DirectoryError>;
    /// Ends the friendship of `user` and `other`, and any request between them, both
    /// ways. Returns whether they were friends. A later friendship gets a new key.
    async fn remove_friend(&self, user: &UserId, other: &UserId) -> Result<bool, DirectoryError>;
    /// `user` blocks `other`: their friendship and any request between them end, and
    /// `other`'s requests to `user` are dropped from now on. Blocking twice is one block.
    async fn block(&self, user: &UserId, other: &UserId) -> Result<(), DirectoryError>;
    /// `user` lifts a block of `other` (none is fine).
    async fn unblock(&self, user: &UserId, other: &UserId) -> Result<(), DirectoryError>;
    /// The friendship key, if the two are friends.
    async fn friendship(&self, a: &UserId, b: &UserId)
        -> Result<Option<FriendKey>, DirectoryError>;
    /// The friendship key of `a` and `b` if the directory has it in memory, fresh: what
    /// [`Directory::friendship`] answers first, without the future it boxes (every chat
    /// asks). `None` means ask `friendship`, not that they are not friends.
    fn known_friendship(&self, a: &UserId, b: &UserId) -> Option<FriendKey>;
    /// Friends and pending requests of `user`.
    async fn relations(&self, user: &UserId) -> Result<Relations, DirectoryError>;
    /// Whether `device` is one of `user`'s (not logged out). Tokens of other devices are
    /// refused, which is how logging out revokes them.
    async fn has_device(&self, user: &UserId, device: DeviceId) -> Result<bool, DirectoryError>;
    /// Logs out one device, or every device of the user when `device` is `None`, and
    /// forgets their push targets.
    async fn remove_devices(
        &self,
        user: &UserId,
        device: Option<DeviceId>,
    ) -> Result<(), DirectoryError>;
    /// Sets (or replaces) where the push gateway reaches `user`'s `device`.
    async fn set_push_target(
        &self,
        user: &UserId,
        device: DeviceId,
        target: &PushTarget,
    ) -> Result<(), DirectoryError>;
    /// Forgets `device`'s push target (none is fine).
    async fn remove_push_target(
        &self,
        user: &UserId,
        device: DeviceId,
    ) -> Result<(), DirectoryError>;
    /// The push targets of `user`'s devices.
    async fn push_targets(
        &self,
        user: &UserId,
    ) -> Result<Vec<(DeviceId, PushTarget)>, DirectoryError>;
    /// Mutes (`muted`) or unmutes `group`'s push notifications for every device of
    /// `user`: an account's choice, kept across logins. Muting a group muted already, or
    /// unmuting one that is not, changes nothing; muting one more than `max` is refused
    /// ([`DirectoryError::TooManyMuted`]).
    async fn set_group_muted(
        &self,
        user: &UserId,
        group: &GroupId,
        muted: bool,
        max: usize,
    ) -> Result<(), DirectoryError>;
    /// The groups whose push notifications `user` muted.
    async fn muted_groups(&self, user: &UserId) -> Result<Vec<GroupId>, DirectoryError>;
    /// Whether `user` muted `group`'s push notifications.
    async fn group_muted(&self, user: &UserId, group: &GroupId) -> Result<bool, DirectoryError>;
}

/// A push target as stored (JSON: the same in sled and in Redis).
fn encode_target(target: &PushTarget) -> Result<Vec<u8>, DirectoryError> {
    serde_json::to_vec(target).map_err(|e| DirectoryError::Storage(e.to_string()))
}

/// A stored push target.
fn decode_target(bytes: &[u8]) -> Result<PushTarget, DirectoryError> {
    serde_json::from_slice(bytes).map_err(|e| DirectoryError::Storage(e.to_string()))
}
