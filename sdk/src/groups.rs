//! Groups, client side: giving the client a group's keys, sending to a group through the
//! same outbox as chats to friends (in order, once, SENT when durable in the group's
//! log), and read marks. Opening what the group's log pushes is [`crate::group_open`].
//!
//! Keys come from the node's REST API ([`crate::Rest::group`]): give them to the client
//! ([`crate::ConnectOptions::group_keys`], [`Client::set_group_keys`]). With
//! [`crate::ConnectOptions::key_source`] the client fetches them itself once when
//! an entry names an epoch it has no key for (after a removal or a leave), before it
//! shows that entry or anything after it, and when it sends to a group it has no keys
//! of (one it just made or joined). A message sealed at an old epoch is refused with
//! `StaleEpoch`: fetch the keys and send it again.

use crate::client::Client;
use crate::error::SendError;
use crate::files::{FileSent, Progress, Recipient, Transfer};
use crate::group_keys::GroupKeys;
use crate::outbox::Conversation;
use crate::seal;
use crate::send::PendingSend;
use quiver_proto::rest::GroupInfo;
use quiver_proto::{ClientMsgId, ControlRequest, ConversationRequest, GroupId, Seq};

impl Client {
    /// Takes a group's keys from its description (`Rest::group`, `Rest::groups`).
    pub fn set_group_keys(&self, info: &GroupInfo) {
        let keys = GroupKeys::from_info(info);
        let mut all = self
            .inner
            .group_keys
            .write()
            .unwrap_or_else(|p| p.into_inner());
        all.insert(info.id.clone(), keys);
    }

    /// Sends `body` to `group`; resolves once it is durable in the group's log (SENT).
    /// With a key source ([`crate::ConnectOptions::key_source`]), a refusal as
    /// `StaleEpoch` fetches the group's keys and sends once more, sealed at the new epoch.
    pub async fn send_group(&self, group: &GroupId, body: &[u8]) -> Result<crate::Sent, SendError> {
        let sent = self.enqueue_group(group, body).await?.await;
        if sent != Err(SendError::Rejected(quiver_proto::ErrorCode::StaleEpoch))
            || !self.inner.refetch_group_keys(group).await
        {
            return sent;
        }
        self.enqueue_group(group, body).await?.await
    }

    /// Queues `body` for `group` and returns at once; the result resolves on SENT.
    pub async fn enqueue_group(
        &self,
        group: &GroupId,
        body: &[u8],
    ) -> Result<PendingSend, SendError> {
        let (epoch, key) = self
            .inner
            .group_seal_key(group)
            .await
            .ok_or_else(|| SendError::NoKey(group.to_string()))?;
        let id = ClientMsgId(crate::state::random_u128());
        let sealed = seal::seal_group(&key, group, &self.inner.user, epoch, id, body)
            .map_err(|_| SendError::Seal)?;
        let chat = ConversationRequest::GroupChat {
            id,
            sent_at_ms: crate::state::now_ms(),
            epoch,
            body: sealed,
        };
        self.inner
            .enqueue(Conversation::Group(group.clone()), id, &chat, body)
            .await
    }

    /// Uploads the file at `path` and sends `group` a message that names it; resolves
    /// once the message is durable in the group's log (SENT). As
    /// [`Client::send_file`], sealed with the group's key of the epoch it is at; members
    /// fetch it with [`Client::download`] while the entry is within their range of the
    /// log (a member removed before it was sent cannot).
    pub fn send_group_file(
        &self,
        group: &GroupId,
        path: impl Into<std::path::PathBuf>,
        media_type: &str,
        on_progress: impl FnMut(Progress) + Send + 'static,
    ) -> Transfer<FileSent> {
        crate::files::send_file(
            self.inner.clone(),
            Recipient::Group(group.clone()),
            path.into(),
            media_type.to_owned(),
            Box::new(on_progress),
        )
    }

    /// Tells the group you read its log up to `seq`.
    pub fn mark_group_read(&self, group: &GroupId, seq: Seq) -> Result<(), SendError> {
        if let Some(store) = self.store() {
            if let Err(e) = store.mark_read(&Conversation::Group(group.clone()), seq) {
                tracing::error!(error = %e, "store: could not mark read");
            }
        }
        self.send_control(ControlRequest::GroupRead {
            group: group.clone(),
            seq,
        })
    }
}
