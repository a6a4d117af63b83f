//! Push notices for groups too large to notify member by member at every chat (over
//! `[push] group_max_members`): a chat there only notes the group's news
//! ([`crate::groups::news`]), and this sweeper tells every member but the newest chat's
//! sender, at most once per coalescing window per group — the same notices a smaller
//! group's chat makes, handed to the notifier (which coalesces per device and skips
//! connected devices) without dropping any to the sweep's own burst, and to other nodes
//! of a mesh a bounded number at once. A chat of a quiet group is swept at once.
//!
//! A group of 10,000 members costs one pass over its members per window while it is
//! busy, not one per chat.

use crate::groups::news::News;
use crate::groups::send::notices_for;
use crate::groups::store::owner;
use crate::mesh::Mesh;
use crate::push::{Pusher, Stored};
use crate::shared::Shared;
use futures_util::stream::{FuturesUnordered, StreamExt};
use quiver_proto::mesh::MeshOpen;
use quiver_proto::{ErrorCode, GroupId};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long a swept chat may take to become durable before its notices are given up.
const DURABLE_WAIT: Duration = Duration::from_secs(5);

/// Notices passed to other nodes at once during a sweep.
const RELAYS: usize = 32;

/// Sweeps until the node stops.
pub async fn run(shared: Weak<Shared>, groups: Arc<crate::groups::Groups>) {
    loop {
        let news = groups.news().take().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(push) = shared.push.clone() else {
            return;
        };
        for (group, news) in news {
            sweep(&shared, &push, &group, news).await;
        }
        let window = Duration::from_millis(shared.config.push.coalesce_ms);
        drop(shared);
        tokio::time::sleep(window).await;
    }
}

/// Notifies `group`'s members of its newest chat, once it is durable.
async fn sweep(shared: &Shared, push: &Pusher, group: &GroupId, news: News) {
    let groups = &shared.groups;
    let Ok(mut durable) = groups.log().subscribe(&owner(group)) else {
        return;
    };
    let reached = durable.wait_for(|head| *head >= news.seq);
    if !matches!(tokio::time::timeout(DURABLE_WAIT, reached).await, Ok(Ok(_))) {
        tracing::warn!(%group, seq = news.seq.0, "a swept chat never became durable");
        return;
    }
    let Some(members) = groups.to_notify(group, &news.from, usize::MAX) else {
        return;
    };
    let router = &shared.router;
    let notices = notices_for(groups, router, group, &news.from, news.seq, members).await;
    let mut relaying = FuturesUnordered::new();
    for notice in notices {
        match (notice.relay_to.clone(), router.mesh()) {
            (Some(node), Some(mesh)) => {
                if relaying.len() >= RELAYS {
                    relaying.next().await;
                }
                relaying.push(async move {
                    if let Err(code) = pass_on(mesh, &node, notice).await {
                        tracing::debug!(%node, %code, "push notice not passed on");
                        shared.metrics.push_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            _ => push.swept(notice).await,
        }
    }
    while relaying.next().await.is_some() {}
}

/// Passes a group notice for a member homed on `node` there
/// ([`MeshOpen::GroupNotice`]), whose notifier knows whether their devices are connected.
pub async fn pass_on(mesh: &Mesh, node: &str, notice: Stored) -> Result<(), ErrorCode> {
    let Some(group) = notice.group else {
        return Ok(());
    };
    let open = MeshOpen::GroupNotice {
        owner: notice.owner,
        from: notice.from,
        group,
        seq: notice.seq,
        unread: notice.unread.unwrap_or(1),
    };
    mesh.ask(node, open).await
}
