//! What the app's [`EventListener`] receives: [`QuiverEvent`], a flat copy of
//! [`quiver_sdk::Event`] in types every foreign language has (ids as hex strings).

use quiver_sdk::{ConnectionState, Event, ReceiptKind};

/// Something that happened.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum QuiverEvent {
    /// A friend's message (kept in the store before this call). A file message names
    /// the file: download it with `QuiverApp::download(seq, path)`.
    Message {
        /// The sender.
        sender: String,
        /// Its place in your inbox: pass it to `mark_read`.
        seq: u64,
        /// The sender's id for it.
        id: String,
        /// The body as text.
        text: String,
        /// The file's name, for a file message.
        file_name: Option<String>,
    },
    /// DELIVERED or READ for a message you sent.
    Receipt {
        /// Whom you sent it to.
        peer: String,
        /// `"delivered"` or `"read"`.
        kind: String,
        /// Your id for it.
        id: String,
        /// Its `seq` in their inbox.
        seq: u64,
    },
    /// A message in a group (kept in the store before this call). A file message names
    /// the file: download it with `QuiverApp::download_group_file(group, seq, path)`.
    GroupMessage {
        /// The group.
        group: String,
        /// The sender.
        sender: String,
        /// Its place in the group's log.
        seq: u64,
        /// The body as text.
        text: String,
        /// The file's name, for a file message.
        file_name: Option<String>,
    },
    /// The connection changed: `"connecting"`, `"online"`, `"offline"`, or
    /// `"disconnected"` (stopped for good; `reason` says why).
    Connection {
        /// The new state.
        state: String,
        /// Why, when it went offline or stopped.
        reason: Option<String>,
    },
    /// A friend is typing to you (`group` empty), or a member in a group.
    Typing {
        /// Who.
        sender: String,
        /// The group, if in one.
        group: Option<String>,
    },
    /// A friend's presence: `"online"`, `"away"` or `"offline"`.
    Presence {
        /// The friend.
        user: String,
        /// What they show.
        state: String,
        /// When last seen, ms since the Unix epoch (0: unknown).
        last_seen_ms: u64,
    },
    /// Anything else (a membership change, a message that did not open), described.
    Other {
        /// What it was.
        description: String,
    },
}

/// The app's side: called once per event, in order, from a thread of the library.
#[uniffi::export(with_foreign)]
pub trait EventListener: Send + Sync {
    /// One event.
    fn on_event(&self, event: QuiverEvent);
}

impl From<&Event> for QuiverEvent {
    fn from(event: &Event) -> Self {
        match event {
            Event::Message(m) => QuiverEvent::Message {
                sender: m.from.to_string(),
                seq: m.seq.0,
                id: hex_id(m.id),
                text: m.text(),
                file_name: m.file.as_ref().map(|f| f.info.safe_name()),
            },
            Event::Receipt(r) => QuiverEvent::Receipt {
                peer: r.peer.to_string(),
                kind: match r.kind {
                    ReceiptKind::Delivered => "delivered",
                    ReceiptKind::Read => "read",
                }
                .into(),
                id: hex_id(r.id),
                seq: r.seq.0,
            },
            Event::GroupMessage(m) => QuiverEvent::GroupMessage {
                group: m.group.to_string(),
                sender: m.from.to_string(),
                seq: m.seq.0,
                text: m.text(),
                file_name: m.file.as_ref().map(|f| f.info.safe_name()),
            },
            Event::Connection(state) => {
                let (state, reason) = match state {
                    ConnectionState::Connecting => ("connecting", None),
                    ConnectionState::Online => ("online", None),
                    ConnectionState::Offline { reason } => ("offline", Some(reason.clone())),
                };
                QuiverEvent::Connection {
                    state: state.into(),
                    reason,
                }
            }
            Event::Disconnected { reason } => QuiverEvent::Connection {
                state: "disconnected".into(),
                reason: Some(reason.clone()),
            },
            Event::Typing { from, group } => QuiverEvent::Typing {
                sender: from.to_string(),
                group: group.as_ref().map(|g| g.to_string()),
            },
            Event::Presence {
                user,
                state,
                last_seen_ms,
            } => QuiverEvent::Presence {
                user: user.to_string(),
                state: state.name().into(),
                last_seen_ms: *last_seen_ms,
            },
            other => QuiverEvent::Other {
                description: format!("{other:?}"),
            },
        }
    }
}

/// A message id as 32 hex digits.
pub fn hex_id(id: quiver_sdk::ClientMsgId) -> String {
    format!("{:032x}", id.0)
}
