//! Batches of receipts ([`EntryKind::Receipts`], protocol version 2) taken apart into
//! the one [`Event::Receipt`] per message that apps see, whether pushed or paged.
//!
//! [`EntryKind::Receipts`]: quiver_proto::EntryKind::Receipts

use crate::event::{Event, Receipt};
use quiver_proto::{ReceiptKind, ReceiptOf, Seq, UserId};

/// What an inbox entry is to the app (`Inner::open_entry`): one event, or for a batch of
/// receipts one [`Event::Receipt`] per message, in order — acknowledged as one entry,
/// with the last.
pub(crate) struct Opened {
    first: Event,
    more: Vec<Event>,
}

impl Opened {
    /// An entry that is one event.
    pub(crate) fn one(event: Event) -> Self {
        Self {
            first: event,
            more: Vec::new(),
        }
    }

    /// How many events after the first.
    pub(crate) fn more(&self) -> usize {
        self.more.len()
    }

    /// The events, in order.
    pub(crate) fn events(self) -> impl DoubleEndedIterator<Item = Event> {
        std::iter::once(self.first).chain(self.more)
    }
}

/// The events of a batch of `kind` receipts from `peer` at `seq` (an empty batch, which
/// no node writes, is one [`Event::Undecryptable`], so it is still acknowledged).
pub(crate) fn receipt_events(
    peer: UserId,
    seq: Seq,
    kind: ReceiptKind,
    messages: Vec<ReceiptOf>,
) -> Opened {
    let mut events = messages.into_iter().map(|m| {
        Event::Receipt(Receipt {
            peer: peer.clone(),
            kind,
            id: m.id,
            seq: m.seq,
        })
    });
    let Some(first) = events.next() else {
        return Opened::one(Event::Undecryptable {
            from: peer,
            seq,
            reason: "an empty batch of receipts".into(),
        });
    };
    Opened {
        first,
        more: events.collect(),
    }
}
