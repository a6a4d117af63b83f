//! What a client with a [`Store`] writes there, and when:
//! - a message the app sends: in the outbox and the history before `send` returns;
//! - the node's answer: `Sent` (with its `seq`) or a refusal for good takes it out;
//! - an event the app takes: the message, the receipt's new state, and the cursor, before
//!   the entry is acknowledged — so DELIVERED still means the device has it;
//! - at start: what the outbox still holds goes back in the queues, in order.
//!
//! The client without a store skips all of this; nothing else changes.

use crate::error::SendError;
use crate::event::Event;
use crate::outbox::{Conversation, Queue};
use crate::store::messages::Incoming;
use crate::store::outbox::Outgoing;
use crate::store::{Store, StoreError};
use quiver_proto::{ClientMsgId, ConversationRequest, Seq, UserId};
use std::collections::HashMap;
use std::sync::Arc;

/// Fills in what the app did not give from the store — friendship keys, the cursor —
/// and keeps the keys it did give.
pub(crate) fn remember(
    store: &Store,
    options: &mut crate::ConnectOptions,
) -> Result<(), StoreError> {
    for (friend, key) in &options.keys {
        store.save_friend_key(friend, key)?;
    }
    for (friend, key) in store.friend_keys()? {
        options.keys.entry(friend).or_insert(key);
    }
    let cursor = store.cursor()?;
    options.cursor = Some(options.cursor.unwrap_or_default().max(cursor));
    Ok(())
}

/// Keeps an outgoing message (before it is queued).
pub(crate) fn outgoing(
    store: &Store,
    from: &UserId,
    conversation: &Conversation,
    request: &ConversationRequest,
    frame: &[u8],
    plain: &[u8],
) -> Result<(), SendError> {
    let (id, sent_at_ms, file, epoch) = match request {
        ConversationRequest::Chat {
            id,
            sent_at_ms,
            file,
            ..
        } => (*id, *sent_at_ms, *file, None),
        ConversationRequest::GroupChat { id, sent_at_ms, .. } => (*id, *sent_at_ms, None, None),
        ConversationRequest::GroupFile {
            id,
            sent_at_ms,
            epoch,
            file,
            ..
        } => (*id, *sent_at_ms, Some(*file), Some(*epoch)),
        _ => return Err(SendError::Seal),
    };
    let message = Outgoing {
        conversation,
        from,
        id,
        sent_at_ms,
        body: plain,
        frame,
        file,
        epoch,
    };
    store
        .outbox_add(message)
        .map_err(|e| SendError::Store(e.to_string()))
}

/// Records the node's answer to message `id`: stored at `seq`, or refused for good.
pub(crate) fn answered(
    store: Option<&Store>,
    conversation: &Conversation,
    id: ClientMsgId,
    outcome: Option<Seq>,
) {
    if let Some(store) = store {
        if let Err(e) = store.outbox_settled(conversation, id, outcome) {
            // The row stays: the next start writes it again, and the node answers the
            // same id with the same seq.
            tracing::error!(%conversation, error = %e, "store: could not settle a sent message");
        }
    }
}

/// Puts what the store's outbox holds back in the queues, in the order it was sent.
pub(crate) fn restore(
    store: &Store,
    queues: &mut HashMap<Conversation, Arc<tokio::sync::Mutex<Queue>>>,
) -> Result<usize, StoreError> {
    let waiting = store.outbox()?;
    let count = waiting.len();
    let mut restored: HashMap<Conversation, Queue> = HashMap::new();
    for message in waiting {
        // Nobody awaits these: the app that sent them is gone. The store has the answer.
        let (waiter, _) = tokio::sync::oneshot::channel();
        restored
            .entry(message.conversation)
            .or_default()
            .push(message.id, message.frame, waiter);
    }
    for (conversation, queue) in restored {
        queues.insert(conversation, Arc::new(tokio::sync::Mutex::new(queue)));
    }
    Ok(count)
}

/// Keeps what an event the app is taking (or a history page) says; `cursor` is the inbox
/// cursor once it is taken (`None` for a group's entry or a page).
pub(crate) fn taken(store: &Store, event: &Event, cursor: Option<Seq>) {
    let kept = match event {
        Event::Message(m) => store.save_incoming(
            Incoming {
                conversation: &Conversation::Friend(m.from.clone()),
                from: &m.from,
                id: m.id,
                seq: m.seq,
                sent_at_ms: m.sent_at_ms,
                body: &m.body,
                file: m.file.as_ref().map(|f| f.file),
                epoch: None,
            },
            cursor,
        ),
        Event::GroupMessage(m) => store.save_incoming(
            Incoming {
                conversation: &Conversation::Group(m.group.clone()),
                from: &m.from,
                id: m.id,
                seq: m.seq,
                sent_at_ms: m.sent_at_ms,
                body: &m.body,
                file: m.file.as_ref().map(|f| f.file),
                epoch: m
                    .file
                    .as_ref()
                    .and_then(|f| f.group.as_ref())
                    .map(|g| g.epoch),
            },
            None,
        ),
        Event::Receipt(r) => store
            .save_receipt(&r.peer, r.id, r.kind)
            .and_then(|()| cursor.map_or(Ok(()), |c| store.save_cursor(c))),
        _ => cursor.map_or(Ok(()), |c| store.save_cursor(c)),
    };
    if let Err(e) = kept {
        tracing::error!(error = %e, "store: could not keep an event");
    }
}
