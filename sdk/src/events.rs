//! [`Events`]: the stream of a client's [`Event`]s, continuous across reconnects. Taking
//! an event is what acknowledges it to the node (after it is kept in the store, if any).

use crate::event::Event;
use crate::state::{Ack, ControlCommand};
use quiver_proto::{ControlRequest, CursorTracker, GroupId, Seq};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The stream of [`Event`]s of a client, in arrival order (in `seq` order within a
/// conversation), continuous across reconnects.
pub struct Events {
    /// Where taken events are kept, if the client has a store.
    pub(crate) store: Option<crate::Store>,
    pub(crate) rx: mpsc::Receiver<(Event, Option<Ack>)>,
    pub(crate) seen: Arc<Mutex<CursorTracker>>,
    /// What was taken of each group's log (from the first entry this client saw).
    pub(crate) seen_groups: HashMap<GroupId, CursorTracker>,
}

impl Events {
    /// The next event; `None` once the client has stopped and every event was taken.
    ///
    /// Taking an event is what acknowledges it to the node: a message's sender gets
    /// DELIVERED, and the entry is not pushed to this device again.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            let (event, ack) = self.rx.recv().await?;
            let Some(ack) = ack else { return Some(event) };
            let (fresh, request, cursor) = match ack.group {
                None => {
                    let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                    let fresh = seen.mark(ack.seq);
                    let request = ControlRequest::Ack { seq: ack.seq };
                    (fresh, request, Some(seen.cursor()))
                }
                Some(group) => {
                    let seen = self
                        .seen_groups
                        .entry(group.clone())
                        .or_insert_with(|| CursorTracker::new(Seq(ack.seq.0.saturating_sub(1))));
                    let fresh = seen.mark(ack.seq);
                    let request = ControlRequest::GroupAck {
                        group,
                        seq: ack.seq,
                    };
                    (fresh, request, None)
                }
            };
            // Kept before it is acknowledged: DELIVERED means this device has it.
            if let (true, Some(store)) = (fresh, &self.store) {
                crate::persist::taken(store, &event, cursor);
            }
            let _ = ack.control.send(ControlCommand::Send(request));
            // A second copy can wait in the buffer when a reconnect pushed it again before
            // the app took the first: acknowledged, not shown.
            if fresh {
                return Some(event);
            }
        }
    }
}
