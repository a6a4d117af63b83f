//! The groups' REST API: make a group, add (a friend) or invite (anyone), accept, remove,
//! leave, rename, roles, members and keys, receipts. Chat goes over QUIC.
//!
//! A group is made on the node that serves the request, which becomes its home. Every
//! other request about a group is carried out by its home node
//! ([`super::group_calls`]): here, or over the mesh, whose answer is passed on as it is.
//! The list gathers what each node that homes a group of the user's says.

use super::group_calls::{self, info_of, refused};
use crate::api::{ApiError, Authed};
use crate::router::Home;
use crate::shared::Shared;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use quiver_proto::mesh::{GroupAnswer, GroupCall, MeshOpen};
use quiver_proto::rest::{self, GroupInfo, GroupsResponse, MemberRequest, NewGroup, RoleRequest};
use quiver_proto::{ErrorCode, GroupId, Seq, UserId};
use std::sync::Arc;

type Body<T> = Result<Json<T>, JsonRejection>;
type Answer = Result<Response, ApiError>;

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

const UNREACHABLE: ApiError = ApiError::Group(
    ErrorCode::Unavailable,
    "the node that keeps this group is unreachable; try again",
);

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

/// A peer's answer, as it gave it.
fn passed_on(answer: GroupAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let json = [(header::CONTENT_TYPE, "application/json")];
    (status, json, answer.json).into_response()
}

/// Has `call` carried out by `group`'s home node.
async fn forward(shared: &Shared, me: &UserId, group: GroupId, call: GroupCall) -> Answer {
    match crate::group_mesh::home(shared, &group).await {
        Ok(Home::Here) => Ok(group_calls::serve(shared, me, &group, call).await),
        Ok(Home::Peer(node)) => {
            let mesh = shared.router.mesh().ok_or(UNREACHABLE)?;
            let open = MeshOpen::GroupCall {
                user: me.clone(),
                group,
                call,
            };
            let answer = mesh.request::<GroupAnswer>(&node, &open).await;
            Ok(passed_on(answer.map_err(|_| UNREACHABLE)?))
        }
        Err(ErrorCode::NotMember) => Err(refused((
            ErrorCode::NotMember,
            "not a member of this group",
        ))),
        Err(_) => Err(UNREACHABLE),
    }
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    body: Body<NewGroup>,
) -> Result<Json<GroupInfo>, ApiError> {
    let Json(req) = body?;
    let name = name(req.name)?;
    let groups = &shared.groups;
    let id = groups.new_id().map_err(refused)?;
    let elsewhere = crate::group_limits::elsewhere(&shared, &me.user)
        .await
        .map_err(refused)?;
    // Checked before the creation is counted: a refusal is not one of the hour's.
    groups.room_to_make(&me.user, elsewhere).map_err(refused)?;
    if let Some(mesh) = shared.router.mesh() {
        // The home is known before the group exists, so no request for it finds none.
        match mesh.group_homes().claim(&id).await {
            Ok(true) => {}
            Ok(false) => return Err(refused((ErrorCode::Internal, "that group id is taken"))),
            Err(e) => {
                tracing::warn!(error = %e, "group home not recorded");
                return Err(UNREACHABLE);
            }
        }
        crate::group_limits::may_create(&shared, &me.user)
            .await
            .map_err(refused)?;
        crate::group_mesh::joined(&shared, &me.user)
            .await
            .map_err(refused)?;
    }
    groups
        .create(id.clone(), &me.user, name, elsewhere)
        .await
        .map_err(refused)?;
    tracing::info!(user = %me.user, group = %id, "group created");
    Ok(Json(info_of(groups.view(&id, &me.user).map_err(refused)?)))
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
) -> Result<Json<GroupsResponse>, ApiError> {
    let mut all = group_calls::list(&shared, &me.user);
    let lists = crate::group_limits::lists_elsewhere(&shared, &me.user)
        .await
        .map_err(|_| UNREACHABLE)?;
    for theirs in lists {
        // A list without the groups of a node that is down would look like a loss.
        let theirs = theirs.ok_or(UNREACHABLE)?;
        all.groups.extend(theirs.groups);
        all.invitations.extend(theirs.invitations);
    }
    Ok(Json(all))
}

async fn info(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Answer {
    forward(&shared, &me.user, group_id(&id)?, GroupCall::Info).await
}

async fn add(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
    body: Body<MemberRequest>,
) -> Answer {
    let Json(req) = body?;
    let (group, user) = (group_id(&id)?, user(&req.user)?);
    forward(&shared, &me.user, group, GroupCall::Add { user }).await
}

async fn accept(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Answer {
    forward(&shared, &me.user, group_id(&id)?, GroupCall::Accept).await
}

async fn remove(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
    body: Body<MemberRequest>,
) -> Answer {
    let Json(req) = body?;
    let (group, user) = (group_id(&id)?, user(&req.user)?);
    forward(&shared, &me.user, group, GroupCall::Remove { user }).await
}

async fn leave(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
) -> Answer {
    forward(&shared, &me.user, group_id(&id)?, GroupCall::Leave).await
}

async fn rename(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
    body: Body<NewGroup>,
) -> Answer {
    let Json(req) = body?;
    let (group, name) = (group_id(&id)?, name(req.name)?);
    forward(&shared, &me.user, group, GroupCall::Rename { name }).await
}

async fn role(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(id): Path<String>,
    body: Body<RoleRequest>,
) -> Answer {
    let Json(req) = body?;
    let (group, user, role) = (group_id(&id)?, user(&req.user)?, req.role);
    forward(&shared, &me.user, group, GroupCall::Role { user, role }).await
}

async fn receipts(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path((id, seq)): Path<(String, u64)>,
) -> Answer {
    let call = GroupCall::Receipts { seq: Seq(seq) };
    forward(&shared, &me.user, group_id(&id)?, call).await
}
