//! Batches of receipts ([`EntryKind::Receipts`], protocol version 2) taken apart into
//! the one [`Event::Receipt`] per message that apps see, whether pushed or paged.

use crate::event::{Event, Receipt};
use quiver_proto::{Entry, EntryKind};

/// An entry, or the events of a batch of receipts it was ([`receipt_events`]).
pub(crate) enum Unbatched {
    /// One [`Event::Receipt`] per message of the batch, in order.
    Receipts(Vec<Event>),
    /// Any other entry, as it came.
    Entry(Entry),
}

/// The events of a batch of receipts ([`EntryKind::Receipts`]): one [`Event::Receipt`]
/// per message, in order (an empty batch, which no node writes, is one
/// [`Event::Undecryptable`], so it is still acknowledged). Any other entry comes back.
pub(crate) fn receipt_events(entry: Entry) -> Unbatched {
    let Entry { seq, peer, kind } = entry;
    let (kind, messages) = match kind {
        EntryKind::Receipts { kind, messages } => (kind, messages),
        kind => return Unbatched::Entry(Entry { seq, peer, kind }),
    };
    if messages.is_empty() {
        return Unbatched::Receipts(vec![Event::Undecryptable {
            from: peer,
            seq,
            reason: "an empty batch of receipts".into(),
        }]);
    }
    Unbatched::Receipts(
        messages
            .into_iter()
            .map(|m| {
                Event::Receipt(Receipt {
                    peer: peer.clone(),
                    kind,
                    id: m.id,
                    seq: m.seq,
                })
            })
            .collect(),
    )
}
