//! One connected device's feeds of its user's groups.
//!
//! Every group's entries go down the device's control stream as `GroupEntry` frames: a
//! user in 500 groups needs no stream per group. Each group has its own push window
//! (`push_window` unacknowledged entries) and its own task, so a busy group cannot hold
//! a quiet one back by more than its window. A device's cursor per group is kept in the
//! group log's cursors and moves as the device acknowledges (saved within 50 ms, not per
//! ack); the member's delivered-up-to marker moves with it.
//!
//! A member's devices get the log from the entry that added them on; a member who was
//! removed (or left) gets up to and including that entry, and nothing after.

use super::store::Groups;
use crate::net::write_frame;
use quiver_proto::{ControlResponse, CursorTracker, DeviceId, GroupId, Seq, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinSet;

/// Entries read from a group log per step.
const READ_BATCH: usize = 64;

/// The control stream's sending half, shared with the session.
pub type Control = Arc<tokio::sync::Mutex<quinn::SendStream>>;

/// Where a session hands a device's group acks: the feed of each group.
///
/// Held by every session, in groups or not: it allocates nothing until a feed starts.
#[derive(Default)]
pub struct GroupAcks {
    feeds: Mutex<HashMap<GroupId, mpsc::UnboundedSender<Seq>>>,
    /// Feeds running, and whether the session is finishing (then no feed starts).
    running: Mutex<(usize, bool)>,
    /// The last running feed ended.
    all_ended: Notify,
}

/// A running feed's token: [`GroupAcks::finish`] waits until every one is dropped.
pub struct Running(Arc<GroupAcks>);

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.0.running();
        running.0 -= 1;
        if running.0 == 0 {
            self.0.all_ended.notify_waiters();
        }
    }
}

impl GroupAcks {
    fn running(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A polite goodbye: each feed records the acks it was handed, then ends. Waits for
    /// that at most `wait`.
    pub async fn finish(&self, wait: std::time::Duration) {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let ended = self.all_ended.notified();
        tokio::pin!(ended);
        // Registered before the count is read: the last feed's wake cannot be missed.
        ended.as_mut().enable();
        {
            let mut running = self.running();
            running.1 = true;
            if running.0 == 0 {
                return;
            }
        }
        let _ = tokio::time::timeout(wait, ended).await;
    }

    /// Passes an ack of `seq` to `group`'s feed; `false` if the device has no such feed.
    pub fn ack(&self, group: &GroupId, seq: Seq) -> bool {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.get(group).is_some_and(|feed| feed.send(seq).is_ok())
    }

    /// A new feed's acks, and its token of running; `None` if `group` has a feed
    /// already or the session is finishing.
    fn open(self: &Arc<Self>, group: &GroupId) -> Option<(mpsc::UnboundedReceiver<Seq>, Running)> {
        let mut running = self.running();
        if running.1 {
            return None;
        }
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if feeds.get(group).is_some_and(|f| !f.is_closed()) {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        feeds.insert(group.clone(), tx);
        running.0 += 1;
        Some((rx, Running(self.clone())))
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
    // Made at the first feed: most sessions' users are in no group.
    let mut feeds = None;
    loop {
        for group in groups.feeds_of(&device.user) {
            if let Some((rx, running)) = acks.open(&group) {
                let feed = feed(groups.clone(), group, device.clone(), control.clone(), rx);
                let feeds = feeds.get_or_insert_with(JoinSet::new);
                feeds.spawn(async move {
                    let ended = feed.await;
                    drop(running);
                    ended
                });
            }
        }
        next_change(
            &mut changes,
            &device.user,
            &mut feeds,
            std::future::pending(),
        )
        .await?;
    }
}

/// Waits until `user`'s groups change (or `changes` lagged, or `wake` ends) while
/// watching `tasks` (none yet: `None`): the first that fails ends the wait with its
/// error. `wake` is generic, so a caller that passes `std::future::pending()` keeps no
/// room for a timer.
pub async fn next_change(
    changes: &mut broadcast::Receiver<UserId>,
    user: &UserId,
    tasks: &mut Option<JoinSet<Result<(), String>>>,
    wake: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    tokio::pin!(wake);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(changed) if changed == *user => return Ok(()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return Ok(()),
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            },
            Some(ended) = join_next(tasks) => {
                if let Ok(Err(e)) = ended {
                    return Err(e);
                }
            }
            () = &mut wake => return Ok(()),
        }
    }
}

/// The next of `tasks` to end; `None` at once when there are none.
async fn join_next<T: 'static>(
    tasks: &mut Option<JoinSet<T>>,
) -> Option<Result<T, tokio::task::JoinError>> {
    match tasks {
        Some(tasks) => tasks.join_next().await,
        None => None,
    }
}

/// How long a device's acknowledged cursor in a group may wait before it is saved.
/// Saving on every ack made the sled writes (a cursor and a delivered marker per ack per
/// device) most of the node's CPU in a 1,000-member group; a cursor saved late means at
/// most this much is pushed again after a reconnect, which devices drop as seen.
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// A device's place in one group's log.
struct Place {
    groups: Arc<Groups>,
    group: GroupId,
    owner: UserId,
    device: Arc<Device>,
    acked: CursorTracker,
    saved: Seq,
    save_at: Option<tokio::time::Instant>,
}

impl Place {
    /// Records an ack; the cursor is saved within [`SAVE_EVERY`].
    fn ack(&mut self, seq: Seq) {
        self.acked.mark(seq);
        if self.acked.cursor() > self.saved && self.save_at.is_none() {
            self.save_at = Some(tokio::time::Instant::now() + SAVE_EVERY);
        }
    }

    /// Saves the cursor and the member's delivered marker, if they moved.
    fn save(&mut self) -> Result<(), String> {
        self.save_at = None;
        let cursor = self.acked.cursor();
        if cursor > self.saved {
            let log = self.groups.log();
            log.set_cursor(&self.owner, self.device.device, cursor)
                .map_err(|e| e.to_string())?;
            self.groups
                .delivered(&self.group, &self.device.user, cursor);
            self.saved = cursor;
        }
        Ok(())
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
    let mut place = Place {
        groups: groups.clone(),
        group: group.clone(),
        owner: owner.clone(),
        device: device.clone(),
        acked: CursorTracker::new(start),
        saved: stored,
        save_at: None,
    };
    let mut next = start.next();
    loop {
        let Some((_, until)) = groups.range(&group, &device.user) else {
            return place.save();
        };
        let head = (*durable.borrow_and_update()).min(until.unwrap_or(Seq(u64::MAX)));
        let limit = Seq(place.acked.cursor().0 + device.window).min(head);
        if next <= limit {
            let entries = log
                .read(&owner, next, limit, READ_BATCH)
                .map_err(|e| e.to_string())?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                // Retention removed them: the device starts after what is gone.
                let floor = log.floor(&owner);
                place.acked.advance_to(floor.min(limit));
                next = place.acked.cursor().next().max(next);
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
        if until.is_some_and(|until| place.acked.cursor() >= until) {
            return place.save();
        }
        let save_at = place.save_at;
        tokio::select! {
            changed = durable.changed() => {
                if changed.is_err() {
                    return place.save();
                }
            }
            seq = acks.recv() => {
                let Some(seq) = seq else { return place.save() };
                for seq in std::iter::once(seq).chain(std::iter::from_fn(|| acks.try_recv().ok())) {
                    if seq >= next {
                        return Err(format!("group {group}: seq {seq} was not pushed"));
                    }
                    place.ack(seq);
                }
            }
            () = tokio::time::sleep_until(save_at.unwrap_or_else(tokio::time::Instant::now)), if save_at.is_some() => {
                place.save()?;
            }
        }
    }
}
