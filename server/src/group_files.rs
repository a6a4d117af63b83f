//! Files sent to groups, node side: whether a member may download the file of a group's
//! entry — checked on the group's home node against the member's range of the log —
//! then served from the sender's home like any blob.
//!
//! A download names the entry (`seq`), not the blob: the entry says whose blob it is and
//! is itself the proof that it was sent to the group, so no index of a group's files is
//! kept (nor can one disagree with the log after a crash).

use crate::files::{self, Access};
use crate::groups::store::{owner, Groups};
use crate::shared::Shared;
use quiver_proto::files::FileRef;
use quiver_proto::mesh::MeshOpen;
use quiver_proto::{Entry, EntryKind, ErrorCode, GroupId, Seq, UserId};
use std::sync::Arc;

/// Serves `user`'s download of the file at `seq` of `group`'s log from `offset`. On
/// another node than the group's home, relayed there when `may_relay` (a client's
/// stream), refused when not (a peer's).
#[allow(clippy::too_many_arguments)]
pub async fn download(
    shared: Arc<Shared>,
    user: UserId,
    group: GroupId,
    seq: Seq,
    offset: u64,
    may_relay: bool,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    match crate::group_mesh::served_at(&shared, &group, may_relay).await {
        Ok(None) => {}
        Ok(Some(node)) => {
            let Some(_open) = files::transfer_slot(&shared, &user) else {
                let code = ErrorCode::TooManyStreams;
                let why = "too many transfers open";
                return files::refuse(&shared, send, Some(recv), code, why).await;
            };
            let open = MeshOpen::GroupDownload {
                user,
                group,
                seq,
                offset,
            };
            return files::relay(&shared, &node, open, send, recv).await;
        }
        Err(code) => {
            let why = "the group's home is not reachable from here";
            return files::refuse(&shared, send, Some(recv), code, why).await;
        }
    }
    let groups = shared.groups.clone();
    let (for_user, for_group) = (user.clone(), group.clone());
    let found = tokio::task::spawn_blocking(move || file_of(&groups, &for_group, &for_user, seq))
        .await
        .unwrap_or(Err(ErrorCode::Internal));
    match found {
        Ok((owner, file)) => {
            tracing::debug!(%user, %group, %seq, blob = %file.blob, "group download");
            files::download(
                shared,
                user,
                owner,
                file.blob,
                offset,
                Access::Granted,
                send,
                recv,
            )
            .await
        }
        Err(code) => files::refuse(&shared, send, Some(recv), code, "no such file").await,
    }
}

/// The sender and the file of the `GroupFile` entry at `seq` of `group`'s log, if `user`
/// may see that entry; `NotFound` otherwise, whatever the reason (not a member, outside
/// their range, not a file, gone with retention), as for a blob that does not exist.
/// Blocking: it may read the log from disk.
fn file_of(
    groups: &Groups,
    group: &GroupId,
    user: &UserId,
    seq: Seq,
) -> Result<(UserId, FileRef), ErrorCode> {
    let (from, until) = groups.range(group, user).ok_or(ErrorCode::NotFound)?;
    if seq < from || until.is_some_and(|until| seq > until) {
        return Err(ErrorCode::NotFound);
    }
    match groups.log().get(&owner(group), seq) {
        Ok(Some(Entry {
            peer,
            kind: EntryKind::GroupFile { file, .. },
            ..
        })) => Ok((peer, file)),
        Ok(_) => Err(ErrorCode::NotFound),
        Err(e) => {
            tracing::error!(error = %e, %group, %seq, "group log unreadable");
            Err(ErrorCode::Unavailable)
        }
    }
}
