//! The TCP carrier's listener: TLS 1.3 on the node's QUIC port number, then QUIC packets
//! each behind a 2-byte length, both ways. A tunnel is bounded like a connection: per
//! address, in handshake time, in idle time, in packet size; what it carries meets the
//! same QUIC endpoint and the same limits as UDP.

use super::{Registration, Tunnels};
use quiver_carrier::framing;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::net::{TcpListener, TcpStream};

/// What a tunnel may take.
#[derive(Clone, Copy, Debug)]
pub struct TunnelLimits {
    /// Tunnels open at once from one address.
    pub per_address: u32,
    /// Tunnels open at once in all.
    pub total: u32,
    /// Time for the TLS handshake.
    pub handshake: Duration,
    /// A tunnel silent this long is closed (QUIC keep-alives cross it far more often).
    pub idle: Duration,
}

/// Accepts tunnels until the node closes `tunnels`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    tunnels: Arc<Tunnels>,
    limits: TunnelLimits,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut closing = tunnels.closing.subscribe();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!(%error, "tunnel accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // `closing` only ever turns true.
            _ = closing.changed() => return,
        };
        let Some(registration) = tunnels.register(peer.ip(), limits.per_address, limits.total)
        else {
            // Dropping the stream closes it, before TLS costs anything.
            tracing::debug!(%peer, "tunnel refused: over a cap");
            continue;
        };
        let (acceptor, tunnels) = (acceptor.clone(), tunnels.clone());
        tokio::spawn(async move {
            let mut closing = tunnels.closing.subscribe();
            tokio::select! {
                ended = tunnel(stream, peer, &acceptor, &tunnels, registration, limits) => {
                    tracing::debug!(%peer, ?ended, "tunnel closed");
                }
                _ = closing.changed() => {}
            }
        });
    }
}

/// Why a tunnel ended.
#[derive(Debug)]
enum Ended {
    Handshake,
    Idle,
    BadLength,
    Io,
    NodeStopped,
}

async fn tunnel(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    tunnels: &Tunnels,
    mut registration: Registration,
    limits: TunnelLimits,
) -> Ended {
    let _ = stream.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        _ => return Ended::Handshake,
    };
    tracing::debug!(%peer, addr = %registration.addr, "tunnel open");
    let (read, write) = tokio::io::split(tls);
    let addr = registration.addr;
    tokio::select! {
        ended = read_packets(read, addr, tunnels, limits.idle) => ended,
        written = framing::write_packets(write, &mut registration.out) => match written {
            Ok(()) => Ended::NodeStopped,
            Err(_) => Ended::Io,
        },
    }
}

/// Hands each packet the client sends to quinn.
async fn read_packets(
    mut read: impl AsyncRead + Unpin,
    addr: SocketAddr,
    tunnels: &Tunnels,
    idle: Duration,
) -> Ended {
    loop {
        let packet = match tokio::time::timeout(idle, framing::read_packet(&mut read)).await {
            Ok(Ok(Some(packet))) => packet,
            Ok(Ok(None)) => return Ended::Io,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                tracing::info!(error = %e, "tunnel packet length out of bounds");
                return Ended::BadLength;
            }
            Ok(Err(_)) => return Ended::Io,
            Err(_) => return Ended::Idle,
        };
        if !tunnels.deliver(addr, packet).await {
            return Ended::NodeStopped;
        }
    }
}
