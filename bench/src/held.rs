//! Workloads about what the node holds: a backlog for a receiver that is offline
//! (`offline`, drained when it connects), pushes to one that never reads (`stalled`),
//! and connections that do nothing (`idle`) — the node's memory and drain rate.

use crate::workload::{
    delivery_report, drain, receive_numbered, send_numbered, Bench, RawSession, Report,
};
use anyhow::Context;
use quiver_sdk::{Client, Events};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// `offline`: N messages wait for a receiver that is offline; then it connects and drains
/// them. The rate is messages per second of the drain.
pub async fn offline(
    bench: Arc<Bench>,
    messages: u64,
    size: usize,
    window: usize,
    restart: bool,
) -> anyhow::Result<Report> {
    let logins = bench
        .users(&["offsender".into(), "offreceiver".into()])
        .await?;
    bench.befriend(&logins[0], &logins[1]).await?;
    let (sender, events) = bench.connect(&logins[0]).await?;
    drain(events);
    let rss_before_fill = bench.node.rss_bytes()?;
    let filled = Instant::now();
    let to = logins[1].user.clone();
    send_numbered(bench.clone(), sender, to, messages, size, window).await?;
    let fill_seconds = filled.elapsed().as_secs_f64();
    let fill_growth = bench.node.rss_bytes()?.saturating_sub(rss_before_fill);
    let restarted = if restart {
        let node = bench.clone();
        let took = tokio::task::spawn_blocking(move || node.node.restart()).await??;
        Some((took, bench.node.rss_bytes()?))
    } else {
        None
    };
    let started = Instant::now();
    let (receiver, events) = bench.connect(&logins[1]).await?;
    let seen = receive_numbered(bench.clone(), events, messages).await;
    drop(receiver);
    let params = json!({ "messages": messages, "size": size, "fill_window": window });
    let mut report = delivery_report("offline", params, seen, messages, started);
    report.json["backlog_fill_seconds"] = json!(fill_seconds);
    // The same stored data as `stalled` with nobody connected: what storage alone costs.
    report.json["rss_growth_during_fill"] = json!(fill_growth);
    // Latency here is mostly time spent waiting offline; the drain rate is the figure.
    report.summary = format!(
        "{} (backlog filled in {fill_seconds:.2}s, node RSS +{:.1} MiB meanwhile)",
        report.summary,
        fill_growth as f64 / 1048576.0
    );
    if let Some((took, rss)) = restarted {
        // The new process read the whole inbox log before it served.
        report.json["restart_seconds"] = json!(took.as_secs_f64());
        report.json["rss_after_restart"] = json!(rss);
        report.summary = format!(
            "{}; restarted in {:.2}s, node RSS then {:.1} MiB",
            report.summary,
            took.as_secs_f64(),
            rss as f64 / 1048576.0
        );
    }
    Ok(report)
}

/// `stalled`: N messages pushed at a receiver that is connected but never reads; node
/// memory before and after (the push window, not N, should bound what the node holds).
pub async fn stalled(
    bench: Arc<Bench>,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<Report> {
    let logins = bench.users(&["talker".into(), "sleeper".into()]).await?;
    bench.befriend(&logins[0], &logins[1]).await?;
    let (sender, events) = bench.connect(&logins[0]).await?;
    drain(events);
    let (_sleeper, _unread_events) = bench.connect(&logins[1]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = bench.node.rss_bytes()?;
    let started = Instant::now();
    send_numbered(
        bench.clone(),
        sender,
        logins[1].user.clone(),
        messages,
        size,
        window,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let after = bench.node.rss_bytes()?;
    let growth = after.saturating_sub(before);
    let json = json!({
        "mode": "stalled", "params": { "messages": messages, "size": size, "window": window },
        "rss_before": before, "rss_after": after, "rss_growth": growth, "seconds": seconds,
    });
    let summary = format!(
        "stalled receiver, {messages} msgs of {size} B: node RSS {:.1} MiB -> {:.1} MiB (+{:.1} MiB) in {seconds:.1}s",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        growth as f64 / 1048576.0
    );
    Ok(Report { json, summary })
}

/// An idle client of the `idle` workload.
#[allow(dead_code)] // held, not used: the connection lives as long as it
enum Idler {
    Sdk((Client, Events)),
    Raw(RawSession),
}

/// `idle`: C authenticated connections that do nothing; node memory before and after,
/// and again after `hold_secs` more of keep-alives if that is not 0.
pub async fn idle(
    bench: Arc<Bench>,
    connections: usize,
    one_socket: bool,
    hold_secs: u64,
) -> anyhow::Result<Report> {
    let login = bench.users(&["idler".into()]).await?.remove(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = bench.node.rss_bytes()?;
    let limit = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    let shared = match one_socket {
        true => Some(bench.one_socket()?),
        false => None,
    };
    for _ in 0..connections {
        let (bench, login, limit) = (bench.clone(), login.clone(), limit.clone());
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            match shared {
                Some(endpoint) => bench.hello(&endpoint, &login).await.map(Idler::Raw),
                None => bench.connect(&login).await.map(Idler::Sdk),
            }
        }));
    }
    let mut clients = Vec::with_capacity(connections);
    for task in tasks {
        clients.push(task.await??);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = bench.node.rss_bytes()?;
    let per = after.saturating_sub(before) as f64 / connections as f64;
    let open = sessions_open(&bench, connections).await?;
    let mut summary = format!(
        "idle {connections} connections ({open} sessions open on the node): node RSS {:.1} MiB -> {:.1} MiB = {:.1} KiB per connection",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        per / 1024.0
    );
    let mut held = Value::Null;
    if hold_secs > 0 {
        tokio::time::sleep(Duration::from_secs(hold_secs)).await;
        let later = bench.node.rss_bytes()?;
        let per_later = later.saturating_sub(before) as f64 / connections as f64;
        sessions_open(&bench, connections).await?;
        held = json!({ "secs": hold_secs, "rss": later, "bytes_per_connection": per_later });
        summary += &format!(
            "; {hold_secs} s later, all still open: {:.1} MiB = {:.1} KiB per connection",
            later as f64 / 1048576.0,
            per_later / 1024.0
        );
    }
    let json = json!({
        "mode": "idle",
        "params": { "connections": connections, "one_socket": one_socket, "hold_secs": hold_secs },
        "rss_before": before, "rss_after": after, "bytes_per_connection": per,
        "sessions_open": open, "held": held,
    });
    drop(clients);
    Ok(Report { json, summary })
}

/// The node's own count of open sessions, which must be `expected`: every idle
/// connection is a live session.
async fn sessions_open(bench: &Bench, expected: usize) -> anyhow::Result<usize> {
    let metrics = bench.rest.metrics().await?;
    let open = crate::stats::metric(&metrics, "quiver_sessions_open")
        .context("quiver_sessions_open in /metrics")? as usize;
    anyhow::ensure!(
        open == expected,
        "the node has {open} sessions open, not {expected}"
    );
    Ok(open)
}
