//! The `file` workload: one file from Alice to Bob, upload then download, with a paced chat
//! in the same pair running next to each transfer, and the same chat alone first as the
//! baseline. Reports MB/s both ways and chat latency (SENT, DELIVERED) idle and during.

use crate::stats::percentile;
use crate::workload::{Bench, Report};
use anyhow::{bail, Context};
use quiver_sdk::{Client, Event, Events, FileOffer, ReceiptKind, Seq, UserId};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Receipts as they reach the sender, time-stamped.
pub type Receipts = mpsc::UnboundedReceiver<(Seq, ReceiptKind, Instant)>;

/// Takes every event of a sender and passes its receipts on, time-stamped.
pub fn receipts_of(mut events: Events) -> Receipts {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Event::Receipt(r) = event {
                let _ = tx.send((r.seq, r.kind, Instant::now()));
            }
        }
    });
    rx
}

/// Takes every event of a recipient (which acknowledges it) and passes files on.
pub fn offers_of(mut events: Events) -> mpsc::UnboundedReceiver<FileOffer> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Event::Message(m) = event {
                if let Some(file) = m.file {
                    let _ = tx.send(file);
                }
            }
        }
    });
    rx
}

/// SENT and DELIVERED latencies of paced chats, in microseconds.
#[derive(Default)]
pub struct Chat {
    sent: Vec<u64>,
    delivered: Vec<u64>,
}

impl Chat {
    /// How many chats were measured.
    pub fn count(&self) -> usize {
        self.sent.len()
    }

    /// Sends one chat; records when SENT and DELIVERED came.
    pub async fn one(
        &mut self,
        alice: &Client,
        bob: &UserId,
        receipts: &mut Receipts,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let sent = alice.send(bob, b"chat next to a file").await?;
        self.sent.push(started.elapsed().as_micros() as u64);
        loop {
            let wait = tokio::time::timeout(Duration::from_secs(30), receipts.recv());
            let (seq, kind, at) = wait.await?.context("receipts ended")?;
            if seq == sent.seq && kind == ReceiptKind::Delivered {
                self.delivered.push((at - started).as_micros() as u64);
                return Ok(());
            }
        }
    }

    /// p50, p99 and max of SENT and DELIVERED, in ms.
    pub fn figures(mut self) -> serde_json::Value {
        self.sent.sort_unstable();
        self.delivered.sort_unstable();
        let ms = |v: &[u64], p: f64| percentile(v, p) as f64 / 1000.0;
        json!({
            "chats": self.sent.len(),
            "sent_ms": { "p50": ms(&self.sent, 50.0), "p99": ms(&self.sent, 99.0), "max": ms(&self.sent, 100.0) },
            "delivered_ms": { "p50": ms(&self.delivered, 50.0), "p99": ms(&self.delivered, 99.0), "max": ms(&self.delivered, 100.0) },
        })
    }
}

/// Runs `transfer` with a chat every `pace` next to it; the chat's figures and the
/// transfer's outcome and duration.
pub async fn beside<T: Send + 'static>(
    transfer: impl std::future::Future<Output = T> + Send + 'static,
    pace: Duration,
    alice: &Client,
    bob: &UserId,
    receipts: &mut Receipts,
) -> anyhow::Result<(Chat, T, Duration)> {
    let started = Instant::now();
    let transfer = tokio::spawn(transfer);
    let mut chat = Chat::default();
    while !transfer.is_finished() {
        tokio::time::sleep(pace).await;
        chat.one(alice, bob, receipts).await?;
    }
    let outcome = transfer.await?;
    Ok((chat, outcome, started.elapsed()))
}

/// Writes `len` bytes of a seeded pseudo-random stream to `path` (seeds give different
/// files).
pub fn random_file(path: &Path, len: usize, seed: u64) -> anyhow::Result<()> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len);
    Ok(std::fs::write(path, data)?)
}

/// One file of `mib` MiB, with a chat every `pace` next to it; the file and its copy go in
/// a temporary folder under `dir` (the system's when `None`).
pub async fn file(
    bench: Arc<Bench>,
    mib: usize,
    pace: Duration,
    dir: Option<&Path>,
) -> anyhow::Result<Report> {
    let logins = bench.users(&["alice".into(), "bob".into()]).await?;
    bench.befriend(&logins[0], &logins[1]).await?;
    let (alice, alice_events) = bench.connect(&logins[0]).await?;
    let (bob, bob_events) = bench.connect(&logins[1]).await?;
    let bob_id = logins[1].user.clone();
    let mut receipts = receipts_of(alice_events);
    let mut offers = offers_of(bob_events);
    let dir = match dir {
        Some(parent) => tempfile::tempdir_in(parent)?,
        None => tempfile::tempdir()?,
    };
    let source = dir.path().join("file.bin");
    let target = dir.path().join("received.bin");
    random_file(&source, mib << 20, 1)?;

    let mut idle = Chat::default();
    for _ in 0..200 {
        tokio::time::sleep(pace).await;
        idle.one(&alice, &bob_id, &mut receipts).await?;
    }
    let upload = alice.send_file(&bob_id, &source, "application/octet-stream", |_| {});
    let (during_upload, sent, upload_time) =
        beside(upload, pace, &alice, &bob_id, &mut receipts).await?;
    let sent = sent?;
    let offer = offers.recv().await.context("bob's events ended")?;
    let download = bob.download(&offer, &target, |_| {});
    let (during_download, report, download_time) =
        beside(download, pace, &alice, &bob_id, &mut receipts).await?;
    report?;
    if std::fs::read(&source)? != std::fs::read(&target)? {
        bail!("the downloaded file differs");
    }
    let mb_s = |t: Duration| (mib << 20) as f64 / 1e6 / t.as_secs_f64();
    let json = json!({
        "mode": "file", "mib": mib, "chat_every_ms": pace.as_millis() as u64,
        "sealed_bytes": sent.file.size,
        "upload": { "seconds": upload_time.as_secs_f64(), "mb_per_s": mb_s(upload_time) },
        "download": { "seconds": download_time.as_secs_f64(), "mb_per_s": mb_s(download_time) },
        "identical": true,
        "chat_idle": idle.figures(),
        "chat_during_upload": during_upload.figures(),
        "chat_during_download": during_download.figures(),
    });
    let line = |label: &str, v: &serde_json::Value| {
        format!(
            "{label}: {} chats, SENT p50/p99 {}/{} ms, DELIVERED p50/p99 {}/{} ms",
            v["chats"],
            v["sent_ms"]["p50"],
            v["sent_ms"]["p99"],
            v["delivered_ms"]["p50"],
            v["delivered_ms"]["p99"]
        )
    };
    let summary = format!(
        "file {mib} MiB: upload {:.1} MB/s, download {:.1} MB/s, byte-identical\n{}\n{}\n{}",
        mb_s(upload_time),
        mb_s(download_time),
        line("chat idle", &json["chat_idle"]),
        line("chat during upload", &json["chat_during_upload"]),
        line("chat during download", &json["chat_during_download"]),
    );
    Ok(Report { json, summary })
}
