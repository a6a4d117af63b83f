//! [`Events`]: the stream of a client's [`Event`]s, continuous across reconnects. Taking
//! an event is what acknowledges it to the node (after it is kept in the store, if any).

use crate::event::Event;
use crate::state::{lock, Ack, ControlCommand};
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
            if !ack.ends_entry {
                // One of a batch of receipts: shown (and kept) unless the entry was
                // taken already; the entry is acknowledged with its last.
                let taken = lock(&self.seen).contains(ack.seq);
                if taken {
                    continue;
                }
                if let Some(store) = &self.store {
                    crate::persist::taken(store, &event, None);
                }
                return Some(event);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Receipt;
    use quiver_proto::{ClientMsgId, ReceiptKind, UserId};

    /// The events of one batch entry at `seq`, as the push reader hands them over.
    async fn batch(
        tx: &mpsc::Sender<(Event, Option<Ack>)>,
        control: &mpsc::UnboundedSender<ControlCommand>,
        seq: u64,
        ids: &[u128],
    ) {
        for (i, id) in ids.iter().enumerate() {
            let receipt = Event::Receipt(Receipt {
                peer: UserId::parse("bob").unwrap(),
                kind: ReceiptKind::Delivered,
                id: ClientMsgId(*id),
                seq: Seq(*id as u64),
            });
            let ack = Ack {
                seq: Seq(seq),
                group: None,
                control: control.clone(),
                ends_entry: i + 1 == ids.len(),
            };
            tx.send((receipt, Some(ack))).await.unwrap();
        }
    }

    /// A batch of receipts is acknowledged once, when its last event is taken, and a
    /// second copy of it (pushed again after a reconnect) is not shown.
    #[tokio::test]
    async fn a_batch_is_acknowledged_with_its_last_event_and_shown_once() {
        let (tx, rx) = mpsc::channel(16);
        let (control, mut acks) = mpsc::unbounded_channel();
        let mut events = Events {
            store: None,
            rx,
            seen: Arc::new(Mutex::new(CursorTracker::new(Seq(0)))),
            seen_groups: HashMap::new(),
        };
        batch(&tx, &control, 1, &[7, 8, 9]).await;
        batch(&tx, &control, 1, &[7, 8, 9]).await;
        batch(&tx, &control, 2, &[10]).await;
        drop(tx);
        let mut ids = Vec::new();
        for _ in 0..2 {
            let Some(Event::Receipt(r)) = events.recv().await else {
                panic!("a receipt");
            };
            ids.push(r.id.0);
            assert!(
                acks.try_recv().is_err(),
                "acknowledged before its last event"
            );
        }
        while let Some(Event::Receipt(r)) = events.recv().await {
            ids.push(r.id.0);
        }
        assert_eq!(ids, [7, 8, 9, 10]);
        let mut acked = Vec::new();
        while let Ok(ControlCommand::Send(ControlRequest::Ack { seq })) = acks.try_recv() {
            acked.push(seq);
        }
        // The copy's last event is acknowledged again (not shown), as any redelivery.
        assert_eq!(acked, [Seq(1), Seq(1), Seq(2)]);
    }
}
