//! Muted groups: a user stops the push notifications of a group's chats on all their
//! devices (a busy group, a night), without leaving it; chats still arrive when a device
//! connects. An account's choice, kept in the directory (shared by a mesh's nodes), so
//! any node answers. At most as many groups as one user may be in
//! (`groups.max_groups_per_user`): past that, 409 `quota_exceeded`.

use crate::api::{ApiError, Authed};
use crate::shared::Shared;
use axum::extract::{Path, State};
use axum::routing::{get, put};
use axum::{Json, Router};
use quiver_proto::rest::{self, MutedGroups};
use quiver_proto::GroupId;
use std::sync::Arc;

/// The muting routes.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(rest::PUSH_MUTED, get(list))
        .route(rest::PUSH_MUTED_GROUP, put(mute).delete(unmute))
}

async fn list(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
) -> Result<Json<MutedGroups>, ApiError> {
    let groups = shared.directory.muted_groups(&me.user).await?;
    Ok(Json(MutedGroups { groups }))
}

async fn mute(
    state: State<Arc<Shared>>,
    me: Authed,
    group: Path<String>,
) -> Result<Json<MutedGroups>, ApiError> {
    set(state, me, group, true).await
}

async fn unmute(
    state: State<Arc<Shared>>,
    me: Authed,
    group: Path<String>,
) -> Result<Json<MutedGroups>, ApiError> {
    set(state, me, group, false).await
}

async fn set(
    State(shared): State<Arc<Shared>>,
    Authed(me): Authed,
    Path(group): Path<String>,
    muted: bool,
) -> Result<Json<MutedGroups>, ApiError> {
    let group = GroupId::parse(&group).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let max = shared.config.groups.max_groups_per_user as usize;
    let directory = &shared.directory;
    directory
        .set_group_muted(&me.user, &group, muted, max)
        .await?;
    tracing::debug!(user = %me.user, %group, muted, "group push muting");
    let groups = directory.muted_groups(&me.user).await?;
    Ok(Json(MutedGroups { groups }))
}
