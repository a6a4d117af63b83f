//! The client QUIC endpoint: one quinn endpoint per node (several sockets on one port would
//! break connection migration), transport limits sized for chat, and the accept loop. Its
//! socket carries UDP and the TCP carrier's tunnels ([`crate::carrier`]).

use crate::carrier::Tunnels;
use crate::config::Config;
use crate::credit::StreamCredit;
use crate::shared::Shared;
use crate::tls::{Identity, TlsError};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Builds the endpoint. `reset_key` is the persistent stateless-reset secret: with it,
/// clients of a restarted node learn at once that their connection is gone. The connection
/// ids are keyed from it too: quinn drops (without a reset) packets whose connection id
/// does not validate, and a per-process random key would make every old id invalid.
///
/// With `config.tcp_carrier`, also binds the TCP carrier's listener on the same address and port number
/// (on port 0, a number free for both).
pub fn endpoint(
    config: &Config,
    identity: &Identity,
    reset_key: &[u8; 32],
    tunnels: Arc<Tunnels>,
) -> Result<(quinn::Endpoint, Option<std::net::TcpListener>), ListenerError> {
    let limits = &config.limits;
    let mut transport = quinn::TransportConfig::default();
    transport
        // A new connection is offered a few streams; its session offers more as they are used.
        .max_concurrent_bidi_streams(
            StreamCredit::client(limits.max_client_streams)
                .offered()
                .into(),
        )
        // Clients never open unidirectional streams; pushes go the other way.
        .max_concurrent_uni_streams(0u32.into())
        // Typing and presence datagrams: a few small ones a second, so little room.
        .datagram_receive_buffer_size(Some(8 * 1024))
        .datagram_send_buffer_size(16 * 1024)
        .stream_receive_window(limits.stream_receive_window.into())
        // Chat-sized until the connection uploads a file (`crate::upload_window`).
        .receive_window(limits.receive_window.into())
        .max_idle_timeout(Some(
            Duration::from_millis(limits.idle_timeout_ms)
                .try_into()
                .map_err(|_| ListenerError::Config("idle timeout out of range"))?,
        ));
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(identity.quic()?));
    server.transport_config(Arc::new(transport)).migration(true);
    let reset = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key);
    let cid_key = ring::hmac::sign(&reset, b"quiver connection id key");
    let cid_key = u64::from_be_bytes(cid_key.as_ref()[..8].try_into().expect("8 of 32 bytes"));
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset));
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let (socket, listener) = bind(config.quic_addr, config.tcp_carrier)?;
    if config.udp_buffer_bytes > 0 {
        size_buffers(&socket, config.udp_buffer_bytes);
    }
    let runtime = Arc::new(quinn::TokioRuntime);
    let udp = quinn::Runtime::wrap_udp_socket(&*runtime, socket).map_err(ListenerError::Bind)?;
    let socket = Arc::new(tunnels.socket(udp));
    let endpoint =
        quinn::Endpoint::new_with_abstract_socket(endpoint_config, Some(server), socket, runtime)
            .map_err(ListenerError::Bind)?;
    Ok((endpoint, listener))
}

/// Asks the kernel for `bytes` of receive and send buffer on the QUIC socket, and says
/// when it gave less (Linux caps the request at `net.core.rmem_max` / `wmem_max`).
fn size_buffers(socket: &std::net::UdpSocket, bytes: usize) {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_recv_buffer_size(bytes);
    let _ = socket.set_send_buffer_size(bytes);
    // Linux reports twice what it keeps for the packets themselves.
    let got = socket.recv_buffer_size().unwrap_or(0) / 2;
    if got < bytes {
        tracing::warn!(
            asked = bytes,
            got,
            "the QUIC socket's receive buffer is smaller than asked: raise net.core.rmem_max \
             so bursts from many clients are not dropped"
        );
    } else {
        tracing::debug!(bytes = got, "QUIC socket buffers sized");
    }
}

/// Binds UDP at `addr` and, with `tcp`, TCP at the same address and port. On port 0 the
/// UDP port the OS picks may be taken for TCP: then both are tried again.
fn bind(
    addr: SocketAddr,
    tcp: bool,
) -> Result<(std::net::UdpSocket, Option<std::net::TcpListener>), ListenerError> {
    let mut attempts = 0;
    loop {
        let udp = std::net::UdpSocket::bind(addr).map_err(ListenerError::Bind)?;
        if !tcp {
            return Ok((udp, None));
        }
        let bound = udp.local_addr().map_err(ListenerError::Bind)?;
        match std::net::TcpListener::bind(bound) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .map_err(ListenerError::Bind)?;
                return Ok((udp, Some(listener)));
            }
            Err(_) if addr.port() == 0 && attempts < 16 => attempts += 1,
            Err(e) => return Err(ListenerError::Bind(e)),
        }
    }
}

/// Accepts connections until the endpoint is closed, then waits for their sessions.
pub async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    // Each session holds a clone of `live` (a count, not an allocation, unlike a JoinSet
    // entry per connection); `recv` answers `None` once the last one is gone.
    let (live, mut ended) = mpsc::channel::<()>(1);
    while let Some(incoming) = endpoint.accept().await {
        let Some(incoming) = admit(incoming, &shared) else {
            continue;
        };
        // Counted down by the session once the handshake ends, however it ends.
        shared.metrics.handshakes.fetch_add(1, Ordering::Relaxed);
        let (live, shared) = (live.clone(), shared.clone());
        // Boxed: the session task would otherwise keep room for it all its life.
        let incoming = Box::new(incoming);
        tokio::spawn(async move {
            crate::session::run(incoming, shared).await;
            drop(live);
        });
    }
    drop(live);
    let _ = ended.recv().await;
}

/// Decides whether a new connection attempt may start its handshake, given how many are
/// in progress (half-open handshakes cost memory: bounded, DESIGN.md invariant 6). Past
/// half the cap an attempt from an address not yet validated is sent a Retry, which
/// holds no state here: a client must answer it from its real address, a spoofed or
/// abandoned attempt never comes back. At the cap, attempts are refused.
fn admit(incoming: quinn::Incoming, shared: &Shared) -> Option<quinn::Incoming> {
    let metrics = &shared.metrics;
    let cap = u64::from(shared.config.limits.max_handshakes);
    let in_progress = metrics.handshakes.load(Ordering::Relaxed);
    if in_progress < cap / 2 || (in_progress < cap && incoming.remote_address_validated()) {
        return Some(incoming);
    }
    metrics.handshakes_refused.fetch_add(1, Ordering::Relaxed);
    if in_progress < cap && incoming.may_retry() {
        let _ = incoming.retry();
    } else {
        incoming.refuse();
    }
    None
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The UDP socket could not be bound.
    #[error("bind: {0}")]
    Bind(std::io::Error),
    /// TLS material was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A limit cannot be expressed in QUIC.
    #[error("{0}")]
    Config(&'static str),
}
