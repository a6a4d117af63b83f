//! A session's groups: its streams to groups (appended here or relayed to the group's
//! home node), its feeds of the groups homed here and its attachments to the nodes that
//! home the others, and the acks and read marks it routes to them.

use super::{Refusal, Session};
use crate::groups::feed::{Control as GroupControl, Device as GroupDevice};
use crate::groups::send::append_group_chats;
use crate::metrics::MeshKind;
use crate::net::Reader;
use crate::router::Home;
use quiver_proto::mesh::MeshOpen;
use quiver_proto::stream::ConversationPhase;
use quiver_proto::{ErrorCode, GroupId, Seq};
use std::sync::Arc;

impl Session {
    /// One stream to a group after `OpenGroup`: its chats appended to the group's log
    /// here, or relayed to the group's home node.
    pub(super) async fn group_conversation(
        &self,
        group: &GroupId,
        send: quinn::SendStream,
        mut reader: Reader<ConversationPhase>,
    ) {
        self.answered(send, |tx| async move {
            let shared = &self.shared;
            let closing = match (
                crate::group_mesh::home(shared, group).await,
                shared.router.mesh(),
            ) {
                (Err(code), _) => Some(code),
                (Ok(Home::Peer(node)), Some(mesh)) => {
                    let open = MeshOpen::GroupConversation {
                        from: self.user.clone(),
                        group: group.clone(),
                    };
                    shared.metrics.mesh_request(MeshKind::Conversation);
                    match mesh.open(&node, &open).await {
                        Ok(link) => self.relay(link, &mut reader, &tx).await,
                        Err(code) => Some(code),
                    }
                }
                _ => {
                    let allow = || self.take_send_token();
                    let notify = shared
                        .push
                        .as_ref()
                        .map(|_| shared.config.push.group_max_members);
                    let (groups, router, user) = (&shared.groups, &shared.router, &self.user);
                    append_group_chats(groups, router, user, group, &mut reader, &tx, notify, allow)
                        .await
                }
            };
            (reader, closing)
        })
        .await;
    }

    /// Runs the device's group feeds: of the groups homed here, and through attachments
    /// to the other nodes that home its groups.
    pub(super) async fn group_feeds(self: Arc<Self>, control: GroupControl) -> Result<(), String> {
        let device = Arc::new(GroupDevice {
            user: self.user.clone(),
            device: self.device,
            window: self.shared.config.limits.push_window,
        });
        let groups = self.shared.groups.clone();
        let acks = self.group_acks.clone();
        let local = crate::groups::feed::run(groups, device.clone(), control.clone(), acks);
        let Some(remote) = self.remote_groups.clone() else {
            return local.await;
        };
        // Boxed: a session on a single node keeps no room for the mesh's state.
        let remote = Box::pin(crate::group_mesh::attach_all(
            self.shared.clone(),
            device,
            control,
            remote,
        ));
        tokio::select! {
            r = local => r,
            r = remote => r,
        }
    }

    /// An ack of a group entry, for that group's feed, here or on the group's home.
    pub(super) async fn group_ack(&self, group: &GroupId, seq: Seq) -> Option<Refusal> {
        if self.group_acks.ack(group, seq) {
            return None;
        }
        // Boxed (as below): the control loop keeps no room for the mesh's futures.
        if let Some(remote) = &self.remote_groups {
            if Box::pin(remote.ack(group, seq)).await {
                return None;
            }
        }
        Some((
            ErrorCode::InvalidSeq,
            format!("no entry of {group} was pushed"),
        ))
    }

    /// A read mark of a group: the member's read-up-to marker, here or on its home.
    pub(super) async fn group_read(&self, group: &GroupId, seq: Seq) -> Option<Refusal> {
        if let Some(remote) = &self.remote_groups {
            if Box::pin(remote.read(&self.shared, group, seq)).await {
                return None;
            }
        }
        crate::group_mesh::read_mark(&self.shared, &self.user, group, seq)
    }
}
