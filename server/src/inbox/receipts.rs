//! Receipts appended as one entry: a batch of DELIVERED (or READ) from one reader, each
//! message's receipt kept once however often it is asked for (`crate::receipt_batch`
//! gathers them).

use super::idempotency::receipt_digest;
use super::{encode_into, index_of, Appended, Inbox, InboxError};
use crate::commit::Urgency;
use quiver_proto::{Entry, EntryKind, ReceiptKind, ReceiptOf, UserId};

impl Inbox {
    /// Appends `kind` receipts from `reader` of `messages` to `owner`'s log as one entry
    /// (a [`EntryKind::Receipt`] if one message is new, [`EntryKind::Receipts`] if more),
    /// leaving out the messages that already have one; flushed with `urgency`. Returns
    /// what resolves once the receipts are durable, and how many were new.
    pub fn append_receipts(
        &self,
        owner: &UserId,
        reader: &UserId,
        kind: ReceiptKind,
        messages: Vec<ReceiptOf>,
        urgency: Urgency,
    ) -> Result<(Appended, usize), InboxError> {
        let (seq, new, durable) = 'append: {
            let mut owners = self.shard(owner);
            let state = index_of(&mut owners, owner)?;
            let head = state.head();
            let mut known = None;
            let mut new = Vec::with_capacity(messages.len());
            for message in messages {
                let digest = receipt_digest(reader, kind, message.seq);
                match state.appended.get(&digest) {
                    Some(seq) => known = Some(*seq),
                    None if new.iter().any(|(d, _)| *d == digest) => {}
                    None => new.push((digest, message)),
                }
            }
            let entry_kind = match new.as_slice() {
                [] => {
                    // Every one is in an earlier entry: wait for it as a retry would.
                    break 'append (known.unwrap_or(head), 0, state.durable.clone());
                }
                [(_, one)] => EntryKind::Receipt {
                    kind,
                    id: one.id,
                    seq: one.seq,
                },
                more => EntryKind::Receipts {
                    kind,
                    messages: more.iter().map(|(_, m)| *m).collect(),
                },
            };
            let entry = Entry {
                seq: head.next(),
                peer: reader.clone(),
                kind: entry_kind,
            };
            // Under the shard lock: one user's records go to the log in `seq` order.
            let place = self
                .log
                .append_with(|tail| encode_into(owner, &entry, tail))?;
            for (digest, _) in &new {
                state.appended.insert(*digest, entry.seq);
            }
            state.set_place(entry.seq, place);
            (entry.seq, new.len(), state.durable.clone())
        };
        let appended = self.durable_after_commit(urgency, seq, new > 0, durable);
        Ok((appended, new))
    }
}
