//! Typing and presence for friends connected to other nodes of a mesh. The registry
//! knows where each device is connected; for each node (other than this one) that has a
//! connection of someone the message is for, one mesh stream carries it with the list of
//! those users ([`MeshOpen::Datagram`]), and that node hands it to their announced
//! connections there. Like the datagrams themselves this is best effort: a lookup or a
//! peer that fails drops it, and at most [`FORWARDS`] are on their way at once. Typing in
//! a group goes from its home to the nodes its members' sessions are attached from
//! ([`forward_attached`]).

use crate::mesh::Mesh;
use crate::shared::Shared;
use quiver_proto::datagram::NodeDatagram;
use quiver_proto::mesh::MeshOpen;
use quiver_proto::UserId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Forwards on their way at once, per node; more are dropped (and counted).
pub const FORWARDS: usize = 256;

/// Users one forward names, at most (a frame of ~330 KB with the longest names); a
/// receiving node hands it to no more.
pub const FORWARD_USERS: usize = 10_000;

/// A place among the forwards on their way, to hold until the forward ends; `None`, and
/// the datagram counted as dropped, when all [`FORWARDS`] are taken.
pub fn forward_permit(shared: &Shared) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let permit = shared.mesh_forwards.clone().try_acquire_owned().ok();
    if permit.is_none() {
        shared
            .metrics
            .datagrams_dropped
            .fetch_add(1, Ordering::Relaxed);
    }
    permit
}

/// Sends `message` to the other nodes where `to` have connections; returns at once.
pub fn forward(shared: &Arc<Shared>, to: Vec<UserId>, message: NodeDatagram) {
    let Some(mesh) = shared.router.mesh().cloned() else {
        return;
    };
    let Some(permit) = forward_permit(shared) else {
        return;
    };
    tokio::spawn(async move {
        let mut by_node: BTreeMap<String, BTreeSet<UserId>> = BTreeMap::new();
        for user in to {
            let Ok(locations) = mesh.registry().locations(&user).await else {
                continue;
            };
            for (_, node) in locations.into_iter().filter(|(_, n)| n != mesh.node_id()) {
                by_node.entry(node).or_default().insert(user.clone());
            }
        }
        let by_node = by_node
            .into_iter()
            .map(|(n, users)| (n, users.into_iter().collect()));
        send_to_nodes(&mesh, by_node, message).await;
        drop(permit);
    });
}

/// Sends `message`, for members of a group homed here, to the other nodes whose sessions
/// of theirs are attached here ([`crate::mesh::Attached`]): no lookup per member, so a
/// group of any size; returns at once.
pub fn forward_attached(shared: &Arc<Shared>, to: &[UserId], message: NodeDatagram) {
    let Some(mesh) = shared.router.mesh().cloned() else {
        return;
    };
    let by_node = mesh.attached().nodes_of(to);
    if by_node.is_empty() {
        return;
    }
    let Some(permit) = forward_permit(shared) else {
        return;
    };
    tokio::spawn(async move {
        send_to_nodes(&mesh, by_node, message).await;
        drop(permit);
    });
}

/// One [`MeshOpen::Datagram`] to each node, naming its users.
async fn send_to_nodes(
    mesh: &Mesh,
    by_node: impl IntoIterator<Item = (String, Vec<UserId>)>,
    message: NodeDatagram,
) {
    for (node, to) in by_node {
        for to in to.chunks(FORWARD_USERS) {
            let open = MeshOpen::Datagram {
                to: to.to_vec(),
                message: message.clone(),
            };
            if let Ok((mut send, _recv)) = mesh.open(&node, &open).await {
                let _ = send.finish();
            }
        }
    }
}
