//! Where groups live in a mesh, in Redis:
//!
//! - `quiver:group:{id}` — the group's home node, written once when the group is made
//!   (`SET NX`: a home never moves, so every node may cache it);
//! - `quiver:ghomes:{user}` — set of the nodes that home a group the user is in, was in
//!   or is invited to. A node adds itself before the change it makes there, so a device
//!   connecting anywhere finds every node it must attach to. Entries are never removed:
//!   a node that no longer homes any group of the user serves an attachment with nothing
//!   in it;
//! - `quiver:gmade:{user}:{hour}` — groups the user made in that clock hour, on any
//!   node (the per-user creation limit is the mesh's, not each node's).

use quiver_proto::{GroupId, UserId};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::Mutex;

/// Groups this many homes are cached, at most; past that the cache starts again.
const CACHED_HOMES: usize = 100_000;

/// Group homes and users' group nodes.
pub struct GroupHomes {
    redis: ConnectionManager,
    node_id: String,
    cache: Mutex<HashMap<GroupId, String>>,
}

fn group_key(group: &GroupId) -> String {
    format!("quiver:group:{}", group.as_str())
}

fn user_key(user: &UserId) -> String {
    format!("quiver:ghomes:{}", user.as_str())
}

impl GroupHomes {
    /// Group homes seen from node `node_id`.
    pub fn new(redis: ConnectionManager, node_id: &str) -> Self {
        Self {
            redis,
            node_id: node_id.to_string(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, String>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records this node as the home of the new `group`; `false` if the id is taken.
    pub async fn claim(&self, group: &GroupId) -> Result<bool, redis::RedisError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(group_key(group))
            .arg(&self.node_id)
            .arg("NX")
            .query_async(&mut self.redis.clone())
            .await?;
        if set.is_some() {
            self.cached().insert(group.clone(), self.node_id.clone());
        }
        Ok(set.is_some())
    }

    /// The node that homes `group`, if it exists.
    pub async fn home(&self, group: &GroupId) -> Result<Option<String>, redis::RedisError> {
        if let Some(node) = self.cached().get(group) {
            return Ok(Some(node.clone()));
        }
        let node: Option<String> = self.redis.clone().get(group_key(group)).await?;
        if let Some(node) = &node {
            let mut cache = self.cached();
            if cache.len() >= CACHED_HOMES {
                cache.clear();
            }
            cache.insert(group.clone(), node.clone());
        }
        Ok(node)
    }

    /// Adds this node to `user`'s group nodes; `true` if it was not there yet.
    pub async fn add_user(&self, user: &UserId) -> Result<bool, redis::RedisError> {
        let added: i64 = self
            .redis
            .clone()
            .sadd(user_key(user), &self.node_id)
            .await?;
        Ok(added > 0)
    }

    /// Counts a group `user` makes now, on any node; returns how many they made in this
    /// clock hour (a fixed window, kept two hours).
    pub async fn count_creation(&self, user: &UserId) -> Result<u64, redis::RedisError> {
        let hour = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 3600);
        let key = format!("quiver:gmade:{}:{hour}", user.as_str());
        let (made, _): (u64, bool) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .expire(&key, 7200)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(made)
    }

    /// The nodes that home a group of `user`'s (or an invitation), this one included.
    pub async fn of_user(&self, user: &UserId) -> Result<Vec<String>, redis::RedisError> {
        let mut nodes: Vec<String> = self.redis.clone().smembers(user_key(user)).await?;
        nodes.sort();
        Ok(nodes)
    }
}
