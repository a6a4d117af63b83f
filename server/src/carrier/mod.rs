//! The node's two carriers behind one QUIC endpoint: UDP, and QUIC packets tunnelled
//! through TLS over TCP for clients whose network blocks UDP (docs/PROTOCOL.md 3.7).
//!
//! The seam is the endpoint's socket. [`NodeSocket`] is what quinn reads and writes:
//! datagrams from UDP pass through, packets from tunnels arrive as if from a reserved
//! address of their own (one per tunnel, in 240.0.0.0/4, which no real peer has), and
//! whatever quinn sends to such an address goes down that tunnel. So sessions, streams,
//! frames, limits, close codes and migration are one code path for both carriers: a
//! connection that moves from UDP to a tunnel is, to quinn, a client that changed
//! address. UDP probes from clients on a tunnel (asking whether UDP works again) are
//! answered here and never reach quinn.

mod tunnel;

pub use tunnel::{serve, TunnelLimits};

use quinn::AsyncUdpSocket;
use quiver_carrier::{CarrierSocket, Inbound, Router};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Packets waiting to go down one tunnel; beyond this they are dropped, as a full UDP
/// buffer drops them, and QUIC's loss recovery sends them again.
const TUNNEL_QUEUE: usize = 256;

/// Packets from all tunnels waiting for quinn; a full queue holds the tunnels' readers
/// (and so their TCP windows) back.
const INBOUND_QUEUE: usize = 1024;

/// The endpoint's socket: UDP and the tunnels.
pub type NodeSocket = CarrierSocket<Tunnels>;

/// The open tunnels: where their packets go, and which peer each stands for.
#[derive(Debug)]
pub struct Tunnels {
    inbound_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    inbound: Arc<Inbound>,
    open: Mutex<HashMap<SocketAddr, Tunnel>>,
    /// Tunnels open per real peer address, for the per-address limit.
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    next: AtomicU64,
    /// Where packets for a tunnel that just closed go: nowhere (its receiver is gone).
    closed: mpsc::Sender<Vec<u8>>,
    /// Turns true when the node stops: every tunnel ends.
    closing: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug)]
struct Tunnel {
    out: mpsc::Sender<Vec<u8>>,
    peer: IpAddr,
}

impl Default for Tunnels {
    fn default() -> Self {
        let (inbound_tx, inbound) = Inbound::new(INBOUND_QUEUE);
        Self {
            inbound_tx,
            inbound,
            open: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            closed: mpsc::channel(1).0,
            closing: tokio::sync::watch::channel(false).0,
        }
    }
}

/// A tunnel's place among the open ones; dropping it closes the tunnel's address.
pub(crate) struct Registration {
    tunnels: Arc<Tunnels>,
    /// The address quinn sees for this tunnel.
    pub addr: SocketAddr,
    /// Packets quinn sends to `addr`.
    pub out: mpsc::Receiver<Vec<u8>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let tunnel = lock(&self.tunnels.open).remove(&self.addr);
        if let Some(tunnel) = tunnel {
            let mut per_ip = lock(&self.tunnels.per_ip);
            if let Some(n) = per_ip.get_mut(&tunnel.peer) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&tunnel.peer);
                }
            }
        }
    }
}

impl Tunnels {
    /// The endpoint's socket over `udp`, carrying these tunnels too.
    pub fn socket(self: &Arc<Self>, udp: Arc<dyn AsyncUdpSocket>) -> NodeSocket {
        CarrierSocket::new(udp, self.clone(), self.inbound.clone())
    }

    /// Opens a tunnel for `peer`, unless it already has `limit` open or `total` are open
    /// in all.
    pub(crate) fn register(
        self: &Arc<Self>,
        peer: IpAddr,
        limit: u32,
        total: u32,
    ) -> Option<Registration> {
        if self.count() >= total as usize {
            return None;
        }
        {
            let mut per_ip = lock(&self.per_ip);
            let n = per_ip.entry(peer).or_insert(0);
            if *n >= limit {
                return None;
            }
            *n += 1;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let addr = synthetic(id);
        let (out, rx) = mpsc::channel(TUNNEL_QUEUE);
        lock(&self.open).insert(addr, Tunnel { out, peer });
        Some(Registration {
            tunnels: self.clone(),
            addr,
            out: rx,
        })
    }

    /// Hands a packet from tunnel `from` to quinn; waits while quinn is behind.
    pub(crate) async fn deliver(&self, from: SocketAddr, packet: Vec<u8>) -> bool {
        self.inbound_tx.send((from, packet)).await.is_ok()
    }

    /// The real peer behind `addr` if it is a tunnel's, else `addr`'s own IP: per-address
    /// limits count a tunnelled client at its real address.
    pub fn peer_ip(&self, addr: SocketAddr) -> IpAddr {
        lock(&self.open)
            .get(&addr)
            .map_or(addr.ip(), |tunnel| tunnel.peer)
    }

    /// Ends every tunnel (the node is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Tunnels open now.
    pub fn count(&self) -> usize {
        lock(&self.open).len()
    }
}

impl Router for Tunnels {
    fn tunnel(&self, destination: SocketAddr) -> Option<mpsc::Sender<Vec<u8>>> {
        if !is_synthetic(&destination) {
            return None;
        }
        let open = lock(&self.open);
        Some(
            open.get(&destination)
                .map_or_else(|| self.closed.clone(), |t| t.out.clone()),
        )
    }

    fn probe(
        &self,
        udp: &dyn AsyncUdpSocket,
        from: SocketAddr,
        dst_ip: Option<IpAddr>,
        probe: &[u8],
    ) {
        // The same 16 bytes back: never more than came, so nothing to amplify.
        let echo = quinn::udp::Transmit {
            destination: from,
            ecn: None,
            contents: probe,
            segment_size: None,
            src_ip: dst_ip,
        };
        let _ = udp.try_send(&echo);
    }
}

/// Tunnel `id`'s address: 240.0.0.0/4 is reserved and never a real source.
fn synthetic(id: u64) -> SocketAddr {
    let port = (id % 65_535) as u16 + 1;
    let host = ((id / 65_535) as u32) & 0x0fff_ffff;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xf000_0000 | host)), port)
}

fn is_synthetic(addr: &SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V4(ip) if ip.octets()[0] >= 240 && !ip.is_broadcast())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_addresses_are_reserved_and_distinct() {
        let addrs: std::collections::HashSet<_> = (1..200_000).map(synthetic).collect();
        assert_eq!(addrs.len(), 199_999);
        assert!(addrs.iter().all(is_synthetic));
        assert!(!is_synthetic(&"127.0.0.1:5".parse().expect("addr")));
        assert!(!is_synthetic(&"[::1]:5".parse().expect("addr")));
    }

    #[test]
    fn the_per_address_and_total_limits_count_open_tunnels() {
        let tunnels = Arc::new(Tunnels::default());
        let ip: IpAddr = "10.0.0.7".parse().expect("ip");
        let first = tunnels.register(ip, 2, 100).expect("first");
        let second = tunnels.register(ip, 2, 100).expect("second");
        assert!(tunnels.register(ip, 2, 100).is_none(), "a third is refused");
        assert_eq!(tunnels.peer_ip(first.addr), ip);
        drop(second);
        let third = tunnels
            .register(ip, 2, 100)
            .expect("room again once one closed");
        assert_eq!(tunnels.count(), 2);
        assert_ne!(first.addr, third.addr);
        let elsewhere: IpAddr = "10.0.0.8".parse().expect("ip");
        assert!(
            tunnels.register(elsewhere, 2, 2).is_none(),
            "the total cap holds"
        );
    }
}
