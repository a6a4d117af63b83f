//! The transport's ceiling: the `pairs` workload through a QUIC relay that stores
//! nothing. Same TLS, same client transport settings and the same node-side transport
//! limits and socket buffer as a Quiver node, but no sealing, no log, no fsync, no
//! cursors: each message is handed to its receiver's stream and acknowledged at once.
//! What Quiver reaches of this is the fraction of its transport's speed it keeps.
//!
//! The relay runs in the bench process, on a runtime of its own (its own thread), so its
//! work is scheduled apart from the clients' as a node process's would be.
//!
//! On a client's first bidirectional stream: one byte (0 receiver, 1 sender) and the
//! pair's number (8 bytes, big-endian). A receiver is answered one byte once registered,
//! then gets every message of its sender on one stream the relay opens; a sender writes
//! messages (a 4-byte length, then the body) and reads an 8-byte acknowledgement (the
//! message's index) for each.

use crate::workload::{pairs_report, Report, Seen};
use anyhow::{bail, Context};
use quiver_sdk::UserId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// How long receivers wait for the last message before counting the rest as lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// Largest message the relay takes.
const MAX_MESSAGE: usize = 1 << 20;
/// Messages waiting for one receiver's stream, at most (then its senders wait).
const RECEIVER_QUEUE: usize = 1024;

/// Receivers by pair number: where a sender's messages go.
type Receivers = Arc<Mutex<HashMap<u64, mpsc::Sender<Vec<u8>>>>>;

/// A relay on a loopback port, on its own runtime; stopped when dropped.
pub struct Relay {
    addr: SocketAddr,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Starts the relay with a fresh dev CA.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let certs = quiver_certs::ensure_dev_certs(dir.path())?;
        let ca_pem = std::fs::read_to_string(&certs.ca_cert)?;
        let server = server_config(&certs.node_cert, &certs.node_key)?;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        // The node's socket buffer (`udp_buffer_bytes`), for the same reason.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
        let addr = socket.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let endpoint = match quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    Some(server),
                    socket,
                    Arc::new(quinn::TokioRuntime),
                ) {
                    Ok(endpoint) => endpoint,
                    Err(e) => return eprintln!("relay: {e}"),
                };
                tokio::select! {
                    () = serve(endpoint.clone()) => {}
                    _ = stopped => endpoint.close(0u32.into(), b"done"),
                }
            });
        });
        Ok(Self {
            addr,
            ca_pem,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The relay's server side: TLS 1.3 with the dev node certificate, ALPN `quiver/1`, and
/// the stream and connection receive windows a node gives its clients.
fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<quinn::ServerConfig> {
    let certs = rustls_pemfile::certs(&mut std::fs::read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::fs::read(key)?.as_slice())?
        .context("no private key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![quiver_proto::ALPN.to_vec()];
    tls.max_early_data_size = u32::MAX;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut transport = quinn::TransportConfig::default();
    let stream_window = 256 * 1024u32;
    transport
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(stream_window.into())
        .receive_window((stream_window * 4).into());
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

async fn serve(endpoint: quinn::Endpoint) {
    let receivers = Receivers::default();
    while let Some(incoming) = endpoint.accept().await {
        let receivers = receivers.clone();
        tokio::spawn(async move {
            if let Ok(conn) = incoming.await {
                let _ = client(conn, receivers).await;
            }
        });
    }
}

/// One client connection: a receiver registers its stream; a sender's messages go to it.
async fn client(conn: quinn::Connection, receivers: Receivers) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut hello = [0u8; 9];
    recv.read_exact(&mut hello).await?;
    let pair = u64::from_be_bytes(hello[1..].try_into()?);
    if hello[0] == 0 {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(RECEIVER_QUEUE);
        let mut out = conn.open_uni().await?;
        receivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pair, tx);
        send.write_all(&[1]).await?;
        while let Some(message) = rx.recv().await {
            out.write_all(&message).await?;
        }
        return Ok(());
    }
    let to = receivers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&pair)
        .cloned()
        .context("sender before its receiver")?;
    loop {
        let mut header = [0u8; 4];
        if recv.read_exact(&mut header).await.is_err() {
            return Ok(());
        }
        let len = u32::from_be_bytes(header) as usize;
        if !(8..=MAX_MESSAGE).contains(&len) {
            bail!("bad length {len}");
        }
        let mut message = vec![0u8; 4 + len];
        message[..4].copy_from_slice(&header);
        recv.read_exact(&mut message[4..]).await?;
        let index: [u8; 8] = message[4..12].try_into()?;
        to.send(message).await?;
        send.write_all(&index).await?;
    }
}

/// `pairs` through the relay: P senders, each sending M messages of S bytes to its own
/// receiver, at most W unacknowledged.
pub async fn pairs(
    pairs: usize,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<Report> {
    let relay = Relay::start()?;
    let config = quiver_sdk::tls::quic_config(
        &relay.ca_pem,
        Duration::from_secs(15),
        Duration::from_secs(60),
    )
    .map_err(anyhow::Error::msg)?;
    let connect = || -> anyhow::Result<quinn::Endpoint> {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(config.clone());
        Ok(endpoint)
    };
    let epoch = Instant::now();
    let (mut receiving, mut held) = (Vec::new(), Vec::new());
    for i in 0..pairs as u64 {
        let endpoint = connect()?;
        let conn = endpoint.connect(relay.addr, "localhost")?.await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let mut hello = vec![0u8];
        hello.extend_from_slice(&i.to_be_bytes());
        send.write_all(&hello).await?;
        let mut registered = [0u8; 1];
        recv.read_exact(&mut registered).await?;
        let sender = UserId::parse(&format!("snd{i:05}"))?;
        receiving.push(tokio::spawn(receive(conn, sender, messages, epoch)));
        held.push((endpoint, send, recv));
    }
    let started = Instant::now();
    let mut sending = Vec::new();
    for i in 0..pairs as u64 {
        let endpoint = connect()?;
        let conn = endpoint.connect(relay.addr, "localhost")?.await?;
        let load = (messages, size, window);
        sending.push(tokio::spawn(send(endpoint, conn, i, load, epoch)));
    }
    for task in sending {
        task.await??;
    }
    let load = (pairs, messages, size, window);
    let report = pairs_report("pairs-raw-relay", receiving, load, started).await;
    drop(held);
    report
}

/// One sender: numbered, time-stamped bodies, at most `window` unacknowledged.
async fn send(
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    pair: u64,
    (messages, size, window): (u64, usize, usize),
    epoch: Instant,
) -> anyhow::Result<()> {
    let (mut up, mut acks) = conn.open_bi().await?;
    let mut hello = vec![1u8];
    hello.extend_from_slice(&pair.to_be_bytes());
    up.write_all(&hello).await?;
    let places = Arc::new(Semaphore::new(window));
    let returned = places.clone();
    let acking = tokio::spawn(async move {
        let mut index = [0u8; 8];
        for _ in 0..messages {
            acks.read_exact(&mut index).await?;
            returned.add_permits(1);
        }
        anyhow::Ok(())
    });
    let size = size.max(16);
    for index in 0..messages {
        places.acquire().await?.forget();
        let mut message = Vec::with_capacity(4 + size);
        message.extend_from_slice(&(size as u32).to_be_bytes());
        message.extend_from_slice(&index.to_be_bytes());
        message.extend_from_slice(&(epoch.elapsed().as_micros() as u64).to_be_bytes());
        message.resize(4 + size, 0x5a);
        up.write_all(&message).await?;
    }
    acking.await??;
    let _ = up.finish();
    Ok(())
}

/// One receiver: what its sender's messages took, checked for loss, repeats and order.
async fn receive(conn: quinn::Connection, sender: UserId, messages: u64, epoch: Instant) -> Seen {
    let mut seen = Seen::default();
    let Ok(mut recv) = conn.accept_uni().await else {
        return seen;
    };
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    let mut check = crate::stats::StreamCheck::default();
    let mut unique = 0;
    while unique < messages {
        let mut header = [0u8; 4];
        let read = tokio::time::timeout_at(deadline, recv.read_exact(&mut header)).await;
        if !matches!(read, Ok(Ok(()))) {
            break;
        }
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        if recv.read_exact(&mut body).await.is_err() {
            break;
        }
        let word = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().unwrap_or_default());
        let (index, sent) = (word(0), word(8));
        if check.record(index) {
            unique += 1;
            seen.arrived((epoch.elapsed().as_micros() as u64).saturating_sub(sent));
        }
        seen.last_at = Some(Instant::now());
    }
    seen.per_sender.insert(sender, check);
    seen
}
