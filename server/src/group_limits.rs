//! A user's group limits across a mesh. Each node homes some of a user's groups; the
//! per-user limits (groups a user is in, invitations waiting for them, groups made in
//! an hour) are the mesh's: a node about to add, invite, accept or create asks the other
//! nodes that home the user's groups what they hold, and counts creations in Redis.
//!
//! Two calls made at the same moment on two nodes may both pass: the limits can be
//! overshot by the calls in flight, never by another node's whole allowance. A node
//! that does not answer counts as holding nothing (the call is not held up by it).

use crate::groups::state::Refusal;
use crate::groups::store::Elsewhere;
use crate::shared::Shared;
use quiver_proto::mesh::{GroupAnswer, MeshOpen};
use quiver_proto::rest::GroupsResponse;
use quiver_proto::{ErrorCode, UserId};

const DIRECTORY_DOWN: Refusal = (ErrorCode::Unavailable, "the group directory is unreachable");

/// `user`'s groups and invitations on each other node that homes one of theirs: `None`
/// for a node that did not answer. Empty on a single node.
pub async fn lists_elsewhere(
    shared: &Shared,
    user: &UserId,
) -> Result<Vec<Option<GroupsResponse>>, Refusal> {
    let Some(mesh) = shared.router.mesh() else {
        return Ok(Vec::new());
    };
    let nodes = mesh.group_homes().of_user(user).await.map_err(|e| {
        tracing::warn!(error = %e, "group nodes unknown");
        DIRECTORY_DOWN
    })?;
    let mut lists = Vec::new();
    for node in nodes.iter().filter(|n| *n != mesh.node_id()) {
        let open = MeshOpen::GroupList { user: user.clone() };
        let answer = mesh.request::<GroupAnswer>(node, &open).await;
        let list = answer
            .ok()
            .filter(|a| a.status == 200)
            .and_then(|a| serde_json::from_slice::<GroupsResponse>(&a.json).ok());
        lists.push(list);
    }
    Ok(lists)
}

/// What `user` holds on the other nodes, to count with what this node holds.
pub async fn elsewhere(shared: &Shared, user: &UserId) -> Result<Elsewhere, Refusal> {
    let mut held = Elsewhere::default();
    for list in lists_elsewhere(shared, user).await? {
        match list {
            Some(list) => {
                held.groups += list.groups.len();
                held.invitations += list.invitations.len();
            }
            None => tracing::warn!(%user, "a group node did not answer; its groups not counted"),
        }
    }
    Ok(held)
}

/// Counts a group `user` is making; refused past the mesh's limit for this hour. Nothing
/// to do on a single node (the node's own limiter counts).
pub async fn may_create(shared: &Shared, user: &UserId) -> Result<(), Refusal> {
    let Some(mesh) = shared.router.mesh() else {
        return Ok(());
    };
    let made = mesh.group_homes().count_creation(user).await.map_err(|e| {
        tracing::warn!(error = %e, "group creations not counted");
        DIRECTORY_DOWN
    })?;
    if made > u64::from(shared.config.groups.creations_per_hour) {
        return Err((ErrorCode::RateLimited, "too many groups made this hour"));
    }
    Ok(())
}
