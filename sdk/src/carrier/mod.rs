//! The client's two carriers under one QUIC connection: UDP, or QUIC packets tunnelled
//! through TLS over TCP where a network blocks UDP (docs/PROTOCOL.md 3.7).
//!
//! The seam is the endpoint's socket, [`ClientSocket`]: quinn sends to the node and reads
//! from it, and which carrier the packets take is decided below it. Moving carriers is
//! therefore a path change to QUIC, as moving from Wi-Fi to 4G is: the same connection,
//! its streams, its outbox and its cursor go on, and the node migrates it.
//!
//! When to move ([`follow`]): a connection attempt that has heard nothing over UDP after
//! `fallback_after` (~250 ms, RFC 8305 style) goes on over TCP; a live connection whose
//! UDP packets go unanswered for a second sends a UDP probe, and moves to TCP if the node
//! does not echo it either. On TCP, a probe every `udp_probe_every` (30 s) tells when UDP
//! works again, and the connection moves back.

mod tunnel;

use quinn::udp::Transmit;
use quinn::AsyncUdpSocket;
use quiver_carrier::{CarrierSocket, Inbound, Router};
use quiver_proto::carrier::{PROBE_LEN, PROBE_MAGIC};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// The endpoint's socket: UDP, or the tunnel when the carrier says so.
pub(crate) type ClientSocket = CarrierSocket<Carrier>;

/// The unspecified address of `addr`'s family, port 0: the OS picks the source, per
/// packet, from the routing table.
pub(crate) fn unspecified(addr: SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    }
}

/// What the client asks of the kernel for its UDP socket's receive buffer. The default
/// (208 KiB on Linux) holds about 90 full-size packets: a node's burst to a busy app —
/// a window of large messages, or a backlog after reconnecting — overflows it, and each
/// dropped packet costs a retransmission and a congestion window cut (docs/PERFORMANCE.md,
/// "The clients' receive buffer"). quic-go asks for 7 MiB for the same reason. The kernel
/// caps it (`net.core.rmem_max` on Linux) and it costs memory only while packets wait.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// A UDP socket for talking to `server`, bound to the unspecified address of its family,
/// its receive buffer sized as [`UDP_RECEIVE_BUFFER`] (best effort: the kernel's own
/// size stays where it refuses).
pub(crate) fn bind_udp(server: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(unspecified(server))?;
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::debug!(error = %e, "the UDP receive buffer keeps the kernel's size");
    }
    Ok(socket)
}

/// UDP unanswered this long makes the client probe whether UDP still works.
const SUSPECT_AFTER: Duration = Duration::from_secs(1);

/// How long a probe's echo may take.
const PROBE_WAIT: Duration = Duration::from_secs(1);

/// How long a tunnel stays open after moving back to UDP, for packets on their way.
const TUNNEL_GRACE: Duration = Duration::from_secs(5);

/// After a tunnel could not be opened, TCP is not tried again for this long: a lossy
/// UDP path (no TCP behind it) is not pestered, and a node that restarts behind a
/// UDP-blocking firewall is found again over TCP soon after it is back.
const TCP_COOLDOWN: Duration = Duration::from_secs(5);

/// Packets from the tunnel waiting for quinn.
const INBOUND_QUEUE: usize = 1024;

/// Which carrier the client is on, and what it knows of UDP.
pub(crate) struct Carrier {
    me: Weak<Carrier>,
    server: SocketAddr,
    server_name: String,
    tls: Arc<rustls::ClientConfig>,
    /// The UDP socket now (rebinding replaces it).
    udp: Mutex<Arc<dyn AsyncUdpSocket>>,
    on_tcp: AtomicBool,
    tunnel: Mutex<Option<tunnel::Handle>>,
    inbound_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    inbound: Arc<Inbound>,
    /// Since when packets sent over UDP have had no answer over UDP, as nanoseconds after
    /// `epoch` plus one; 0 when nothing waits. An atomic: every packet touches it.
    udp_unanswered: AtomicU64,
    epoch: Instant,
    /// Woken when UDP packets start waiting for an answer, and when a probe is echoed.
    udp_news: Notify,
    probe_echoed: AtomicBool,
    /// Moves between carriers so far (for tests and statistics).
    moves: AtomicU64,
    /// When a tunnel last failed to open: TCP is not tried again for a while.
    tcp_failed: Mutex<Option<Instant>>,
    /// On TCP for good ([`crate::ConnectOptions::tcp_only`]).
    pinned: AtomicBool,
}

impl fmt::Debug for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Carrier")
            .field("server", &self.server)
            .field("on_tcp", &self.on_tcp)
            .finish_non_exhaustive()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Carrier {
    /// A carrier to `server` starting on UDP with `udp`; tunnels verify `server_name`
    /// with the roots of `ca_pem`.
    pub(crate) fn new(
        server: SocketAddr,
        server_name: String,
        ca_pem: &str,
        udp: Arc<dyn AsyncUdpSocket>,
    ) -> Result<Arc<Self>, String> {
        let tls = crate::tls::rustls_config(ca_pem, &[quiver_proto::carrier::TUNNEL_ALPN])?;
        let (inbound_tx, inbound) = Inbound::new(INBOUND_QUEUE);
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            server,
            server_name,
            tls: Arc::new(tls),
            udp: Mutex::new(udp),
            on_tcp: AtomicBool::new(false),
            tunnel: Mutex::new(None),
            inbound_tx,
            inbound,
            udp_unanswered: AtomicU64::new(0),
            epoch: Instant::now(),
            udp_news: Notify::new(),
            probe_echoed: AtomicBool::new(false),
            moves: AtomicU64::new(0),
            tcp_failed: Mutex::new(None),
            pinned: AtomicBool::new(false),
        }))
    }

    /// The socket quinn uses: this carrier over `udp` (a new one after a rebind). A new
    /// socket means a new path: a tunnel opened on the old one is closed, and the next
    /// packet opens another.
    pub(crate) fn socket(self: &Arc<Self>, udp: Arc<dyn AsyncUdpSocket>) -> Arc<ClientSocket> {
        *lock(&self.udp) = udp.clone();
        self.udp_unanswered.store(0, Ordering::Relaxed);
        lock(&self.tunnel).take();
        Arc::new(CarrierSocket::new(udp, self.clone(), self.inbound.clone()))
    }

    /// A new socket over the same UDP socket and tunnel, for quinn to rebind to: quinn
    /// then sends on every connection at once (a PING), so after a move between carriers
    /// the node learns the new path now, not at QUIC's next retransmission (which backs
    /// off while a path is dead).
    fn resocket(self: &Arc<Self>) -> Arc<ClientSocket> {
        let udp = lock(&self.udp).clone();
        Arc::new(CarrierSocket::new(udp, self.clone(), self.inbound.clone()))
    }

    /// Since when UDP packets have waited for an answer, if any do.
    fn unanswered_since(&self) -> Option<Instant> {
        match self.udp_unanswered.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos - 1)),
        }
    }

    /// Whether packets go through the TCP tunnel now.
    pub(crate) fn on_tcp(&self) -> bool {
        self.on_tcp.load(Ordering::Relaxed)
    }

    /// Moves between carriers so far.
    pub(crate) fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// Sends everything through the TCP tunnel from now on (opening it if needed) —
    /// unless a tunnel failed to open a short while ago and UDP is not known to be
    /// blocked (`blocked`: probes went unanswered, so TCP is all there may be).
    pub(crate) fn use_tcp(self: &Arc<Self>, blocked: bool) {
        if !blocked && lock(&self.tcp_failed).is_some_and(|at| at.elapsed() < TCP_COOLDOWN) {
            return;
        }
        if !self.on_tcp.swap(true, Ordering::Relaxed) {
            self.moves.fetch_add(1, Ordering::Relaxed);
            tracing::info!(server = %self.server, "UDP does not get through; moving to TCP");
        }
        self.tunnel_out();
    }

    /// Sends through the TCP tunnel only, from now on and for good; the tunnel opens
    /// with the first packet.
    pub(crate) fn pin_tcp(&self) {
        self.pinned.store(true, Ordering::Relaxed);
        self.on_tcp.store(true, Ordering::Relaxed);
    }

    /// Sends over UDP again; the tunnel closes a little later.
    fn use_udp(self: &Arc<Self>) {
        if self.on_tcp.swap(false, Ordering::Relaxed) {
            self.moves.fetch_add(1, Ordering::Relaxed);
            tracing::info!(server = %self.server, "UDP works again; moving back to QUIC over UDP");
            let this = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep(TUNNEL_GRACE).await;
                if let Some(this) = this.upgrade() {
                    if !this.on_tcp() {
                        lock(&this.tunnel).take();
                    }
                }
            });
        }
    }

    /// The open tunnel's queue, opening a tunnel if there is none (or it ended).
    fn tunnel_out(&self) -> mpsc::Sender<Vec<u8>> {
        let mut tunnel = lock(&self.tunnel);
        if let Some(open) = tunnel.as_ref().filter(|t| !t.ended()) {
            return open.out.clone();
        }
        let this = self.me.clone();
        let failed = move || {
            // No tunnel either: back to UDP, which may yet work (a lossy path, not a
            // blocked one), and leave TCP alone for a while.
            if let Some(this) = this.upgrade().filter(|t| !t.pinned.load(Ordering::Relaxed)) {
                *lock(&this.tcp_failed) = Some(Instant::now());
                if this.on_tcp.swap(false, Ordering::Relaxed) {
                    this.moves.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let handle = tunnel::open(
            self.server,
            self.server_name.clone(),
            self.tls.clone(),
            self.inbound_tx.clone(),
            failed,
        );
        let out = handle.out.clone();
        *tunnel = Some(handle);
        out
    }

    /// Sends a UDP probe and says whether the node echoed it in time.
    async fn probe(&self) -> bool {
        self.probe_echoed.store(false, Ordering::Relaxed);
        let mut probe = [0u8; PROBE_LEN];
        probe[..8].copy_from_slice(&PROBE_MAGIC);
        rand::Rng::fill_bytes(&mut rand::rng(), &mut probe[8..]);
        let udp = lock(&self.udp).clone();
        let transmit = Transmit {
            destination: self.server,
            ecn: None,
            contents: &probe,
            segment_size: None,
            src_ip: None,
        };
        let _ = udp.try_send(&transmit);
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        while !self.probe_echoed.load(Ordering::Relaxed) {
            if tokio::time::timeout_at(deadline, self.udp_news.notified())
                .await
                .is_err()
            {
                return self.probe_echoed.load(Ordering::Relaxed);
            }
        }
        true
    }
}

/// A quinn client endpoint whose packets to `server` all travel through the TCP carrier:
/// for tools and tests that speak the protocol themselves over TCP. `server_name` is
/// verified with the roots in `ca_pem`.
pub fn tcp_endpoint(
    server: SocketAddr,
    server_name: &str,
    ca_pem: &str,
) -> io::Result<quinn::Endpoint> {
    let udp = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, bind_udp(server)?)?;
    let carrier = Carrier::new(server, server_name.to_owned(), ca_pem, udp.clone())
        .map_err(io::Error::other)?;
    carrier.pin_tcp();
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        carrier.socket(udp),
        Arc::new(quinn::TokioRuntime),
    )
}

/// Moves the connection between carriers as UDP stops or starts getting through, until
/// `closing` turns true or the client is gone.
pub(crate) async fn follow(
    carrier: std::sync::Weak<Carrier>,
    endpoint: quinn::Endpoint,
    mut closing: watch::Receiver<bool>,
    probe_every: Duration,
) {
    let kick = |carrier: &Arc<Carrier>| {
        if let Err(error) = endpoint.rebind_abstract(carrier.resocket()) {
            tracing::warn!(%error, "could not make QUIC send on the new carrier");
        }
    };
    loop {
        let Some(this) = carrier.upgrade() else {
            return;
        };
        let wait = if this.on_tcp() {
            // On TCP: try UDP again now and then.
            tokio::time::sleep(probe_every)
        } else {
            match this.unanswered_since() {
                Some(since) => tokio::time::sleep_until((since + SUSPECT_AFTER).into()),
                // Nothing waits for an answer: sleep until something does.
                None => tokio::time::sleep(Duration::from_secs(3600)),
            }
        };
        let news = this.udp_news.notified();
        tokio::select! {
            _ = wait => {}
            _ = news => continue,
            // `closing` only ever turns true.
            _ = closing.changed() => return,
        }
        if this.on_tcp() {
            if this.probe().await {
                this.use_udp();
                kick(&this);
            }
        } else {
            let overdue = this
                .unanswered_since()
                .is_some_and(|since| since.elapsed() >= SUSPECT_AFTER);
            // Two probes unanswered: one lost on a lossy path is not a blocked one.
            if overdue && !this.probe().await && !this.probe().await {
                this.use_tcp(true);
                if this.on_tcp() {
                    kick(&this);
                }
            }
        }
    }
}

impl Router for Carrier {
    fn tunnel(&self, _destination: SocketAddr) -> Option<mpsc::Sender<Vec<u8>>> {
        self.on_tcp().then(|| self.tunnel_out())
    }

    fn probe(
        &self,
        _udp: &dyn AsyncUdpSocket,
        _from: SocketAddr,
        _dst: Option<IpAddr>,
        _probe: &[u8],
    ) {
        self.probe_echoed.store(true, Ordering::Relaxed);
        self.udp_news.notify_one();
    }

    fn sent_udp(&self) {
        if self.udp_unanswered.load(Ordering::Relaxed) != 0 {
            return; // already waiting: no clock read, no write
        }
        let now = self.epoch.elapsed().as_nanos() as u64 + 1;
        let armed =
            self.udp_unanswered
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        if armed.is_ok() {
            self.udp_news.notify_one();
        }
    }

    fn heard_udp(&self) {
        if self.udp_unanswered.load(Ordering::Relaxed) != 0 {
            self.udp_unanswered.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The client's socket gets the receive buffer it asks for, as far as the kernel's
    /// cap (`net.core.rmem_max`) lets it: past the default, where a burst was dropped.
    #[test]
    fn the_udp_socket_asks_for_a_large_receive_buffer() -> io::Result<()> {
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")?
            .trim()
            .parse()
            .map_err(io::Error::other)?;
        let socket = bind_udp("127.0.0.1:1".parse().map_err(io::Error::other)?)?;
        // Linux keeps (and reports) twice the size asked, for its own bookkeeping.
        let got = socket2::SockRef::from(&socket).recv_buffer_size()? / 2;
        assert_eq!(got, UDP_RECEIVE_BUFFER.min(cap));
        Ok(())
    }
}
