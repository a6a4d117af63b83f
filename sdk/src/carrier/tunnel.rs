//! One TCP tunnel to the node: TLS 1.3 with ALPN `quiver-tunnel/1`, then QUIC packets
//! each behind a 2-byte big-endian length, both ways. Packets queued before the TLS
//! handshake ends wait for it.

use quiver_carrier::framing;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

/// Packets waiting to go down the tunnel; more are dropped (QUIC sends them again).
const OUT_QUEUE: usize = 512;

/// How long opening a tunnel (TCP and TLS) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// An open (or opening) tunnel: dropping it closes it.
pub(super) struct Handle {
    pub out: mpsc::Sender<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Whether the tunnel ended (the node closed it, or it failed to open).
    pub fn ended(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a tunnel to `server` in the background; packets from the node go to `inbound`.
/// If it cannot be opened (no TCP either, or no node behind it), `failed` is called.
pub(super) fn open(
    server: SocketAddr,
    server_name: String,
    tls: Arc<rustls::ClientConfig>,
    inbound: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    failed: impl FnOnce() + Send + 'static,
) -> Handle {
    let (out, rx) = mpsc::channel(OUT_QUEUE);
    let task = tokio::spawn(async move {
        match run(server, server_name, tls, inbound, rx).await {
            Ok(_) => {}
            Err(Failed::Open(error)) => {
                tracing::info!(%server, %error, "no tunnel to the node");
                failed();
            }
            Err(Failed::Io(error)) => tracing::info!(%server, %error, "tunnel closed"),
        }
    });
    Handle { out, task }
}

/// Why a tunnel ended.
enum Failed {
    Open(std::io::Error),
    Io(std::io::Error),
}

async fn run(
    server: SocketAddr,
    server_name: String,
    tls: Arc<rustls::ClientConfig>,
    inbound: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    mut out: mpsc::Receiver<Vec<u8>>,
) -> Result<(), Failed> {
    let name = rustls::pki_types::ServerName::try_from(server_name)
        .map_err(|e| Failed::Open(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let open = async {
        let tcp = tokio::net::TcpStream::connect(server).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
    };
    let stream = match tokio::time::timeout(OPEN_TIMEOUT, open).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Failed::Open(e)),
        Err(_) => {
            let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel open");
            return Err(Failed::Open(timed_out));
        }
    };
    tracing::debug!(%server, "tunnel open");
    let (read, write) = tokio::io::split(stream);
    tokio::select! {
        r = read_packets(read, server, &inbound) => r,
        r = framing::write_packets(write, &mut out) => r,
    }
    .map_err(Failed::Io)
}

async fn read_packets(
    mut read: impl AsyncRead + Unpin,
    server: SocketAddr,
    inbound: &mpsc::Sender<(SocketAddr, Vec<u8>)>,
) -> std::io::Result<()> {
    // To quinn, the tunnel's packets come from the node's address.
    while let Some(packet) = framing::read_packet(&mut read).await? {
        if inbound.send((server, packet)).await.is_err() {
            break;
        }
    }
    Ok(())
}
