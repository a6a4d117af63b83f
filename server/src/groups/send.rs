//! A member's conversation stream to a group: `OpenGroup` (checked: a member), then
//! `GroupChat`s appended to the group's log in stream order, each answered `Sent` once
//! durable (by [`crate::conversation::respond`], as for 1:1) or `Rejected` with why.

use super::store::Groups;
use crate::conversation::Reply;
use crate::net::{Reader, StreamEnd};
use crate::push::Stored;
use quiver_proto::stream::{ConversationPhase, ConversationStep};
use quiver_proto::{ErrorCode, GroupId, UserId};
use tokio::sync::mpsc;

/// Reads `from`'s chats to `group` until the stream ends; `allow` is the connection's
/// rate limit. With `notify` (push is on: groups of up to that many members notify),
/// each fresh chat carries a notice per member to tell. Returns the code to close the
/// stream with, if any.
pub async fn append_group_chats(
    groups: &Groups,
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
            })) => {
                let appended = groups.chat(group, from, id, sent_at_ms, epoch, body);
                let notices = match (&appended, notify) {
                    (Ok(a), Some(max)) if a.fresh => groups
                        .to_notify(group, from, max)
                        .into_iter()
                        .map(|member| Stored {
                            owner: member,
                            from: from.clone(),
                            seq: a.seq,
                            group: Some(group.clone()),
                        })
                        .collect(),
                    _ => Vec::new(),
                };
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
