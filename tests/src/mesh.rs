//! Mesh fixtures: a private `redis-server` process on a free port, a cluster CA with node
//! certificates, and nodes started in mesh mode (in this process, or as processes that a
//! test can kill).

use crate::{TestNode, TestUser};
pub use quiver_bench::cluster::{free_port, ClusterCa, RedisServer};
use quiver_server::config::MeshConfig;
use quiver_server::Config;

/// Sets `config` up as mesh node `id` of the cluster.
pub fn mesh_config(
    config: &mut Config,
    id: &str,
    ca: &ClusterCa,
    redis_url: &str,
) -> anyhow::Result<()> {
    let (cert, key) = ca.node(id)?;
    config.node_id = id.into();
    config.cert = Some(cert);
    config.key = Some(key);
    let mut mesh = MeshConfig::new(redis_url.into(), "127.0.0.1:0".parse()?, ca.ca_cert());
    mesh.heartbeat_ms = 200;
    config.mesh = Some(mesh);
    Ok(())
}

/// Redis, a cluster CA, and nodes `n1`, `n2`, … in this process.
pub struct Cluster {
    /// The cluster's Redis.
    pub redis: RedisServer,
    /// The cluster CA.
    pub ca: ClusterCa,
    /// The nodes, `nodes[0]` being `n1`.
    pub nodes: Vec<TestNode>,
}

impl Cluster {
    /// Starts Redis and `count` mesh nodes.
    pub async fn start(count: usize) -> anyhow::Result<Self> {
        Self::start_with(count, |_| {}).await
    }

    /// Starts Redis and `count` mesh nodes, each configured by `adjust` too.
    pub async fn start_with(count: usize, adjust: impl Fn(&mut Config)) -> anyhow::Result<Self> {
        let redis = RedisServer::start()?;
        let ca = ClusterCa::new("Quiver test cluster CA")?;
        let mut nodes = Vec::new();
        for i in 1..=count {
            let id = format!("n{i}");
            nodes.push(Self::node_with(&ca, &redis.url(), &id, &adjust).await?);
        }
        Ok(Self { redis, ca, nodes })
    }

    /// Starts mesh node `id` in this process.
    pub async fn node(ca: &ClusterCa, redis_url: &str, id: &str) -> anyhow::Result<TestNode> {
        Self::node_with(ca, redis_url, id, |_| {}).await
    }

    /// Starts mesh node `id` in this process, configured by `adjust` too.
    pub async fn node_with(
        ca: &ClusterCa,
        redis_url: &str,
        id: &str,
        adjust: impl Fn(&mut Config),
    ) -> anyhow::Result<TestNode> {
        let mut failed = None;
        let node = TestNode::start_with_ca(ca.ca_pem()?, |config| {
            adjust(config);
            failed = mesh_config(config, id, ca, redis_url).err();
        })
        .await;
        if let Some(e) = failed {
            return Err(e);
        }
        node
    }

    /// Node `n{i}` (1-based, as named).
    pub fn n(&self, i: usize) -> &TestNode {
        &self.nodes[i - 1]
    }

    /// Registers `name` on node `n{home}` (its home) and logs in there.
    pub async fn user(&self, home: usize, name: &str) -> anyhow::Result<TestUser> {
        self.n(home).user(name).await
    }
}
