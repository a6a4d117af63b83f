//! The mesh: node-to-node QUIC links with mutual TLS, the node registry in Redis, and the
//! three things one node asks another (see [`quiver_proto::mesh`]):
//! - **conversation** — chats for a user homed there; `Sent` comes back only from the home
//!   node, once the entry is durable there;
//! - **receipt** — DELIVERED/READ for a sender homed there;
//! - **attach** — a device connected here, of a user homed there: the home node runs the
//!   device's [`crate::feed::Feed`] and pushes through us.
//!
//! Each node dials each peer it needs over its own connection (so a pair of nodes holds two,
//! one each way) and redials when it drops. A peer that is down or unregistered makes
//! requests for its users fail with `Unavailable`, which clients retry.

mod attached;
mod group_homes;
mod registry;

pub use attached::{Attached, Hold};
pub use group_homes::GroupHomes;
pub use registry::{NodeAddrs, Registry};

use crate::net::{read_frame, varint, write_frame};
use quiver_proto::mesh::{AttachDown, MeshOpen, ReceiptAnswer};
use quiver_proto::{ErrorCode, UserId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long dialing a peer may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Keep-alive of mesh links: a silent peer is noticed within the idle timeout.
const KEEP_ALIVE: Duration = Duration::from_millis(500);
/// A mesh link with no traffic for this long is dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest frame on a mesh stream.
pub const MAX_MESH_FRAME: usize = quiver_proto::frame::MAX_FRAME_LEN;

/// One peer's link: the connection, dialed when first needed and again after it drops.
type Link = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// This node's side of the mesh.
pub struct Mesh {
    node_id: String,
    endpoint: quinn::Endpoint,
    registry: Registry,
    group_homes: GroupHomes,
    attached: Arc<Attached>,
    links: Mutex<HashMap<String, Link>>,
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The mesh endpoint could not be bound.
    #[error("mesh endpoint: {0}")]
    Bind(std::io::Error),
    /// Redis could not be reached at start.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The TLS material does not make a mesh configuration.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Streams a node may have open on its link to a peer, at most: one per remote
/// conversation and per remote device.
pub const MAX_LINK_STREAMS: u32 = 100_000;

/// Streams a new link is offered; the receiving side offers more as they are used.
pub const FIRST_LINK_OFFER: u32 = 1024;

/// The transport of mesh links: `offer` streams the peer may open (only the dialing side
/// opens them), quick to notice a dead peer.
fn transport(offer: u32) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(offer.into())
        .max_concurrent_uni_streams(0u32.into())
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("3 s fits")));
    Arc::new(transport)
}

impl Mesh {
    /// Binds the mesh endpoint and makes the registry; the caller starts
    /// [`serve`] and the heartbeat.
    pub fn bind(
        node_id: &str,
        mesh_addr: SocketAddr,
        tls: (rustls::ServerConfig, rustls::ClientConfig),
        redis: redis::aio::ConnectionManager,
        client_addr: SocketAddr,
        heartbeat: Duration,
    ) -> Result<Arc<Mesh>, MeshError> {
        let quic = |e: quinn::crypto::rustls::NoInitialCipherSuite| {
            crate::tls::TlsError::Quic(e.to_string())
        };
        let server_crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls.0).map_err(quic)?;
        let client_crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls.1).map_err(quic)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport(FIRST_LINK_OFFER));
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport(0));
        let mut endpoint = quinn::Endpoint::server(server, mesh_addr).map_err(MeshError::Bind)?;
        endpoint.set_default_client_config(client);
        let own = NodeAddrs {
            mesh: endpoint.local_addr().map_err(MeshError::Bind)?,
            client: client_addr,
        };
        Ok(Arc::new(Mesh {
            node_id: node_id.to_string(),
            endpoint,
            group_homes: GroupHomes::new(redis.clone(), node_id),
            registry: Registry::new(redis, node_id, own, heartbeat),
            attached: Arc::default(),
            links: Mutex::new(HashMap::new()),
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The mesh endpoint.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// The registry of nodes and locations.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Where groups live.
    pub fn group_homes(&self) -> &GroupHomes {
        &self.group_homes
    }

    /// Sessions on other nodes attached here for the groups this node homes.
    pub fn attached(&self) -> &Arc<Attached> {
        &self.attached
    }

    /// A live connection to `node`, dialing it if needed.
    async fn connection(&self, node: &str) -> Result<quinn::Connection, ErrorCode> {
        let link = self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node.to_string())
            .or_default()
            .clone();
        let mut link = link.lock().await;
        if let Some(conn) = link.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(conn.clone());
        }
        let Some(addrs) = self.registry.lookup(node).await else {
            tracing::debug!(node, "peer not registered");
            return Err(ErrorCode::Unavailable);
        };
        let connecting = self
            .endpoint
            .connect(addrs.mesh, node)
            .map_err(|e| unavailable(node, &e))?;
        let conn = match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(unavailable(node, &e)),
            Err(_) => return Err(unavailable(node, &"dial timed out")),
        };
        tracing::info!(node, addr = %addrs.mesh, "mesh link up");
        *link = Some(conn.clone());
        Ok(conn)
    }

    /// Opens a stream to `node` and says what it is for.
    pub async fn open(
        &self,
        node: &str,
        first: &MeshOpen,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ErrorCode> {
        let conn = self.connection(node).await?;
        let (mut send, recv) = conn.open_bi().await.map_err(|e| unavailable(node, &e))?;
        write_frame(&mut send, first)
            .await
            .map_err(|e| unavailable(node, &e))?;
        Ok((send, recv))
    }

    /// Sends `node` a one-answer request (a receipt for `owner`'s inbox, which is durable
    /// when this returns, a logout, or keeping a blob); returns its answer.
    pub async fn ask(&self, node: &str, request: MeshOpen) -> Result<(), ErrorCode> {
        match self.request(node, &request).await? {
            ReceiptAnswer::Stored => Ok(()),
            ReceiptAnswer::Refused { code } => Err(code),
        }
    }

    /// Sends `node` a request answered with one frame, and reads that frame.
    pub async fn request<T: serde::de::DeserializeOwned>(
        &self,
        node: &str,
        request: &MeshOpen,
    ) -> Result<T, ErrorCode> {
        let (mut send, mut recv) = self.open(node, request).await?;
        let _ = send.finish();
        read_frame(&mut recv, MAX_MESH_FRAME)
            .await
            .map_err(|e| unavailable(node, &e))
    }

    /// Asks every other node where `user` has a live session (of `device`, or of any
    /// device) to close it; returns once each has answered or failed.
    pub async fn logout(&self, user: &UserId, device: Option<quiver_proto::DeviceId>) {
        let nodes: std::collections::BTreeSet<String> = match self.registry.locations(user).await {
            Ok(locations) => locations
                .into_iter()
                .filter(|(d, node)| {
                    device.is_none_or(|device| device == *d) && *node != self.node_id
                })
                .map(|(_, node)| node)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "locations unknown; sessions elsewhere stay up");
                return;
            }
        };
        for node in nodes {
            let request = MeshOpen::Logout {
                user: user.clone(),
                device,
            };
            // Same one-frame answer as a receipt.
            if let Err(code) = self.ask(&node, request).await {
                tracing::warn!(%node, %code, "could not close sessions on a peer");
            }
        }
    }

    /// Attaches a device of `user` to its feed on `node`; returns the streams and the
    /// device's cursor there.
    pub async fn attach(
        &self,
        node: &str,
        user: &UserId,
        device: quiver_proto::DeviceId,
    ) -> Result<(quinn::SendStream, quinn::RecvStream, quiver_proto::Seq), ErrorCode> {
        let first = MeshOpen::Attach {
            user: user.clone(),
            device,
        };
        let (send, mut recv) = self.open(node, &first).await?;
        match read_frame(&mut recv, MAX_MESH_FRAME).await {
            Ok(AttachDown::Welcome { cursor }) => Ok((send, recv, cursor)),
            Ok(AttachDown::Error { code, .. }) => Err(code),
            Ok(AttachDown::Entry(_)) => Err(ErrorCode::Internal),
            Err(e) => Err(unavailable(node, &e)),
        }
    }

    /// Leaves the registry and closes every link.
    pub async fn leave(&self) {
        self.registry.leave().await;
        self.endpoint
            .close(varint(ErrorCode::ShuttingDown), b"node shutting down");
    }
}

fn unavailable(node: &str, e: &dyn std::fmt::Display) -> ErrorCode {
    tracing::debug!(node, error = %e, "peer unavailable");
    ErrorCode::Unavailable
}

/// Renews the registration every `period`, for as long as the task runs.
pub async fn heartbeat(mesh: Arc<Mesh>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match mesh.registry.heartbeat().await {
            Ok(()) if failing => {
                tracing::info!("redis reachable again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "heartbeat failed; keeping the last view of the mesh");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
