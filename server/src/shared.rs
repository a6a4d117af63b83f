//! [`Shared`]: the state every part of a running node reads — routing, storage, the
//! directory, limits, metrics, what is connected. It lives at the bottom: the parts that
//! serve clients, peers and REST calls use it; [`crate::node`] builds it and owns it; this
//! module knows none of them.

use crate::auth::TokenKey;
use crate::blobs::Blobs;
use crate::carrier::Tunnels;
use crate::config::Config;
use crate::directory::Directory;
use crate::groups::Groups;
use crate::hasher::Hasher;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::push::Pusher;
use crate::rest_limits::RestLimits;
use crate::router::Router;
use crate::upload_window::UploadWindows;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the node's parts share.
pub struct Shared {
    pub(crate) router: Router,
    /// Sealed file bytes kept here.
    pub(crate) blobs: Arc<Blobs>,
    pub(crate) directory: Arc<dyn Directory>,
    pub(crate) tokens: TokenKey,
    pub(crate) config: Config,
    /// The QUIC address clients are told to connect to.
    pub(crate) quic_addr: SocketAddr,
    /// Counters and gauges for operators (`GET /metrics`) and tests.
    pub(crate) metrics: Arc<Metrics>,
    /// REST rate limits: logins, registrations, authenticated requests.
    pub(crate) limits: RestLimits,
    /// Password hashing, a few at a time.
    pub(crate) hasher: Hasher,
    /// Connections, conversations and sessions open now.
    pub(crate) live: Live,
    /// The groups homed here.
    pub(crate) groups: Arc<Groups>,
    /// What each user shows (in memory only).
    pub(crate) presence: Presence,
    /// Push notifications for away devices; `None` without a gateway.
    pub(crate) push: Option<Pusher>,
    /// The TCP carrier's open tunnels (which real address each stands for).
    pub(crate) tunnels: Arc<Tunnels>,
    /// Typing and presence forwards to other mesh nodes on their way
    /// ([`crate::presence_mesh`]).
    pub(crate) mesh_forwards: Arc<tokio::sync::Semaphore>,
    /// File uploads running, by connection: they widen its receive window.
    pub(crate) uploads: UploadWindows,
}
