//! Groups across the mesh. A group's log lives on its home node (where it was made); a
//! member's device may be connected to any node. This module joins the two:
//!
//! - [`home`]: where a group lives (Redis, cached: homes never move);
//! - [`joined`]: the home node records itself among a user's group nodes before it makes
//!   them a member or invitee, and tells their sessions elsewhere to attach to it;
//! - [`RemoteGroups`] and [`attach_all`]: a session's attachments to the other nodes that
//!   home its user's groups, one mesh stream per node whatever the number of groups,
//!   redialed while the session lives (a home node that restarts is found again), and
//!   the acks and read marks routed up them;
//! - [`serve_attachment`]: the home side of an attachment — the device's feeds of the
//!   groups homed here, as on a local control stream (see [`crate::groups::feed`]).

use crate::groups::feed::{Control, Device, GroupAcks};
use crate::groups::state::Refusal;
use crate::mesh::{Mesh, MAX_MESH_FRAME};
use crate::net::{read_frame, write_frame, FrameReadError};
use crate::router::Home;
use crate::shared::Shared;
use quiver_proto::mesh::MeshOpen;
use quiver_proto::{ControlRequest, ControlResponse, DeviceId, ErrorCode, GroupId, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;

/// First wait before an attachment is dialed again; it doubles up to [`REDIAL_MAX`].
const REDIAL_FIRST: Duration = Duration::from_millis(200);
/// Longest wait between two dials of a home node that is down.
const REDIAL_MAX: Duration = Duration::from_secs(2);

/// Where `group` lives: `NotMember` if nowhere (no such group), `Unavailable` if Redis
/// cannot say.
pub async fn home(shared: &Shared, group: &GroupId) -> Result<Home, ErrorCode> {
    let Some(mesh) = shared.router.mesh() else {
        return Ok(Home::Here);
    };
    match mesh.group_homes().home(group).await {
        Ok(Some(node)) if node == mesh.node_id() => Ok(Home::Here),
        Ok(Some(node)) => Ok(Home::Peer(node)),
        Ok(None) => Err(ErrorCode::NotMember),
        Err(e) => {
            tracing::warn!(error = %e, "group home unknown");
            Err(ErrorCode::Unavailable)
        }
    }
}

/// Where a request about `group` is carried out: here (`None`), or on its home node,
/// relayed there (`Some(node)`) when `may_relay` (a client's stream). A peer's request
/// reaching a node that is not the home raced a restart: `Unavailable`.
pub async fn served_at(
    shared: &Shared,
    group: &GroupId,
    may_relay: bool,
) -> Result<Option<String>, ErrorCode> {
    match home(shared, group).await? {
        Home::Here => Ok(None),
        Home::Peer(node) if may_relay => Ok(Some(node)),
        Home::Peer(_) => Err(ErrorCode::Unavailable),
    }
}

/// Before this node makes `user` a member of (or invites them to) a group it homes: makes
/// sure every node can find it among `user`'s group nodes, and tells the nodes where
/// `user` is connected now, when it is new for them.
pub async fn joined(shared: &Shared, user: &UserId) -> Result<(), Refusal> {
    let Some(mesh) = shared.router.mesh() else {
        return Ok(());
    };
    let new = mesh.group_homes().add_user(user).await.map_err(|e| {
        tracing::warn!(error = %e, "group node not recorded");
        (ErrorCode::Unavailable, "the group directory is unreachable")
    })?;
    if !new {
        return Ok(());
    }
    let nodes: HashSet<String> = match mesh.registry().locations(user).await {
        Ok(locations) => locations.into_iter().map(|(_, node)| node).collect(),
        // Their sessions read the group nodes when they start; one that is up now
        // learns of this one when it reconnects.
        Err(e) => {
            tracing::warn!(error = %e, "locations unknown; sessions attach on reconnect");
            return Ok(());
        }
    };
    for node in nodes.into_iter().filter(|n| n != mesh.node_id()) {
        let news = MeshOpen::GroupHomeAdded {
            user: user.clone(),
            node: mesh.node_id().to_string(),
        };
        if let Err(code) = mesh.ask(&node, news).await {
            tracing::warn!(%node, %code, "a node with a session of a new member not told");
        }
    }
    Ok(())
}

/// `from` is typing in `group`, which is not homed here: passes it to the group's home
/// node, which checks the membership and tells the members. Best effort, as datagrams
/// are: dropped when too many are on their way or the home is unreachable.
pub fn typing_to_home(shared: &Arc<Shared>, from: UserId, group: GroupId) {
    let Some(mesh) = shared.router.mesh().cloned() else {
        return;
    };
    let Some(permit) = crate::presence_mesh::forward_permit(shared) else {
        return;
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        if let Ok(Home::Peer(node)) = home(&shared, &group).await {
            let open = MeshOpen::GroupTyping { from, group };
            if let Ok((mut send, _recv)) = mesh.open(&node, &open).await {
                let _ = send.finish();
            }
        }
        drop(permit);
    });
}

/// The up halves of a session's attachments, by node, and which node pushed each group:
/// where its group acks and read marks for groups homed elsewhere go.
#[derive(Default)]
pub struct RemoteGroups {
    ups: Mutex<HashMap<String, Up>>,
    /// Groups whose entries came down an attachment, and from which node: an ack for
    /// any other is refused here, without asking anyone. At most the user's groups.
    pushed: Mutex<HashMap<GroupId, String>>,
    /// Read marks made while their group's home was unreachable, the highest per group,
    /// with that home: written up when an attachment to it is up again.
    unsent_reads: Mutex<HashMap<GroupId, (String, quiver_proto::Seq)>>,
}

/// Groups whose read marks a session keeps while their home is unreachable, at most.
const MAX_UNSENT_READS: usize = 1024;

type Up = Arc<tokio::sync::Mutex<quinn::SendStream>>;

impl RemoteGroups {
    /// Writes `request` up the attachment to `node`, if it is up; `false` if it is not
    /// (or the write failed).
    async fn pass(&self, node: &str, request: &ControlRequest) -> bool {
        let up = self
            .ups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned();
        match up {
            Some(up) => write_frame(&mut *up.lock().await, request).await.is_ok(),
            None => false,
        }
    }

    /// Passes an ack of `group`'s entry `seq` to the node that pushed it; `false` if no
    /// attachment pushed that group. While the node is unreachable the ack is dropped:
    /// the entries are pushed again from the saved cursor and acknowledged then.
    pub async fn ack(&self, group: &GroupId, seq: quiver_proto::Seq) -> bool {
        let node = {
            let pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
            pushed.get(group).cloned()
        };
        let Some(node) = node else { return false };
        let ack = ControlRequest::GroupAck {
            group: group.clone(),
            seq,
        };
        // Dropped while the node is unreachable: pushed again from the saved cursor.
        let _ = self.pass(&node, &ack).await;
        true
    }

    /// Passes a read mark of `group` to its home node; `false` if the group is not
    /// homed elsewhere. While that node is unreachable the mark is kept (the highest per
    /// group, for up to [`MAX_UNSENT_READS`] groups) and written when the attachment to
    /// it is up again.
    pub async fn read(&self, shared: &Shared, group: &GroupId, seq: quiver_proto::Seq) -> bool {
        let Ok(Home::Peer(node)) = home(shared, group).await else {
            return false;
        };
        let read = ControlRequest::GroupRead {
            group: group.clone(),
            seq,
        };
        if !self.pass(&node, &read).await {
            let mut unsent = self.unsent_reads.lock().unwrap_or_else(|p| p.into_inner());
            if unsent.len() < MAX_UNSENT_READS || unsent.contains_key(group) {
                let kept = unsent.entry(group.clone()).or_insert((node, seq));
                kept.1 = kept.1.max(seq);
            }
        }
        true
    }

    /// Writes up `up`, the attachment to `node` just made, the read marks kept for it.
    async fn send_unsent_reads(&self, node: &str, up: &Up) {
        let reads: Vec<(GroupId, quiver_proto::Seq)> = {
            let unsent = self.unsent_reads.lock().unwrap_or_else(|p| p.into_inner());
            let theirs = unsent.iter().filter(|(_, (home, _))| home == node);
            theirs
                .map(|(group, (_, seq))| (group.clone(), *seq))
                .collect()
        };
        for (group, seq) in reads {
            let read = ControlRequest::GroupRead {
                group: group.clone(),
                seq,
            };
            if write_frame(&mut *up.lock().await, &read).await.is_err() {
                return;
            }
            let mut unsent = self.unsent_reads.lock().unwrap_or_else(|p| p.into_inner());
            if unsent.get(&group).is_some_and(|(_, kept)| *kept == seq) {
                unsent.remove(&group);
            }
        }
    }

    /// A polite goodbye: ends each attachment's up half, so its home records the acks.
    pub async fn finish(&self) {
        let ups: Vec<_> = self
            .ups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, up)| up)
            .collect();
        for up in ups {
            let _ = up.lock().await.finish();
        }
    }
}

/// Keeps `device`'s attachments to every other node that homes a group of its user's,
/// for as long as the session runs; their entries go down `control`. Ends only when
/// writing to the device fails.
pub async fn attach_all(
    shared: Arc<Shared>,
    device: Arc<Device>,
    control: Control,
    remote: Arc<RemoteGroups>,
) -> Result<(), String> {
    let Some(mesh) = shared.router.mesh().cloned() else {
        return std::future::pending().await;
    };
    let mut changes = shared.groups.changes();
    let mut attached = HashSet::new();
    let mut attachments = None;
    loop {
        let mut reread = None;
        match mesh.group_homes().of_user(&device.user).await {
            Ok(nodes) => {
                for node in nodes {
                    if node != mesh.node_id() && attached.insert(node.clone()) {
                        let attach = Attach {
                            mesh: mesh.clone(),
                            node,
                            device: device.clone(),
                            control: control.clone(),
                            remote: remote.clone(),
                        };
                        attachments
                            .get_or_insert_with(JoinSet::new)
                            .spawn(attach.run());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "group nodes unknown; asking again");
                reread = Some(tokio::time::Instant::now() + REDIAL_MAX);
            }
        }
        let wake = async move {
            match reread {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        crate::groups::feed::next_change(&mut changes, &device.user, &mut attachments, wake)
            .await?;
    }
}

/// One attachment of a device to a node that homes groups of its user's.
struct Attach {
    mesh: Arc<Mesh>,
    node: String,
    device: Arc<Device>,
    control: Control,
    remote: Arc<RemoteGroups>,
}

impl Attach {
    /// Attaches, passes entries down until the link fails, and dials again; ends only
    /// when a write to the device fails.
    async fn run(self) -> Result<(), String> {
        let mut wait = REDIAL_FIRST;
        loop {
            let open = MeshOpen::GroupAttach {
                user: self.device.user.clone(),
                device: self.device.device,
                node: self.mesh.node_id().to_string(),
            };
            if let Ok((up, down)) = self.mesh.open(&self.node, &open).await {
                let up = Arc::new(tokio::sync::Mutex::new(up));
                self.ups().insert(self.node.clone(), up.clone());
                self.remote.send_unsent_reads(&self.node, &up).await;
                let passed = self.pass_down(down, &mut wait).await;
                let mut ups = self.ups();
                if ups.get(&self.node).is_some_and(|u| Arc::ptr_eq(u, &up)) {
                    ups.remove(&self.node);
                }
                drop(ups);
                passed?;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(REDIAL_MAX);
        }
    }

    fn ups(&self) -> std::sync::MutexGuard<'_, HashMap<String, Up>> {
        self.remote.ups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the home's frames to the device until the attachment ends (`Ok`) or the
    /// device cannot be written to (`Err`).
    async fn pass_down(
        &self,
        mut down: quinn::RecvStream,
        wait: &mut Duration,
    ) -> Result<(), String> {
        loop {
            let frame = match read_frame::<ControlResponse>(&mut down, MAX_MESH_FRAME).await {
                Ok(
                    frame @ (ControlResponse::GroupEntry { .. } | ControlResponse::Error { .. }),
                ) => frame,
                Ok(ControlResponse::Welcome { .. }) => return Ok(()),
                Err(FrameReadError::Finished) => return Ok(()),
                Err(e) => {
                    tracing::debug!(node = %self.node, error = %e, "group attachment lost");
                    return Ok(());
                }
            };
            *wait = REDIAL_FIRST;
            if let ControlResponse::GroupEntry { group, .. } = &frame {
                let mut pushed = self.remote.pushed.lock().unwrap_or_else(|p| p.into_inner());
                if !pushed.contains_key(group) {
                    pushed.insert(group.clone(), self.node.clone());
                }
            }
            let mut send = self.control.lock().await;
            write_frame(&mut send, &frame)
                .await
                .map_err(|e| format!("group push failed: {e}"))?;
        }
    }
}

/// The home side of an attachment: `user`'s device connected to the peer `node` gets its
/// groups homed here pushed, and its acks and read marks come up. While it is served,
/// the peer is where typing in those groups reaches `user` ([`crate::mesh::Attached`]).
pub async fn serve_attachment(
    shared: Arc<Shared>,
    (user, device, node): (UserId, DeviceId, String),
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let _counted = shared
        .router
        .mesh()
        .map(|mesh| mesh.attached().hold(user.clone(), node));
    let control: Control = Arc::new(tokio::sync::Mutex::new(send));
    let acks = Arc::new(GroupAcks::default());
    let device = Arc::new(Device {
        user,
        device,
        window: shared.config.limits.push_window,
    });
    let feeds = crate::groups::feed::run(
        shared.groups.clone(),
        device.clone(),
        control.clone(),
        acks.clone(),
    );
    let up = async {
        loop {
            let refusal = match read_frame::<ControlRequest>(&mut recv, MAX_MESH_FRAME).await {
                Ok(ControlRequest::GroupAck { group, seq }) => {
                    (!acks.ack(&group, seq)).then(|| {
                        (
                            ErrorCode::InvalidSeq,
                            format!("no entry of {group} was pushed"),
                        )
                    })
                }
                Ok(ControlRequest::GroupRead { group, seq }) => {
                    read_mark(&shared, &device.user, &group, seq)
                }
                Ok(_) => Some((ErrorCode::UnexpectedFrame, "not a group request".into())),
                Err(FrameReadError::Finished) => {
                    acks.finish(Duration::from_secs(2)).await;
                    return;
                }
                Err(_) => return,
            };
            if let Some((code, message)) = refusal {
                let error = ControlResponse::Error { code, message };
                if write_frame(&mut *control.lock().await, &error)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    };
    tokio::select! {
        ended = feeds => tracing::debug!(reason = ?ended.err(), "group attachment ended"),
        () = up => {}
    }
}

/// A member's read mark of `group`, homed here: `None` once recorded, or the refusal.
pub fn read_mark(
    shared: &Shared,
    user: &UserId,
    group: &GroupId,
    seq: quiver_proto::Seq,
) -> Option<(ErrorCode, String)> {
    match shared.groups.range(group, user) {
        Some((_, None)) => {
            shared.groups.read(group, user, seq);
            None
        }
        _ => Some((ErrorCode::NotMember, format!("not a member of {group}"))),
    }
}
