//! Group workloads: `group` (one group, S senders, every online member receives every
//! message: deliveries/s and end-to-end latency) and `group-memory` (the node's memory
//! per idle group).

use crate::workload::{delivery_report, send_numbered, Bench, Report, Seen};
use anyhow::Context;
use quiver_sdk::{Client, ConnectOptions, Event, Events, GroupInfo, GroupKeys, LoginResponse};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How long receivers wait for the last message before counting the rest as lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// REST calls made at once while setting up.
const SETUP_CALLS: usize = 16;

/// The node's configuration for group workloads: the bench's one owner makes every
/// group and every membership change, far past a person's REST and creation limits.
pub fn node_config() -> String {
    "[limits]\nrequests_per_minute_per_user = 1000000000\n\
     [groups]\ncreations_per_hour = 1000000000\nmax_groups_per_user = 1000000000\n"
        .into()
}

/// Makes a group owned by `owner` with every one of `members` in it: added at once if
/// a friend of the owner's, else invited and accepting.
async fn group_of(
    bench: &Bench,
    owner: &LoginResponse,
    members: &[LoginResponse],
) -> anyhow::Result<GroupInfo> {
    let info = bench.rest.create_group(&owner.token, "bench").await?;
    let limit = Arc::new(Semaphore::new(SETUP_CALLS));
    let mut joining = tokio::task::JoinSet::new();
    for member in members {
        let (rest, limit, id) = (bench.rest.clone(), limit.clone(), info.id.clone());
        let (owner, member) = (owner.token.clone(), member.clone());
        joining.spawn(async move {
            let _permit = limit.acquire().await?;
            let added = rest.add_member(&owner, &id, member.user.as_str()).await?;
            if added.status == "invited" {
                rest.accept_invitation(&member.token, &id).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = joining.join_next().await {
        joined??;
    }
    Ok(bench.rest.group(&owner.token, &info.id).await?)
}

/// Connects `login` with the group's keys.
async fn connect(
    bench: &Bench,
    login: &LoginResponse,
    info: &GroupInfo,
) -> anyhow::Result<(Client, Events)> {
    let mut options = ConnectOptions::new(bench.node.quic, &bench.ca, &login.token);
    options
        .group_keys
        .insert(info.id.clone(), GroupKeys::from_info(info));
    // A thousand clients in one process: one network watcher each would only add sockets.
    options.watch_network = false;
    Ok(Client::connect(options).await?)
}

/// Takes events until `expected` numbered group messages arrived (or the drain limit).
async fn receive(bench: Arc<Bench>, mut events: Events, expected: u64) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT;
    while seen.unique() < expected {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await else {
            break;
        };
        if let Event::GroupMessage(m) = event {
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

/// `group`: one group of `members`; `online` of them connected; the first `senders`
/// each send `messages` numbered bodies of `size` bytes with at most `window` waiting
/// for SENT. Every online member (senders too) should get every message once, in each
/// sender's order.
pub async fn group(
    bench: Arc<Bench>,
    members: usize,
    online: usize,
    senders: usize,
    messages: u64,
    size: usize,
    window: usize,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        senders <= online && online <= members && members >= 1,
        "need senders ≤ online ≤ members"
    );
    let names: Vec<String> = (0..members).map(|i| format!("gm{i:05}")).collect();
    let logins = bench.users(&names).await.context("users")?;
    let info = group_of(&bench, &logins[0], &logins[1..])
        .await
        .context("group")?;
    let limit = Arc::new(Semaphore::new(SETUP_CALLS));
    let mut connecting = Vec::new();
    for login in &logins[..online] {
        let (bench, limit, login, info) =
            (bench.clone(), limit.clone(), login.clone(), info.clone());
        connecting.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            connect(&bench, &login, &info).await
        }));
    }
    let mut clients = Vec::new();
    let mut receiving = Vec::new();
    let expected = senders as u64 * messages;
    for task in connecting {
        let (client, mut events) = task.await??;
        // The group's history so far (its changes) reaches every device first.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await
        {
        }
        clients.push(client);
        receiving.push(tokio::spawn(receive(bench.clone(), events, expected)));
    }
    let started = Instant::now();
    let mut sending = Vec::new();
    for client in &clients[..senders] {
        let group = info.id.clone();
        sending.push(tokio::spawn(send_numbered(
            bench.clone(),
            client.clone(),
            crate::workload::To::Group(group),
            messages,
            size,
            window,
        )));
    }
    for task in sending {
        task.await??;
    }
    let mut seen = Seen::default();
    for (receiver, task) in receiving.into_iter().enumerate() {
        seen.merge_receiver(receiver, task.await?);
    }
    drop(clients);
    let params = json!({
        "members": members, "online": online, "senders": senders, "messages": messages,
        "size": size, "window": window,
    });
    Ok(delivery_report(
        "group",
        params,
        seen,
        online as u64 * expected,
        started,
    ))
}

/// `group-memory`: the node's resident memory before and after making `groups` groups
/// of `members` each (the same users in every group), with nobody connected.
pub async fn memory(bench: Arc<Bench>, groups: usize, members: usize) -> anyhow::Result<Report> {
    anyhow::ensure!(members >= 1, "a group has at least its owner");
    let names: Vec<String> = (0..members).map(|i| format!("mm{i:05}")).collect();
    let logins = bench.users(&names).await.context("users")?;
    for member in &logins[1..] {
        bench.befriend(&logins[0], member).await?;
    }
    let before = bench.node.rss_bytes()?;
    let started = Instant::now();
    for _ in 0..groups {
        group_of(&bench, &logins[0], &logins[1..]).await?;
    }
    let took = started.elapsed();
    // Let the allocator settle and the last flushes end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = bench.node.rss_bytes()?;
    let per_group = after.saturating_sub(before) as f64 / groups.max(1) as f64;
    let json = json!({
        "mode": "group-memory", "groups": groups, "members": members,
        "rss_before": before, "rss_after": after, "bytes_per_group": per_group,
        "setup_seconds": took.as_secs_f64(),
    });
    let summary = format!(
        "group-memory {groups} groups x {members} members: node RSS {:.1} -> {:.1} MiB, {per_group:.0} bytes per group (made in {:.1}s)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        took.as_secs_f64()
    );
    Ok(Report { json, summary })
}
