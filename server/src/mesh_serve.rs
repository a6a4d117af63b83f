//! The receiving side of mesh links: every stream a peer opens, by its [`MeshOpen`] frame.
//! The TLS handshake already proved the peer holds a cluster certificate.

use crate::conversation::{append_chats, respond, Reply};
use crate::credit::StreamCredit;
use crate::feed::{AckTasks, Feed};
use crate::groups::send::append_group_chats;
use crate::mesh::MAX_MESH_FRAME;
use crate::net::{read_frame, write_frame, Reader};
use crate::router::Home;
use crate::shared::Shared;
use axum::response::IntoResponse;
use quiver_proto::mesh::{AttachDown, GroupAnswer, MeshOpen, ReceiptAnswer};
use quiver_proto::stream::{ControlPhase, ConversationPhase};
use quiver_proto::{DeviceId, ErrorCode, UserId};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Accepts peers' connections until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    let mut links = JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        while links.try_join_next().is_some() {}
        links.spawn(link(incoming, shared.clone()));
    }
    links.shutdown().await;
}

async fn link(incoming: quinn::Incoming, shared: Arc<Shared>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "mesh handshake refused");
            return;
        }
    };
    tracing::info!(%remote, "mesh peer connected");
    let mut streams = JoinSet::new();
    let credit = StreamCredit::new(crate::mesh::FIRST_LINK_OFFER, crate::mesh::MAX_LINK_STREAMS);
    let ended = credit
        .accept(&conn, 0, &mut streams, |send, recv| {
            stream(send, recv, shared.clone())
        })
        .await;
    tracing::info!(%remote, reason = %ended, "mesh peer gone");
    streams.shutdown().await;
}

async fn stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, shared: Arc<Shared>) {
    let first = match read_frame::<MeshOpen>(&mut recv, MAX_MESH_FRAME).await {
        Ok(first) => first,
        Err(e) => {
            tracing::debug!(error = %e, "bad mesh stream");
            return;
        }
    };
    match first {
        MeshOpen::Conversation { from, to } => conversation(&shared, from, to, send, recv).await,
        MeshOpen::Receipt {
            owner,
            reader,
            kind,
            id,
            seq,
        } => {
            let router = &shared.router;
            let stored = match router.home(&owner).await {
                Ok(Home::Here) => router.store_receipt(&owner, &reader, kind, id, seq).await,
                Ok(Home::Peer(_)) | Err(_) => Err(ErrorCode::Unavailable),
            };
            answer(send, stored).await
        }
        MeshOpen::Attach { user, device } => attach(shared, user, device, send, recv).await,
        MeshOpen::Upload { user, blob, size } => {
            crate::files::upload(shared, user, blob, size, send, recv).await
        }
        MeshOpen::Download {
            user,
            owner,
            blob,
            offset,
        } => {
            let access = crate::files::Access::Friends;
            crate::files::download(shared, user, owner, blob, offset, access, send, recv).await
        }
        // The opening node (a group's home) has checked the reader may have it.
        MeshOpen::GrantedDownload {
            user,
            owner,
            blob,
            offset,
        } => {
            let access = crate::files::Access::Granted;
            crate::files::download(shared, user, owner, blob, offset, access, send, recv).await
        }
        MeshOpen::GroupDownload {
            user,
            group,
            seq,
            offset,
        } => {
            crate::group_files::download(shared, user, group, seq, offset, false, send, recv).await
        }
        MeshOpen::Retain { owner, file } => {
            let kept = match shared.router.home(&owner).await {
                Ok(Home::Here) => shared.blobs.retain(&owner, &file),
                Ok(Home::Peer(_)) | Err(_) => Err(ErrorCode::Unavailable),
            };
            answer(send, kept).await
        }
        MeshOpen::StartDevice { user, device } => {
            let started = match shared.router.home(&user).await {
                Ok(Home::Here) => shared.router.start_device(&user, device).await,
                Ok(Home::Peer(_)) | Err(_) => Err(ErrorCode::Unavailable),
            };
            answer(send, started).await
        }
        MeshOpen::History {
            user,
            peer,
            before,
            limit,
        } => {
            let want = crate::history::Want { before, limit };
            crate::history::inbox(&shared, user, peer, want, send, false).await
        }
        MeshOpen::Datagram { to, message } => {
            // From a peer node (mutual TLS), which checked the friendship; bounded all
            // the same.
            for user in to.iter().take(crate::presence_mesh::FORWARD_USERS) {
                crate::datagrams::send(&shared, user, &message);
            }
            let _ = send.finish();
        }
        MeshOpen::GroupConversation { from, group } => {
            group_conversation(&shared, from, group, send, recv).await
        }
        MeshOpen::GroupAttach { user, device, node } => {
            crate::group_mesh::serve_attachment(shared, (user, device, node), send, recv).await
        }
        MeshOpen::GroupCall { user, group, call } => {
            let response = match crate::group_mesh::home(&shared, &group).await {
                Ok(Home::Here) => {
                    crate::http::group_calls::serve(&shared, &user, &group, call).await
                }
                // Homes never move: a peer asking the wrong node raced a restart.
                _ => crate::api::ApiError::Group(ErrorCode::Unavailable, "group not homed here")
                    .into_response(),
            };
            group_answer(send, response).await
        }
        MeshOpen::GroupList { user } => {
            let list = crate::http::group_calls::list(&shared, &user);
            group_answer(send, axum::Json(list).into_response()).await
        }
        MeshOpen::GroupHistory {
            user,
            group,
            before,
            limit,
        } => {
            let want = crate::history::Want { before, limit };
            crate::history::group(&shared, user, group, want, send, false).await
        }
        MeshOpen::GroupHomeAdded { user, node } => {
            tracing::debug!(%user, %node, "a member's sessions here attach to a new group node");
            shared.groups.touch(&user);
            answer(send, Ok(())).await
        }
        MeshOpen::GroupTyping { from, group } => {
            // A peer's member (mutual TLS); the membership is checked here, at the home.
            if let Ok(view) = shared.groups.view(&group, &from) {
                let members = view.members.into_iter().map(|(member, _)| member);
                crate::datagrams::typing_to_members(&shared, &from, group, members.collect());
            }
            let _ = send.finish();
        }
        MeshOpen::GroupNotice {
            owner,
            from,
            group,
            seq,
            unread,
        } => {
            if let Some(push) = &shared.push {
                push.stored(crate::push::Stored {
                    owner,
                    from,
                    seq,
                    group: Some(group),
                    unread: Some(unread),
                    relay_to: None,
                });
            }
            answer(send, Ok(())).await
        }
        MeshOpen::Logout { user, device } => {
            let code = crate::net::varint(ErrorCode::Unauthenticated);
            let closed = shared
                .live
                .sessions
                .close(&user, device, code, b"logged out");
            tracing::debug!(%user, closed, "sessions of a device logged out elsewhere closed");
            answer(send, Ok(())).await
        }
    }
}

/// Writes the one answer of a one-answer request (receipt, logout, retain) and ends.
async fn answer(mut send: quinn::SendStream, outcome: Result<(), ErrorCode>) {
    let answer = match outcome {
        Ok(()) => ReceiptAnswer::Stored,
        Err(code) => ReceiptAnswer::Refused { code },
    };
    if write_frame(&mut send, &answer).await.is_ok() {
        let _ = send.finish();
    }
}

/// Writes the one answer of a group call: the REST answer as this node gives it.
async fn group_answer(mut send: quinn::SendStream, response: axum::response::Response) {
    let status = response.status().as_u16();
    // The frame's other fields are a few bytes: the body may take the rest of a frame
    // (a group of 10,000 members is about 500 KB of JSON).
    let json = match axum::body::to_bytes(response.into_body(), MAX_MESH_FRAME - 64).await {
        Ok(json) => json.to_vec(),
        Err(e) => {
            tracing::error!(error = %e, "group answer too large for the mesh");
            return;
        }
    };
    if write_frame(&mut send, &GroupAnswer { status, json })
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}

/// Chats to a group homed here, forwarded by the sender's node.
async fn group_conversation(
    shared: &Arc<Shared>,
    from: UserId,
    group: quiver_proto::GroupId,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let (tx, rx) = mpsc::channel(shared.config.limits.send_pipeline);
    let push = shared.push.clone();
    let responder = tokio::spawn(respond(send, rx, shared.metrics.clone(), push));
    let mut reader = Reader::new(recv, ConversationPhase::opened_group(), MAX_MESH_FRAME);
    let end = match crate::group_mesh::home(shared, &group).await {
        Ok(Home::Here) => {
            let notify = shared
                .push
                .as_ref()
                .map(|_| shared.config.push.group_max_members);
            let groups = &shared.groups;
            let router = &shared.router;
            append_group_chats(
                groups,
                router,
                &from,
                &group,
                &mut reader,
                &tx,
                notify,
                || true,
            )
            .await
        }
        Ok(Home::Peer(_)) | Err(_) => Some(ErrorCode::Unavailable),
    };
    if let Some(code) = end {
        reader.stop(code);
        let _ = tx.send(Reply::Close(code)).await;
    }
    drop(tx);
    let _ = responder.await;
}

/// Chats forwarded by the sender's node, appended here like a local client's.
async fn conversation(
    shared: &Arc<Shared>,
    from: UserId,
    to: UserId,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let (tx, rx) = mpsc::channel(shared.config.limits.send_pipeline);
    let push = shared.push.clone();
    let responder = tokio::spawn(respond(send, rx, shared.metrics.clone(), push));
    let phase = ConversationPhase::opened(to.clone());
    let mut reader = Reader::new(recv, phase, MAX_MESH_FRAME);
    let end = match shared.router.home(&to).await {
        Ok(Home::Here) => {
            let router = &shared.router;
            let notify = shared.push.is_some();
            append_chats(router, &from, &to, &mut reader, &tx, notify, || true).await
        }
        // Homes never move, so a peer asking the wrong node is a bug or a race with a
        // registration; the sender retries.
        Ok(Home::Peer(_)) | Err(_) => Some(ErrorCode::Unavailable),
    };
    if let Some(code) = end {
        reader.stop(code);
        let _ = tx.send(Reply::Close(code)).await;
    }
    drop(tx);
    let _ = responder.await;
}

/// Runs the feed of a device connected to the peer: entries down, acks and reads up.
async fn attach(
    shared: Arc<Shared>,
    user: UserId,
    device: DeviceId,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    // Entries never exceed the push window; refusals wait for room (backpressure on the
    // peer's control frames), so this queue is bounded.
    let (tx, rx) = mpsc::channel(shared.config.limits.push_window as usize + 64);
    let writer = tokio::spawn(write_down(send, rx));
    let feed = match shared.router.home(&user).await {
        Ok(Home::Here) => Feed::open(shared.clone(), user, device).map_err(|e| {
            tracing::error!(error = %e, "inbox failed");
            ErrorCode::Unavailable
        }),
        Ok(Home::Peer(_)) | Err(_) => Err(ErrorCode::Unavailable),
    };
    let feed = match feed {
        Ok(feed) => feed,
        Err(code) => {
            let message = "the user's inbox is not here".to_string();
            let _ = tx.send(AttachDown::Error { code, message }).await;
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let welcome = AttachDown::Welcome {
        cursor: feed.cursor(),
    };
    if tx.send(welcome).await.is_err() {
        return;
    }
    let entries = tx.clone();
    let pushing = feed.clone().push(move |framed| {
        entries
            .try_send(AttachDown::Entry(framed.entry))
            .map_err(|e| e.to_string())
    });
    let ended = tokio::select! {
        r = pushing => r,
        r = control(&feed, recv, &tx) => r,
    };
    tracing::debug!(reason = ?ended.err(), "attachment ended");
    feed.close();
    drop(tx);
    writer.abort();
}

/// Acks and read marks from the device, through the peer.
async fn control(
    feed: &Arc<Feed>,
    recv: quinn::RecvStream,
    tx: &mpsc::Sender<AttachDown>,
) -> Result<(), String> {
    let mut requests = Reader::new(recv, ControlPhase::greeted(), MAX_MESH_FRAME);
    let mut acking = AckTasks::new();
    loop {
        let next = acking
            .next_request(&mut requests)
            .await
            .map_err(|code| format!("could not record a delivery: {code}"))?;
        let step = match next {
            Ok(Some(step)) => step,
            Ok(None) => {
                acking.finish().await;
                return Ok(());
            }
            Err(e) => return Err(e.to_string()),
        };
        if let Err((code, message)) = feed.handle(step, &mut acking).await {
            if tx.send(AttachDown::Error { code, message }).await.is_err() {
                return Err("attachment writer ended".into());
            }
        }
    }
}

async fn write_down(mut send: quinn::SendStream, mut rx: mpsc::Receiver<AttachDown>) {
    while let Some(frame) = rx.recv().await {
        if write_frame(&mut send, &frame).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}
