//! The notifier's loop: for each durable chat, the devices of its owner that have a push
//! target and are away (no feed open here, on the owner's home node) are notified — at
//! once if the device got nothing in the last window, else once when the window ends,
//! with the newest chat and the unread count as they are then. A device that came back
//! meanwhile gets nothing. A group chat notifies no device of a member who muted the
//! group ([`crate::directory::Directory::set_group_muted`]); a notice already waiting
//! for its window when they mute still goes when the window ends.

use super::gateway::{Gateway, Notification};
use super::{Sources, Stored};
use crate::config::PushConfig;
use quiver_proto::rest::PushTarget;
use quiver_proto::{DeviceId, Seq, UserId};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One device's coalescing window.
struct Window {
    /// When it was last notified.
    last_sent: Instant,
    /// The newest chat since then, and where to send it, if any.
    pending: Option<(Stored, PushTarget)>,
}

/// The notifier's queues: chats' notices, and large groups' sweeps' (taken after).
pub struct Queues {
    /// Notices of chats, as they become durable.
    pub rx: mpsc::Receiver<Stored>,
    /// Notices of sweeps of large groups' members ([`crate::group_push`]).
    pub swept_rx: mpsc::Receiver<Stored>,
}

/// Runs until the chat path's handles are all gone.
pub async fn run(queues: Queues, sources: Sources, gateway: Gateway, config: PushConfig) {
    let Queues {
        mut rx,
        mut swept_rx,
    } = queues;
    let window = Duration::from_millis(config.coalesce_ms);
    let mut windows: HashMap<(UserId, DeviceId), Window> = HashMap::new();
    loop {
        let next = windows
            .values()
            .filter(|w| w.pending.is_some())
            .map(|w| w.last_sent + window)
            .min();
        tokio::select! {
            biased;
            notice = rx.recv() => match notice {
                Some(notice) => stored(&sources, &gateway, &mut windows, window, notice).await,
                None => return,
            },
            Some(notice) = swept_rx.recv() => {
                stored(&sources, &gateway, &mut windows, window, notice).await
            }
            _ = sleep_until(next) => {}
        }
        flush_due(&sources, &gateway, &mut windows, window).await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A chat is durable: notify the owner's away devices, or note it for the window's end.
async fn stored(
    sources: &Sources,
    gateway: &Gateway,
    windows: &mut HashMap<(UserId, DeviceId), Window>,
    window: Duration,
    notice: Stored,
) {
    let targets = match sources.directory.push_targets(&notice.owner).await {
        Ok(targets) => targets,
        Err(e) => {
            tracing::warn!(error = %e, "push targets unreadable");
            return;
        }
    };
    // Connected devices have the chat already, or will in a moment.
    let away: Vec<_> = targets
        .into_iter()
        .filter(|(device, _)| sources.feeds.count(&(notice.owner.clone(), *device)) == 0)
        .collect();
    // Asked only when some device would be told: a sweep of a large group costs a
    // directory lookup per member with a device away, not per member.
    if away.is_empty() || muted(sources, &notice).await {
        return;
    }
    let now = Instant::now();
    for (device, target) in away {
        let key = (notice.owner.clone(), device);
        match windows.get_mut(&key) {
            Some(w) if now < w.last_sent + window => w.pending = Some((notice.clone(), target)),
            _ => {
                send(sources, gateway, &notice, device, target).await;
                let pending = None;
                windows.insert(
                    key,
                    Window {
                        last_sent: now,
                        pending,
                    },
                );
            }
        }
    }
}

/// Whether `notice` is a chat of a group its owner muted (counted), or that cannot be
/// told (the directory unreadable: nothing is sent, as for unreadable targets).
async fn muted(sources: &Sources, notice: &Stored) -> bool {
    let Some(group) = &notice.group else {
        return false;
    };
    match sources.directory.group_muted(&notice.owner, group).await {
        Ok(false) => false,
        Ok(true) => {
            sources.metrics.push_muted.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "muted groups unreadable");
            true
        }
    }
}

/// Sends what waited for its window to end; forgets windows that ended quietly.
async fn flush_due(
    sources: &Sources,
    gateway: &Gateway,
    windows: &mut HashMap<(UserId, DeviceId), Window>,
    window: Duration,
) {
    let now = Instant::now();
    let mut due = Vec::new();
    windows.retain(|(_, device), w| {
        if now < w.last_sent + window {
            return true;
        }
        let Some((notice, target)) = w.pending.take() else {
            return false;
        };
        if sources.feeds.count(&(notice.owner.clone(), *device)) > 0 {
            return false;
        }
        due.push((notice, *device, target));
        w.last_sent = now;
        true
    });
    for (notice, device, target) in due {
        send(sources, gateway, &notice, device, target).await;
    }
}

/// Hands one notification to the gateway (waiting while `in_flight` requests are out).
async fn send(
    sources: &Sources,
    gateway: &Gateway,
    notice: &Stored,
    device: DeviceId,
    target: PushTarget,
) {
    // The unread count of the conversation notified: the inbox, or the group.
    let unread = match (notice.unread, &notice.group) {
        (Some(unread), _) => unread,
        (None, Some(group)) => (sources.group_unread)(group, device),
        (None, None) => {
            let inbox = &sources.inbox;
            let cursor = inbox.cursor(&notice.owner, device).unwrap_or(Seq(0));
            inbox.head(&notice.owner).0.saturating_sub(cursor.0)
        }
    };
    let notification = Notification {
        owner: notice.owner.clone(),
        device,
        target,
        sender: notice.from.clone(),
        group: notice.group.clone(),
        seq: notice.seq,
        unread,
    };
    let (directory, metrics) = (sources.directory.clone(), sources.metrics.clone());
    gateway.send(notification, directory, metrics).await;
}
