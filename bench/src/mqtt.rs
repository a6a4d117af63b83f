//! The baseline: the same `pairs` workload against a local mosquitto (MQTT 3.1.1, QoS 1,
//! persistent sessions, one topic per receiver), through rumqttc, so every Quiver figure
//! has its broker figure from the same run on the same machine.
//!
//! Mosquitto's QoS 1 means "the broker has it in memory": it writes its store to disk only
//! on its autosave schedule, never per message. Quiver's SENT means "fsynced". The
//! comparison is the one the project set itself; the difference in what the ack promises
//! is part of reading it.

use crate::cluster::free_port;
use crate::workload::{delivery_report, pairs_report, Report, Seen};
use anyhow::{bail, Context};
use quiver_sdk::UserId;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long receivers wait for the last message before counting the rest as lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// A private mosquitto on a free loopback port, persistence on. Killed on drop.
pub struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts `mosquitto` (from the PATH or /usr/sbin) and waits until it accepts.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 0\n\
                 log_dest none\n",
                dir.path().display()
            ),
        )?;
        let binary = ["mosquitto", "/usr/sbin/mosquitto"]
            .into_iter()
            .find(|b| Command::new(b).arg("-h").output().is_ok())
            .context("mosquitto not found (apt-get install mosquitto)")?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("mosquitto did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options(id: &str, port: u16, window: usize) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(window.clamp(1, u16::MAX as usize) as u16)
        .set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// `pairs` against mosquitto: P publishers, each sending M messages of S bytes at QoS 1
/// to its own receiver's topic, with at most W unacknowledged (MQTT inflight).
pub async fn pairs(
    pairs: usize,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<Report> {
    let broker = Mosquitto::start()?;
    let epoch = Instant::now();
    let now_us = move || epoch.elapsed().as_micros() as u64;
    let mut receiving = Vec::new();
    for i in 0..pairs {
        let (client, mut events) =
            AsyncClient::new(options(&format!("rcv{i:05}"), broker.port, window), 1024);
        client
            .subscribe(format!("q/rcv{i:05}"), QoS::AtLeastOnce)
            .await?;
        // Wait for SUBACK so nothing is published before the subscription exists.
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
                break;
            }
        }
        let sender = UserId::parse(&format!("snd{i:05}"))?;
        receiving.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
            let mut check = crate::stats::StreamCheck::default();
            let mut unique = 0;
            while unique < messages {
                let Ok(event) = tokio::time::timeout_at(deadline, events.poll()).await else {
                    break;
                };
                let Ok(Event::Incoming(Packet::Publish(publish))) = event else {
                    continue;
                };
                let Some((index, rest)) = publish.payload.split_first_chunk::<8>() else {
                    continue;
                };
                let Some(sent) = rest.first_chunk::<8>() else {
                    continue;
                };
                let (index, sent) = (u64::from_be_bytes(*index), u64::from_be_bytes(*sent));
                if check.record(index) {
                    unique += 1;
                    seen.arrived(now_us().saturating_sub(sent));
                }
                seen.last_at = Some(Instant::now());
            }
            seen.per_sender.insert(sender, check);
            drop(client);
            seen
        }));
    }
    let started = Instant::now();
    let mut sending = Vec::new();
    for i in 0..pairs {
        let id = format!("snd{i:05}");
        let topic = format!("q/rcv{i:05}");
        let load = Load {
            messages,
            size,
            window,
            epoch,
        };
        sending.push(publish(broker.port, id, topic, None, load));
    }
    let mut clients = Vec::new();
    for task in sending {
        clients.push(task.await??);
    }
    let load = (pairs, messages, size, window);
    let report = pairs_report("pairs-mosquitto-qos1", receiving, load, started).await;
    drop(clients);
    report
}

/// `group` against mosquitto: one topic, `subscribers` subscribed at QoS 1 with
/// persistent sessions; `senders` publishers (not subscribed) each publish `messages`
/// bodies of `size` bytes with at most `window` unacknowledged. Every subscriber should
/// get every message once, in each publisher's order.
pub async fn group(
    subscribers: usize,
    senders: usize,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<Report> {
    let broker = Mosquitto::start()?;
    let epoch = Instant::now();
    let now_us = move || epoch.elapsed().as_micros() as u64;
    let expected = senders as u64 * messages;
    let mut receiving = Vec::new();
    for i in 0..subscribers {
        let (client, mut events) =
            AsyncClient::new(options(&format!("sub{i:05}"), broker.port, window), 4096);
        client.subscribe("q/group", QoS::AtLeastOnce).await?;
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
                break;
            }
        }
        receiving.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
            let mut unique = 0;
            while unique < expected {
                let Ok(event) = tokio::time::timeout_at(deadline, events.poll()).await else {
                    break;
                };
                let Ok(Event::Incoming(Packet::Publish(publish))) = event else {
                    continue;
                };
                let Some((index, sent, sender)) = numbered(&publish.payload) else {
                    continue;
                };
                let Ok(sender) = UserId::parse(&format!("pub{sender:05}")) else {
                    continue;
                };
                if seen.per_sender.entry(sender).or_default().record(index) {
                    unique += 1;
                    seen.arrived(now_us().saturating_sub(sent));
                }
                seen.last_at = Some(Instant::now());
            }
            drop(client);
            seen
        }));
    }
    let started = Instant::now();
    let mut sending = Vec::new();
    for i in 0..senders {
        let id = format!("pub{i:05}");
        let load = Load {
            messages,
            size,
            window,
            epoch,
        };
        sending.push(publish(
            broker.port,
            id,
            "q/group".into(),
            Some(i as u64),
            load,
        ));
    }
    let mut clients = Vec::new();
    for task in sending {
        clients.push(task.await??);
    }
    let mut seen = Seen::default();
    for (receiver, task) in receiving.into_iter().enumerate() {
        seen.merge_receiver(receiver, task.await?);
    }
    drop(clients);
    let params = json!({
        "subscribers": subscribers, "senders": senders, "messages": messages, "size": size,
        "window": window,
    });
    Ok(delivery_report(
        "group-mosquitto-qos1",
        params,
        seen,
        subscribers as u64 * expected,
        started,
    ))
}

/// What one publisher sends: `messages` bodies of `size` bytes, at most `window`
/// unacknowledged, stamped with microseconds since `epoch`.
#[derive(Clone, Copy)]
struct Load {
    messages: u64,
    size: usize,
    window: usize,
    epoch: Instant,
}

/// A publisher task: connects as `id` and publishes `load` to `topic` at QoS 1; each body
/// is its index, its send time and (if given) `sender`, padded. Resolves to the client
/// (dropping it disconnects) once every PUBACK arrived.
fn publish(
    port: u16,
    id: String,
    topic: String,
    sender: Option<u64>,
    load: Load,
) -> tokio::task::JoinHandle<anyhow::Result<AsyncClient>> {
    let Load {
        messages,
        size,
        window,
        epoch,
    } = load;
    let (client, mut events) = AsyncClient::new(options(&id, port, window), 1024);
    // The window as in Quiver's run: a message is stamped when it gets one of `window`
    // places, and its PUBACK gives the place back.
    let places = Arc::new(tokio::sync::Semaphore::new(window));
    let returned = places.clone();
    // The event loop sends, receives PUBACKs and keeps the connection.
    let driver = tokio::spawn(async move {
        let mut acks = 0;
        while acks < messages {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acks += 1;
                    returned.add_permits(1);
                }
                Ok(_) => {}
                Err(e) => return Err(anyhow::anyhow!("publisher {id}: {e}")),
            }
        }
        Ok(())
    });
    let least = if sender.is_some() { 24 } else { 16 };
    tokio::spawn(async move {
        for index in 0..messages {
            places.acquire().await?.forget();
            let mut body = Vec::with_capacity(size.max(least));
            body.extend_from_slice(&index.to_be_bytes());
            body.extend_from_slice(&(epoch.elapsed().as_micros() as u64).to_be_bytes());
            if let Some(sender) = sender {
                body.extend_from_slice(&sender.to_be_bytes());
            }
            body.resize(size.max(least), 0x5a);
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, body)
                .await?;
        }
        driver.await??;
        anyhow::Ok(client)
    })
}

/// Index, send time (µs) and sender of a group body.
fn numbered(payload: &[u8]) -> Option<(u64, u64, u64)> {
    let word = |at: usize| {
        Some(u64::from_be_bytes(
            payload.get(at..at + 8)?.try_into().ok()?,
        ))
    };
    Some((word(0)?, word(8)?, word(16)?))
}
