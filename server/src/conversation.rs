//! Chats on one stream into the inbox of a recipient homed on this node: appends in stream
//! order, `Sent` after durability, pipelined so a burst is not stop-and-wait.
//!
//! A client's conversation stream (for a local recipient) and a peer node's forwarded
//! conversation ([`quiver_proto::mesh::MeshOpen::Conversation`]) both end up here.

use crate::inbox::Appended;
use crate::metrics::Metrics;
use crate::net::{write_frame, Reader, StreamEnd};
use crate::push::{Pusher, Stored};
use crate::router::Router;
use quiver_proto::stream::{ConversationPhase, ConversationStep};
use quiver_proto::{ClientMsgId, ConversationResponse, ErrorCode, UserId};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A reply queued for a conversation stream, in the order of the requests.
pub enum Reply {
    /// The outcome of an append made here, and what to tell the push notifier once it is
    /// durable (a fresh chat: its recipient, or a group's members; nothing for a retry).
    Chat(ClientMsgId, Result<Appended, ErrorCode>, Vec<Stored>),
    /// An answer from the recipient's home node, passed on as it is.
    Forwarded(ConversationResponse),
    /// The stream closes with this code; nothing follows.
    Close(ErrorCode),
}

/// Reads chats from `from` to `to` until the stream ends and appends them in order, each
/// reply queued on `tx`. `allow` is asked before each chat (a rate limit): when it says no,
/// reading stops there, so nothing after the refused chat is stored. With `notify` (push
/// is on) each fresh chat carries the notice for the push notifier. Returns the code to
/// close the stream with, if any.
pub async fn append_chats(
    router: &Router,
    from: &UserId,
    to: &UserId,
    reader: &mut Reader<ConversationPhase>,
    tx: &mpsc::Sender<Reply>,
    notify: bool,
    mut allow: impl FnMut() -> bool,
) -> Option<ErrorCode> {
    loop {
        match reader.next().await {
            Ok(Some(ConversationStep::Chat { .. })) if !allow() => {
                return Some(ErrorCode::RateLimited)
            }
            Ok(Some(ConversationStep::Chat {
                id,
                sent_at_ms,
                body,
                file,
            })) => {
                let appended = router.chat(from, to, id, sent_at_ms, body, file).await;
                let notice = match &appended {
                    Ok(a) if notify && a.fresh => vec![Stored {
                        owner: to.clone(),
                        from: from.clone(),
                        seq: a.seq,
                        group: None,
                        unread: None,
                        relay_to: None,
                    }],
                    _ => Vec::new(),
                };
                if tx.send(Reply::Chat(id, appended, notice)).await.is_err() {
                    return None;
                }
            }
            // Any other step is a first frame: the phase allows one, and the caller took it.
            Ok(Some(_)) => return Some(ErrorCode::UnexpectedFrame),
            Ok(None) | Err(StreamEnd::Failed(_)) => return None,
            Err(StreamEnd::Refused(code)) => return Some(code),
        }
    }
}

/// Answers a conversation stream's requests in order, then finishes the stream; tells
/// `push` of each chat once it is durable.
pub async fn respond(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Reply>,
    metrics: Arc<Metrics>,
    push: Option<Pusher>,
) {
    let mut broken = false;
    while let Some(reply) = rx.recv().await {
        let frame = match reply {
            Reply::Chat(id, Ok(appended), notice) => match appended.durable().await {
                Ok(seq) => {
                    if let Some(push) = &push {
                        notice.into_iter().for_each(|n| push.stored(n));
                    }
                    ConversationResponse::Sent { id, seq }
                }
                Err(e) => {
                    tracing::error!(error = %e, "append not durable");
                    ConversationResponse::Rejected {
                        id,
                        code: ErrorCode::Unavailable,
                    }
                }
            },
            Reply::Chat(id, Err(code), _) => ConversationResponse::Rejected { id, code },
            Reply::Forwarded(frame) => frame,
            Reply::Close(code) => ConversationResponse::Error { code },
        };
        if let ConversationResponse::Rejected { code, .. } | ConversationResponse::Error { code } =
            &frame
        {
            metrics.error(*code);
        }
        // A stream that broke still has its replies worked through: a chat stored here
        // must reach the push notifier even if its sender went away before `Sent`.
        if !broken && write_frame(&mut send, &frame).await.is_err() {
            broken = true;
        }
    }
    if !broken {
        let _ = send.finish();
    }
}
