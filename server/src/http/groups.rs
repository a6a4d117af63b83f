//! The groups' REST API: make a group, add (a friend) or invite (anyone), accept, remove,
//! leave, rename, roles, members and keys, receipts. Chat goes over QUIC.
//!
//! The adding rule: an owner or admin adds a **friend** of theirs at once; anyone else is
//! **invited** and joins only by accepting.

use crate::api::{ApiError, Authed};
use crate::groups::store::{GroupView, Groups};
use crate::shared::Shared;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use quiver_proto::rest::{
    self, to_hex, GroupChangeResponse, GroupInfo, GroupInvitation, GroupKeyInfo, GroupMember,
    GroupReceipts, GroupsResponse, MemberReceipt, MemberRequest, NewGroup, RoleRequest,
};
use quiver_proto::{ErrorCode, GroupId, Seq, UserId};
use std::sync::Arc;

type Body<T> = Result<Json<T>, JsonRejection>;
type Answer = Result<Json<GroupChangeResponse>, ApiError>;

/// The group routes.
pub fn routes() -> Router<Arc<Shared>> {
    let group = |tail: &str| format!("{}{tail}", rest::GROUP);
    Router::new()
        .route(rest::GROUPS, post(create).get(list))
        .route(rest::GROUP, get(info))
        .route(&group("/members"), post(add))
        .route(&group("/accept"), post(accept))
        .route(&group("/remove"), post(remove))
        .route(&group("/leave"), post(leave))
        .route(&group("/rename"), post(rename))
        .route(&group("/role"), post(role))
        .route(&group("/receipts/{seq}"), get(receipts))
}

fn groups(shared: &Shared) -> Result<&Arc<Groups>, ApiError> {
    shared.groups.as_ref().ok_or(ApiError::Group(
        ErrorCode::Unavailable,
        "groups are not served in mesh mode yet",
    ))
}

fn group_id(id: &str) -> Result<GroupId, ApiError> {
    // A malformed id names no group you are in: the same answer as any other.
    GroupId::parse(id)
        .map_err(|_| ApiError::Group(ErrorCode::NotMember, "not a member of this group"))
}

fn user(name: &str) -> Result<UserId, ApiError> {
    UserId::parse(name).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn name(name: String) -> Result<String, ApiError> {
    if (1..=100).contains(&name.len()) {
        Ok(name)
    } else {
        Err(ApiError::BadRequest(
            "a group name is 1 to 100 bytes".into(),
        ))
    }
}

fn refused((code, why): (ErrorCode, &'static str)) -> ApiError {
    ApiError::Group(code, why)
}

fn changed(status: &str, seq: Option<Seq>) -> Answer {
    Ok(Json(GroupChangeResponse {
        status: status.into(),
        seq,
    }))
}

fn info_of(view: GroupView) -> GroupInfo {
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

async fn create(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    body: Body<NewGroup>,
) -> Result<Json<GroupInfo>, ApiError> {
    let Json(req) = body?;
    let groups = groups(&shared)?;
    let id = groups
        .create(&me.user, name(req.name)?)
        .await
        .map_err(refused)?;
    tracing::info!(user = %me.user, group = %id, "group created");
    Ok(Json(info_of(groups.view(&id, &me.user).map_err(refused)?)))
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
) -> Result<Json<GroupsResponse>, ApiError> {
    let (views, invitations) = groups(&shared)?.list(&me.user);
    Ok(Json(GroupsResponse {
        groups: views.into_iter().map(info_of).collect(),
        invitations: invitations
            .into_iter()
            .map(|(id, name)| GroupInvitation { id, name })
            .collect(),
    }))
}

async fn info(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Result<Json<GroupInfo>, ApiError> {
    let view = groups(&shared)?
        .view(&group_id(&id)?, &me.user)
        .map_err(refused)?;
    Ok(Json(info_of(view)))
}

async fn add(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
    body: Body<MemberRequest>,
) -> Answer {
    let Json(req) = body?;
    let (group, other) = (group_id(&id)?, user(&req.user)?);
    if shared.directory.home(&other).await?.is_none() {
        return Err(ApiError::NotFound("no such user"));
    }
    let friends = shared
        .directory
        .friendship(&me.user, &other)
        .await?
        .is_some();
    let seq = groups(&shared)?
        .add(&group, &me.user, &other, friends)
        .await
        .map_err(refused)?;
    changed(if seq.is_some() { "added" } else { "invited" }, seq)
}

async fn accept(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Answer {
    let group = group_id(&id)?;
    let seq = groups(&shared)?
        .accept(&group, &me.user)
        .await
        .map_err(refused)?;
    changed("accepted", Some(seq))
}

async fn remove(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
    body: Body<MemberRequest>,
) -> Answer {
    let Json(req) = body?;
    let (group, other) = (group_id(&id)?, user(&req.user)?);
    let groups = groups(&shared)?;
    let seq = groups
        .remove(&group, &me.user, &other)
        .await
        .map_err(refused)?;
    tracing::info!(user = %me.user, %group, removed = %other, "group member removed");
    changed("removed", Some(seq))
}

async fn leave(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Answer {
    let group = group_id(&id)?;
    let seq = groups(&shared)?
        .leave(&group, &me.user)
        .await
        .map_err(refused)?;
    changed("left", Some(seq))
}

async fn rename(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
    body: Body<NewGroup>,
) -> Answer {
    let Json(req) = body?;
    let group = group_id(&id)?;
    let groups = groups(&shared)?;
    let seq = groups
        .rename(&group, &me.user, name(req.name)?)
        .await
        .map_err(refused)?;
    changed("renamed", Some(seq))
}

async fn role(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
    body: Body<RoleRequest>,
) -> Answer {
    let Json(req) = body?;
    let (group, other) = (group_id(&id)?, user(&req.user)?);
    let groups = groups(&shared)?;
    let seq = groups
        .set_role(&group, &me.user, &other, req.role)
        .await
        .map_err(refused)?;
    changed("role_changed", Some(seq))
}

async fn receipts(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path((id, seq)): Path<(String, u64)>,
) -> Result<Json<GroupReceipts>, ApiError> {
    let group = group_id(&id)?;
    let receipts = groups(&shared)?
        .receipts(&group, &me.user, Seq(seq))
        .map_err(refused)?;
    Ok(Json(GroupReceipts {
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
    }))
}
