//! [`RedisDirectory`]: the directory of mesh mode, shared by every node through Redis.
//!
//! Keys, all under `quiver:`:
//! - `user:{u}` — hash: `pw` (argon2 hash), `home` (node id);
//! - `devices:{u}` — set of device ids;
//! - `friends:{u}` — hash: friend → 32-byte key (written for both users at once);
//! - `req_out:{u}` / `req_in:{u}` — sets of pending requests made / received;
//! - `blocks:{u}` — set of users `u` blocked.
//!
//! Every change that touches two users runs as one Lua script, so it is atomic. Redis may
//! go away for a while: friendships (here) and homes (in the router) already seen are
//! remembered, so chats between known friends keep working; the connection manager
//! reconnects by itself.

use super::{
    new_key, Directory, DirectoryError, Friend, FriendKey, FriendRequestOutcome, Relations,
    MAX_PENDING_REQUESTS,
};
use async_trait::async_trait;
use quiver_proto::rest::PushTarget;
use quiver_proto::{DeviceId, GroupId, UserId};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Creates a user unless the key exists. KEYS: user; ARGV: hash, home.
const CREATE_USER: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'pw', ARGV[1], 'home', ARGV[2])
return 1";

/// A friend request from `me` to `other`, or (with ARGV[4] = 'accept') the acceptance of
/// `other`'s request. KEYS: 1 friends:me, 2 req_out:other, 3 req_out:me, 4 req_in:other,
/// 5 friends:other, 6 req_in:me, 7 user:other, 8 blocks:other. ARGV: me, other, new key,
/// mode, the most requests one user may have waiting each way.
const BEFRIEND: &str = r"
if redis.call('EXISTS', KEYS[7]) == 0 then return {'nouser', ''} end
local key = redis.call('HGET', KEYS[1], ARGV[2])
if key then return {'friends', key} end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('SREM', KEYS[6], ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  redis.call('SREM', KEYS[4], ARGV[1])
  return {'accepted', ARGV[3]}
end
if ARGV[4] == 'accept' then return {'norequest', ''} end
if redis.call('SISMEMBER', KEYS[8], ARGV[1]) == 1 then return {'pending', ''} end
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return {'pending', ''} end
local cap = tonumber(ARGV[5])
if redis.call('SCARD', KEYS[3]) >= cap or redis.call('SCARD', KEYS[4]) >= cap then
  return {'full', ''}
end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
return {'pending', ''}";

/// Ends a friendship and any request between the two, and with ARGV[3] = 'block' blocks
/// `other`. KEYS: 1 friends:me, 2 friends:other, 3 req_out:me, 4 req_in:me, 5 req_out:other,
/// 6 req_in:other, 7 blocks:me. ARGV: me, other, mode.
const UNFRIEND: &str = r"
local was = redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
if ARGV[3] == 'block' then redis.call('SADD', KEYS[7], ARGV[2]) end
return was";

/// How long a friendship read from Redis is trusted without asking again. A removal made
/// through another node reaches this one within this time.
const FRIENDSHIP_FRESH: Duration = Duration::from_secs(5);

/// How long one Redis request may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

fn key(kind: &str, user: &UserId) -> String {
    format!("quiver:{kind}:{}", user.as_str())
}

/// The shared directory in Redis.
pub struct RedisDirectory {
    redis: ConnectionManager,
    create_user: redis::Script,
    befriend: redis::Script,
    unfriend: redis::Script,
    /// Friendships seen, by (smaller, larger) user id, with when they were read.
    friends_seen: Mutex<HashMap<(UserId, UserId), (FriendKey, Instant)>>,
}

/// The key of a friendship in the cache: the same for both directions.
fn ordered(a: &UserId, b: &UserId) -> (UserId, UserId) {
    if a.as_str() <= b.as_str() {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

impl RedisDirectory {
    /// Connects to Redis at `url` (`redis://host:port/db`).
    pub async fn connect(url: &str) -> Result<Self, DirectoryError> {
        Ok(Self::new(connect(url).await?))
    }

    /// The directory over an existing connection.
    pub fn new(redis: ConnectionManager) -> Self {
        Self {
            redis,
            create_user: redis::Script::new(CREATE_USER),
            befriend: redis::Script::new(BEFRIEND),
            unfriend: redis::Script::new(UNFRIEND),
            friends_seen: Mutex::new(HashMap::new()),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.clone()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<(UserId, UserId), (FriendKey, Instant)>> {
        self.friends_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the friendship and requests of `user` and `other`, and blocks `other` if
    /// `block`. Returns whether they were friends.
    async fn unfriend(
        &self,
        user: &UserId,
        other: &UserId,
        block: bool,
    ) -> Result<bool, DirectoryError> {
        let was: i64 = self
            .unfriend
            .key(key("friends", user))
            .key(key("friends", other))
            .key(key("req_out", user))
            .key(key("req_in", user))
            .key(key("req_out", other))
            .key(key("req_in", other))
            .key(key("blocks", user))
            .arg(user.as_str())
            .arg(other.as_str())
            .arg(if block { "block" } else { "remove" })
            .invoke_async(&mut self.conn())
            .await?;
        self.seen().remove(&ordered(user, other));
        Ok(was == 1)
    }

    async fn befriend(
        &self,
        me: &UserId,
        other: &UserId,
        accept: bool,
    ) -> Result<FriendRequestOutcome, DirectoryError> {
        if me == other {
            return Err(DirectoryError::SelfFriend);
        }
        let fresh = new_key()?;
        let (status, key): (String, Vec<u8>) = self
            .befriend
            .key(key("friends", me))
            .key(key("req_out", other))
            .key(key("req_out", me))
            .key(key("req_in", other))
            .key(key("friends", other))
            .key(key("req_in", me))
            .key(key("user", other))
            .key(key("blocks", other))
            .arg(me.as_str())
            .arg(other.as_str())
            .arg(&fresh[..])
            .arg(if accept { "accept" } else { "request" })
            .arg(MAX_PENDING_REQUESTS)
            .invoke_async(&mut self.conn())
            .await?;
        let as_key = |bytes: Vec<u8>| -> Result<FriendKey, DirectoryError> {
            bytes
                .try_into()
                .map_err(|_| DirectoryError::Storage("stored friendship key is corrupt".into()))
        };
        match status.as_str() {
            "nouser" => Err(DirectoryError::NoSuchUser),
            "norequest" => Err(DirectoryError::NoRequest),
            "full" => Err(DirectoryError::TooManyRequests),
            "pending" => Ok(FriendRequestOutcome::Pending),
            "accepted" => Ok(FriendRequestOutcome::Accepted(as_key(key)?)),
            "friends" => Ok(FriendRequestOutcome::AlreadyFriends(as_key(key)?)),
            other => Err(DirectoryError::Storage(format!(
                "unexpected answer {other}"
            ))),
        }
    }
}

/// A self-reconnecting Redis connection whose requests fail fast while Redis is away.
pub async fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_with_config(client, config).await
}

fn users(raw: Vec<String>) -> Vec<UserId> {
    raw.iter().filter_map(|u| UserId::parse(u).ok()).collect()
}

#[async_trait]
impl Directory for RedisDirectory {
    async fn create_user(
        &self,
        user: &UserId,
        password_hash: &str,
        home: &str,
    ) -> Result<(), DirectoryError> {
        let created: i64 = self
            .create_user
            .key(key("user", user))
            .arg(password_hash)
            .arg(home)
            .invoke_async(&mut self.conn())
            .await?;
        if created == 0 {
            return Err(DirectoryError::UserExists);
        }
        Ok(())
    }

    async fn home(&self, user: &UserId) -> Result<Option<String>, DirectoryError> {
        Ok(self.conn().hget(key("user", user), "home").await?)
    }

    async fn password_hash(&self, user: &UserId) -> Result<Option<String>, DirectoryError> {
        Ok(self.conn().hget(key("user", user), "pw").await?)
    }

    async fn register_device(
        &self,
        user: &UserId,
        requested: Option<DeviceId>,
    ) -> Result<DeviceId, DirectoryError> {
        let devices = key("devices", user);
        if let Some(device) = requested {
            if self.conn().sismember(&devices, device.0).await? {
                return Ok(device);
            }
        }
        loop {
            let [a, b, c, d, e, f, g, h, ..] = new_key()?;
            let id = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
            let added: i64 = self.conn().sadd(&devices, id).await?;
            if added == 1 {
                return Ok(DeviceId(id));
            }
        }
    }

    async fn has_device(&self, user: &UserId, device: DeviceId) -> Result<bool, DirectoryError> {
        Ok(self
            .conn()
            .sismember(key("devices", user), device.0)
            .await?)
    }

    async fn remove_devices(
        &self,
        user: &UserId,
        device: Option<DeviceId>,
    ) -> Result<(), DirectoryError> {
        let devices = key("devices", user);
        let push = key("push", user);
        match device {
            Some(device) => {
                self.conn().srem::<_, _, ()>(devices, device.0).await?;
                self.conn().hdel::<_, _, ()>(push, device.0).await?;
            }
            None => self.conn().del::<_, ()>(&[devices, push]).await?,
        }
        Ok(())
    }

    async fn set_push_target(
        &self,
        user: &UserId,
        device: DeviceId,
        target: &PushTarget,
    ) -> Result<(), DirectoryError> {
        let value = super::encode_target(target)?;
        self.conn()
            .hset::<_, _, _, ()>(key("push", user), device.0, value)
            .await?;
        Ok(())
    }

    async fn remove_push_target(
        &self,
        user: &UserId,
        device: DeviceId,
    ) -> Result<(), DirectoryError> {
        self.conn()
            .hdel::<_, _, ()>(key("push", user), device.0)
            .await?;
        Ok(())
    }

    async fn push_targets(
        &self,
        user: &UserId,
    ) -> Result<Vec<(DeviceId, PushTarget)>, DirectoryError> {
        let all: Vec<(u64, Vec<u8>)> = self.conn().hgetall(key("push", user)).await?;
        all.into_iter()
            .map(|(device, value)| Ok((DeviceId(device), super::decode_target(&value)?)))
            .collect()
    }

    async fn set_group_muted(
        &self,
        user: &UserId,
        group: &GroupId,
        muted: bool,
        max: usize,
    ) -> Result<(), DirectoryError> {
        let muted_key = key("muted", user);
        if !muted {
            self.conn()
                .srem::<_, _, ()>(&muted_key, group.as_str())
                .await?;
            return Ok(());
        }
        let added: u64 = self.conn().sadd(&muted_key, group.as_str()).await?;
        // Added, then counted: two mutes at once may both be refused, never both pass.
        if added > 0 && self.conn().scard::<_, usize>(&muted_key).await? > max {
            self.conn()
                .srem::<_, _, ()>(&muted_key, group.as_str())
                .await?;
            return Err(DirectoryError::TooManyMuted);
        }
        Ok(())
    }

    async fn muted_groups(&self, user: &UserId) -> Result<Vec<GroupId>, DirectoryError> {
        let ids: Vec<String> = self.conn().smembers(key("muted", user)).await?;
        Ok(ids
            .iter()
            .filter_map(|id| GroupId::parse(id).ok())
            .collect())
    }

    async fn group_muted(&self, user: &UserId, group: &GroupId) -> Result<bool, DirectoryError> {
        Ok(self
            .conn()
            .sismember(key("muted", user), group.as_str())
            .await?)
    }

    async fn request_friend(
        &self,
        from: &UserId,
        to: &UserId,
    ) -> Result<FriendRequestOutcome, DirectoryError> {
        self.befriend(from, to, false).await
    }

    async fn accept_friend(
        &self,
        user: &UserId,
        from: &UserId,
    ) -> Result<FriendKey, DirectoryError> {
        match self.befriend(user, from, true).await? {
            FriendRequestOutcome::Accepted(key) | FriendRequestOutcome::AlreadyFriends(key) => {
                Ok(key)
            }
            FriendRequestOutcome::Pending => Err(DirectoryError::NoRequest),
        }
    }

    async fn remove_friend(&self, user: &UserId, other: &UserId) -> Result<bool, DirectoryError> {
        self.unfriend(user, other, false).await
    }

    async fn block(&self, user: &UserId, other: &UserId) -> Result<(), DirectoryError> {
        if user == other {
            return Err(DirectoryError::SelfFriend);
        }
        if !self.conn().exists(key("user", other)).await? {
            return Err(DirectoryError::NoSuchUser);
        }
        self.unfriend(user, other, true).await.map(drop)
    }

    async fn unblock(&self, user: &UserId, other: &UserId) -> Result<(), DirectoryError> {
        let _: i64 = self
            .conn()
            .srem(key("blocks", user), other.as_str())
            .await?;
        Ok(())
    }

    fn known_friendship(&self, a: &UserId, b: &UserId) -> Option<FriendKey> {
        let (key, at) = self.seen().get(&ordered(a, b)).copied()?;
        (at.elapsed() < FRIENDSHIP_FRESH).then_some(key)
    }

    async fn friendship(
        &self,
        a: &UserId,
        b: &UserId,
    ) -> Result<Option<FriendKey>, DirectoryError> {
        // Every chat asks this: a friendship read within FRIENDSHIP_FRESH is answered from
        // memory, with no round trip. While Redis does not answer, an older one still
        // counts, so known friends keep chatting through an outage.
        if let Some(key) = self.known_friendship(a, b) {
            return Ok(Some(key));
        }
        let pair = ordered(a, b);
        let known = self.seen().get(&pair).copied();
        let stored: Result<Option<Vec<u8>>, _> =
            self.conn().hget(key("friends", a), b.as_str()).await;
        match stored {
            Ok(Some(bytes)) => {
                let key: FriendKey = bytes.try_into().map_err(|_| {
                    DirectoryError::Storage("stored friendship key is corrupt".into())
                })?;
                self.seen().insert(pair, (key, Instant::now()));
                Ok(Some(key))
            }
            Ok(None) => {
                self.seen().remove(&pair);
                Ok(None)
            }
            Err(e) => match known {
                Some((key, _)) => {
                    tracing::debug!(error = %e, "redis unavailable; using a known friendship");
                    // Ask again only after another FRIENDSHIP_FRESH: during an outage each
                    // failed ask can wait on a reconnect attempt.
                    self.seen().insert(pair, (key, Instant::now()));
                    Ok(Some(key))
                }
                None => Err(e.into()),
            },
        }
    }

    async fn relations(&self, user: &UserId) -> Result<Relations, DirectoryError> {
        let mut conn = self.conn();
        let friends: HashMap<String, Vec<u8>> = conn.hgetall(key("friends", user)).await?;
        let incoming: Vec<String> = conn.smembers(key("req_in", user)).await?;
        let outgoing: Vec<String> = conn.smembers(key("req_out", user)).await?;
        let blocked: Vec<String> = conn.smembers(key("blocks", user)).await?;
        let mut out = Relations {
            friends: Vec::new(),
            incoming: users(incoming),
            outgoing: users(outgoing),
            blocked: users(blocked),
        };
        for (name, bytes) in friends {
            if let (Ok(user), Ok(key)) = (UserId::parse(&name), bytes.try_into()) {
                out.friends.push(Friend { user, key });
            }
        }
        out.friends
            .sort_by(|a, b| a.user.as_str().cmp(b.user.as_str()));
        Ok(out)
    }
}
