//! One connected device's feeds of its user's groups.
//!
//! Every group's entries go down the device's control stream as `GroupEntry` frames: a
//! user in 500 groups needs no stream per group. Each group has its own push window
//! (`push_window` unacknowledged entries) and its own task, so a busy group cannot hold
//! a quiet one back by more than its window. A device's cursor per group is kept in the
//! group log's cursors and moves as the device acknowledges; the member's
//! delivered-up-to marker moves with it.
//!
//! A member's devices get the log from the entry that added them on; a member who was
//! removed (or left) gets up to and including that entry, and nothing after.

use super::store::Groups;
use crate::net::write_frame;
use quiver_proto::{ControlResponse, CursorTracker, DeviceId, GroupId, Seq, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

/// Entries read from a group log per step.
const READ_BATCH: usize = 64;

/// The control stream's sending half, shared with the session.
pub type Control = Arc<tokio::sync::Mutex<quinn::SendStream>>;

/// Where a session hands a device's group acks: the feed of each group.
pub struct GroupAcks {
    feeds: Mutex<HashMap<GroupId, mpsc::UnboundedSender<Seq>>>,
    /// Each feed holds a clone while it runs; [`GroupAcks::finish`] waits for them all.
    alive: Mutex<Option<mpsc::Sender<()>>>,
    all_ended: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl Default for GroupAcks {
    fn default() -> Self {
        let (alive, all_ended) = mpsc::channel(1);
        Self {
            feeds: Mutex::default(),
            alive: Mutex::new(Some(alive)),
            all_ended: tokio::sync::Mutex::new(all_ended),
        }
    }
}

impl GroupAcks {
    /// A polite goodbye: each feed records the acks it was handed, then ends. Waits for
    /// that at most `wait`.
    pub async fn finish(&self, wait: std::time::Duration) {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.alive.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut all_ended = self.all_ended.lock().await;
        let _ = tokio::time::timeout(wait, all_ended.recv()).await;
    }

    /// Passes an ack of `seq` to `group`'s feed; `false` if the device has no such feed.
    pub fn ack(&self, group: &GroupId, seq: Seq) -> bool {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.get(group).is_some_and(|feed| feed.send(seq).is_ok())
    }

    /// A new feed's acks, and its token of being alive; `None` if `group` has a feed
    /// already or the session is finishing.
    fn open(&self, group: &GroupId) -> Option<(mpsc::UnboundedReceiver<Seq>, mpsc::Sender<()>)> {
        let alive = self
            .alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if feeds.get(group).is_some_and(|f| !f.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        feeds.insert(group.clone(), tx);
        Some((rx, alive))
    }
}

/// A device of `user` on one connection.
pub struct Device {
    /// Who.
    pub user: UserId,
    /// Which device.
    pub device: DeviceId,
    /// Unacknowledged entries per group.
    pub window: u64,
}

/// Runs the device's group feeds until the connection ends (or a write fails): starts
/// one for each group the user is in, and for each they join while connected.
pub async fn run(
    groups: Arc<Groups>,
    device: Arc<Device>,
    control: Control,
    acks: Arc<GroupAcks>,
) -> Result<(), String> {
    let mut changes = groups.changes();
    let mut feeds = JoinSet::new();
    loop {
        for group in groups.feeds_of(&device.user) {
            if let Some((rx, alive)) = acks.open(&group) {
                let feed = feed(groups.clone(), group, device.clone(), control.clone(), rx);
                feeds.spawn(async move {
                    let ended = feed.await;
                    drop(alive);
                    ended
                });
            }
        }
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(user) if user == device.user => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                },
                Some(ended) = feeds.join_next() => {
                    if let Ok(Err(e)) = ended {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Pushes `group`'s log to the device from its cursor, within the window, until the
/// device has everything it may get (after a removal) or a write fails.
async fn feed(
    groups: Arc<Groups>,
    group: GroupId,
    device: Arc<Device>,
    control: Control,
    mut acks: mpsc::UnboundedReceiver<Seq>,
) -> Result<(), String> {
    let log = groups.log().clone();
    let owner = UserId::parse(group.as_str()).map_err(|e| e.to_string())?;
    let mut durable = log.subscribe(&owner).map_err(|e| e.to_string())?;
    let Some((since, _)) = groups.range(&group, &device.user) else {
        return Ok(());
    };
    let stored = log
        .cursor(&owner, device.device)
        .map_err(|e| e.to_string())?;
    let start = stored
        .max(Seq(since.0.saturating_sub(1)))
        .max(log.floor(&owner));
    let mut acked = CursorTracker::new(start);
    let mut next = start.next();
    loop {
        let Some((_, until)) = groups.range(&group, &device.user) else {
            return Ok(());
        };
        let head = (*durable.borrow_and_update()).min(until.unwrap_or(Seq(u64::MAX)));
        let limit = Seq(acked.cursor().0 + device.window).min(head);
        if next <= limit {
            let entries = log
                .read(&owner, next, limit, READ_BATCH)
                .map_err(|e| e.to_string())?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                // Retention removed them: the device starts after what is gone.
                let floor = log.floor(&owner);
                acked.advance_to(floor.min(limit));
                next = acked.cursor().next().max(next);
                continue;
            };
            let mut send = control.lock().await;
            for entry in entries {
                let frame = ControlResponse::GroupEntry {
                    group: group.clone(),
                    entry,
                };
                write_frame(&mut send, &frame)
                    .await
                    .map_err(|e| format!("group push failed: {e}"))?;
            }
            next = last.next();
            continue;
        }
        if until.is_some_and(|until| acked.cursor() >= until) {
            return Ok(());
        }
        tokio::select! {
            changed = durable.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            seq = acks.recv() => {
                let Some(seq) = seq else { return Ok(()) };
                if seq >= next {
                    return Err(format!("group {group}: seq {seq} was not pushed"));
                }
                let before = acked.cursor();
                acked.mark(seq);
                let cursor = acked.cursor();
                if cursor > before {
                    log.set_cursor(&owner, device.device, cursor)
                        .map_err(|e| e.to_string())?;
                    groups.delivered(&group, &device.user, cursor);
                }
            }
        }
    }
}
