//! [`Feed`]: one connected device's view of its user's inbox, kept on the user's home node —
//! the device's cursor, what was pushed and acknowledged, and the push loop that reads the
//! log from the cursor on, never more than `push_window` entries ahead of the acks.
//!
//! A session on the home node drives its feed directly; a session on another node drives
//! it through a mesh attachment ([`crate::mesh`]). Either way acks, read marks and pushes
//! go through here, so the rules are the same wherever the device is connected.

use crate::inbox::Framed;
use crate::live::Slot;
use crate::net::{Reader, StreamEnd};
use crate::router::Pushed;
use crate::shared::Shared;
use futures_util::stream::{FuturesUnordered, StreamExt};
use quiver_proto::stream::{ControlPhase, ControlStep};
use quiver_proto::{CursorTracker, DeviceId, ErrorCode, Seq, UserId};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Entries read from the inbox per step of the push loop.
const PUSH_BATCH: usize = 128;

/// Least time between two writes of one device's cursor: under load a device acks
/// thousands of entries a second, and one write stands for all of them.
const CURSOR_SAVE_GAP: std::time::Duration = std::time::Duration::from_millis(20);

/// A refused ack or read mark, for the device.
pub type Refusal = (ErrorCode, String);

/// Acks whose DELIVERED receipt is being written, driven by the loop that reads the
/// device's acks ([`AckTasks::next_request`]) rather than by a task each: under
/// load a device acks thousands of entries a second, and a spawned task per ack (its
/// allocation, scheduling and join) was a tenth of the node's time.
///
/// Nothing else drives them, so whatever else that loop awaits goes through
/// [`AckTasks::alongside`]: an ack may hold what the other work waits for (the mesh link
/// to a peer while it is dialed), and an ack left unpolled would never let go of it.
#[derive(Default)]
pub struct AckTasks {
    /// Made at the first ack: an empty set still holds its queue.
    running: Option<FuturesUnordered<AckWork>>,
    /// An ack that failed while [`AckTasks::alongside`] drove it, for the next request.
    failed: Option<ErrorCode>,
}

/// What is left of one ack: DELIVERED for the sender, then the cursor.
type AckWork = Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send>>;

/// The next ack of `running` to finish; `None` at once if there are none.
async fn next_done(
    running: &mut Option<FuturesUnordered<AckWork>>,
) -> Option<Result<(), ErrorCode>> {
    match running {
        Some(running) => running.next().await,
        None => None,
    }
}

impl AckTasks {
    /// No acks in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the device's next control request, driving the acks in progress
    /// meanwhile. `Err` is the code of an ack that could not be recorded.
    pub async fn next_request(
        &mut self,
        requests: &mut Reader<ControlPhase>,
    ) -> Result<Result<Option<ControlStep>, StreamEnd>, ErrorCode> {
        if let Some(code) = self.failed.take() {
            return Err(code);
        }
        loop {
            // Reader::next is cancel-safe: a frame half read when an ack finishes is kept.
            // With no acks in progress the first branch is disabled.
            tokio::select! {
                Some(done) = next_done(&mut self.running) => done?,
                next = requests.next() => return Ok(next),
            }
        }
    }

    /// Runs `work` to its end while driving the acks in progress. An ack that fails
    /// meanwhile does not cut `work` short: its code is kept for the next
    /// [`AckTasks::next_request`], which returns it before reading another request.
    pub async fn alongside<T>(&mut self, work: impl Future<Output = T>) -> T {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                Some(done) = next_done(&mut self.running) => {
                    if let Err(code) = done {
                        self.failed.get_or_insert(code);
                    }
                }
            }
        }
    }

    /// Adds an ack's remaining work, to be driven with the others.
    fn push(&mut self, work: AckWork) {
        self.running
            .get_or_insert_with(FuturesUnordered::new)
            .push(work);
    }

    /// Finishes every ack in progress, whatever its outcome.
    pub async fn finish(&mut self) {
        while next_done(&mut self.running).await.is_some() {}
    }
}

/// The home-node state of one connected device.
pub struct Feed {
    shared: Arc<Shared>,
    user: UserId,
    device: DeviceId,
    acks: Mutex<Acks>,
    /// The cursor moved: the push loop waits for it when its window is full.
    cursor_moved: Notify,
    /// This device counts as connected (push notifications skip it) while the feed lives.
    _live: Option<Slot<(UserId, DeviceId)>>,
}

/// What the device acknowledged and what it was sent.
struct Acks {
    tracker: CursorTracker,
    /// Highest `seq` handed out for pushing.
    pushed: Seq,
    /// Acks whose DELIVERED receipt is being written.
    in_progress: HashSet<Seq>,
    /// What was pushed and is not acknowledged yet (at most a window of it).
    unacked: HashMap<Seq, Pushed>,
    /// The feed has ended and taken its share out of the push-backlog gauge.
    closed: bool,
    /// The cursor last handed to the inbox.
    saved: Seq,
    /// A [`save_cursor`] task is running: it writes the cursor until it stops moving.
    saving: bool,
}

/// How an incoming ack relates to what was pushed.
enum AckCheck {
    New,
    Repeat,
    Invalid,
}

impl Feed {
    /// Opens the feed of `device` at the node's record of its cursor. That record may lag
    /// the device (cursor writes are not flushed on their own); the SDK drops and
    /// re-acknowledges what it already has, and those acks give the senders DELIVERED.
    /// A cursor below what retention removed starts at the user's floor instead: the
    /// device is told so in `Welcome`, and moves its own cursor there.
    pub fn open(
        shared: Arc<Shared>,
        user: UserId,
        device: DeviceId,
    ) -> Result<Arc<Feed>, crate::inbox::InboxError> {
        let inbox = shared.router.inbox();
        let start = inbox.cursor(&user, device)?.max(inbox.floor(&user));
        let acks = Acks {
            tracker: CursorTracker::new(start),
            pushed: start,
            in_progress: HashSet::new(),
            unacked: HashMap::new(),
            closed: false,
            saved: start,
            saving: false,
        };
        let live = shared.live.feeds.take(&(user.clone(), device), u32::MAX);
        Ok(Arc::new(Feed {
            shared,
            user,
            device,
            acks: Mutex::new(acks),
            cursor_moved: Notify::new(),
            _live: live,
        }))
    }

    /// The device's cursor: everything up to it is acknowledged.
    pub fn cursor(&self) -> Seq {
        self.acks().tracker.cursor()
    }

    fn acks(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles an ack or read mark from the device (wherever it is connected). A new ack
    /// of a chat goes on in `tasks` (DELIVERED, then the cursor); the caller drives them
    /// and closes the device's connection if one fails, so the device reconnects and acks
    /// again.
    pub async fn handle(
        self: &Arc<Self>,
        step: ControlStep,
        tasks: &mut AckTasks,
    ) -> Result<(), Refusal> {
        match step {
            ControlStep::Ack(seq) => match self.begin_ack(seq) {
                AckCheck::New => {
                    self.shared.metrics.acks.fetch_add(1, Ordering::Relaxed);
                    let pushed = self.acks().unacked.remove(&seq);
                    match pushed {
                        // A receipt's ack owes nobody a receipt: nothing to wait for.
                        Some(Pushed::Receipt) => self.record_ack(seq),
                        pushed => {
                            let ack = self.clone().finish_ack(seq, pushed);
                            tasks.push(Box::pin(ack));
                        }
                    }
                    Ok(())
                }
                AckCheck::Repeat => Ok(()),
                AckCheck::Invalid => {
                    Err((ErrorCode::InvalidSeq, format!("seq {seq} was not pushed")))
                }
            },
            // Boxed: read marks are rare, and unboxed this future would be most of the
            // size of every session's control loop, idle or not. Alongside the acks: the
            // read's DELIVERED may wait on the mesh link an ack's receipt is dialing.
            ControlStep::Read(seq) => tasks
                .alongside(Box::pin(self.shared.router.read(&self.user, seq)))
                .await
                .map_err(|code| (code, format!("cannot mark seq {seq} read"))),
            // The control phase lets one hello through, and the session took it.
            ControlStep::Hello { .. } => Err((ErrorCode::UnexpectedFrame, "hello twice".into())),
            // The session hands these to its group feeds; none reaches a user's feed.
            ControlStep::GroupAck(..) | ControlStep::GroupRead(..) => {
                Err((ErrorCode::UnexpectedFrame, "not a group feed".into()))
            }
        }
    }

    fn begin_ack(&self, seq: Seq) -> AckCheck {
        let mut acks = self.acks();
        if seq.0 == 0 || seq > acks.pushed {
            AckCheck::Invalid
        } else if acks.tracker.contains(seq) || !acks.in_progress.insert(seq) {
            AckCheck::Repeat
        } else {
            AckCheck::New
        }
    }

    /// Records DELIVERED for the sender, then moves this device's cursor. `pushed` is
    /// what the feed remembered of the entry, if anything.
    async fn finish_ack(
        self: Arc<Self>,
        seq: Seq,
        pushed: Option<Pushed>,
    ) -> Result<(), ErrorCode> {
        self.shared
            .router
            .delivered(&self.user, seq, pushed)
            .await?;
        self.record_ack(seq);
        Ok(())
    }

    /// Marks `seq` acknowledged and moves the cursor (and the gauge) if it can.
    fn record_ack(self: &Arc<Self>, seq: Seq) {
        let mut acks = self.acks();
        acks.in_progress.remove(&seq);
        let before = acks.tracker.cursor();
        acks.tracker.mark(seq);
        let cursor = acks.tracker.cursor();
        if cursor > before {
            if !acks.closed {
                let acked = cursor.0 - before.0;
                self.shared
                    .metrics
                    .push_backlog
                    .fetch_sub(acked, Ordering::Relaxed);
            }
            self.cursor_moved.notify_one();
            // A task only while the cursor moves: an idle device's feed holds none.
            if !acks.saving && !acks.closed {
                acks.saving = true;
                tokio::spawn(save_cursor(self.clone()));
            }
        }
    }

    /// Takes this feed's unacknowledged pushes out of the gauge; call once, at the end.
    pub fn close(&self) {
        let mut acks = self.acks();
        let unacked = acks.pushed.0 - acks.tracker.cursor().0;
        self.shared
            .metrics
            .push_backlog
            .fetch_sub(unacked, Ordering::Relaxed);
        // An ack task still finishing must not subtract again.
        acks.closed = true;
        // The last word on the cursor, before the session (and a shutdown's flush) ends.
        let inbox = self.shared.router.inbox();
        if let Err(e) = inbox.set_cursor(&self.user, self.device, acks.tracker.cursor()) {
            tracing::warn!(error = %e, "cursor not saved");
        }
    }

    /// Hands the inbox from the cursor on to `deliver`, in `seq` order, within the window,
    /// until `deliver` fails or the inbox does. Backlog and live entries are the same loop
    /// reading the same log, so nothing live can overtake the backlog.
    pub async fn push(
        self: Arc<Self>,
        mut deliver: impl FnMut(Framed) -> Result<(), String>,
    ) -> Result<(), String> {
        let inbox = self.shared.router.inbox().clone();
        let window = self.shared.config.limits.push_window;
        let mut durable = inbox.subscribe(&self.user).map_err(|e| e.to_string())?;
        let mut next = self.cursor().next();
        loop {
            let room = (self.cursor().0 + window).saturating_sub(next.0 - 1);
            if room == 0 {
                // One waiter: an ack between the check and this wait leaves a permit.
                self.cursor_moved.notified().await;
                continue;
            }
            let head = *durable.borrow_and_update();
            if next > head {
                durable.changed().await.map_err(|e| e.to_string())?;
                continue;
            }
            let to = Seq(head.0.min(next.0 + room - 1));
            let entries = inbox
                .read_framed(&self.user, next, to, PUSH_BATCH)
                .map_err(|e| e.to_string())?;
            let last = entries.last().map_or(to, |f| f.entry.seq);
            let holes = holes(next, last, &entries);
            {
                // Under the acks lock, like every change to this feed's share of the
                // gauge, so the gauge never dips below zero.
                let mut acks = self.acks();
                let newly = last.0 - std::mem::replace(&mut acks.pushed, last).0;
                acks.unacked
                    .extend(entries.iter().map(|f| (f.entry.seq, Pushed::of(&f.entry))));
                self.shared
                    .metrics
                    .push_backlog
                    .fetch_add(newly, Ordering::Relaxed);
            }
            if !holes.is_empty() {
                // Retention removed them while the device was connected (and that far
                // behind), or the store is damaged. Count them as delivered, or the
                // cursor would stop below them and the window would never open again.
                if holes.last() > Some(&inbox.floor(&self.user)) {
                    tracing::error!(?holes, "inbox has holes; skipping them");
                }
                for seq in holes {
                    self.record_ack(seq);
                }
            }
            let pushed = entries.len() as u64;
            for entry in entries {
                deliver(entry)?;
            }
            self.shared
                .metrics
                .entries_pushed
                .fetch_add(pushed, Ordering::Relaxed);
            next = last.next();
        }
    }
}

/// Writes a device's cursor as it moves, at most once per [`CURSOR_SAVE_GAP`]: one write
/// covers every ack of the gap. Ends once a gap passes with the cursor still, or with the
/// feed, whose close writes the last cursor. The inbox keeps the highest cursor it is
/// given, so a write that comes after the close's changes nothing. A write lost in a crash
/// only means redelivery from an older cursor, which the SDK drops by `seq` and
/// acknowledges again.
async fn save_cursor(feed: Arc<Feed>) {
    loop {
        let seq = {
            let mut acks = feed.acks();
            let cursor = acks.tracker.cursor();
            if acks.closed || cursor == acks.saved {
                acks.saving = false;
                return;
            }
            acks.saved = cursor;
            cursor
        };
        let inbox = feed.shared.router.inbox();
        if let Err(e) = inbox.set_cursor(&feed.user, feed.device, seq) {
            tracing::warn!(error = %e, "cursor not saved");
        }
        tokio::time::sleep(CURSOR_SAVE_GAP).await;
    }
}

/// The `seq`s from `from` through `to` that `entries` (read in order) lack.
fn holes(from: Seq, to: Seq, entries: &[Framed]) -> Vec<Seq> {
    let mut present = entries.iter().map(|f| f.entry.seq).peekable();
    (from.0..=to.0)
        .map(Seq)
        .filter(|seq| {
            let here = present.peek() == Some(seq);
            if here {
                present.next();
            }
            !here
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::{Entry, EntryKind};

    fn entry(seq: u64) -> Framed {
        let kind = EntryKind::Chat {
            id: quiver_proto::ClientMsgId(0),
            sent_at_ms: 0,
            body: vec![],
            file: None,
        };
        Framed::encode(Entry {
            seq: Seq(seq),
            peer: UserId::parse("alice").unwrap(),
            kind,
        })
        .unwrap()
    }

    /// An ack holding what the awaited work needs (as a receipt holds the mesh link to a
    /// peer while it dials) lets go only when polled again.
    #[tokio::test]
    async fn work_alongside_the_acks_does_not_wait_on_an_unpolled_ack() {
        let link = Arc::new(tokio::sync::Mutex::new(()));
        let held = link.clone().lock_owned().await;
        let mut tasks = AckTasks::new();
        tasks.push(Box::pin(async move {
            tokio::task::yield_now().await;
            drop(held);
            Err(ErrorCode::Unavailable)
        }));
        let work = async { drop(link.lock().await) };
        let done = tokio::time::timeout(std::time::Duration::from_secs(10), tasks.alongside(work));
        assert!(done.await.is_ok(), "the work waited on an ack nobody drove");
        assert!(tasks.running.as_ref().is_some_and(|r| r.is_empty()));
        assert_eq!(
            tasks.failed,
            Some(ErrorCode::Unavailable),
            "kept for next_request"
        );
    }

    #[test]
    fn holes_are_the_missing_seqs_in_range() {
        let entries = [entry(3), entry(5), entry(6)];
        assert_eq!(holes(Seq(2), Seq(7), &entries), [Seq(2), Seq(4), Seq(7)]);
        assert!(holes(Seq(3), Seq(3), &entries[..1]).is_empty());
        assert_eq!(holes(Seq(1), Seq(2), &[]), [Seq(1), Seq(2)]);
    }
}
