//! What the app receives: [`Event`]s on the [`Events`] stream.

use crate::client::ControlCommand;
use quiver_proto::{
    ClientMsgId, ControlRequest, CursorTracker, ErrorCode, ReceiptKind, Seq, UserId,
};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A message from a friend, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender, as stamped by the node.
    pub from: UserId,
    /// Position in your inbox: pass it to [`crate::Client::mark_read`].
    pub seq: Seq,
    /// The sender's id for the message.
    pub id: ClientMsgId,
    /// The sender's clock at writing, ms since the Unix epoch.
    pub sent_at_ms: u64,
    /// The opened body.
    pub body: Vec<u8>,
}

impl Message {
    /// The body as text (lossy for bodies that are not UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// News about a message you sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The recipient of your message.
    pub peer: UserId,
    /// DELIVERED or READ.
    pub kind: ReceiptKind,
    /// Your id for the message.
    pub id: ClientMsgId,
    /// The message's `seq` in the recipient's inbox (as in [`crate::Sent`]).
    pub seq: Seq,
}

/// Something that happened on the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A friend's message.
    Message(Message),
    /// A receipt for one of your messages.
    Receipt(Receipt),
    /// A message whose body did not open (tampered, or sealed with another key). It is
    /// acknowledged like any other, so it is not redelivered.
    Undecryptable {
        /// The sender, as stamped by the node.
        from: UserId,
        /// Position in your inbox.
        seq: Seq,
        /// Why it did not open.
        reason: String,
    },
    /// The node refused a control request (an invalid ack or read mark).
    ServerError {
        /// The node's code.
        code: ErrorCode,
        /// Its detail.
        message: String,
    },
    /// The connection ended. No more events follow.
    Disconnected {
        /// Why, as far as the SDK knows.
        reason: String,
    },
}

/// The stream of [`Event`]s of one connection, in arrival order (in `seq` order within a
/// conversation).
pub struct Events {
    pub(crate) rx: mpsc::Receiver<(Event, Option<Seq>)>,
    pub(crate) seen: Arc<Mutex<CursorTracker>>,
    pub(crate) control: mpsc::UnboundedSender<ControlCommand>,
}

impl Events {
    /// The next event; `None` once the connection is gone and every event was taken.
    ///
    /// Taking an event is what acknowledges it to the node: a message's sender gets
    /// DELIVERED, and the entry is not pushed to this device again.
    pub async fn recv(&mut self) -> Option<Event> {
        let (event, seq) = self.rx.recv().await?;
        if let Some(seq) = seq {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .mark(seq);
            let _ = self
                .control
                .send(ControlCommand::Send(ControlRequest::Ack { seq }));
        }
        Some(event)
    }
}
