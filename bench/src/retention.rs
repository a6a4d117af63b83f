//! `expire`: inbox retention at work. A backlog for a device that never connects is left
//! to age past a short `inbox.retention_secs`; the node removes its segment files while a
//! probe pair chats at window 1. Reports how long the removal took, the log's size and the
//! node's RSS before and after, and the probe's latency before and during the removal.

use crate::stats::percentile;
use crate::workload::{drain, send_numbered, Bench, Report};
use quiver_sdk::Event;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The node's configuration for the run: removal checked every second.
pub fn node_config(retention_secs: u64, segment_mib: u64) -> String {
    format!(
        "[inbox]\nretention_secs = {retention_secs}\nsegment_bytes = {}\nexpire_every_secs = 1\n",
        segment_mib << 20
    )
}

/// Probe messages received: when, and their end-to-end latency (µs).
type Heard = Arc<Mutex<Vec<(Instant, u64)>>>;

/// The value of metric `name` in the node's `/metrics` text; 0 if it is not there.
fn metric(text: &str, name: &str) -> f64 {
    crate::stats::metric(text, name).unwrap_or(0.0)
}

/// Runs the workload on `bench`, which must have been started with [`node_config`] of
/// `retention_secs`.
pub async fn expire(
    bench: Arc<Bench>,
    messages: u64,
    size: usize,
    retention_secs: u64,
) -> anyhow::Result<Report> {
    let names = ["agesender", "agereceiver", "probesender", "probereceiver"].map(String::from);
    let logins = bench.users(&names).await?;
    bench.befriend(&logins[0], &logins[1]).await?;
    bench.befriend(&logins[2], &logins[3]).await?;
    let (sender, events) = bench.connect(&logins[0]).await?;
    drain(events);

    // The probe: one message at a time from the start to the end.
    let (probe, probe_events) = bench.connect(&logins[2]).await?;
    drain(probe_events);
    let (_listener, mut listener_events) = bench.connect(&logins[3]).await?;
    let heard: Heard = Arc::default();
    let hearing = {
        let (bench, heard) = (bench.clone(), heard.clone());
        tokio::spawn(async move {
            while let Some(event) = listener_events.recv().await {
                if let Event::Message(m) = event {
                    if let Some((_, latency)) = bench.read_body(&m.body) {
                        let mut heard = heard.lock().unwrap_or_else(|p| p.into_inner());
                        heard.push((Instant::now(), latency));
                    }
                }
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let probes_sent = Arc::new(AtomicU64::new(0));
    let probing = {
        let (bench, stop, sent) = (bench.clone(), stop.clone(), probes_sent.clone());
        let to = logins[3].user.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let index = sent.fetch_add(1, Ordering::Relaxed);
                probe.send(&to, &bench.body(index, 100)).await?;
            }
            anyhow::Ok(())
        })
    };

    let rss_before = bench.node.rss_bytes()?;
    let to = logins[1].user.clone();
    send_numbered(bench.clone(), sender, to, messages, size, 256).await?;
    let filled = Instant::now();
    let rss_filled = bench.node.rss_bytes()?;
    let at_fill = bench.metrics().await?;
    let log_bytes_filled = metric(&at_fill, "quiver_inbox_log_bytes") as u64;
    // Everything written by now: the backlog, and each probe message with its DELIVERED.
    let written = messages + 2 * probes_sent.load(Ordering::Relaxed);

    let limit = filled + Duration::from_secs(2 * retention_secs + 60);
    let (mut first_removal, mut all_removed) = (None, None);
    let mut text = at_fill;
    while Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = bench.metrics().await?;
        let expired = metric(&text, "quiver_inbox_entries_expired_total") as u64;
        if expired > 0 && first_removal.is_none() {
            first_removal = Some(Instant::now());
        }
        if expired >= written {
            all_removed = Some(Instant::now());
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    probing.await??;
    let rss_after = bench.node.rss_bytes()?;
    hearing.abort();

    let (Some(first), Some(done)) = (first_removal, all_removed) else {
        anyhow::bail!("the backlog was not removed within {limit:?} of the fill's end");
    };
    let heard = std::mem::take(&mut *heard.lock().unwrap_or_else(|p| p.into_inner()));
    let window = |from: Instant, to: Instant| {
        let mut in_it: Vec<u64> = heard
            .iter()
            .filter(|(at, _)| (from..to).contains(at))
            .map(|(_, latency)| *latency)
            .collect();
        in_it.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        json!({
            "messages": in_it.len(),
            "p50": ms(percentile(&in_it, 50.0)),
            "p99": ms(percentile(&in_it, 99.0)),
            "max": ms(in_it.last().copied().unwrap_or(0)),
        })
    };
    // Before: from the fill's end until the first removal (the node idle but for the
    // probe). During: from the first removal seen until the last.
    let before = window(filled, first);
    let during = window(first, done);
    let mib = |b: u64| b as f64 / 1048576.0;
    let log_bytes_after = metric(&text, "quiver_inbox_log_bytes") as u64;
    let segments = metric(&text, "quiver_inbox_segments_removed_total") as u64;
    // The node's own time spent removing; the rest of the span is segments ageing.
    let working = metric(&text, "quiver_inbox_expire_seconds_total");
    let removing = done.duration_since(first).as_secs_f64();
    let json = json!({
        "mode": "expire",
        "params": { "messages": messages, "size": size, "retention_secs": retention_secs },
        "entries_expired": metric(&text, "quiver_inbox_entries_expired_total") as u64,
        "segments_removed": segments,
        "seconds_after_fill_until_removed": done.duration_since(filled).as_secs_f64(),
        "seconds_removing": removing,
        "node_seconds_spent_removing": working,
        "log_bytes": { "filled": log_bytes_filled, "after": log_bytes_after },
        "rss": { "before": rss_before, "filled": rss_filled, "after": rss_after },
        "probe_latency_ms": { "before_removal": before, "during_removal": during },
    });
    let summary = format!(
        "expire {messages} msgs of {size} B, retention {retention_secs}s: {segments} segments \
         removed by {:.1}s after the fill, over {removing:.2}s ({working:.2}s of work); log \
         {:.1} -> {:.1} MiB; node RSS {:.1} -> {:.1} -> {:.1} MiB; probe p99 {} ms before, {} ms \
         during, max {} / {} ms ({} / {} msgs)",
        done.duration_since(filled).as_secs_f64(),
        mib(log_bytes_filled),
        mib(log_bytes_after),
        mib(rss_before),
        mib(rss_filled),
        mib(rss_after),
        before["p99"],
        during["p99"],
        before["max"],
        during["max"],
        before["messages"],
        during["messages"],
    );
    Ok(Report { json, summary })
}
