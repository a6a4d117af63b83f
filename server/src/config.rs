//! [`Config`]: everything a node is told at start, with defaults in code and every limit a
//! named, documented field.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A node's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id: the home recorded for users who register here. Unique in a mesh.
    pub node_id: String,
    /// Folder for sled data, dev certificates and node secrets.
    pub data_dir: PathBuf,
    /// UDP address of the client QUIC endpoint.
    pub quic_addr: SocketAddr,
    /// TCP address of the HTTPS REST API.
    pub http_addr: SocketAddr,
    /// Serve the TCP carrier (QUIC in TLS over TCP, for clients whose network blocks UDP)
    /// on `quic_addr`'s address and port number.
    pub tcp_carrier: bool,
    /// TLS certificate (PEM) for QUIC and HTTPS; dev certificates are made when unset.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) matching `cert`.
    pub key: Option<PathBuf>,
    /// How long a login token stays valid, in seconds.
    pub token_ttl_secs: u64,
    /// Memory sled may use to cache pages, in bytes (its own default is 1 GiB).
    pub storage_cache_bytes: u64,
    /// The kernel's receive and send buffers of the QUIC socket, in bytes: room for a
    /// burst from many clients at once (a full buffer drops packets, and each drop costs a
    /// sender a loss recovery). Linux caps it at `net.core.rmem_max` / `wmem_max`; the
    /// node logs what it got. Memory is used only while packets wait. 0 leaves the
    /// kernel's default.
    pub udp_buffer_bytes: usize,
    /// Let clients of protocol version 1 connect too (version 2 only otherwise), for while
    /// apps built with an older SDK are still about. Such clients cannot read a batch of
    /// receipts, so the node then writes each DELIVERED as an entry of its own, as version
    /// 1 nodes did. Set it alike on every node of a mesh, and before such clients return:
    /// batches already stored stay batches.
    pub accept_v1_clients: bool,
    /// Bounds on what a client can make the node hold.
    pub limits: Limits,
    /// The HTTPS side: connections, timeouts, password hashing.
    pub http: HttpLimits,
    /// File messages: sizes, quotas, how long blobs are kept.
    pub files: FileLimits,
    /// How long inbox entries are kept, and the files they are kept in.
    pub inbox: InboxConfig,
    /// Groups: sizes and how fast they can be made.
    pub groups: GroupLimits,
    /// Push notifications through a gateway: off unless `gateway_url` is set.
    pub push: PushConfig,
    /// Mesh mode: join a cluster of nodes. Unset, the node runs alone.
    pub mesh: Option<MeshConfig>,
}

/// How a node joins a mesh.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// Redis holding the directory, the node registry and device locations.
    pub redis_url: String,
    /// UDP address of the node-to-node QUIC endpoint (mutual TLS).
    pub mesh_addr: SocketAddr,
    /// The cluster CA (PEM): peers must present a certificate it signed, naming their
    /// node id. `cert` must be signed by it too.
    pub cluster_ca: PathBuf,
    /// The QUIC address clients are told to use for users homed here; the bound
    /// `quic_addr` when unset.
    #[serde(default)]
    pub advertise_addr: Option<SocketAddr>,
    /// How often the node renews its registration, in milliseconds.
    #[serde(default = "MeshConfig::default_heartbeat_ms")]
    pub heartbeat_ms: u64,
}

impl MeshConfig {
    fn default_heartbeat_ms() -> u64 {
        1000
    }

    /// Mesh settings with defaults for the rest.
    pub fn new(redis_url: String, mesh_addr: SocketAddr, cluster_ca: PathBuf) -> Self {
        Self {
            redis_url,
            mesh_addr,
            cluster_ca,
            advertise_addr: None,
            heartbeat_ms: Self::default_heartbeat_ms(),
        }
    }
}

/// Bounds on every resource a client can grow (DESIGN.md invariant 6).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame a client may send, in bytes (length prefix excluded).
    pub max_frame_bytes: usize,
    /// Largest sealed message body, in bytes.
    pub max_body_bytes: usize,
    /// Entries pushed to one device and not yet acknowledged; the rest waits in the inbox.
    pub push_window: u64,
    /// Bidirectional streams a client may have open at once (control + conversations).
    pub max_client_streams: u32,
    /// Conversation streams one user may have open on this node, over all its devices
    /// and connections; past it a new one is closed with `TooManyStreams`.
    pub max_conversations_per_user: u32,
    /// Connections one client address may have open on this node; past it a new one is
    /// closed with `TooManyConnections`. Generous: many phones share one carrier address.
    pub max_connections_per_address: u32,
    /// Messages in flight on one conversation stream between append and `Sent`.
    pub send_pipeline: usize,
    /// A connection with no traffic for this long is closed, in milliseconds.
    pub idle_timeout_ms: u64,
    /// A client must say Hello within this many milliseconds of connecting.
    pub hello_timeout_ms: u64,
    /// A QUIC handshake must finish within this many milliseconds of its first packet;
    /// one that does not is dropped (a half-open one costs ~25 KiB).
    pub handshake_timeout_ms: u64,
    /// TCP carrier tunnels open at once, from all addresses together (each also counts
    /// against `max_connections_per_address`); past it new ones are closed at once.
    pub max_tunnels: u32,
    /// QUIC handshakes in progress at once. Past half of it, a client whose address is
    /// not yet validated is asked to prove it (a Retry, which costs the node no state);
    /// past it, new connection attempts are refused.
    pub max_handshakes: u32,
    /// Free bytes the node leaves on its data folder's file system: below it, new
    /// chats and uploads are refused with `StorageFull`. 0 keeps no reserve.
    pub min_free_disk_bytes: u64,
    /// Whether anyone may register an account over REST: accounts are free, and each
    /// brings its own quotas. A closed node answers 403 `registration_closed`; the
    /// accounts it has keep working.
    pub registration_open: bool,
    /// Per-stream receive window, in bytes: chat frames are small.
    pub stream_receive_window: u32,
    /// What one connection may send the node beyond what the node has read, in bytes,
    /// while it uploads no file: chats are small, and with many busy senders the sum of
    /// these windows is what can wait in the node's UDP socket buffer; past that buffer
    /// the kernel drops packets (docs/PERFORMANCE.md, "A chat-sized connection window").
    pub receive_window: u32,
    /// The connection's window while it uploads a file (a file is many chats' worth, and
    /// its speed over a long path is this window per round trip).
    pub upload_receive_window: u32,
    /// Chat messages one connection may send per second, on average. Over it, a message
    /// is refused with `RateLimited` and not stored.
    pub messages_per_sec: u32,
    /// Chat messages one connection may send in a burst.
    pub message_burst: u32,
    /// Login attempts per account from one client address per minute (bursts of as
    /// many); past it 429 for that address only, so a guesser cannot lock the owner out.
    pub logins_per_minute_per_account: u32,
    /// Login attempts per account per minute over all addresses; past it each attempt
    /// waits a second first (slowed, never refused).
    pub logins_per_minute_per_account_backstop: u32,
    /// Authenticated REST requests (friends, logout) per user per minute; past it 429.
    pub requests_per_minute_per_user: u32,
    /// Logins and registrations per client address per minute (bursts of as many).
    pub logins_per_minute_per_address: u32,
}

/// The HTTPS side (REST): what clients may hold open, for how long, and how much password
/// hashing they may queue. Every bound refuses the excess at once rather than letting it
/// take the node's descriptors or memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpLimits {
    /// HTTPS connections open at once, over all clients. The node lowers it to half its
    /// open-file limit, so that QUIC, the inbox log and uploads keep descriptors. Past it
    /// a new connection is closed at once.
    pub max_connections: u32,
    /// HTTPS connections one client address may have open; past it a new one is closed
    /// at once.
    pub max_connections_per_address: u32,
    /// The TLS handshake, and each request's headers, must arrive within this many
    /// milliseconds.
    pub header_timeout_ms: u64,
    /// A connection on which nothing arrives for this many milliseconds is closed (an
    /// idle keep-alive or HTTP/2 connection, a stalled body).
    pub idle_timeout_ms: u64,
    /// A request must be answered within this many milliseconds, its body read
    /// included; past it `408`.
    pub request_timeout_ms: u64,
    /// Password hashes (argon2, 19 MiB each) computed at once; 0 means one per core.
    pub hashing_threads: u32,
    /// Logins and registrations waiting for a hashing thread; past it `503` with
    /// `Retry-After`.
    pub hashing_queue: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_address: 32,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            request_timeout_ms: 15_000,
            hashing_threads: 0,
            hashing_queue: 32,
        }
    }
}

/// Groups: every bound a member can grow. A member's chats count against their
/// connection's `messages_per_sec` like any chat, and against the group log's
/// `[inbox]` byte bounds (the group as the inbox, each member as a sender).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupLimits {
    /// Members of one group.
    pub max_members: u32,
    /// Groups one user may be in.
    pub max_groups_per_user: u32,
    /// Groups one user may make in an hour.
    pub creations_per_hour: u32,
    /// Invitations waiting for one user.
    pub max_invitations_per_user: u32,
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self {
            max_members: 10_000,
            max_groups_per_user: 500,
            creations_per_hour: 20,
            max_invitations_per_user: 100,
        }
    }
}

/// `[push]`: notifications for devices that are away, through a push gateway (a separate
/// service that holds the APNs and FCM credentials, as Matrix's Sygnal).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Where notifications are POSTed; unset, the node sends none.
    pub gateway_url: Option<String>,
    /// CA (PEM) that signed the gateway's certificate, for an `https` URL.
    pub gateway_ca: Option<PathBuf>,
    /// One request to the gateway may take this long.
    pub timeout_ms: u64,
    /// At most one notification per device per window while it stays away; the last
    /// unread count wins.
    pub coalesce_ms: u64,
    /// Notifications waiting to be worked out, at most; more are dropped (and counted).
    pub queue: usize,
    /// Requests to the gateway in flight, at most; more wait in the queue.
    pub in_flight: usize,
    /// Tries after a 5xx or a timeout, with doubling backoff from 200 ms.
    pub retries: u32,
    /// A group chat notifies the away devices of every member but the sender at once in
    /// groups of up to this many members; in larger groups (where that would cost a
    /// notice per member per chat) the members are swept at most once per
    /// `coalesce_ms` per group, for the newest chat.
    pub group_max_members: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            gateway_url: None,
            gateway_ca: None,
            timeout_ms: 5_000,
            coalesce_ms: 3_000,
            queue: 10_000,
            in_flight: 64,
            retries: 3,
            group_max_members: 256,
        }
    }
}

/// File messages: what a user may store and for how long.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileLimits {
    /// Largest file, in sealed bytes (the file plus 16 bytes per 64 KiB chunk).
    pub max_file_bytes: u64,
    /// Sealed bytes one user may keep on this node: their blobs and unfinished uploads.
    pub quota_bytes: u64,
    /// A blob stays at least this long after the last file message that names it.
    pub retention_secs: u64,
    /// An upload untouched this long, or a finished one that no message names, is removed.
    pub upload_ttl_secs: u64,
    /// How often the node looks for blobs and uploads to remove.
    pub collect_every_secs: u64,
    /// The least a file is charged to its uploader's quota, in bytes, however small: a
    /// file costs an inode and a record whatever its size.
    pub min_charge_bytes: u64,
    /// Unfinished uploads one user may have on this node; past it a new one is refused
    /// with `QuotaExceeded` (finish or let the old ones expire first).
    pub max_unfinished_uploads: u32,
    /// File transfer streams (uploads and downloads) one user may have open at once on
    /// this node; past it a new one is closed with `TooManyStreams`.
    pub max_open_transfers: u32,
    /// A transfer stream on which no byte moves for this many seconds is closed with
    /// `Unavailable` (what arrived is kept for the resume).
    pub transfer_idle_secs: u64,
}

/// Inbox retention: entries are kept in segment files, and a segment whose newest entry is
/// older than `retention_secs` is removed whole, delivered or not.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InboxConfig {
    /// An entry is kept at least this long, in seconds, and removed within about a
    /// quarter more plus `expire_every_secs`. Devices offline longer miss what was
    /// removed. 0 keeps every entry forever.
    pub retention_secs: u64,
    /// The log goes on in a new segment file once its current one holds this many bytes.
    pub segment_bytes: u64,
    /// How often the node looks for segments to remove, in seconds.
    pub expire_every_secs: u64,
    /// Chat bytes one user's inbox may hold (until retention removes them); a chat past
    /// it is refused with `QuotaExceeded`.
    pub max_bytes_per_user: u64,
    /// Chat bytes one sender may have in one user's inbox: a friend who floods fills
    /// only their own share, and the others still get through.
    pub max_bytes_per_sender: u64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            retention_secs: 30 * 24 * 3600,
            segment_bytes: 64 << 20,
            expire_every_secs: 600,
            max_bytes_per_user: 1 << 30,
            max_bytes_per_sender: 256 << 20,
        }
    }
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 << 30,
            quota_bytes: 16 << 30,
            retention_secs: 30 * 24 * 3600,
            upload_ttl_secs: 24 * 3600,
            collect_every_secs: 600,
            min_charge_bytes: 64 * 1024,
            max_unfinished_uploads: 64,
            max_open_transfers: 16,
            transfer_idle_secs: 30,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: "local".into(),
            data_dir: PathBuf::from("quiver-data"),
            quic_addr: "127.0.0.1:4433".parse().expect("valid literal"),
            http_addr: "127.0.0.1:8443".parse().expect("valid literal"),
            tcp_carrier: true,
            cert: None,
            key: None,
            token_ttl_secs: 24 * 3600,
            storage_cache_bytes: 64 * 1024 * 1024,
            udp_buffer_bytes: 4 * 1024 * 1024,
            accept_v1_clients: false,
            limits: Limits::default(),
            http: HttpLimits::default(),
            files: FileLimits::default(),
            inbox: InboxConfig::default(),
            groups: GroupLimits::default(),
            push: PushConfig::default(),
            mesh: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 32 * 1024,
            push_window: 256,
            max_client_streams: 64,
            max_conversations_per_user: 1024,
            max_connections_per_address: 4096,
            send_pipeline: 256,
            idle_timeout_ms: 30_000,
            hello_timeout_ms: 10_000,
            handshake_timeout_ms: 10_000,
            max_tunnels: 10_000,
            max_handshakes: 1024,
            min_free_disk_bytes: 256 << 20,
            registration_open: true,
            stream_receive_window: 256 * 1024,
            receive_window: 64 * 1024,
            upload_receive_window: 1024 * 1024,
            messages_per_sec: 500,
            message_burst: 1000,
            logins_per_minute_per_account: 10,
            logins_per_minute_per_account_backstop: 60,
            logins_per_minute_per_address: 60,
            requests_per_minute_per_user: 300,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A limit is zero or contradicts another.
    #[error("invalid limit: {0}")]
    Limit(&'static str),
    /// Only one of `cert` and `key` was given.
    #[error("cert and key must be given together")]
    CertWithoutKey,
    /// Mesh mode without a certificate of the cluster CA.
    #[error("mesh mode needs cert and key issued by the cluster CA")]
    MeshWithoutCert,
    /// A node id that cannot be a certificate DNS name.
    #[error("node id must be 1-63 characters of [a-z0-9-]")]
    NodeId,
}

impl Config {
    /// Checks the limits against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_frame_bytes == 0 || l.max_frame_bytes > quiver_proto::frame::MAX_FRAME_LEN {
            return Err(ConfigError::Limit("max_frame_bytes must be 1 ..= 1 MiB"));
        }
        if l.max_body_bytes + 256 > l.max_frame_bytes {
            return Err(ConfigError::Limit(
                "max_body_bytes must leave 256 bytes of frame",
            ));
        }
        if l.push_window == 0
            || l.max_client_streams < 2
            || l.send_pipeline == 0
            || l.max_conversations_per_user == 0
            || l.max_connections_per_address == 0
            || l.max_handshakes < 2
            || l.max_tunnels == 0
            || l.handshake_timeout_ms == 0
            || l.receive_window == 0
        {
            return Err(ConfigError::Limit(
                "windows and stream counts must be positive",
            ));
        }
        if l.upload_receive_window < l.receive_window {
            return Err(ConfigError::Limit(
                "upload_receive_window must be at least receive_window",
            ));
        }
        let h = &self.http;
        if h.max_connections == 0
            || h.max_connections_per_address == 0
            || h.header_timeout_ms == 0
            || h.idle_timeout_ms == 0
            || h.request_timeout_ms == 0
        {
            return Err(ConfigError::Limit(
                "http connection counts and timeouts must be positive",
            ));
        }
        let f = &self.files;
        if f.collect_every_secs == 0
            || f.max_unfinished_uploads == 0
            || f.max_open_transfers == 0
            || f.transfer_idle_secs == 0
        {
            return Err(ConfigError::Limit(
                "files: collect_every_secs, upload and transfer counts and the idle time must be positive",
            ));
        }
        if self.inbox.expire_every_secs == 0 || self.inbox.segment_bytes < 4096 {
            return Err(ConfigError::Limit(
                "inbox.expire_every_secs must be positive and inbox.segment_bytes at least 4096",
            ));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::CertWithoutKey);
        }
        let id_ok = (1..=63).contains(&self.node_id.len())
            && self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(ConfigError::NodeId);
        }
        if self.mesh.is_some() && self.cert.is_none() {
            return Err(ConfigError::MeshWithoutCert);
        }
        let p = &self.push;
        if p.timeout_ms == 0 || p.queue == 0 || p.in_flight == 0 {
            return Err(ConfigError::Limit(
                "push timeout, queue and in_flight must be positive",
            ));
        }
        Ok(())
    }
}
