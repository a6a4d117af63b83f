//! Opening a group's entries: the key of the entry's epoch — fetched from the key source
//! once when missing, at most one failed fetch per group every few seconds — then the
//! [`Event`] (a message, a membership change, or an undecryptable one).

use crate::event::{Event, GroupMessage};
use crate::files::{FileOffer, GroupFile};
use crate::group_keys::GroupKeys;
use crate::seal::{self, FriendKey};
use crate::state::{lock, Inner};
use quiver_proto::{Entry, EntryKind, GroupId};

/// How soon a group's keys are fetched again after a fetch that did not give the key.
const REFETCH_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

impl Inner {
    /// The epoch `group` is at and its key: what a message to it is sealed with now;
    /// fetched from the key source once when the client has none for `group`.
    pub(crate) async fn group_seal_key(&self, group: &GroupId) -> Option<(u32, FriendKey)> {
        let known = || {
            let all = self.group_keys.read().unwrap_or_else(|p| p.into_inner());
            let keys = all.get(group)?;
            Some((keys.epoch, keys.get(keys.epoch)?.clone()))
        };
        if let Some(key) = known() {
            return Some(key);
        }
        self.refetch_group_keys(group).await;
        known()
    }

    /// Fetches `group`'s keys from the key source (after a `StaleEpoch`); false when
    /// there is none or it did not answer.
    pub(crate) async fn refetch_group_keys(&self, group: &GroupId) -> bool {
        let Some(source) = &self.options.key_source else {
            return false;
        };
        match source.group(&self.options.token, group).await {
            Ok(info) => {
                let mut all = self.group_keys.write().unwrap_or_else(|p| p.into_inner());
                all.insert(group.clone(), GroupKeys::from_info(&info));
                true
            }
            Err(e) => {
                tracing::debug!(%group, error = %e, "could not fetch group keys");
                false
            }
        }
    }

    /// The key of `group` at `epoch`, fetched from the key source once if missing.
    pub(crate) async fn group_key(&self, group: &GroupId, epoch: u32) -> Option<FriendKey> {
        let known = || {
            let all = self.group_keys.read().unwrap_or_else(|p| p.into_inner());
            all.get(group).and_then(|k| k.get(epoch).cloned())
        };
        if let Some(key) = known() {
            return Some(key);
        }
        self.options.key_source.as_ref()?;
        // Entries of an epoch the node did not give a key for (or while it was down) ask
        // again at most every few seconds, not once per entry.
        let failed_at = lock(&self.group_key_failed).get(group).copied();
        if failed_at.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
            return None;
        }
        self.refetch_group_keys(group).await;
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
        let (id, sent_at_ms, epoch, body, file) = match entry.kind {
            EntryKind::GroupChat {
                id,
                sent_at_ms,
                epoch,
                body,
            } => (id, sent_at_ms, epoch, body, None),
            EntryKind::GroupFile {
                id,
                sent_at_ms,
                epoch,
                body,
                file,
            } => (id, sent_at_ms, epoch, body, Some(file)),
            EntryKind::Member(change) => {
                return Event::GroupChange {
                    group,
                    seq,
                    by: from,
                    change,
                }
            }
            // A group log holds nothing else; a node that sent it is wrong.
            EntryKind::Chat { .. } | EntryKind::Receipt { .. } | EntryKind::Receipts { .. } => {
                return Event::GroupUndecryptable {
                    group,
                    from,
                    seq,
                    reason: "not a group entry".into(),
                }
            }
        };
        let key = self.group_key(&group, epoch).await;
        let opened = match key {
            Some(key) => {
                seal::open_group(&key, &group, &from, epoch, id, &body).map_err(|e| e.to_string())
            }
            None => Err(format!("no key of {group} at epoch {epoch}")),
        };
        // A file message's body is the file's description.
        let opened = opened.and_then(|body| {
            let offer = match file {
                Some(file) => {
                    let place = GroupFile {
                        group: group.clone(),
                        seq,
                        epoch,
                    };
                    Some(FileOffer::read(from.clone(), file, &body, Some(place))?)
                }
                None => None,
            };
            Ok((body, offer))
        });
        match opened {
            Ok((body, file)) => Event::GroupMessage(GroupMessage {
                group,
                from,
                seq,
                id,
                sent_at_ms,
                body,
                file,
            }),
            Err(reason) => Event::GroupUndecryptable {
                group,
                from,
                seq,
                reason,
            },
        }
    }
}
