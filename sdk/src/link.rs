//! One QUIC connection of a [`crate::Client`] ("link"): the handshake, the control stream
//! and the node's push streams. A client goes through many links over its life; the
//! outbox, the cursor and the event stream outlive them.

use crate::carrier::Carrier;
use crate::error::ConnectError;
use crate::event::Event;
use crate::frames::{read_frame, write_frame, FrameReader};
pub(crate) use crate::state::Link;
use crate::state::{Ack, ControlCommand, Inner};
use quiver_proto::{
    ControlRequest, ControlResponse, DeviceId, Entry, ErrorCode, Seq, UserId, PROTOCOL_VERSION,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the node said in `Welcome`, with the streams it came on.
pub(crate) struct Handshake {
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: quinn::RecvStream,
    pub user: UserId,
    pub device: DeviceId,
    pub cursor: Seq,
}

/// Connects and says Hello; bounded by `timeout` (QUIC alone would wait an idle timeout).
/// With a `fallback` carrier, an attempt that UDP has not completed after its delay goes on
/// over the TCP tunnel.
pub(crate) async fn handshake(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
    token: &str,
    timeout: Duration,
    fallback: Option<(&Arc<Carrier>, Duration)>,
) -> Result<Handshake, ConnectError> {
    let attempt = handshake_inner(endpoint, addr, server_name, token, fallback);
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Connect(format!(
            "no answer from {addr} within {timeout:?}"
        ))),
    }
}

async fn handshake_inner(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
    token: &str,
    fallback: Option<(&Arc<Carrier>, Duration)>,
) -> Result<Handshake, ConnectError> {
    let failed = |e: &dyn std::fmt::Display| ConnectError::Connect(e.to_string());
    let mut connecting = endpoint
        .connect(addr, server_name)
        .map_err(|e| failed(&e))?;
    let connected = match fallback {
        // Happy Eyeballs: QUIC over UDP first, the same handshake over TCP if UDP is
        // silent; its next Initial goes down the tunnel.
        Some((carrier, after)) if !carrier.on_tcp() => tokio::select! {
            done = &mut connecting => done,
            _ = tokio::time::sleep(after) => {
                carrier.use_tcp(false);
                connecting.await
            }
        },
        _ => connecting.await,
    };
    let conn = connected.map_err(|e| closed_by_node(&e).unwrap_or_else(|| failed(&e)))?;
    // The node may close the connection at any point of the handshake (a cap, a bad
    // token): its close code says why, whichever step noticed first.
    let why = |e: &dyn std::fmt::Display| refusal(&conn).unwrap_or_else(|| failed(e));
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| why(&e))?;
    let hello = ControlRequest::Hello {
        version: PROTOCOL_VERSION,
        token: token.to_owned(),
    };
    write_frame(&mut send, &hello).await.map_err(|e| why(&e))?;
    match read_frame::<ControlResponse>(&mut recv).await {
        Ok(Some(ControlResponse::Welcome {
            user,
            device,
            cursor,
        })) => Ok(Handshake {
            conn,
            send,
            recv,
            user,
            device,
            cursor,
        }),
        Ok(Some(ControlResponse::Error { code, message })) => {
            Err(ConnectError::Refused { code, message })
        }
        Ok(Some(ControlResponse::GroupEntry { .. })) | Ok(None) => {
            Err(ConnectError::Protocol("no welcome".into()))
        }
        Err(e) => Err(refusal(&conn).unwrap_or(ConnectError::Protocol(e))),
    }
}

/// The node's close code, if it closed the connection on purpose.
fn refusal(conn: &quinn::Connection) -> Option<ConnectError> {
    closed_by_node(&conn.close_reason()?)
}

/// A connection error as the node's refusal, when the node closed it with a Quiver code.
fn closed_by_node(error: &quinn::ConnectionError) -> Option<ConnectError> {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            let code = u32::try_from(close.error_code.into_inner()).ok()?;
            Some(ConnectError::Refused {
                code: ErrorCode::from_u32(code)?,
                message: String::from_utf8_lossy(&close.reason).into_owned(),
            })
        }
        _ => None,
    }
}

impl Link {
    /// Starts the tasks of a connection that completed its handshake.
    pub fn start(inner: &Arc<Inner>, handshake: Handshake, id: u64) -> Arc<Link> {
        let (control, commands) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            id,
            conn: handshake.conn,
            control,
        });
        tokio::spawn(write_control(handshake.send, commands));
        tokio::spawn(read_control(inner.clone(), link.clone(), handshake.recv));
        tokio::spawn(accept_pushes(inner.clone(), link.clone()));
        if let Some(state) = *crate::state::lock(&inner.presence) {
            crate::presence::announce(&link.conn, state);
            tokio::spawn(crate::presence::read_datagrams(
                inner.clone(),
                link.conn.clone(),
            ));
        }
        link
    }
}

/// Writes the control stream: acknowledgements and read marks, in the order queued.
async fn write_control(
    mut send: quinn::SendStream,
    mut commands: mpsc::UnboundedReceiver<ControlCommand>,
) {
    while let Some(command) = commands.recv().await {
        match command {
            ControlCommand::Send(frame) => {
                if write_frame(&mut send, &frame).await.is_err() {
                    return;
                }
            }
            ControlCommand::Finish(done) => {
                let _ = send.finish();
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Reads the node's control stream: errors for refused acks or read marks, and the
/// entries of the user's groups (acknowledged by [`crate::Events::recv`]).
async fn read_control(inner: Arc<Inner>, link: Arc<Link>, recv: quinn::RecvStream) {
    let mut frames = FrameReader::new(recv);
    while let Ok(Some(response)) = frames.next::<ControlResponse>().await {
        let event = match response {
            ControlResponse::Error { code, message } => {
                (Event::ServerError { code, message }, None)
            }
            ControlResponse::GroupEntry { group, entry } => {
                let ack = Ack {
                    seq: entry.seq,
                    group: Some(group.clone()),
                    control: link.control.clone(),
                    ends_entry: true,
                };
                (inner.open_group_entry(group, entry).await, Some(ack))
            }
            // Only the handshake reads a welcome.
            ControlResponse::Welcome { .. } => continue,
        };
        if inner.events.send(event).await.is_err() {
            return;
        }
    }
}

/// Accepts the node's push streams until the connection ends.
async fn accept_pushes(inner: Arc<Inner>, link: Arc<Link>) {
    while let Ok(recv) = link.conn.accept_uni().await {
        tokio::spawn(read_pushes(inner.clone(), link.clone(), recv));
    }
}

/// Turns one push stream's entries into events; [`crate::Events::recv`] acknowledges them.
async fn read_pushes(inner: Arc<Inner>, link: Arc<Link>, recv: quinn::RecvStream) {
    let mut frames = FrameReader::new(recv);
    while let Ok(Some(entry)) = frames.next::<Entry>().await {
        let seq = entry.seq;
        if inner.seen().contains(seq) {
            // The app has it already (a redelivery): acknowledge, don't repeat.
            let _ = link
                .control
                .send(ControlCommand::Send(ControlRequest::Ack { seq }));
            continue;
        }
        let ack = |ends_entry| Ack {
            seq,
            group: None,
            control: link.control.clone(),
            ends_entry,
        };
        // A batch of receipts is an event each, acknowledged with the last.
        let opened = inner.open_entry(entry).await;
        let last = opened.more();
        for (i, event) in opened.events().enumerate() {
            if inner
                .events
                .send((event, Some(ack(i == last))))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
