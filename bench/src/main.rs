//! `quiver-bench`: load a fresh `quiver-server` process on loopback and report figures.
//!
//! Run with (release builds; the node binary is found next to this one):
//! `cargo build --release -p quiver-server -p quiver-bench && ./target/release/quiver-bench pairs`

use anyhow::Context;
use clap::{Parser, Subcommand};
use quiver_bench::table::Baseline;
use quiver_bench::workload::{self, Bench};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "Quiver load generator: prints one JSON line and a summary per run")]
struct Args {
    /// The node binary; default: `quiver-server` next to this program.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

/// Baselines `pairs` can be compared with.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Compare {
    /// mosquitto through rumqttc.
    Mqtt,
    /// A QUIC relay in the bench that stores nothing: the transport's ceiling.
    Relay,
}

#[derive(Subcommand)]
enum Mode {
    /// What one small fdatasync'd append costs on this disk now (no node): Quiver's
    /// latency at one message in flight follows it.
    Fsync {
        /// Appends, each synced.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Bytes per append.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Folder for the file; default: the temporary folder, where the bench's nodes
        /// keep their data.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// P senders, each to its own receiver.
    Pairs {
        /// Sender→receiver pairs.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Messages per sender.
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Body size in bytes (at least 16).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Messages per sender waiting for SENT at once.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Also run the same workload against a local broker in the same run (`mqtt`:
        /// mosquitto, QoS 1, persistent sessions), and report the ratio.
        #[arg(long, value_enum)]
        compare: Option<Compare>,
        /// With `--compare` or `--carriers`: this many runs of each, alternating, each on
        /// a fresh node; every figure and their median.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Quiver over both carriers, QUIC over UDP and QUIC in TLS over TCP (the
        /// fallback where UDP is blocked), and mosquitto, alternating.
        #[arg(long)]
        carriers: bool,
    },
    /// Cross-node vs same-node delivery in a mesh of two nodes and a private redis-server
    /// (needs `redis-server` on the PATH): `pairs` twice in one run.
    Hop {
        /// Sender→receiver pairs.
        #[arg(long, default_value_t = 10)]
        pairs: usize,
        /// Messages per sender.
        #[arg(long, default_value_t = 1000)]
        messages: u64,
        /// Body size in bytes (at least 16).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Messages per sender waiting for SENT at once.
        #[arg(long, default_value_t = 1)]
        window: usize,
    },
    /// Many senders to one receiver.
    Fanin {
        /// Senders.
        #[arg(long, default_value_t = 50)]
        senders: usize,
        /// Messages per sender.
        #[arg(long, default_value_t = 1000)]
        messages: u64,
        /// Body size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Messages per sender waiting for SENT at once.
        #[arg(long, default_value_t = 64)]
        window: usize,
    },
    /// A backlog of N messages drained by a device that connects.
    Offline {
        /// Backlog size.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Body size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Messages waiting for SENT at once while filling the backlog.
        #[arg(long, default_value_t = 256)]
        window: usize,
        /// Restart the node (SIGTERM, then start it on the same data) between filling
        /// and draining, and report how long it took to serve again.
        #[arg(long)]
        restart: bool,
    },
    /// Inbox retention: a backlog of N messages for a device that never connects ages
    /// past a short retention and is removed while a probe pair chats at window 1.
    Expire {
        /// Backlog size.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Body size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// The node's `inbox.retention_secs`; must outlast filling the backlog.
        #[arg(long, default_value_t = 30)]
        retention_secs: u64,
        /// The node's `inbox.segment_bytes`, in MiB.
        #[arg(long, default_value_t = 64)]
        segment_mib: u64,
    },
    /// N messages at a receiver that never reads: node memory before and after.
    Stalled {
        /// Messages sent.
        #[arg(long, default_value_t = 100_000)]
        messages: u64,
        /// Body size in bytes.
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Messages waiting for SENT at once.
        #[arg(long, default_value_t = 256)]
        window: usize,
    },
    /// One file from Alice to Bob, up and down, with a paced chat in the same pair next to
    /// each transfer (and alone first, as the baseline).
    File {
        /// File size in MiB.
        #[arg(long, default_value_t = 256)]
        mib: usize,
        /// Milliseconds between chats.
        #[arg(long, default_value_t = 20)]
        chat_every_ms: u64,
        /// Where the file and its downloaded copy go (a temporary folder inside it), to
        /// keep them off the node's disk; the system's temporary folder by default.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Push: notifications a node hands to a gateway (in this process, answering each
    /// request after `gateway_delay_ms`), and chat latency meanwhile.
    Push {
        /// Users who are away, each with a push target.
        #[arg(long, default_value_t = 200)]
        recipients: usize,
        /// Chats sent round-robin to them (each wants a notification: no coalescing).
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
        /// Chats waiting for SENT at once.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// How long the gateway takes to answer each request.
        #[arg(long, default_value_t = 0)]
        gateway_delay_ms: u64,
        /// The baseline: recipients register no push target, so nothing is notified.
        #[arg(long)]
        no_targets: bool,
    },
    /// One group: every online member gets what S senders send (deliveries/s, latency).
    Group {
        /// Members of the group.
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Members connected (each its own SDK client and UDP socket).
        #[arg(long, default_value_t = 1000)]
        online: usize,
        /// Members sending (the first of those online).
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Messages per sender.
        #[arg(long, default_value_t = 200)]
        messages: u64,
        /// Body size in bytes (at least 16).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Messages per sender waiting for SENT at once.
        #[arg(long, default_value_t = 64)]
        window: usize,
        /// Also run the same workload against mosquitto (one topic, `online`
        /// subscribers, `senders` publishers) in the same run.
        #[arg(long, value_enum)]
        compare: Option<Compare>,
    },
    /// Node memory per idle group: G groups of M members, nobody connected.
    GroupMemory {
        /// Groups.
        #[arg(long, default_value_t = 1000)]
        groups: usize,
        /// Members of each (the same users in every group).
        #[arg(long, default_value_t = 100)]
        members: usize,
    },
    /// The standard runs, each on a fresh node, as one Markdown table (stdout; the JSON
    /// of every run and the summaries go to stderr). A few minutes.
    Table,
    /// What presence costs the node: users connected, each changing presence once per
    /// window (`--secs`, a minute by default), against the same users idle.
    Presence {
        /// Users connected (each registered and logged in first: argon2 takes a while).
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// Friends each (a ring).
        #[arg(long, default_value_t = 10)]
        friends: usize,
        /// The measuring window, in seconds, idle and then changing.
        #[arg(long, default_value_t = 60)]
        secs: u64,
    },
    /// C idle authenticated connections: node memory per connection.
    Idle {
        /// Connections (each SDK client has its own UDP socket: mind `ulimit -n`).
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        /// Make the connections without the SDK, all on one client UDP socket: QUIC
        /// handshake, Hello, Welcome, as the SDK does. For more connections than this
        /// process may open files.
        #[arg(long)]
        one_socket: bool,
        /// Then hold the connections this many seconds more (keep-alives every 15 s) and
        /// measure again: memory an idle connection gains over time.
        #[arg(long, default_value_t = 0)]
        hold_secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    quiver_bench::steal::watch();
    let server_bin = match args.server_bin {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("quiver-server"),
    };
    let mut push_gateway = None;
    let bench = match args.mode {
        Mode::Fsync { count, size, dir } => {
            let dir = dir.unwrap_or_else(std::env::temp_dir);
            let report = quiver_bench::disk::fsync(&dir, count, size)?;
            println!("{}", report.json);
            eprintln!("{}", report.summary);
            return Ok(());
        }
        Mode::Table => {
            let table = quiver_bench::table::table(&server_bin).await?;
            eprintln!("{}", table.json);
            println!("{}", table.summary);
            return Ok(());
        }
        Mode::Pairs {
            pairs,
            messages,
            size,
            window,
            compare,
            runs,
            carriers,
        } if carriers || runs > 1 => {
            let report = if carriers {
                let carriers = quiver_bench::carriers::carriers;
                carriers(&server_bin, pairs, messages, size, window, runs).await?
            } else if let Some(compare) = compare {
                let baseline = match compare {
                    Compare::Mqtt => Baseline::Mqtt,
                    Compare::Relay => Baseline::Relay,
                };
                let load = (pairs, messages, size, window);
                quiver_bench::table::pairs_runs(&server_bin, load, baseline, runs).await?
            } else {
                anyhow::bail!("--runs needs --compare or --carriers");
            };
            println!("{}", report.json);
            eprintln!("{}", report.summary);
            return Ok(());
        }
        Mode::Hop { .. } => Bench::start_mesh(&server_bin).context("starting the mesh")?,
        Mode::Push {
            gateway_delay_ms, ..
        } => {
            let gateway = quiver_bench::push::Gateway::start(gateway_delay_ms).await?;
            let config = quiver_bench::push::node_config(&gateway.url);
            push_gateway = Some(gateway);
            Bench::start_with_config(&server_bin, &config).context("starting the node")?
        }
        Mode::Group { .. } | Mode::GroupMemory { .. } => {
            let config = quiver_bench::group::node_config();
            Bench::start_with_config(&server_bin, &config).context("starting the node")?
        }
        Mode::Expire {
            retention_secs,
            segment_mib,
            ..
        } => {
            let config = quiver_bench::retention::node_config(retention_secs, segment_mib);
            Bench::start_with_config(&server_bin, &config).context("starting the node")?
        }
        _ => Bench::start(&server_bin).context("starting the node")?,
    };
    let bench = Arc::new(bench);
    let report = match args.mode {
        Mode::Pairs {
            pairs,
            messages,
            size,
            window,
            compare,
            ..
        } => {
            let quiver = workload::pairs(bench, pairs, messages, size, window).await?;
            match compare {
                None => quiver,
                Some(Compare::Mqtt) => {
                    let broker = quiver_bench::mqtt::pairs(pairs, messages, size, window).await?;
                    workload::compared(quiver, broker)
                }
                Some(Compare::Relay) => {
                    let relay = quiver_bench::relay::pairs(pairs, messages, size, window).await?;
                    workload::compared(quiver, relay)
                }
            }
        }
        Mode::Push {
            recipients,
            messages,
            window,
            no_targets,
            ..
        } => {
            let gateway = push_gateway.as_ref().context("the push gateway")?;
            let targets = !no_targets;
            quiver_bench::push::push(bench, gateway, recipients, messages, window, targets).await?
        }
        Mode::Group {
            members,
            online,
            senders,
            messages,
            size,
            window,
            compare,
        } => {
            let quiver =
                quiver_bench::group::group(bench, members, online, senders, messages, size, window)
                    .await?;
            match compare {
                None => quiver,
                Some(Compare::Mqtt) => {
                    let broker =
                        quiver_bench::mqtt::group(online, senders, messages, size, window).await?;
                    workload::compared(quiver, broker)
                }
                Some(Compare::Relay) => anyhow::bail!("group compares with mqtt only"),
            }
        }
        Mode::GroupMemory { groups, members } => {
            quiver_bench::group::memory(bench, groups, members).await?
        }
        Mode::Hop {
            pairs,
            messages,
            size,
            window,
        } => workload::hop(bench, pairs, messages, size, window).await?,
        Mode::Fanin {
            senders,
            messages,
            size,
            window,
        } => workload::fanin(bench, senders, messages, size, window).await?,
        Mode::Offline {
            messages,
            size,
            window,
            restart,
        } => quiver_bench::held::offline(bench, messages, size, window, restart).await?,
        Mode::Stalled {
            messages,
            size,
            window,
        } => quiver_bench::held::stalled(bench, messages, size, window).await?,
        Mode::Expire {
            messages,
            size,
            retention_secs,
            ..
        } => quiver_bench::retention::expire(bench, messages, size, retention_secs).await?,
        Mode::Presence {
            users,
            friends,
            secs,
        } => quiver_bench::presence::presence(bench, users, friends, secs).await?,
        Mode::Idle {
            connections,
            one_socket,
            hold_secs,
        } => quiver_bench::held::idle(bench, connections, one_socket, hold_secs).await?,
        Mode::File {
            mib,
            chat_every_ms,
            dir,
        } => {
            let pace = std::time::Duration::from_millis(chat_every_ms);
            quiver_bench::files::file(bench, mib, pace, dir.as_deref()).await?
        }
        Mode::Table | Mode::Fsync { .. } => anyhow::bail!("runs without a node"),
    };
    println!("{}", report.json);
    eprintln!("{}", report.summary);
    Ok(())
}
