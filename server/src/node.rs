//! [`Node`]: starts every part of a node on its configuration, and stops them in order.

use crate::auth::TokenKey;
use crate::blobs::{BlobError, Blobs, Collected};
use crate::config::{Config, ConfigError};
use crate::directory::{Directory, DirectoryError, RedisDirectory, SledDirectory};
use crate::disk::DiskBudget;
use crate::groups::Groups;
use crate::hasher::Hasher;
use crate::inbox::Logs;
use crate::inbox::{Expired, Inbox, InboxError};
use crate::listener::ListenerError;
use crate::live::Live;
use crate::mesh::{Mesh, MeshError};
use crate::metrics::Metrics;
use crate::push::gateway::GatewayError;
use crate::push::Pusher;
use crate::rest_limits::RestLimits;
use crate::router::Router;
use crate::shared::Shared;
use crate::tls::{Identity, TlsError};
use crate::upload_window::{Sizes, UploadWindows};
use quiver_proto::ErrorCode;
use quiver_proto::UserId;
use ring::rand::{SecureRandom, SystemRandom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The push gateway's client could not be made.
    #[error(transparent)]
    Push(#[from] GatewayError),
    /// Dev certificates could not be made.
    #[error(transparent)]
    Certs(#[from] quiver_certs::CertError),
    /// TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The QUIC endpoint could not start.
    #[error(transparent)]
    Listener(#[from] ListenerError),
    /// The data folder or a socket failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// sled could not be opened.
    #[error("opening storage: {0}")]
    Storage(#[from] sled::Error),
    /// The inbox could not be opened.
    #[error(transparent)]
    Inbox(#[from] InboxError),
    /// The directory could not be opened.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The mesh could not start.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    /// The blob store could not be opened.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// The data folder or the key cannot be kept private.
    #[error(transparent)]
    Private(#[from] crate::private::PrivateError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let context = context.into();
    move |source| NodeError::Io { context, source }
}

/// A running node.
pub struct Node {
    quic_addr: SocketAddr,
    http_addr: SocketAddr,
    ca_cert: Option<PathBuf>,
    endpoint: quinn::Endpoint,
    stop_http: watch::Sender<bool>,
    quic_task: JoinHandle<()>,
    /// The TCP carrier's accept loop, when it is served.
    tunnel_task: Option<JoinHandle<()>>,
    http_task: JoinHandle<()>,
    commit_task: JoinHandle<()>,
    /// Makes group log appends durable.
    group_commit_task: JoinHandle<()>,
    /// Mesh mode: the mesh endpoint's accept loop and the registry heartbeat.
    mesh_tasks: Vec<JoinHandle<()>>,
    /// Removes blobs nothing refers to and inbox segments past retention, periodically.
    housekeeping: Vec<JoinHandle<()>>,
    db: sled::Db,
    shared: Arc<Shared>,
}

impl Node {
    /// Starts a node: storage, TLS, the QUIC endpoint and the REST API.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        config.validate()?;
        let data = config.data_dir.clone();
        // Everything the node writes is its user's only (SECURITY.md, "the data folder").
        crate::private::restrict_umask();
        crate::private::private_folder(&data)?;
        crate::private::tighten_below(&data)?;
        let (cert, key, ca_cert) = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => {
                crate::private::check_key(key)?;
                (cert.clone(), key.clone(), None)
            }
            _ => {
                let dev = quiver_certs::ensure_dev_certs(&data.join("certs"))?;
                (dev.node_cert, dev.node_key, Some(dev.ca_cert))
            }
        };
        let identity = Identity::load(&cert, &key)?;
        let mut token_secret = secret(&data.join("secrets").join("token.key"))?;
        let reset_secret = secret(&data.join("secrets").join("stateless-reset.key"))?;

        let db = open_db(&data.join("db"), config.storage_cache_bytes).await?;
        let metrics = Arc::new(Metrics::default());
        let (inbox, commit_task) = Inbox::open(&db, &data, &config.inbox, metrics.clone())?;
        let (group_log, group_commit_task) =
            Inbox::open_logs(Logs::Groups, &db, &data, &config.inbox, metrics.clone())?;
        let groups = Arc::new(Groups::open(&db, group_log, config.groups.clone())?);
        let blobs = Arc::new(Blobs::open(&db, &data.join("blobs"), config.files.clone())?);
        let tunnels = Arc::new(crate::carrier::Tunnels::default());
        let (endpoint, tunnel_listener) =
            crate::listener::endpoint(&config, &identity, &reset_secret, tunnels.clone())?;
        let quic_addr = endpoint.local_addr().map_err(io("quic local address"))?;

        let (directory, mesh): (Arc<dyn Directory>, _) = match &config.mesh {
            None => (Arc::new(SledDirectory::open(&db, &config.node_id)?), None),
            Some(mc) => {
                // One multiplexed connection for the directory and the registry.
                let redis = crate::directory::connect_redis(&mc.redis_url)
                    .await
                    .map_err(MeshError::from)?;
                let directory = RedisDirectory::new(redis.clone());
                let heartbeat = Duration::from_millis(mc.heartbeat_ms);
                let advertised = mc.advertise_addr.unwrap_or(quic_addr);
                let tls = identity.mesh(&mc.cluster_ca)?;
                let mesh = Mesh::bind(
                    &config.node_id,
                    mc.mesh_addr,
                    tls,
                    redis,
                    advertised,
                    heartbeat,
                )?;
                mesh.registry().heartbeat().await.map_err(MeshError::from)?;
                // Any node must verify any node's tokens without a lookup: one key for all.
                token_secret = mesh
                    .registry()
                    .shared_secret("token-key", token_secret)
                    .await
                    .map_err(MeshError::from)?;
                (Arc::new(directory), Some(mesh))
            }
        };
        let tcp = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .map_err(io(format!("binding http {}", config.http_addr)))?;
        let http_addr = tcp.local_addr().map_err(io("http local address"))?;

        let live = Live::default();
        let sources = crate::push::Sources {
            feeds: live.feeds.clone(),
            inbox: inbox.clone(),
            group_unread: {
                let groups = groups.clone();
                Box::new(move |group, device| groups.unread(group, device))
            },
            directory: directory.clone(),
            metrics: metrics.clone(),
        };
        let forward = mesh
            .clone()
            .map(|mesh| notice_forward(mesh, metrics.clone()));
        let (push, push_task) = match Pusher::start(&config.push, sources, forward)? {
            Some((pusher, task)) => (Some(pusher), Some(task)),
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            router: Router::new(
                inbox,
                blobs.clone(),
                directory.clone(),
                config.limits.max_body_bytes,
                mesh.clone(),
                metrics.clone(),
                Arc::new(DiskBudget::new(
                    config.data_dir.clone(),
                    config.limits.min_free_disk_bytes,
                )),
            )
            .batch_receipts(!config.accept_v1_clients),
            blobs,
            directory,
            tokens: TokenKey::new(&token_secret),
            limits: RestLimits::new(&config.limits),
            uploads: UploadWindows::new(Sizes {
                chat: config.limits.receive_window,
                upload: config.limits.upload_receive_window,
            }),
            hasher: Hasher::new(
                config.http.hashing_threads as usize,
                config.http.hashing_queue as usize,
            ),
            config,
            quic_addr,
            metrics: metrics.clone(),
            live,
            groups,
            presence: crate::presence::Presence::default(),
            push,
            tunnels: tunnels.clone(),
            mesh_forwards: Arc::new(tokio::sync::Semaphore::new(crate::presence_mesh::FORWARDS)),
        });
        let mut mesh_tasks = Vec::new();
        if let (Some(mesh), Some(mc)) = (&mesh, &shared.config.mesh) {
            let serve = crate::mesh_serve::serve(mesh.endpoint().clone(), shared.clone());
            mesh_tasks.push(tokio::spawn(serve));
            let period = Duration::from_millis(mc.heartbeat_ms);
            mesh_tasks.push(tokio::spawn(crate::mesh::heartbeat(mesh.clone(), period)));
            tracing::info!(node = %mesh.node_id(), mesh_addr = ?mesh.endpoint().local_addr(), "joined the mesh");
        }
        let mut housekeeping = vec![
            tokio::spawn(periodically(
                Arc::downgrade(&shared),
                Duration::from_secs(shared.config.files.collect_every_secs),
                "collecting blobs",
                |shared| collect_now(shared).map(drop).map_err(|e| e.to_string()),
            )),
            tokio::spawn(periodically(
                Arc::downgrade(&shared),
                Duration::from_secs(shared.config.inbox.expire_every_secs),
                "inbox retention",
                |shared| {
                    expire_now(shared, SystemTime::now())
                        .map(drop)
                        .map_err(|e| e.to_string())
                },
            )),
        ];
        housekeeping.extend(push_task);
        if shared.push.is_some() {
            let sweeps = crate::group_push::run(Arc::downgrade(&shared), shared.groups.clone());
            housekeeping.push(tokio::spawn(sweeps));
        }
        let quic_task = tokio::spawn(crate::listener::serve(endpoint.clone(), shared.clone()));
        let mut tunnel_task = None;
        if let Some(listener) = tunnel_listener {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(io("tcp carrier listener"))?;
            let limits = &shared.config.limits;
            let limits = crate::carrier::TunnelLimits {
                per_address: limits.max_connections_per_address,
                total: limits.max_tunnels,
                handshake: Duration::from_millis(limits.handshake_timeout_ms),
                idle: Duration::from_millis(limits.idle_timeout_ms),
            };
            let tls = Arc::new(identity.tunnel()?);
            tunnel_task = Some(tokio::spawn(crate::carrier::serve(
                listener, tls, tunnels, limits,
            )));
        }
        let (stop_http, stopped) = watch::channel(false);
        let app = crate::http::app(shared.clone());
        let http_task = tokio::spawn(crate::https::serve(
            tcp,
            identity.https()?,
            app,
            shared.config.http.clone(),
            metrics.clone(),
            stopped,
        ));
        tracing::info!(%quic_addr, %http_addr, "node started");
        Ok(Node {
            quic_addr,
            http_addr,
            ca_cert,
            endpoint,
            stop_http,
            quic_task,
            tunnel_task,
            http_task,
            commit_task,
            group_commit_task,
            mesh_tasks,
            housekeeping,
            db,
            shared,
        })
    }

    /// The bound QUIC address.
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The bound HTTPS address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The dev CA certificate that clients must trust, when the node made its own certs.
    pub fn ca_cert(&self) -> Option<&Path> {
        self.ca_cert.as_deref()
    }

    /// Sessions that passed Hello since the node started.
    pub fn sessions_opened(&self) -> u64 {
        self.shared.metrics.sessions_opened.load(Ordering::Relaxed)
    }

    /// Entries pushed to devices and not yet acknowledged, over all live sessions.
    pub fn push_backlog(&self) -> u64 {
        self.shared.metrics.push_backlog.load(Ordering::Relaxed)
    }

    /// Chat messages refused for going over a connection's rate limit since start.
    pub fn rate_limited(&self) -> u64 {
        self.shared.metrics.rate_limited.load(Ordering::Relaxed)
    }

    /// Conversation streams open now, over all connections.
    pub fn open_conversations(&self) -> u64 {
        self.shared
            .metrics
            .open_conversations
            .load(Ordering::Relaxed)
    }

    /// The node's counters and gauges, as `GET /metrics` shows them.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The bound mesh address, in mesh mode.
    pub fn mesh_addr(&self) -> Option<SocketAddr> {
        let mesh = self.shared.router.mesh()?;
        mesh.endpoint().local_addr().ok()
    }

    /// Where this node last saw mesh peer `id` registered (at its latest heartbeat), in
    /// mesh mode.
    pub fn mesh_peer(&self, id: &str) -> Option<crate::mesh::NodeAddrs> {
        self.shared.router.mesh()?.registry().node(id)
    }

    /// Where `user`'s devices are connected, from Redis (mesh mode only): device → node.
    pub async fn locations(&self, user: &UserId) -> Option<Vec<(quiver_proto::DeviceId, String)>> {
        let mesh = self.shared.router.mesh()?;
        mesh.registry().locations(user).await.ok()
    }

    /// Removes blobs nothing refers to any more and abandoned uploads now (the node also
    /// does it every `files.collect_every_secs`).
    pub fn collect_blobs(&self) -> Result<Collected, BlobError> {
        collect_now(&self.shared)
    }

    /// Applies inbox retention as if it were `now` (the node also does it every
    /// `inbox.expire_every_secs`, at the real time).
    pub fn expire_inbox(&self, now: SystemTime) -> Result<Expired, InboxError> {
        expire_now(&self.shared, now)
    }

    /// Sealed file bytes charged to `user`'s quota on this node.
    pub fn file_usage(&self, user: &UserId) -> u64 {
        self.shared.blobs.usage(user)
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Stops the node in three steps: stop accepting and close connections with
    /// `ShuttingDown` (clients resume from their cursors elsewhere or later), let sessions
    /// wind down within a bound, then flush storage.
    pub async fn shutdown(self) {
        let bound = Duration::from_secs(5);
        let _ = self.stop_http.send(true);
        if let Some(mesh) = self.shared.router.mesh() {
            mesh.leave().await;
        }
        for task in &self.mesh_tasks {
            task.abort();
        }
        for task in &self.housekeeping {
            task.abort();
        }
        self.endpoint.close(
            crate::net::varint(ErrorCode::ShuttingDown),
            b"node shutting down",
        );
        let _ = tokio::time::timeout(bound, self.quic_task).await;
        let _ = tokio::time::timeout(bound, self.http_task).await;
        let _ = tokio::time::timeout(bound, self.endpoint.wait_idle()).await;
        self.shared.tunnels.close();
        if let Some(task) = self.tunnel_task {
            // Its listener is closed once it returns: a node started next on the same
            // port can bind it.
            let _ = tokio::time::timeout(bound, task).await;
        }
        drop(self.shared);
        if let Err(e) = crate::sled_flush::flush(&self.db).await {
            tracing::error!(error = %e, "final flush failed");
        }
        // The flush task ends once the last inbox handle is gone.
        let _ = tokio::time::timeout(bound, self.commit_task).await;
        let _ = tokio::time::timeout(bound, self.group_commit_task).await;
        tracing::info!("node stopped");
    }
}

/// Push notices for users homed on other nodes go there over the mesh
/// ([`crate::group_push::pass_on`]), a bounded number at once; past it they are dropped and
/// counted as the notifier's own queue does.
fn notice_forward(mesh: Arc<Mesh>, metrics: Arc<Metrics>) -> crate::push::Forward {
    let room = Arc::new(tokio::sync::Semaphore::new(crate::presence_mesh::FORWARDS));
    Box::new(move |node, notice| {
        if notice.group.is_none() {
            return;
        }
        let Ok(permit) = room.clone().try_acquire_owned() else {
            metrics.push_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (mesh, metrics) = (mesh.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(code) = crate::group_push::pass_on(&mesh, &node, notice).await {
                tracing::debug!(%node, %code, "push notice not passed on");
                metrics.push_dropped.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    })
}

fn collect_now(shared: &Shared) -> Result<Collected, BlobError> {
    let collected = shared.blobs.collect(crate::blobs::now_ms())?;
    let removed = collected.blobs + collected.uploads;
    if removed > 0 {
        tracing::info!(?collected, "removed unreferenced files");
        shared
            .metrics
            .blobs_collected
            .fetch_add(removed, Ordering::Relaxed);
    }
    Ok(collected)
}

/// Inbox retention as of `now`, logged when it removed anything.
fn expire_now(shared: &Shared, now: SystemTime) -> Result<Expired, InboxError> {
    let expired = shared.router.inbox().expire(now)?;
    if expired.segments > 0 {
        tracing::info!(?expired, "removed inbox entries past retention");
    }
    let gone = shared.groups.log().expire(now)?;
    if gone.segments > 0 {
        tracing::info!(expired = ?gone, "removed group entries past retention");
    }
    Ok(expired)
}

/// Runs `job` every `period`, off the runtime's threads, while the node runs.
async fn periodically(
    shared: std::sync::Weak<Shared>,
    period: Duration,
    what: &'static str,
    job: fn(&Shared) -> Result<(), String>,
) {
    loop {
        tokio::time::sleep(period).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let outcome = tokio::task::spawn_blocking(move || job(&shared)).await;
        if let Ok(Err(e)) = outcome {
            tracing::error!(error = %e, job = what, "housekeeping failed");
        }
    }
}

/// Opens sled, waiting a little if a previous owner of the folder is still letting go.
async fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, NodeError> {
    let config = sled::Config::new().path(path).cache_capacity(cache_bytes);
    let mut tries = 0;
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if tries < 50 => {
                tracing::debug!(error = %e, "storage busy, retrying");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads a 32-byte secret, making it (readable by the owner only) on first use.
fn secret(path: &Path) -> Result<[u8; 32], NodeError> {
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(secret) = bytes.try_into() {
            return Ok(secret);
        }
        tracing::warn!(path = %path.display(), "secret has the wrong length; making a new one");
    }
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| io("randomness")(std::io::Error::other("no system randomness")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    file.write_all(&secret)
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(secret)
}
