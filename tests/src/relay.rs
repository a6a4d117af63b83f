//! A lossy UDP relay between QUIC clients and a node, for fault tests on loopback.
//!
//! Each client address gets its own upstream socket, so the node sees a client that
//! changes address (migration) as a new path, as it would without the relay. Packets in
//! either direction are dropped, duplicated or held back (and so reordered) at the set
//! rates; [`Relay::set_blackhole`] drops everything, for outages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Fault rates, each a probability per datagram.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Dropped.
    pub drop: f64,
    /// Sent twice.
    pub duplicate: f64,
    /// Held back for up to `max_delay`, so later datagrams overtake it.
    pub reorder: f64,
    /// Longest hold-back.
    pub max_delay: Duration,
}

/// Counters of what the relay did.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Datagrams passed on (duplicates counted once).
    pub forwarded: AtomicU64,
    /// Datagrams dropped (faults and blackhole).
    pub dropped: AtomicU64,
    /// Extra copies sent.
    pub duplicated: AtomicU64,
    /// Datagrams held back.
    pub delayed: AtomicU64,
}

struct Shared {
    faults: Mutex<Faults>,
    blackhole: AtomicBool,
    stats: RelayStats,
    rng: Mutex<u64>,
}

impl Shared {
    fn chance(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        let mut s = self.rng.lock().unwrap();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        (*s >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn delay(&self, max: Duration) -> Duration {
        let mut s = self.rng.lock().unwrap();
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        max.mul_f64((*s >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// Sends `data` to `to` through `socket`, applying the faults.
    async fn pass(self: &Arc<Self>, socket: &Arc<UdpSocket>, data: &[u8], to: SocketAddr) {
        let faults = *self.faults.lock().unwrap();
        if self.blackhole.load(Ordering::Relaxed) || self.chance(faults.drop) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        let copies = if self.chance(faults.duplicate) {
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        if self.chance(faults.reorder) {
            self.stats.delayed.fetch_add(1, Ordering::Relaxed);
            let (socket, data, wait) =
                (socket.clone(), data.to_vec(), self.delay(faults.max_delay));
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                for _ in 0..copies {
                    let _ = socket.send_to(&data, to).await;
                }
            });
        } else {
            for _ in 0..copies {
                let _ = socket.send_to(data, to).await;
            }
        }
    }
}

/// A running relay; stops when dropped.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts a relay on a free loopback port in front of `node`.
    pub async fn start(node: SocketAddr, faults: Faults) -> std::io::Result<Relay> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Mutex::new(faults),
            blackhole: AtomicBool::new(false),
            stats: RelayStats::default(),
            rng: Mutex::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(addr.port())),
        });
        let task = tokio::spawn(run(front, node, shared.clone()));
        Ok(Relay { addr, shared, task })
    }

    /// Where clients should connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the fault rates.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Drops every datagram while `on`.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::Relaxed);
    }

    /// What the relay did so far.
    pub fn stats(&self) -> &RelayStats {
        &self.shared.stats
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(front: Arc<UdpSocket>, node: SocketAddr, shared: Arc<Shared>) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((len, client)) = front.recv_from(&mut buf).await else {
            return;
        };
        let upstream = match upstreams.get(&client) {
            Some(upstream) => upstream.clone(),
            None => {
                let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                let socket = Arc::new(socket);
                upstreams.insert(client, socket.clone());
                tasks.spawn(back(socket.clone(), front.clone(), client, shared.clone()));
                socket
            }
        };
        shared.pass(&upstream, &buf[..len], node).await;
    }
}

/// Node → one client.
async fn back(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((len, _)) = upstream.recv_from(&mut buf).await {
        shared.pass(&front, &buf[..len], client).await;
    }
}
