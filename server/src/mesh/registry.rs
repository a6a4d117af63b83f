//! The node registry and device locations in Redis.
//!
//! - `quiver:nodes` — set of every node id that ever registered;
//! - `quiver:node:{id}` — `"{mesh addr} {client addr}"`, expiring `3 × heartbeat` after the
//!   node last renewed it: a node that dies drops out of the mesh by itself;
//! - `quiver:loc:{user}` — hash: device → `"{node} {epoch}"`. A location counts only while
//!   its node is registered, so the locations of a dead node expire with its heartbeat.
//!   A session writes its location with a fresh epoch and, when it ends, deletes it only if
//!   it still holds that epoch (one script): a late disconnect never wipes a newer login.

use quiver_proto::{DeviceId, UserId};
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

/// Deletes a location only if it is still ours. KEYS: loc:{user}; ARGV: device, value.
const CLEAR_LOCATION: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0";

/// Where a registered node can be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddrs {
    /// Its mesh endpoint.
    pub mesh: SocketAddr,
    /// Its client QUIC endpoint.
    pub client: SocketAddr,
}

/// This node's registration and its view of the others.
pub struct Registry {
    redis: ConnectionManager,
    node_id: String,
    own: NodeAddrs,
    ttl: Duration,
    /// Live nodes, as last read from Redis; kept as they are while Redis is away.
    nodes: RwLock<HashMap<String, NodeAddrs>>,
    clear_location: redis::Script,
    /// Distinguishes this node's sessions; starts at the boot time, so a restarted node's
    /// epochs are new too.
    epoch: AtomicU64,
    /// When the last heartbeat reached Redis.
    last_beat: std::sync::Mutex<Option<std::time::Instant>>,
}

fn node_key(id: &str) -> String {
    format!("quiver:node:{id}")
}

fn location_key(user: &UserId) -> String {
    format!("quiver:loc:{}", user.as_str())
}

impl Registry {
    /// A registry for node `node_id`; call [`Registry::heartbeat`] to join.
    pub fn new(
        redis: ConnectionManager,
        node_id: &str,
        own: NodeAddrs,
        heartbeat: Duration,
    ) -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self {
            redis,
            node_id: node_id.to_string(),
            own,
            ttl: heartbeat * 3,
            nodes: RwLock::new(HashMap::new()),
            clear_location: redis::Script::new(CLEAR_LOCATION),
            epoch: AtomicU64::new(boot),
            last_beat: std::sync::Mutex::new(None),
        }
    }

    /// Renews this node's registration and rereads the others'.
    pub async fn heartbeat(&self) -> Result<(), redis::RedisError> {
        let mut conn = self.redis.clone();
        let value = format!("{} {}", self.own.mesh, self.own.client);
        let ttl = self.ttl.as_millis() as u64;
        let (_, _, ids): ((), (), Vec<String>) = redis::pipe()
            .cmd("SET")
            .arg(node_key(&self.node_id))
            .arg(value)
            .arg("PX")
            .arg(ttl)
            .sadd("quiver:nodes", &self.node_id)
            .smembers("quiver:nodes")
            .query_async(&mut conn)
            .await?;
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let values: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?
        };
        let live = ids
            .into_iter()
            .zip(values)
            .filter_map(|(id, value)| Some((id, parse_addrs(&value?)?)))
            .collect();
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = live;
        *self.last_beat.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        Ok(())
    }

    /// Whether this node is registered now: its last heartbeat reached Redis less than a
    /// registration lifetime ago.
    pub fn registered(&self) -> bool {
        let last = *self.last_beat.lock().unwrap_or_else(|p| p.into_inner());
        last.is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// The cluster-wide secret `name`: the first node to ask stores `proposal`, every node
    /// gets the stored one.
    pub async fn shared_secret(
        &self,
        name: &str,
        proposal: [u8; 32],
    ) -> Result<[u8; 32], redis::RedisError> {
        let key = format!("quiver:secret:{name}");
        let mut conn = self.redis.clone();
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&proposal[..])
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        let stored: Vec<u8> = conn.get(&key).await?;
        stored.try_into().map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "stored secret is not 32 bytes",
            ))
        })
    }

    /// Takes this node out of the registry (at shutdown).
    pub async fn leave(&self) {
        let mut conn = self.redis.clone();
        let _: Result<(), _> = conn.del(node_key(&self.node_id)).await;
    }

    /// Where node `id` is, if it is registered.
    pub fn node(&self, id: &str) -> Option<NodeAddrs> {
        self.nodes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    /// A node's addresses: from the last heartbeat's reading, or, for a node that joined
    /// since, straight from Redis.
    pub async fn lookup(&self, id: &str) -> Option<NodeAddrs> {
        if let Some(addrs) = self.node(id) {
            return Some(addrs);
        }
        let mut conn = self.redis.clone();
        let value: Option<String> = redis::cmd("GET")
            .arg(node_key(id))
            .query_async(&mut conn)
            .await
            .ok()?;
        parse_addrs(&value?)
    }

    /// Records that `device` of `user` is connected here; returns the value to clear later.
    pub async fn set_location(&self, user: &UserId, device: DeviceId) -> Option<String> {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed);
        let value = format!("{} {epoch}", self.node_id);
        let mut conn = self.redis.clone();
        let set: Result<(), _> = conn.hset(location_key(user), device.0, &value).await;
        match set {
            Ok(()) => Some(value),
            Err(e) => {
                tracing::warn!(error = %e, "location not recorded");
                None
            }
        }
    }

    /// Removes a location written by [`Registry::set_location`], unless a newer session of
    /// the same device replaced it.
    pub async fn clear_location(&self, user: &UserId, device: DeviceId, value: &str) {
        let cleared: Result<i64, _> = self
            .clear_location
            .key(location_key(user))
            .arg(device.0)
            .arg(value)
            .invoke_async(&mut self.redis.clone())
            .await;
        if let Err(e) = cleared {
            tracing::warn!(error = %e, "location not cleared");
        }
    }

    /// The live locations of `user`'s devices: device → node id.
    pub async fn locations(
        &self,
        user: &UserId,
    ) -> Result<Vec<(DeviceId, String)>, redis::RedisError> {
        let all: HashMap<u64, String> = self.redis.clone().hgetall(location_key(user)).await?;
        let mut live = Vec::with_capacity(all.len());
        for (device, value) in all {
            let Some(node) = value.split(' ').next() else {
                continue;
            };
            // `lookup`, not the view of the last heartbeat: a node that joined since is
            // live too (its devices must hear of a logout).
            if self.lookup(node).await.is_some() {
                live.push((DeviceId(device), node.to_string()));
            }
        }
        live.sort();
        Ok(live)
    }
}

fn parse_addrs(value: &str) -> Option<NodeAddrs> {
    let (mesh, client) = value.split_once(' ')?;
    Some(NodeAddrs {
        mesh: mesh.parse().ok()?,
        client: client.parse().ok()?,
    })
}
