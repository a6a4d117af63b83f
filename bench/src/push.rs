//! The `push` workload: how many notifications a node hands to its push gateway, and what
//! a slow gateway does to chat. A gateway (axum, in this process) counts what it gets and
//! answers each request after `delay`; `recipients` users register push targets and stay
//! away; one sender sends `messages` chats round-robin to them (coalescing off, so every
//! chat wants a notification), `window` waiting for SENT at once.

use crate::stats::{metric, percentile};
use crate::workload::{Bench, Report};
use axum::routing::post;
use quiver_sdk::{PushTarget, UserId};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the bench's gateway saw.
#[derive(Default)]
struct Seen {
    count: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

/// Starts the gateway; returns its URL.
async fn gateway(seen: Arc<Seen>, delay: Duration) -> anyhow::Result<String> {
    let app = axum::Router::new().route(
        "/notify",
        post(move || {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(delay).await;
                let now = Instant::now();
                seen.first
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(now);
                *seen.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
                seen.count.fetch_add(1, Ordering::Relaxed);
                axum::Json(json!({ "rejected": [] }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/notify", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// The node's `[push]` table for a gateway at `url`: every chat notified, the queue and
/// requests in flight large enough that drops mean the node could not keep up.
pub fn node_config(url: &str) -> String {
    format!(
        "[push]\ngateway_url = \"{url}\"\ncoalesce_ms = 0\nqueue = 1000000\nin_flight = 256\n\
         retries = 0\ntimeout_ms = 30000\n"
    )
}

/// The bench's gateway, running.
pub struct Gateway {
    seen: Arc<Seen>,
    /// Where the node POSTs.
    pub url: String,
}

impl Gateway {
    /// Starts a gateway that answers each request after `delay_ms`.
    pub async fn start(delay_ms: u64) -> anyhow::Result<Self> {
        let seen = Arc::new(Seen::default());
        let url = gateway(seen.clone(), Duration::from_millis(delay_ms)).await?;
        Ok(Self { seen, url })
    }
}

/// Runs the workload against `bench`, whose node notifies `gateway`.
pub async fn push(
    bench: Arc<Bench>,
    gateway: &Gateway,
    recipients: usize,
    messages: u64,
    window: usize,
    targets: bool,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        recipients > 0 && messages > 0,
        "give at least one recipient and message"
    );
    let seen = &gateway.seen;
    let mut names = vec!["sender".to_string()];
    names.extend((0..recipients).map(|i| format!("away{i}")));
    let logins = bench.users(&names).await?;
    let (sender, away) = logins
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no users"))?;
    for login in away {
        bench.befriend(sender, login).await?;
        if !targets {
            continue;
        }
        let target = PushTarget {
            kind: "fcm".into(),
            token: format!("token-{}", login.user),
            app_id: "bench".into(),
        };
        bench.rest.set_push_target(&login.token, &target).await?;
    }
    let to: Vec<UserId> = away.iter().map(|l| l.user.clone()).collect();
    let (client, _events) = bench.connect(sender).await?;

    let started = Instant::now();
    let mut latencies = Vec::with_capacity(messages as usize);
    let mut in_flight = std::collections::VecDeque::new();
    for i in 0..messages {
        let peer = &to[i as usize % to.len()];
        in_flight.push_back((Instant::now(), client.enqueue(peer, b"bench push").await?));
        if in_flight.len() >= window {
            if let Some((at, pending)) = in_flight.pop_front() {
                pending.await?;
                latencies.push(at.elapsed().as_micros() as u64);
            }
        }
    }
    for (at, pending) in in_flight {
        pending.await?;
        latencies.push(at.elapsed().as_micros() as u64);
    }
    let sent_in = started.elapsed();
    // The gateway gets the rest once the node has worked through its queue.
    let mut quiet_since = Instant::now();
    let mut last = seen.count.load(Ordering::Relaxed);
    while targets && quiet_since.elapsed() < Duration::from_secs(3) && last < messages {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = seen.count.load(Ordering::Relaxed);
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
    }
    let span = match (
        *seen.first.lock().unwrap_or_else(|p| p.into_inner()),
        *seen.last.lock().unwrap_or_else(|p| p.into_inner()),
    ) {
        (Some(first), Some(last)) => last.duration_since(first),
        _ => Duration::ZERO,
    };
    let notified = seen.count.load(Ordering::Relaxed);
    let metrics = bench.metrics().await?;
    let dropped = metric(&metrics, "quiver_push_dropped_total").unwrap_or(0.0) as u64;
    latencies.sort_unstable();
    let per_sec = notified as f64 / span.as_secs_f64().max(0.001);
    let ms = |us: u64| us as f64 / 1000.0;
    let json = json!({
        "workload": "push", "targets": targets, "recipients": recipients, "messages": messages, "window": window,
        "notified": notified, "dropped": dropped, "notifications_per_sec": per_sec.round(),
        "chats_per_sec": (messages as f64 / sent_in.as_secs_f64()).round(),
        "chat_p50_ms": ms(percentile(&latencies, 50.0)), "chat_p99_ms": ms(percentile(&latencies, 99.0)),
        "chat_max_ms": ms(latencies.last().copied().unwrap_or(0)),
    });
    let summary = format!(
        "push: {notified} of {messages} notified ({dropped} dropped), {per_sec:.0} notifications/s; \
         chat p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
    );
    client.close().await;
    Ok(Report { json, summary })
}
