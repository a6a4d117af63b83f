//! The group requests a group's home node carries out: from its own REST clients, and
//! from a peer's ([`quiver_proto::mesh::MeshOpen::GroupCall`]), which hands the answer
//! to its client as it is. One place, so a request cannot be answered differently
//! depending on which node it reached.
//!
//! The adding rule: an owner or admin adds a **friend** of theirs at once; anyone else is
//! **invited** and joins only by accepting.

use crate::api::ApiError;
use crate::groups::store::GroupView;
use crate::shared::Shared;
use axum::response::{IntoResponse, Response};
use axum::Json;
use quiver_proto::mesh::GroupCall;
use quiver_proto::rest::{
    to_hex, GroupChangeResponse, GroupInfo, GroupInvitation, GroupKeyInfo, GroupMember,
    GroupReceipts, GroupsResponse, MemberReceipt,
};
use quiver_proto::{ErrorCode, GroupId, Seq, UserId};

/// A group's refusal as the API gives it.
pub fn refused((code, why): (ErrorCode, &'static str)) -> ApiError {
    ApiError::Group(code, why)
}

fn changed(status: &str, seq: Option<Seq>) -> Response {
    Json(GroupChangeResponse {
        status: status.into(),
        seq,
    })
    .into_response()
}

/// The API's description of a group.
pub fn info_of(view: GroupView) -> GroupInfo {
    GroupInfo {
        id: view.id,
        name: view.name,
        epoch: view.epoch,
        members: view
            .members
            .into_iter()
            .map(|(user, role)| GroupMember { user, role })
            .collect(),
        keys: view
            .keys
            .into_iter()
            .map(|(epoch, key)| GroupKeyInfo {
                epoch,
                key: to_hex(&key),
            })
            .collect(),
    }
}

/// `user`'s groups and invitations homed here.
pub fn list(shared: &Shared, user: &UserId) -> GroupsResponse {
    let (views, invitations) = shared.groups.list(user);
    GroupsResponse {
        groups: views.into_iter().map(info_of).collect(),
        invitations: invitations
            .into_iter()
            .map(|(id, name)| GroupInvitation { id, name })
            .collect(),
    }
}

/// Carries out `call` of `user` for `group`, homed here.
pub async fn serve(shared: &Shared, user: &UserId, group: &GroupId, call: GroupCall) -> Response {
    match serve_inner(shared, user, group, call).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn serve_inner(
    shared: &Shared,
    me: &UserId,
    group: &GroupId,
    call: GroupCall,
) -> Result<Response, ApiError> {
    let groups = &shared.groups;
    Ok(match call {
        GroupCall::Info => Json(info_of(groups.view(group, me).map_err(refused)?)).into_response(),
        GroupCall::Add { user } => {
            if shared.directory.home(&user).await?.is_none() {
                return Err(ApiError::NotFound("no such user"));
            }
            let friends = shared.directory.friendship(me, &user).await?.is_some();
            crate::group_mesh::joined(shared, &user)
                .await
                .map_err(refused)?;
            let elsewhere = crate::group_limits::elsewhere(shared, &user)
                .await
                .map_err(refused)?;
            let seq = groups
                .add(group, me, &user, friends, elsewhere)
                .await
                .map_err(refused)?;
            changed(if seq.is_some() { "added" } else { "invited" }, seq)
        }
        GroupCall::Accept => {
            crate::group_mesh::joined(shared, me)
                .await
                .map_err(refused)?;
            let elsewhere = crate::group_limits::elsewhere(shared, me)
                .await
                .map_err(refused)?;
            let seq = groups.accept(group, me, elsewhere).await.map_err(refused)?;
            changed("accepted", Some(seq))
        }
        GroupCall::Remove { user } => {
            let seq = groups.remove(group, me, &user).await.map_err(refused)?;
            tracing::info!(user = %me, %group, removed = %user, "group member removed");
            changed("removed", Some(seq))
        }
        GroupCall::Leave => changed(
            "left",
            Some(groups.leave(group, me).await.map_err(refused)?),
        ),
        GroupCall::Rename { name } => {
            let seq = groups.rename(group, me, name).await.map_err(refused)?;
            changed("renamed", Some(seq))
        }
        GroupCall::Role { user, role } => {
            let seq = groups
                .set_role(group, me, &user, role)
                .await
                .map_err(refused)?;
            changed("role_changed", Some(seq))
        }
        GroupCall::Receipts { seq } => {
            let receipts = groups.receipts(group, me, seq).map_err(refused)?;
            Json(GroupReceipts {
                members: receipts.members,
                delivered: receipts.delivered,
                read: receipts.read,
                by_member: receipts.by_member.map(|each| {
                    each.into_iter()
                        .map(|(user, delivered, read)| MemberReceipt {
                            user,
                            delivered,
                            read,
                        })
                        .collect()
                }),
            })
            .into_response()
        }
    })
}
