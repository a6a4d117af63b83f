//! `quiver-bench presence`: what presence costs the node. `users` users connect (raw
//! sessions on one client socket, as the SDK would), each a friend of `friends` others,
//! and announce themselves online; the node's CPU is measured over `secs` seconds while
//! they sit idle, then over `secs` seconds while each changes its presence (online ↔
//! away) once per `secs`, spread evenly — "once a minute" with the default 60 — and every
//! change reaches each friend's connection as a datagram.

use crate::workload::{Bench, RawSession, Report};
use quiver_proto::datagram::{ClientDatagram, PresenceState};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Runs the workload; see the module.
pub async fn presence(
    bench: Arc<Bench>,
    users: usize,
    friends: usize,
    secs: u64,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let names: Vec<String> = (0..users).map(|i| format!("presence{i}")).collect();
    let logins = Arc::new(bench.users(&names).await?);
    // A ring: each befriends the next friends/2, so each has `friends` friends.
    let limit = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..users {
        for d in 1..=(friends / 2).min(users.saturating_sub(1)) {
            let (bench, logins, limit) = (bench.clone(), logins.clone(), limit.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire().await?;
                bench.befriend(&logins[i], &logins[(i + d) % users]).await
            }));
        }
    }
    for task in tasks {
        task.await??;
    }
    let endpoint = bench.one_socket()?;
    let received = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(Semaphore::new(64));
    let mut tasks = Vec::new();
    for login in logins.iter() {
        let (bench, login, limit, endpoint) = (
            bench.clone(),
            login.clone(),
            limit.clone(),
            endpoint.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            bench.hello(&endpoint, &login).await
        }));
    }
    let mut sessions: Vec<RawSession> = Vec::with_capacity(users);
    for task in tasks {
        sessions.push(task.await??);
    }
    let setup = started.elapsed();
    for session in &sessions {
        let conn = session.connection().clone();
        let received = received.clone();
        tokio::spawn(async move {
            while conn.read_datagram().await.is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
        announce(session, PresenceState::Online)?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let window = Duration::from_secs(secs);
    let idle_cpu = cpu_over(&bench, window, async {}).await?;
    let before = received.load(Ordering::Relaxed);
    let changing = async {
        let start = tokio::time::Instant::now();
        for (i, session) in sessions.iter().enumerate() {
            let at = start + window.mul_f64(i as f64 / users as f64);
            tokio::time::sleep_until(at).await;
            let _ = announce(session, PresenceState::Away);
        }
    };
    let churn_cpu = cpu_over(&bench, window, changing).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered = received.load(Ordering::Relaxed) - before;
    let per = |cpu: Duration| 100.0 * cpu.as_secs_f64() / window.as_secs_f64();
    let summary = format!(
        "presence: {users} users connected, {friends} friends each (setup {setup:.0?}); node CPU \
         over {secs} s: idle {:.1} %, with each user changing presence once in the window \
         ({:.0} changes/s) {:.1} %; {delivered} presence datagrams reached friends \
         ({:.0}/s)",
        per(idle_cpu),
        users as f64 / secs as f64,
        per(churn_cpu),
        delivered as f64 / secs as f64,
    );
    let json = json!({
        "mode": "presence",
        "params": { "users": users, "friends": friends, "secs": secs },
        "node_cpu_percent": { "idle": per(idle_cpu), "changing": per(churn_cpu) },
        "changes": users, "datagrams_delivered": delivered,
    });
    drop(sessions);
    Ok(Report { json, summary })
}

/// The node's CPU time over `window`, while `work` runs (it must end within it).
async fn cpu_over(
    bench: &Bench,
    window: Duration,
    work: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Duration> {
    let before = bench.node.cpu_time()?;
    let end = tokio::time::Instant::now() + window;
    work.await;
    tokio::time::sleep_until(end).await;
    Ok(bench.node.cpu_time()?.saturating_sub(before))
}

fn announce(session: &RawSession, state: PresenceState) -> anyhow::Result<()> {
    let bytes = postcard::to_stdvec(&ClientDatagram::Presence { state })?;
    session.connection().send_datagram(bytes.into())?;
    Ok(())
}
