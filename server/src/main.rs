//! `quiver-server`: runs one Quiver node.
//!
//! Run with `cargo run --release -p quiver-server` (no flags: loopback, dev certificates
//! and sled data in `./quiver-data`).

use anyhow::Context;
use clap::Parser;
use quiver_server::config::MeshConfig;
use quiver_server::{Config, Limits, Node};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Quiver messaging node: QUIC for devices, HTTPS for accounts")]
struct Args {
    /// Folder for data, dev certificates and secrets.
    #[arg(long, env = "QUIVER_DATA_DIR", default_value = "quiver-data")]
    data_dir: PathBuf,
    /// UDP address for device connections (QUIC).
    #[arg(long, env = "QUIVER_QUIC_ADDR", default_value = "127.0.0.1:4433")]
    quic_addr: SocketAddr,
    /// TCP address for the REST API (HTTPS).
    #[arg(long, env = "QUIVER_HTTP_ADDR", default_value = "127.0.0.1:8443")]
    http_addr: SocketAddr,
    /// TLS certificate chain (PEM); dev certificates are made when omitted.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Lifetime of login tokens, in seconds.
    #[arg(long, default_value_t = 86_400)]
    token_ttl_secs: u64,
    /// Login attempts per account per minute.
    #[arg(long, default_value_t = Limits::default().logins_per_minute_per_account)]
    logins_per_minute_per_account: u32,
    /// Logins and registrations per client address per minute.
    #[arg(long, default_value_t = Limits::default().logins_per_minute_per_address)]
    logins_per_minute_per_address: u32,
    /// Chat messages one connection may send per second (past it: RateLimited; the SDK
    /// slows down and retries).
    #[arg(long, default_value_t = Limits::default().messages_per_sec)]
    messages_per_sec: u32,
    /// Chat messages one connection may send in a burst.
    #[arg(long, default_value_t = Limits::default().message_burst)]
    message_burst: u32,
    /// Connections one client address may have open (past it: TooManyConnections).
    #[arg(long, default_value_t = Limits::default().max_connections_per_address)]
    max_connections_per_address: u32,
    /// Conversation streams one user may have open, over all its devices (past it:
    /// TooManyStreams).
    #[arg(long, default_value_t = Limits::default().max_conversations_per_user)]
    max_conversations_per_user: u32,
    /// Memory for sled's page cache, in MiB.
    #[arg(long, default_value_t = Config::default().storage_cache_bytes >> 20)]
    storage_cache_mib: u64,
    /// This node's id: recorded as the home of users who register here; unique in a mesh
    /// and named (as a DNS name) in the node's certificate.
    #[arg(long, env = "QUIVER_NODE_ID", default_value = "local")]
    node_id: String,
    /// Mesh mode: the Redis holding the directory and the node registry
    /// (`redis://host:port`). Needs --mesh-addr, --cluster-ca, --cert and --key.
    #[arg(long, env = "QUIVER_REDIS_URL", requires_all = ["mesh_addr", "cluster_ca", "cert"])]
    redis_url: Option<String>,
    /// Mesh mode: UDP address of the node-to-node endpoint (mutual TLS).
    #[arg(long, env = "QUIVER_MESH_ADDR", requires = "redis_url")]
    mesh_addr: Option<SocketAddr>,
    /// Mesh mode: the cluster CA (PEM) that signed every node's certificate.
    #[arg(long, env = "QUIVER_CLUSTER_CA", requires = "redis_url")]
    cluster_ca: Option<PathBuf>,
    /// Mesh mode: the QUIC address clients are told for users homed here (default: the
    /// bound --quic-addr).
    #[arg(long, requires = "redis_url")]
    advertise_addr: Option<SocketAddr>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `quiver_server=debug`.
    #[arg(long, env = "QUIVER_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        // Logs on stderr; stdout carries only the start-up banner, for scripts.
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mesh = match (args.redis_url, args.mesh_addr, args.cluster_ca) {
        (Some(url), Some(addr), Some(ca)) => Some(MeshConfig {
            advertise_addr: args.advertise_addr,
            ..MeshConfig::new(url, addr, ca)
        }),
        _ => None,
    };
    let config = Config {
        node_id: args.node_id,
        mesh,
        data_dir: args.data_dir,
        quic_addr: args.quic_addr,
        http_addr: args.http_addr,
        cert: args.cert,
        key: args.key,
        token_ttl_secs: args.token_ttl_secs,
        storage_cache_bytes: args.storage_cache_mib << 20,
        limits: Limits {
            logins_per_minute_per_account: args.logins_per_minute_per_account,
            logins_per_minute_per_address: args.logins_per_minute_per_address,
            messages_per_sec: args.messages_per_sec,
            message_burst: args.message_burst,
            max_connections_per_address: args.max_connections_per_address,
            max_conversations_per_user: args.max_conversations_per_user,
            ..Limits::default()
        },
    };
    let node = Node::start(config).await.context("starting node")?;
    // The banner is for people and scripts; a closed stdout must not stop the node, so
    // write errors are ignored (println! would panic).
    let mut banner = format!(
        "quiver node up\n  quic  {}\n  https https://{}\n",
        node.quic_addr(),
        node.http_addr()
    );
    if let Some(mesh) = node.mesh_addr() {
        banner.push_str(&format!("  mesh  {mesh}\n"));
    }
    if let Some(ca) = node.ca_cert() {
        let ca = std::fs::canonicalize(ca).unwrap_or_else(|_| ca.to_path_buf());
        banner.push_str(&format!("  dev CA for clients: {}\n", ca.display()));
    }
    let mut stdout = std::io::stdout();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    wait_for_stop().await;
    tracing::info!("stopping");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_stop() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
