//! Opening a group's entries: the key of the entry's epoch — fetched from the key source
//! once when missing, at most one failed fetch per group every few seconds — then the
//! [`Event`] (a message, a membership change, or an undecryptable one).

use crate::event::{Event, GroupMessage};
use crate::group_keys::GroupKeys;
use crate::seal::{self, FriendKey};
use crate::state::{lock, Inner};
use quiver_proto::{Entry, EntryKind, GroupId};

/// How soon a group's keys are fetched again after a fetch that did not give the key.
const REFETCH_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

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
