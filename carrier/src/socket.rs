//! [`CarrierSocket`]: the socket under a quinn endpoint that carries its packets over UDP
//! or through tunnels, as its [`Router`] says.
//!
//! Packets from tunnels arrive through an [`Inbound`] queue, each with the address quinn
//! should see it from; the socket takes from the queue and from UDP in turn, so neither
//! starves the other. UDP probes ([`quiver_proto::carrier::is_probe`]) never reach quinn:
//! the router sees them (the node echoes them, the client learns that UDP works).

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use quiver_proto::carrier::is_probe;
use std::fmt::Debug;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Decides, for one side, which way each packet goes.
pub trait Router: Send + Sync + Debug + 'static {
    /// The tunnel queue for a packet to `destination`, or `None` for UDP.
    fn tunnel(&self, destination: SocketAddr) -> Option<mpsc::Sender<Vec<u8>>>;

    /// A UDP probe came from `from` (to our `dst_ip`) on `udp`.
    fn probe(
        &self,
        udp: &dyn AsyncUdpSocket,
        from: SocketAddr,
        dst_ip: Option<IpAddr>,
        probe: &[u8],
    );

    /// A packet went out over UDP.
    fn sent_udp(&self) {}

    /// Something came in over UDP.
    fn heard_udp(&self) {}
}

/// Tunnelled packets on their way to quinn, each with the address it is from.
#[derive(Debug)]
pub struct Inbound(Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>);

impl Inbound {
    /// A queue of `capacity` packets, and the sender tunnels put their packets in. A full
    /// queue holds the tunnels' readers (and so their TCP windows) back.
    pub fn new(capacity: usize) -> (mpsc::Sender<(SocketAddr, Vec<u8>)>, Arc<Self>) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, Arc::new(Self(Mutex::new(rx))))
    }
}

/// A quinn endpoint's socket: UDP and tunnels.
#[derive(Debug)]
pub struct CarrierSocket<R: Router> {
    udp: Arc<dyn AsyncUdpSocket>,
    router: Arc<R>,
    inbound: Arc<Inbound>,
    tunnels_first: AtomicBool,
}

impl<R: Router> CarrierSocket<R> {
    /// The socket over `udp`, taking tunnelled packets from `inbound`.
    pub fn new(udp: Arc<dyn AsyncUdpSocket>, router: Arc<R>, inbound: Arc<Inbound>) -> Self {
        Self {
            udp,
            router,
            inbound,
            tunnels_first: AtomicBool::new(false),
        }
    }

    fn poll_tunnels(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(slot)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        let mut rx = self.inbound.0.lock().unwrap_or_else(|p| p.into_inner());
        match rx.poll_recv(cx) {
            Poll::Ready(Some((addr, packet))) => {
                let len = packet.len().min(buf.len());
                buf[..len].copy_from_slice(&packet[..len]);
                *slot = RecvMeta {
                    addr,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip: None,
                };
                Poll::Ready(Ok(1))
            }
            // The router's side holds a sender while the endpoint lives.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }

    fn poll_udp(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let n = match self.udp.poll_recv(cx, bufs, meta) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        for (buf, slot) in bufs.iter().zip(meta.iter_mut()).take(n) {
            self.router.heard_udp();
            let datagram = &buf[..slot.len];
            if is_probe(datagram) {
                self.router
                    .probe(&*self.udp, slot.addr, slot.dst_ip, datagram);
                // quinn skips an empty buffer.
                slot.len = 0;
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl<R: Router> AsyncUdpSocket for CarrierSocket<R> {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.udp.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(out) = self.router.tunnel(transmit.destination) else {
            self.router.sent_udp();
            return self.udp.try_send(transmit);
        };
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for packet in transmit.contents.chunks(size) {
            // A full (or closed) queue drops the packet, as a full UDP buffer would;
            // QUIC's loss recovery sends it again.
            let _ = out.try_send(packet.to_vec());
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        if !self.tunnels_first.fetch_xor(true, Ordering::Relaxed) {
            if let Poll::Ready(r) = self.poll_tunnels(cx, bufs, meta) {
                return Poll::Ready(r);
            }
            self.poll_udp(cx, bufs, meta)
        } else {
            if let Poll::Ready(r) = self.poll_udp(cx, bufs, meta) {
                return Poll::Ready(r);
            }
            self.poll_tunnels(cx, bufs, meta)
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.udp.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.udp.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.udp.may_fragment()
    }
}
