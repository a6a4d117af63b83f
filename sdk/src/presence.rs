//! Typing and presence, client side: QUIC datagrams (docs/PROTOCOL.md 3.6), unreliable by
//! design — a lost one is not sent again, and a slow app misses some rather than holding
//! anything up. Only a client with [`crate::ConnectOptions::presence`] announces itself,
//! and only such a client is sent friends' presence and typing.

use crate::error::SendError;
use crate::event::Event;
use crate::state::Inner;
use quiver_proto::datagram::{ClientDatagram, NodeDatagram, PresenceState, MAX_DATAGRAM};
use std::sync::Arc;

/// Sends one datagram on `conn`.
pub(crate) fn send(conn: &quinn::Connection, message: &ClientDatagram) -> Result<(), SendError> {
    let bytes = postcard::to_stdvec(message).map_err(|_| SendError::Seal)?;
    conn.send_datagram(bytes.into())
        .map_err(|e| SendError::Connection(e.to_string()))
}

/// Shows `state` on a new connection.
pub(crate) fn announce(conn: &quinn::Connection, state: PresenceState) {
    if let Err(e) = send(conn, &ClientDatagram::Presence { state }) {
        tracing::debug!(error = %e, "presence not sent");
    }
}

/// Turns the node's datagrams into events until the connection ends. An app that does
/// not keep up loses some: they are not worth holding anything up for.
pub(crate) async fn read_datagrams(inner: Arc<Inner>, conn: quinn::Connection) {
    while let Ok(bytes) = conn.read_datagram().await {
        if bytes.len() > MAX_DATAGRAM {
            continue;
        }
        let event = match postcard::from_bytes::<NodeDatagram>(&bytes) {
            Ok(NodeDatagram::Typing { from }) => Event::Typing { from, group: None },
            Ok(NodeDatagram::GroupTyping { group, from }) => Event::Typing {
                from,
                group: Some(group),
            },
            Ok(NodeDatagram::Presence {
                user,
                state,
                last_seen_ms,
            }) => Event::Presence {
                user,
                state,
                last_seen_ms,
            },
            Err(_) => continue,
        };
        let _ = inner.events.try_send((event, None));
    }
}
