//! [`ConnectOptions`]: where the node is, who the client is, and the timings that suit a
//! phone on a mobile network.

use crate::group_keys::GroupKeys;
use crate::seal::FriendKey;
use quiver_proto::datagram::PresenceState;
use quiver_proto::{GroupId, Seq, UserId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How to reach a node, who to be, and how to behave on a mobile network.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The node's QUIC address (from login: `LoginResponse::quic_addr`).
    pub addr: SocketAddr,
    /// Name to verify in the node's certificate; the address's IP when `None`.
    pub server_name: Option<String>,
    /// PEM of the CA that signed the node's certificate.
    pub ca_pem: String,
    /// Token from login.
    pub token: String,
    /// The highest contiguous `seq` the app has already processed, if it keeps one
    /// ([`crate::Client::cursor`] from an earlier run). The node may push such entries again after
    /// a crash; the SDK acknowledges them without showing them twice.
    pub cursor: Option<Seq>,
    /// Friendship keys, by friend.
    pub keys: HashMap<UserId, FriendKey>,
    /// Group keys, by group ([`GroupKeys::from_info`]): given before connecting, so the
    /// entries pushed at once can be opened.
    pub group_keys: HashMap<GroupId, GroupKeys>,
    /// Where the client fetches a group's keys by itself (with `token`) when an entry
    /// names an epoch it has no key for — after a removal or a leave started a new one.
    /// Without it, the app gives new keys with [`crate::Client::set_group_keys`].
    pub key_source: Option<crate::Rest>,
    /// QUIC keep-alive interval. 15 s costs a phone about 8 small packets a minute (4 PINGs
    /// and their ACKs) and keeps typical carrier NAT bindings (30 s and up) open.
    pub keep_alive: Duration,
    /// A connection silent for this long is dead (the node's own limit may be lower).
    pub idle_timeout: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failed attempt, with ±50 % jitter.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// A written message with no answer after this long is written again (same id). This
    /// is also how fast a client waiting for SENT notices a node that died: the rewrite
    /// draws a stateless reset from the restarted node, or goes unanswered.
    pub resend_after: Duration,
    /// A conversation stream with nothing waiting for `Sent` for this long is closed (the
    /// node allows a connection only so many open streams); the next message opens a new
    /// one. When a new conversation is waiting for a stream, streams with nothing waiting
    /// are closed at once.
    pub close_idle_streams_after: Duration,
    /// Where the client keeps its outbox, history, keys and cursor across restarts. With
    /// one, `send` returns only once the message is in the store, and messages the last
    /// run left without `Sent` go out again at connect; keys and cursor not given here
    /// come from it.
    pub store: Option<crate::Store>,
    /// Presence to show friends from each connection (`Offline` hides you); with it the
    /// client also receives friends' presence and typing ([`crate::Event::Presence`],
    /// [`crate::Event::Typing`]). `None`: neither.
    pub presence: Option<PresenceState>,
    /// Follow the machine's network (on by default): when the path to the node changes
    /// (Wi-Fi gone, back, a new default route), move the connection to it at once, as
    /// [`crate::Client::rebind`] does, and cut a reconnect wait short. Off only for
    /// processes that hold many clients (benchmarks).
    pub watch_network: bool,
    /// Where UDP does not get through, carry the connection over TLS on TCP to the same
    /// address and port (on by default): a connection attempt with no answer over UDP after
    /// `fallback_after` goes on over TCP, and a live one moves there when UDP stops
    /// answering. It moves back when a probe finds UDP working again.
    pub tcp_fallback: bool,
    /// Carry the connection over TCP only, never UDP: for a network known to block UDP
    /// (an app setting), and for tests of the TCP carrier.
    pub tcp_only: bool,
    /// How long a connection attempt waits for UDP before going on over TCP.
    pub fallback_after: Duration,
    /// How often a client on TCP probes whether UDP works again (two 16-byte packets).
    pub udp_probe_every: Duration,
}

impl ConnectOptions {
    /// The name to verify in the node's certificate: `server_name`, or the address's IP.
    pub(crate) fn name_to_verify(&self) -> String {
        self.server_name
            .clone()
            .unwrap_or_else(|| self.addr.ip().to_string())
    }

    /// Options with mobile-friendly defaults.
    pub fn new(addr: SocketAddr, ca_pem: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            addr,
            server_name: None,
            ca_pem: ca_pem.into(),
            token: token.into(),
            cursor: None,
            keys: HashMap::new(),
            group_keys: HashMap::new(),
            key_source: None,
            keep_alive: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            resend_after: Duration::from_secs(3),
            close_idle_streams_after: Duration::from_secs(10),
            store: None,
            presence: None,
            watch_network: true,
            tcp_fallback: true,
            tcp_only: false,
            fallback_after: Duration::from_millis(250),
            udp_probe_every: Duration::from_secs(30),
        }
    }
}
