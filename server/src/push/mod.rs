//! Push notifications: a device that is away (no feed open on this, its user's home node)
//! and has a push target gets a notification when a chat for its user becomes durable —
//! through the configured push gateway, which holds the APNs and FCM credentials (as
//! Matrix's Sygnal); the node never does.
//!
//! - here: [`Pusher`], the handle the chat path tells of each stored chat. It never waits:
//!   a full queue drops the notice and counts it;
//! - [`worker`]: which devices are away, coalescing (one notification per device per
//!   window, the last unread count wins);
//! - [`gateway`]: the HTTP requests, retries with backoff, targets the gateway rejects.
//!
//! A notification carries no body: the conversation (the sender, and the group for a
//! group chat), the `seq`, the device's unread count there and a priority. Receipts and
//! membership changes send none. Groups larger than `group_max_members` are notified by
//! a sweep of their members at most once per window ([`crate::group_push`]).

pub mod gateway;
pub mod worker;

use crate::config::PushConfig;
use crate::directory::Directory;
use crate::inbox::Inbox;
use crate::live::Counts;
use crate::metrics::Metrics;
use quiver_proto::{DeviceId, GroupId, Seq, UserId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A chat made durable for `owner`, from `from`: in their inbox at `seq`, or in `group`'s
/// log at `seq` (one notice per member to tell).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Who is told: the inbox's owner, or a member of the group.
    pub owner: UserId,
    /// The sender.
    pub from: UserId,
    /// Its place in the inbox, or in the group's log.
    pub seq: Seq,
    /// The group, for a group chat.
    pub group: Option<GroupId>,
    /// The unread count, when the notifier cannot count it here (a group homed on
    /// another node than the member).
    pub unread: Option<u64>,
    /// The node the owner is homed on, when it is not this one: the notice goes there,
    /// where it is known whether their devices are connected.
    pub relay_to: Option<String>,
}

/// Notices of sweeps waiting for the notifier, at most; a sweep waits for room.
const SWEEP_QUEUE: usize = 1024;

/// Hands a notice to the node named (the owner's home), without waiting.
pub type Forward = Box<dyn Fn(String, Stored) + Send + Sync>;

/// The chat path's handle on the notifier.
#[derive(Clone)]
pub struct Pusher {
    tx: mpsc::Sender<Stored>,
    /// Notices of large groups' sweeps, behind `tx`'s.
    swept: mpsc::Sender<Stored>,
    metrics: Arc<Metrics>,
    /// In a mesh: where notices for users homed on other nodes go.
    forward: Option<Arc<Forward>>,
}

/// A device's unread entries in a group.
pub type GroupUnread = Box<dyn Fn(&GroupId, DeviceId) -> u64 + Send + Sync>;

/// What the notifier reads: who is away, how far each device has read, the targets.
pub struct Sources {
    /// Devices with a feed open here (the ones that are not away).
    pub feeds: Counts<(UserId, DeviceId)>,
    /// Inboxes: the head and each device's cursor give the unread count.
    pub inbox: Arc<Inbox>,
    /// The unread count of a device in a group: the groups know their logs; the notifier
    /// only asks.
    pub group_unread: GroupUnread,
    /// Push targets.
    pub directory: Arc<dyn Directory>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl Pusher {
    /// Starts the notifier for `config`; `None` when no gateway is configured.
    pub fn start(
        config: &PushConfig,
        sources: Sources,
        forward: Option<Forward>,
    ) -> Result<Option<(Pusher, tokio::task::JoinHandle<()>)>, gateway::GatewayError> {
        let Some(gateway) = gateway::Gateway::new(config)? else {
            return Ok(None);
        };
        let (tx, rx) = mpsc::channel(config.queue);
        let (swept, swept_rx) = mpsc::channel(SWEEP_QUEUE);
        let pusher = Pusher {
            tx,
            swept,
            metrics: sources.metrics.clone(),
            forward: forward.map(Arc::new),
        };
        let queues = worker::Queues { rx, swept_rx };
        let task = tokio::spawn(worker::run(queues, sources, gateway, config.clone()));
        Ok(Some((pusher, task)))
    }

    /// Tells the notifier of a durable chat. Never waits.
    pub fn stored(&self, mut notice: Stored) {
        if let Some(node) = notice.relay_to.take() {
            if let Some(forward) = &self.forward {
                forward(node, notice);
            }
            return;
        }
        if self.tx.try_send(notice).is_err() {
            self.metrics.push_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A notice of a large group's sweep ([`crate::group_push`]): waits for room in a
    /// queue of the sweeps' own rather than dropping it, and the notifier takes the
    /// chats' queue first, so a sweep of thousands of members neither loses most of
    /// them to its own burst nor crowds out other chats' notices.
    pub async fn swept(&self, notice: Stored) {
        if notice.relay_to.is_some() {
            return self.stored(notice);
        }
        if self.swept.send(notice).await.is_err() {
            self.metrics.push_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
