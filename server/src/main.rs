//! `quiver-server`: runs one Quiver node.
//!
//! Run with `cargo run --release -p quiver-server` (no flags: loopback, dev certificates
//! and sled data in `./quiver-data`). Configuration comes from, in rising precedence: the
//! defaults in code, a TOML file (`--config`), environment variables, flags.
//! `quiver-server print-config` prints the result as TOML and exits.

use anyhow::Context;
use clap::{Parser, Subcommand};
use quiver_server::config::MeshConfig;
use quiver_server::{Config, Node};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    about = "Quiver messaging node: QUIC for devices, HTTPS for accounts",
    after_help = "Every limit has a TOML key under [limits], [http], [files] or [inbox] (see \
                  `print-config`); flags and environment variables override the file."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file; flags and environment variables override what it says.
    #[arg(long, env = "QUIVER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Folder for data, dev certificates and secrets [default: quiver-data].
    #[arg(long, env = "QUIVER_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// UDP address for device connections (QUIC) [default: 127.0.0.1:4433].
    #[arg(long, env = "QUIVER_QUIC_ADDR", global = true)]
    quic_addr: Option<SocketAddr>,
    /// TCP address for the REST API (HTTPS) [default: 127.0.0.1:8443].
    #[arg(long, env = "QUIVER_HTTP_ADDR", global = true)]
    http_addr: Option<SocketAddr>,
    /// TLS certificate chain (PEM); dev certificates are made when omitted.
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// Lifetime of login tokens, in seconds [default: 86400].
    #[arg(long, global = true)]
    token_ttl_secs: Option<u64>,
    /// Login attempts per account from one address per minute; past it 429 for that
    /// address only [default: 10].
    #[arg(long, global = true)]
    logins_per_minute_per_account: Option<u32>,
    /// Logins and registrations per client address per minute [default: 60].
    #[arg(long, global = true)]
    logins_per_minute_per_address: Option<u32>,
    /// Receive and send buffer of the QUIC socket, in bytes; 0 leaves the kernel's
    /// default [default: 4194304].
    #[arg(long, global = true)]
    udp_buffer_bytes: Option<usize>,
    /// Chat messages one connection may send per second; past it RateLimited, and the SDK
    /// slows down and retries [default: 500].
    #[arg(long, global = true)]
    messages_per_sec: Option<u32>,
    /// Chat messages one connection may send in a burst [default: 1000].
    #[arg(long, global = true)]
    message_burst: Option<u32>,
    /// Connections one client address may have open; past it TooManyConnections
    /// [default: 4096].
    #[arg(long, global = true)]
    max_connections_per_address: Option<u32>,
    /// Conversation streams one user may have open, over all its devices; past it
    /// TooManyStreams [default: 1024].
    #[arg(long, global = true)]
    max_conversations_per_user: Option<u32>,
    /// Inbox entries are kept at least this long, delivered or not; 0 keeps them forever
    /// [default: 2592000, 30 days].
    #[arg(long, env = "QUIVER_INBOX_RETENTION_SECS", global = true)]
    inbox_retention_secs: Option<u64>,
    /// Memory for sled's page cache, in MiB [default: 64].
    #[arg(long, global = true)]
    storage_cache_mib: Option<u64>,
    /// This node's id: recorded as the home of users who register here; unique in a mesh
    /// and named (as a DNS name) in the node's certificate [default: local].
    #[arg(long, env = "QUIVER_NODE_ID", global = true)]
    node_id: Option<String>,
    /// Mesh mode: the Redis holding the directory and the node registry
    /// (`redis://host:port`). Needs a mesh address, a cluster CA, a cert and a key.
    #[arg(long, env = "QUIVER_REDIS_URL", global = true)]
    redis_url: Option<String>,
    /// Mesh mode: UDP address of the node-to-node endpoint (mutual TLS).
    #[arg(long, env = "QUIVER_MESH_ADDR", global = true)]
    mesh_addr: Option<SocketAddr>,
    /// Mesh mode: the cluster CA (PEM) that signed every node's certificate.
    #[arg(long, env = "QUIVER_CLUSTER_CA", global = true)]
    cluster_ca: Option<PathBuf>,
    /// Mesh mode: the QUIC address clients are told for users homed here (default: the
    /// bound --quic-addr).
    #[arg(long, global = true)]
    advertise_addr: Option<SocketAddr>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `quiver_server=debug`.
    #[arg(long, env = "QUIVER_LOG", default_value = "info", global = true)]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration (defaults, file, environment, flags) as TOML.
    PrintConfig,
}

/// Defaults, then the file, then environment variables and flags.
fn config(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Config::default(),
    };
    fn set<T: Clone>(target: &mut T, value: &Option<T>) {
        if let Some(value) = value {
            *target = value.clone();
        }
    }
    set(&mut config.data_dir, &args.data_dir);
    set(&mut config.quic_addr, &args.quic_addr);
    set(&mut config.http_addr, &args.http_addr);
    set(&mut config.node_id, &args.node_id);
    set(&mut config.token_ttl_secs, &args.token_ttl_secs);
    set(&mut config.inbox.retention_secs, &args.inbox_retention_secs);
    if args.cert.is_some() {
        config.cert = args.cert.clone();
    }
    if args.key.is_some() {
        config.key = args.key.clone();
    }
    if let Some(mib) = args.storage_cache_mib {
        config.storage_cache_bytes = mib << 20;
    }
    set(&mut config.udp_buffer_bytes, &args.udp_buffer_bytes);
    let limits = &mut config.limits;
    set(
        &mut limits.logins_per_minute_per_account,
        &args.logins_per_minute_per_account,
    );
    set(
        &mut limits.logins_per_minute_per_address,
        &args.logins_per_minute_per_address,
    );
    set(&mut limits.messages_per_sec, &args.messages_per_sec);
    set(&mut limits.message_burst, &args.message_burst);
    set(
        &mut limits.max_connections_per_address,
        &args.max_connections_per_address,
    );
    set(
        &mut limits.max_conversations_per_user,
        &args.max_conversations_per_user,
    );
    if let Some(url) = &args.redis_url {
        let (Some(addr), Some(ca)) = (args.mesh_addr, &args.cluster_ca) else {
            anyhow::bail!("--redis-url needs --mesh-addr and --cluster-ca");
        };
        config.mesh = Some(MeshConfig::new(url.clone(), addr, ca.clone()));
    }
    if let Some(mesh) = &mut config.mesh {
        set(&mut mesh.mesh_addr, &args.mesh_addr);
        if args.cluster_ca.is_some() {
            mesh.cluster_ca = args.cluster_ca.clone().unwrap_or_default();
        }
        if args.advertise_addr.is_some() {
            mesh.advertise_addr = args.advertise_addr;
        }
    } else if args.mesh_addr.is_some() || args.cluster_ca.is_some() {
        anyhow::bail!("--mesh-addr and --cluster-ca need --redis-url (mesh mode)");
    }
    config.validate()?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = config(&args)?;
    if let Some(Command::PrintConfig) = args.command {
        let text = toml::to_string(&config).context("printing the configuration")?;
        std::io::stdout().write_all(text.as_bytes())?;
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        // Logs on stderr; stdout carries only the start-up banner, for scripts.
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    raise_open_file_limit();
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

/// Raises the soft limit on open files to the hard one, as Go's runtime does at start:
/// the inbox keeps a file open per log segment (how many grows with the retention), and
/// every HTTPS client holds a socket. The soft default is often 1,024.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // `None` is no limit.
    let limit = getrlimit(Resource::Nofile);
    let below = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) => current < maximum,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    tracing::info!(open_files = ?now, "open-file limit");
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
