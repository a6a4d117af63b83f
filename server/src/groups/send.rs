//! A member's conversation stream to a group: `OpenGroup` (checked: a member), then
//! `GroupChat`s and `GroupFile`s appended to the group's log in stream order, each
//! answered `Sent` once durable (by [`crate::conversation::respond`], as for 1:1) or
//! `Rejected` with why.

use super::store::Groups;
use crate::conversation::Reply;
use crate::net::{Reader, StreamEnd};
use crate::push::Stored;
use crate::router::{Home, Router};
use quiver_proto::stream::{ConversationPhase, ConversationStep};
use quiver_proto::{ErrorCode, GroupId, UserId};
use tokio::sync::mpsc;

/// Reads `from`'s chats to `group` until the stream ends; `allow` is the connection's
/// rate limit. With `notify` (push is on: groups of up to that many members notify at
/// every chat), each fresh chat carries a notice per member to tell ([`notices_for`]); in
/// a larger group it is noted as the group's news, which [`crate::group_push`] sweeps.
/// Returns the code to close the stream with, if any.
#[allow(clippy::too_many_arguments)]
pub async fn append_group_chats(
    groups: &Groups,
    router: &Router,
    from: &UserId,
    group: &GroupId,
    reader: &mut Reader<ConversationPhase>,
    tx: &mpsc::Sender<Reply>,
    notify: Option<usize>,
    mut allow: impl FnMut() -> bool,
) -> Option<ErrorCode> {
    if groups
        .range(group, from)
        .is_none_or(|(_, until)| until.is_some())
    {
        return Some(ErrorCode::NotMember);
    }
    loop {
        match reader.next().await {
            Ok(Some(ConversationStep::GroupChat { .. })) if !allow() => {
                return Some(ErrorCode::RateLimited)
            }
            Ok(Some(ConversationStep::GroupChat {
                id,
                sent_at_ms,
                epoch,
                body,
                file,
            })) => {
                // A file must be the sender's, complete; it is then kept for retention.
                let kept = match &file {
                    Some(file) => router.retain(from, file).await,
                    None => Ok(()),
                };
                let appended =
                    kept.and_then(|()| groups.chat(group, from, id, sent_at_ms, epoch, body, file));
                let mut notices = Vec::new();
                if let (Ok(a), Some(max)) = (&appended, notify) {
                    match (a.fresh, groups.to_notify(group, from, max)) {
                        (false, _) => {}
                        (true, Some(members)) => {
                            notices =
                                notices_for(groups, router, group, from, a.seq, members).await;
                        }
                        // Too large to notify member by member at every chat: swept.
                        (true, None) => groups.news().note(group, from, a.seq),
                    }
                }
                if tx.send(Reply::Chat(id, appended, notices)).await.is_err() {
                    return None;
                }
            }
            Ok(Some(_)) => return Some(ErrorCode::UnexpectedFrame),
            Ok(None) | Err(StreamEnd::Failed(_)) => return None,
            Err(StreamEnd::Refused(code)) => return Some(code),
        }
    }
}

/// A notice of `from`'s chat at `seq` in `group` for each of `members`. A member homed
/// elsewhere is notified by their home node, which knows whether their devices are
/// connected: their notice names it, with their unread count here.
pub async fn notices_for(
    groups: &Groups,
    router: &Router,
    group: &GroupId,
    from: &UserId,
    seq: quiver_proto::Seq,
    members: Vec<UserId>,
) -> Vec<Stored> {
    let mut notices = Vec::with_capacity(members.len());
    for member in members {
        let (unread, relay_to) = match router.home(&member).await {
            Ok(Home::Here) => (None, None),
            Ok(Home::Peer(node)) => (Some(groups.unread_of(group, &member, seq)), Some(node)),
            Err(_) => continue,
        };
        notices.push(Stored {
            owner: member,
            from: from.clone(),
            seq,
            group: Some(group.clone()),
            unread,
            relay_to,
        });
    }
    notices
}
