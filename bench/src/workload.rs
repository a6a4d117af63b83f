//! The bench's harness ([`Bench`]) and the chat workloads (`pairs`, `hop`, `fanin`). Each
//! sets up users on a fresh node, runs, and returns a [`Report`]:
//! one JSON object for machines and a line for people.

use crate::cluster::{node_args, ClusterCa, RedisServer};
use crate::node::{process_cpu_time, NodeProcess};
use crate::stats::{percentile, StreamCheck};
use anyhow::Context;
use quiver_sdk::{
    Client, ConnectOptions, Event, Events, FriendKey, GroupId, LoginResponse, Rest, UserId,
};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long receivers wait for the last message before counting the rest as lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// What a run measured.
pub struct Report {
    /// All figures, for machines.
    pub json: Value,
    /// One line, for people.
    pub summary: String,
}

/// Fresh node processes (one, or a mesh of two with its own Redis) with helpers to make
/// users and clients.
pub struct Bench {
    /// The node under test (the first node of a mesh).
    pub node: NodeProcess,
    pub(crate) rest: Rest,
    /// The second node of a mesh.
    peer: Option<(NodeProcess, Rest)>,
    pub(crate) ca: String,
    epoch: Instant,
    /// Carry the SDK clients over the TCP carrier (QUIC in TLS over TCP).
    pub tcp_only: bool,
    _redis: Option<RedisServer>,
    _cluster_ca: Option<ClusterCa>,
    _dir: tempfile::TempDir,
}

/// An authenticated connection made without the SDK (see [`Bench::hello`]); the session
/// lasts as long as it.
#[allow(dead_code)] // the control stream is held, not used
pub struct RawSession(quinn::Connection, quinn::SendStream, quinn::RecvStream);

impl RawSession {
    /// The connection.
    pub fn connection(&self) -> &quinn::Connection {
        &self.0
    }
}

/// Every simulated user logs in from loopback, and the point is to find the node's own
/// limits: lift the per-address login limit and the per-connection send rate.
const UNLIMITED: [&str; 8] = [
    "--logins-per-minute-per-address",
    "1000000",
    "--max-connections-per-address",
    "1000000",
    "--messages-per-sec",
    "1000000",
    "--message-burst",
    "1000000",
];

impl Bench {
    /// Starts `server_bin` on a temporary data folder.
    pub fn start(server_bin: &Path) -> anyhow::Result<Self> {
        Self::start_with_config(server_bin, "")
    }

    /// Starts `server_bin` on a temporary data folder with `toml` as its configuration
    /// file (flags still lift the per-address and per-connection limits).
    pub fn start_with_config(server_bin: &Path, toml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("node");
        let config = dir.path().join("node.toml");
        std::fs::write(&config, toml)?;
        let config = config.to_str().context("temporary path")?;
        let mut flags = UNLIMITED.to_vec();
        flags.extend(["--config", config]);
        let node = NodeProcess::start(server_bin, &data, "127.0.0.1:0", "127.0.0.1:0", &flags)?;
        let ca = std::fs::read_to_string(data.join("certs/ca.pem")).context("dev CA")?;
        let rest = Rest::new(&format!("https://{}", node.http), &ca)?;
        Ok(Self {
            node,
            rest,
            peer: None,
            ca,
            epoch: Instant::now(),
            tcp_only: false,
            _redis: None,
            _cluster_ca: None,
            _dir: dir,
        })
    }

    /// Starts a private `redis-server` and two mesh nodes, `n1` and `n2`.
    pub fn start_mesh(server_bin: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let redis = RedisServer::start()?;
        let cluster_ca = ClusterCa::new("Quiver bench CA")?;
        let ca = cluster_ca.ca_pem()?;
        let mut nodes = Vec::new();
        for id in ["n1", "n2"] {
            let mut args = node_args(&cluster_ca, &redis.url(), id, "127.0.0.1:0".parse()?)?;
            args.extend(UNLIMITED.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let data = dir.path().join(id);
            let node = NodeProcess::start(server_bin, &data, "127.0.0.1:0", "127.0.0.1:0", &args)?;
            let rest = Rest::new(&format!("https://{}", node.http), &ca)?;
            nodes.push((node, rest));
        }
        let peer = nodes.pop();
        let (node, rest) = nodes.pop().context("two nodes")?;
        Ok(Self {
            node,
            rest,
            peer,
            ca,
            epoch: Instant::now(),
            tcp_only: false,
            _redis: Some(redis),
            _cluster_ca: Some(cluster_ca),
            _dir: dir,
        })
    }

    /// The first node's metrics, in Prometheus text form.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.rest.metrics().await?)
    }

    /// Node `at` (0: the first; 1: the mesh peer) and its REST client.
    fn at(&self, at: usize) -> anyhow::Result<(&NodeProcess, &Rest)> {
        match (at, &self.peer) {
            (0, _) => Ok((&self.node, &self.rest)),
            (1, Some((node, rest))) => Ok((node, rest)),
            _ => anyhow::bail!("no node {at} in this bench"),
        }
    }

    /// Registers and logs in every name, a few at a time (argon2 is deliberately slow).
    pub async fn users(&self, names: &[String]) -> anyhow::Result<Vec<LoginResponse>> {
        self.users_on(names, 0).await
    }

    /// Registers every name on node `at` (its home) and logs in.
    pub async fn users_on(
        &self,
        names: &[String],
        at: usize,
    ) -> anyhow::Result<Vec<LoginResponse>> {
        let limit = Arc::new(Semaphore::new(8));
        let rest = self.at(at)?.1;
        let mut tasks = Vec::new();
        for name in names {
            let (rest, name, limit) = (rest.clone(), name.clone(), limit.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire().await?;
                rest.register(&name, "bench-password").await?;
                anyhow::Ok(rest.login(&name, "bench-password", None).await?)
            }));
        }
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await??);
        }
        Ok(out)
    }

    /// Makes the two friends.
    pub async fn befriend(&self, a: &LoginResponse, b: &LoginResponse) -> anyhow::Result<()> {
        self.rest.request_friend(&a.token, b.user.as_str()).await?;
        self.rest.accept_friend(&b.token, a.user.as_str()).await?;
        Ok(())
    }

    /// Connects a client with its friendship keys.
    pub async fn connect(&self, login: &LoginResponse) -> anyhow::Result<(Client, Events)> {
        self.connect_on(login, 0).await
    }

    /// Connects a client to node `at`.
    pub async fn connect_on(
        &self,
        login: &LoginResponse,
        at: usize,
    ) -> anyhow::Result<(Client, Events)> {
        let mut options = ConnectOptions::new(self.at(at)?.0.quic, &self.ca, &login.token);
        for friend in self.rest.friends(&login.token).await?.friends {
            let key = quiver_sdk::key_from_hex(&friend.key).context("friend key")?;
            options.keys.insert(friend.user, FriendKey(key));
        }
        // Many clients in one process: one network watcher each would only add sockets.
        options.watch_network = false;
        options.tcp_only = self.tcp_only;
        Ok(Client::connect(options).await?)
    }

    /// One client endpoint (one UDP socket) for many raw connections. Its receive buffer
    /// is the node's (`udp_buffer_bytes`): with the kernel's default, tens of thousands
    /// of handshakes at once overflow it, and the lost packets (QUIC's backoff) are the
    /// client's, not the node's.
    pub fn one_socket(&self) -> anyhow::Result<quinn::Endpoint> {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
        let mut endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket,
            std::sync::Arc::new(quinn::TokioRuntime),
        )?;
        let keep_alive = Duration::from_secs(15);
        let config = quiver_sdk::tls::quic_config(&self.ca, keep_alive, Duration::from_secs(60))
            .map_err(anyhow::Error::msg)?;
        endpoint.set_default_client_config(config);
        Ok(endpoint)
    }

    /// A raw connection on `endpoint` that says Hello and waits for Welcome, as the SDK
    /// does, and keeps its control stream open.
    pub async fn hello(
        &self,
        endpoint: &quinn::Endpoint,
        login: &LoginResponse,
    ) -> anyhow::Result<RawSession> {
        let conn = endpoint.connect(self.node.quic, "127.0.0.1")?.await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = quiver_proto::ControlRequest::Hello {
            version: quiver_proto::PROTOCOL_VERSION,
            token: login.token.clone(),
        };
        send.write_all(&quiver_proto::encode_frame(&hello)?).await?;
        let mut header = [0u8; 4];
        recv.read_exact(&mut header).await?;
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        recv.read_exact(&mut payload).await?;
        match quiver_proto::decode_payload(&payload)? {
            quiver_proto::ControlResponse::Welcome { .. } => Ok(RawSession(conn, send, recv)),
            other => anyhow::bail!("no welcome: {other:?}"),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A body of `size` bytes (at least 16): message index, send time, padding.
    pub(crate) fn body(&self, index: u64, size: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(size.max(16));
        body.extend_from_slice(&index.to_be_bytes());
        body.extend_from_slice(&self.now_us().to_be_bytes());
        body.resize(size.max(16), 0x5a);
        body
    }

    /// Index and latency (µs) of a body made by [`Bench::body`].
    pub(crate) fn read_body(&self, body: &[u8]) -> Option<(u64, u64)> {
        let index = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
        let sent = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
        Some((index, self.now_us().saturating_sub(sent)))
    }
}

/// Whom numbered bodies go to.
pub(crate) enum To {
    Friend(UserId),
    Group(GroupId),
}

impl From<UserId> for To {
    fn from(user: UserId) -> Self {
        To::Friend(user)
    }
}

/// Sends `messages` numbered bodies to `to`, in order, with at most `window` waiting for
/// SENT. Returns when every one is SENT.
pub(crate) async fn send_numbered(
    bench: Arc<Bench>,
    client: Client,
    to: impl Into<To>,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<()> {
    let to = to.into();
    let window = Arc::new(Semaphore::new(window));
    // One task awaits each SENT in turn (they come in the order sent, on the one
    // stream) and gives its place in the window back, as the mosquitto publisher's
    // event loop does with PUBACKs: no task per message on either side.
    let (waiting, mut sent) = tokio::sync::mpsc::unbounded_channel();
    let answers = tokio::spawn(async move {
        while let Some((pending, permit)) = sent.recv().await {
            let pending: quiver_sdk::PendingSend = pending;
            pending.await?;
            drop(permit);
        }
        anyhow::Ok(())
    });
    for index in 0..messages {
        let permit = window.clone().acquire_owned().await?;
        let body = bench.body(index, size);
        let pending = match &to {
            To::Friend(user) => client.enqueue(user, &body).await?,
            To::Group(group) => client.enqueue_group(group, &body).await?,
        };
        if waiting.send((pending, permit)).is_err() {
            break; // The answers task failed: its error is below.
        }
    }
    drop(waiting);
    answers.await?
}

/// Runs [`send_numbered`] for every (client, recipient) at once; returns when all are SENT.
async fn send_all(
    bench: &Arc<Bench>,
    senders: Vec<(Client, UserId)>,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<()> {
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|(client, to)| {
            tokio::spawn(send_numbered(
                bench.clone(),
                client,
                to,
                messages,
                size,
                window,
            ))
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// What receivers saw.
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) latencies_us: Vec<u64>,
    /// When each new message arrived, to find the longest time nothing did.
    arrivals: Vec<Instant>,
    pub(crate) per_sender: HashMap<UserId, StreamCheck>,
    pub(crate) last_at: Option<Instant>,
    /// Each merged receiver's own p99 (µs): a tail every receiver shares is a pause of the
    /// whole system; one a few receivers make is unequal service.
    receivers_p99_us: Vec<u64>,
}

impl Seen {
    /// A new (not repeated) message arrived now, `latency_us` after it was sent.
    pub(crate) fn arrived(&mut self, latency_us: u64) {
        self.latencies_us.push(latency_us);
        self.arrivals.push(Instant::now());
    }

    /// Adds another receiver's observations. In these workloads no two receivers hear
    /// from the same sender, so the per-sender checks never overlap.
    pub(crate) fn merge(&mut self, mut other: Seen) {
        if !other.latencies_us.is_empty() {
            other.latencies_us.sort_unstable();
            let p99 = percentile(&other.latencies_us, 99.0);
            self.receivers_p99_us.push(p99);
        }
        self.latencies_us.extend(other.latencies_us);
        self.arrivals.extend(other.arrivals);
        self.per_sender.extend(other.per_sender);
        self.last_at = self.last_at.max(other.last_at);
    }

    /// Adds receiver `receiver`'s observations where several receivers hear the same
    /// senders (a group, a topic): each (receiver, sender) stream is checked apart.
    pub(crate) fn merge_receiver(&mut self, receiver: usize, other: Seen) {
        self.latencies_us.extend(other.latencies_us);
        self.arrivals.extend(other.arrivals);
        for (sender, check) in other.per_sender {
            let stream = format!("r{receiver}-{sender}");
            if let Ok(stream) = UserId::parse(&stream) {
                self.per_sender.insert(stream, check);
            }
        }
        self.last_at = self.last_at.max(other.last_at);
    }

    pub(crate) fn unique(&self) -> u64 {
        self.per_sender.values().map(StreamCheck::unique).sum()
    }

    fn duplicated(&self) -> u64 {
        self.per_sender.values().map(|c| c.duplicated).sum()
    }

    fn reordered(&self) -> u64 {
        self.per_sender.values().map(|c| c.reordered).sum()
    }

    /// The first and last instant of the longest time between two arrivals at any
    /// receivers: a pause of the whole system (a slow `fdatasync`, a process or a whole
    /// virtual machine descheduled — [`crate::steal`]) shows here, where a percentile of
    /// latencies spreads it over many messages.
    fn longest_silence(&mut self) -> Option<(Instant, Instant)> {
        self.arrivals.sort_unstable();
        self.arrivals
            .windows(2)
            .max_by_key(|w| w[1].duration_since(w[0]))
            .map(|w| (w[0], w[1]))
    }
}

/// Takes events until `expected` numbered messages arrived (or the drain limit passed).
/// Receipts are taken too (that acknowledges them), and ignored.
pub(crate) async fn receive_numbered(bench: Arc<Bench>, mut events: Events, expected: u64) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    while seen.unique() < expected {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await else {
            break;
        };
        if let Event::Message(m) = event {
            if let Some((index, latency)) = bench.read_body(&m.body) {
                if seen.per_sender.entry(m.from).or_default().record(index) {
                    seen.arrived(latency);
                }
                seen.last_at = Some(Instant::now());
            }
        }
    }
    seen
}

/// Takes (and so acknowledges) every event until the stream ends, like a real app.
pub(crate) fn drain(mut events: Events) {
    tokio::spawn(async move { while events.recv().await.is_some() {} });
}

pub(crate) fn delivery_report(
    mode: &str,
    params: Value,
    mut seen: Seen,
    sent: u64,
    started: Instant,
) -> Report {
    seen.latencies_us.sort_unstable();
    let elapsed = seen
        .last_at
        .map_or(Duration::ZERO, |t| t.duration_since(started));
    let rate = seen.unique() as f64 / elapsed.as_secs_f64().max(1e-9);
    let ms = |us: u64| us as f64 / 1000.0;
    let (p50, p99, max) = (
        percentile(&seen.latencies_us, 50.0),
        percentile(&seen.latencies_us, 99.0),
        seen.latencies_us.last().copied().unwrap_or(0),
    );
    let lost = sent - seen.unique();
    let silent = seen.longest_silence();
    let silence = silent.map_or(0.0, |(from, to)| {
        ms(to.duration_since(from).as_micros() as u64)
    });
    let mut json = json!({
        "mode": mode, "params": params, "sent": sent, "delivered": seen.unique(),
        "seconds": elapsed.as_secs_f64(), "messages_per_sec": rate,
        "latency_ms": { "p50": ms(p50), "p99": ms(p99), "max": ms(max) },
        "lost": lost, "duplicated": seen.duplicated(), "reordered": seen.reordered(),
        "longest_silence_ms": silence,
    });
    let mut summary = format!(
        "{mode} {params}: {} msgs in {:.2}s = {rate:.0} msg/s; latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms; lost {lost} dup {} reorder {}",
        seen.unique(),
        elapsed.as_secs_f64(),
        ms(p50),
        ms(p99),
        ms(max),
        seen.duplicated(),
        seen.reordered()
    );
    summary += &format!("; longest silence {silence:.1} ms");
    let end = seen.last_at.unwrap_or(started);
    if let Some((cpus, said)) = crate::steal::report(started, end, silent) {
        json["cpus"] = cpus;
        summary += &said;
    }
    seen.receivers_p99_us.sort_unstable();
    if let (Some(&min), Some(&max)) = (seen.receivers_p99_us.first(), seen.receivers_p99_us.last())
    {
        let median = percentile(&seen.receivers_p99_us, 50.0);
        json["receivers_p99_ms"] = json!({ "min": ms(min), "median": ms(median), "max": ms(max) });
        summary += &format!(
            "; receivers' p99 {:.0} / {:.0} / {:.0} ms (min / median / max)",
            ms(min),
            ms(median),
            ms(max)
        );
    }
    Report { json, summary }
}

/// `pairs`: P senders, each sending M messages of S bytes to its own receiver.
pub async fn pairs(
    bench: Arc<Bench>,
    pairs: usize,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<Report> {
    let spec = PairsSpec {
        prefix: "",
        pairs,
        messages,
        size,
        window,
        receivers_home: 0,
        receivers_at: 0,
    };
    run_pairs(bench, "pairs", spec).await
}

/// Puts a Quiver report and a baseline's from the same run side by side, with the ratios
/// of throughput and latency (Quiver over baseline).
pub fn compared(quiver: Report, baseline: Report) -> Report {
    let get = |r: &Report, path: &[&str]| {
        path.iter()
            .fold(&r.json, |v, k| &v[*k])
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let ratio = |path: &[&str]| get(&quiver, path) / get(&baseline, path);
    let throughput = ratio(&["messages_per_sec"]);
    let json = json!({
        "mode": "compare", "quiver": quiver.json, "baseline": baseline.json,
        "ratio": {
            "throughput": throughput,
            "latency_p50": ratio(&["latency_ms", "p50"]),
            "latency_p99": ratio(&["latency_ms", "p99"]),
        },
    });
    let summary = format!(
        "{}\n{}\nquiver/baseline throughput ratio: {throughput:.2}",
        quiver.summary, baseline.summary
    );
    Report { json, summary }
}

/// `hop` (a mesh of two): the `pairs` workload three times in one run — every user on
/// node 1; receivers homed on and connected to node 2 (each message and each receipt
/// crosses the mesh once); receivers homed on node 2 but connected to node 1 (each
/// message crosses twice: to its home node, and back through the receiver's attachment).
pub async fn hop(
    bench: Arc<Bench>,
    pairs: usize,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<Report> {
    let mut spec = PairsSpec {
        prefix: "same",
        pairs,
        messages,
        size,
        window,
        receivers_home: 0,
        receivers_at: 0,
    };
    let same = run_pairs(bench.clone(), "hop-same-node", spec.clone()).await?;
    spec.prefix = "cross";
    spec.receivers_home = 1;
    spec.receivers_at = 1;
    let cross = run_pairs(bench.clone(), "hop-cross-node", spec.clone()).await?;
    spec.prefix = "away";
    spec.receivers_at = 0;
    let away = run_pairs(bench, "hop-away-from-home", spec).await?;
    let p = |r: &Report, q: &str| r.json["latency_ms"][q].as_f64().unwrap_or(f64::NAN);
    let extra = |r: &Report| json!({ "p50": p(r, "p50") - p(&same, "p50"), "p99": p(r, "p99") - p(&same, "p99") });
    let json = json!({
        "mode": "hop", "same_node": same.json, "cross_node": cross.json, "away_from_home": away.json,
        "extra_latency_ms": { "cross_node": extra(&cross), "away_from_home": extra(&away) },
    });
    let summary = format!("{}\n{}\n{}", same.summary, cross.summary, away.summary);
    Ok(Report { json, summary })
}

/// One `pairs` run: who, how many, where the receivers are.
#[derive(Clone)]
struct PairsSpec {
    prefix: &'static str,
    pairs: usize,
    messages: u64,
    size: usize,
    window: usize,
    /// The node receivers are homed on (senders: node 0).
    receivers_home: usize,
    /// The node receivers connect to (senders: node 0).
    receivers_at: usize,
}

async fn run_pairs(bench: Arc<Bench>, mode: &str, spec: PairsSpec) -> anyhow::Result<Report> {
    let PairsSpec {
        prefix,
        pairs,
        messages,
        size,
        window,
        receivers_home,
        receivers_at,
    } = spec;
    let names = |role: &str| -> Vec<String> {
        (0..pairs)
            .map(|i| format!("{prefix}{role}{i:05}"))
            .collect()
    };
    let sender_logins = bench.users(&names("snd")).await?;
    let receiver_logins = bench.users_on(&names("rcv"), receivers_home).await?;
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for (s, r) in sender_logins.iter().zip(&receiver_logins) {
        bench.befriend(s, r).await?;
        let (sender, sender_events) = bench.connect(s).await?;
        drain(sender_events);
        let (receiver, receiver_events) = bench.connect_on(r, receivers_at).await?;
        receivers.push((receiver, receiver_events));
        senders.push((sender, r.user.clone()));
    }
    let cpu = CpuUse::start(&bench.node)?;
    let started = Instant::now();
    let mut receiving = Vec::new();
    for (client, events) in receivers {
        let bench = bench.clone();
        receiving.push(tokio::spawn(async move {
            let seen = receive_numbered(bench, events, messages).await;
            drop(client);
            seen
        }));
    }
    send_all(&bench, senders, messages, size, window).await?;
    let report = pairs_report(mode, receiving, (pairs, messages, size, window), started).await?;
    cpu.add_to(report, &bench.node)
}

/// The CPU the node and this process (the clients) used from `start` to `add_to`: a
/// figure less noisy than throughput on a shared machine, as both are CPU-bound here.
struct CpuUse {
    node: Duration,
    clients: Duration,
}

impl CpuUse {
    fn start(node: &NodeProcess) -> anyhow::Result<Self> {
        Ok(Self {
            node: node.cpu_time()?,
            clients: process_cpu_time("self")?,
        })
    }

    /// `report` with the CPU used since `start` per delivered message, in microseconds.
    fn add_to(self, mut report: Report, node: &NodeProcess) -> anyhow::Result<Report> {
        let delivered = report.json["delivered"].as_f64().unwrap_or(0.0).max(1.0);
        let per_message = |d: Duration| d.as_secs_f64() * 1e6 / delivered;
        let node = per_message(node.cpu_time()?.saturating_sub(self.node));
        let clients = per_message(process_cpu_time("self")?.saturating_sub(self.clients));
        report.json["cpu_us_per_msg"] = json!({ "node": node, "clients": clients });
        report.summary += &format!("; cpu/msg node {node:.1} us clients {clients:.1} us");
        Ok(report)
    }
}

/// The report of a `pairs` run (pairs, messages, size, window) against Quiver or a
/// baseline: every receiver's observations merged, counted from `started`.
pub(crate) async fn pairs_report(
    mode: &str,
    receiving: Vec<tokio::task::JoinHandle<Seen>>,
    (pairs, messages, size, window): (usize, u64, usize, usize),
    started: Instant,
) -> anyhow::Result<Report> {
    let mut seen = Seen::default();
    for task in receiving {
        seen.merge(task.await?);
    }
    let params = json!({ "pairs": pairs, "messages": messages, "size": size, "window": window });
    let expected = pairs as u64 * messages;
    Ok(delivery_report(mode, params, seen, expected, started))
}

/// `fanin`: P senders, each sending M messages of S bytes to one popular receiver.
pub async fn fanin(
    bench: Arc<Bench>,
    senders: usize,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<Report> {
    let mut names: Vec<String> = (0..senders).map(|i| format!("fan{i:05}")).collect();
    names.push("popular".into());
    let logins = bench.users(&names).await?;
    let popular = logins.last().context("receiver")?.clone();
    for login in &logins[..senders] {
        bench.befriend(login, &popular).await?;
    }
    let (receiver, receiver_events) = bench.connect(&popular).await?;
    let mut clients = Vec::new();
    for login in &logins[..senders] {
        let (client, events) = bench.connect(login).await?;
        drain(events);
        clients.push(client);
    }
    let started = Instant::now();
    let total = senders as u64 * messages;
    let receiving = tokio::spawn(receive_numbered(bench.clone(), receiver_events, total));
    let to_popular = clients
        .into_iter()
        .map(|c| (c, popular.user.clone()))
        .collect();
    send_all(&bench, to_popular, messages, size, window).await?;
    let seen = receiving.await?;
    drop(receiver);
    let params =
        json!({ "senders": senders, "messages": messages, "size": size, "window": window });
    Ok(delivery_report("fanin", params, seen, total, started))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(latencies_us: &[u64], arrivals: &[Instant]) -> Seen {
        Seen {
            latencies_us: latencies_us.to_vec(),
            arrivals: arrivals.to_vec(),
            ..Seen::default()
        }
    }

    /// Each receiver's own p99 is kept, and the longest silence is the widest gap
    /// between arrivals at any receivers, not within one.
    #[test]
    fn merged_receivers_keep_their_p99_and_the_widest_gap_of_all() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        let mut seen = Seen::default();
        seen.merge(receiver(&[1, 2, 3, 900], &[at(0), at(10), at(20), at(70)]));
        seen.merge(receiver(&[5, 6], &[at(5), at(30)]));
        seen.receivers_p99_us.sort_unstable();
        assert_eq!(seen.receivers_p99_us, vec![6, 900]);
        assert_eq!(seen.longest_silence(), Some((at(30), at(70))));
    }
}
