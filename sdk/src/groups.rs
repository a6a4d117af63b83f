//! Groups, client side: the keys of each group by epoch, sending to a group through the
//! same outbox as chats to friends (in order, once, SENT when durable in the group's
//! log), and opening what the group's log pushes.
//!
//! Keys come from the node's REST API ([`crate::Rest::group`]): give them to the client
//! ([`crate::ConnectOptions::group_keys`], [`Client::set_group_keys`]). With
//! [`crate::ConnectOptions::key_source`] the client fetches them itself once when
//! an entry names an epoch it has no key for (after a removal or a leave), before it
//! shows that entry or anything after it. A message sealed at an old epoch is refused with
//! `StaleEpoch`: fetch the keys and send it again.

use crate::client::{lock, Client, Inner, PendingSend};
use crate::error::SendError;
use crate::event::{Event, GroupMessage};
use crate::outbox::Conversation;
use crate::seal::{self, FriendKey};
use quiver_proto::rest::{key_from_hex, GroupInfo};
use quiver_proto::{
    ClientMsgId, ControlRequest, ConversationRequest, Entry, EntryKind, GroupId, Seq,
};
use std::collections::HashMap;

/// How soon a group's keys are fetched again after a fetch that did not give the key.
const REFETCH_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// One group's keys.
#[derive(Clone, Debug, Default)]
pub struct GroupKeys {
    /// The epoch new messages are sealed at.
    pub epoch: u32,
    keys: HashMap<u32, FriendKey>,
}

impl GroupKeys {
    /// The keys a group's description holds.
    pub fn from_info(info: &GroupInfo) -> Self {
        let keys = info
            .keys
            .iter()
            .filter_map(|k| Some((k.epoch, FriendKey(key_from_hex(&k.key)?))))
            .collect();
        Self {
            epoch: info.epoch,
            keys,
        }
    }

    fn get(&self, epoch: u32) -> Option<&FriendKey> {
        self.keys.get(&epoch)
    }
}

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
        let Some(source) = &self.inner.options.key_source else {
            return sent;
        };
        if sent != Err(SendError::Rejected(quiver_proto::ErrorCode::StaleEpoch)) {
            return sent;
        }
        if let Ok(info) = source.group(&self.inner.options.token, group).await {
            self.set_group_keys(&info);
        }
        self.enqueue_group(group, body).await?.await
    }

    /// Queues `body` for `group` and returns at once; the result resolves on SENT.
    pub async fn enqueue_group(
        &self,
        group: &GroupId,
        body: &[u8],
    ) -> Result<PendingSend, SendError> {
        let (epoch, key) = {
            let all = self
                .inner
                .group_keys
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let keys = all
                .get(group)
                .ok_or_else(|| SendError::NoKey(group.to_string()))?;
            let key = keys.get(keys.epoch).cloned();
            (
                keys.epoch,
                key.ok_or_else(|| SendError::NoKey(group.to_string()))?,
            )
        };
        let id = ClientMsgId(crate::client::random_u128());
        let sealed = seal::seal_group(&key, group, &self.inner.user, epoch, id, body);
        let chat = ConversationRequest::GroupChat {
            id,
            sent_at_ms: crate::client::now_ms(),
            epoch,
            body: sealed,
        };
        self.inner
            .enqueue(Conversation::Group(group.clone()), id, &chat, body)
            .await
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

impl Inner {
    /// The key of `group` at `epoch`, fetched from the key source once if missing.
    async fn group_key(&self, group: &GroupId, epoch: u32) -> Option<FriendKey> {
        let known = || {
            let all = self.group_keys.read().unwrap_or_else(|p| p.into_inner());
            all.get(group).and_then(|k| k.get(epoch).cloned())
        };
        if let Some(key) = known() {
            return Some(key);
        }
        let source = self.options.key_source.as_ref()?;
        // Entries of an epoch the node did not give a key for (or while it was down) ask
        // again at most every few seconds, not once per entry.
        let failed_at = lock(&self.group_key_failed).get(group).copied();
        if failed_at.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return None;
        }
        match source.group(&self.options.token, group).await {
            Ok(info) => {
                let mut all = self.group_keys.write().unwrap_or_else(|p| p.into_inner());
                all.insert(group.clone(), GroupKeys::from_info(&info));
            }
            Err(e) => tracing::debug!(%group, error = %e, "could not fetch group keys"),
        }
        let key = known();
        let mut failed = lock(&self.group_key_failed);
        match key {
            Some(_) => failed.remove(group),
            None => failed.insert(group.clone(), std::time::Instant::now()),
        };
        key
    }

    /// What the app sees of an entry of `group`'s log.
    pub(crate) async fn open_group_entry(&self, group: GroupId, entry: Entry) -> Event {
        let (from, seq) = (entry.peer, entry.seq);
        match entry.kind {
            EntryKind::GroupChat {
                id,
                sent_at_ms,
                epoch,
                body,
            } => {
                let key = self.group_key(&group, epoch).await;
                let opened = match key {
                    Some(key) => seal::open_group(&key, &group, &from, epoch, id, &body)
                        .map_err(|e| e.to_string()),
                    None => Err(format!("no key of {group} at epoch {epoch}")),
                };
                match opened {
                    Ok(body) => Event::GroupMessage(GroupMessage {
                        group,
                        from,
                        seq,
                        id,
                        sent_at_ms,
                        body,
                    }),
                    Err(reason) => Event::GroupUndecryptable {
                        group,
                        from,
                        seq,
                        reason,
                    },
                }
            }
            EntryKind::Member(change) => Event::GroupChange {
                group,
                seq,
                by: from,
                change,
            },
            // A group log holds nothing else; a node that sent it is wrong.
            EntryKind::Chat { .. } | EntryKind::Receipt { .. } => Event::GroupUndecryptable {
                group,
                from,
                seq,
                reason: "not a group entry".into(),
            },
        }
    }
}
