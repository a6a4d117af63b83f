//! The inbox: one append-only log per user in sled, keyed by `seq`, plus one cursor per
//! device.
//!
//! This is the narrow storage interface DESIGN.md asks for; everything sled-specific lives
//! here and in [`crate::commit`].
//!
//! An append is two plain sled inserts: the idempotency record, then the entry. Not a sled
//! batch: sled 0.34 writes out its log buffer twice for every batch (`pin_log` rolls it
//! before and after) to mark where a batch starts, which made batches cost as much as
//! everything else an append does (docs/PERFORMANCE.md). sled recovers its log up to the
//! contiguous tip, so after a crash an entry never survives without the record written
//! before it; the record may survive without its entry, so a record counts only when the
//! entry it names is the same message (see [`Idempotency::names`]).
//!
//! Two heads per user: `head` (last appended) and the *durable* head (last flushed), which
//! is published on a `watch` channel. Pushers read only up to the durable head, so a device
//! never sees an entry that a crash could take back (and whose `seq` would then be reused).

use crate::commit::GroupCommit;
use quiver_proto::{ClientMsgId, DeviceId, Entry, EntryKind, ReceiptKind, Seq, UserId};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};

/// What can go wrong in the inbox.
#[derive(Debug, thiserror::Error, Clone)]
pub enum InboxError {
    /// sled failed, or the flush did.
    #[error("inbox storage: {0}")]
    Storage(String),
    /// A stored value does not decode.
    #[error("inbox entry is corrupt: {0}")]
    Corrupt(String),
}

impl From<sled::Error> for InboxError {
    fn from(e: sled::Error) -> Self {
        InboxError::Storage(e.to_string())
    }
}

/// What makes two appends "the same message": a retry must find the first one's `seq`.
#[derive(Debug, Clone)]
pub enum Idempotency {
    /// A chat, by its sender and the sender's message id.
    Chat(UserId, ClientMsgId),
    /// A receipt, by the message's reader and the message's `seq` in the reader's inbox.
    Receipt(UserId, ReceiptKind, Seq),
}

impl Idempotency {
    /// Whether `entry` is the append this key stands for.
    fn names(&self, entry: &Entry) -> bool {
        match (self, &entry.kind) {
            (Idempotency::Chat(from, id), EntryKind::Chat { id: stored, .. }) => {
                *from == entry.peer && id == stored
            }
            (
                Idempotency::Receipt(reader, kind, seq),
                EntryKind::Receipt {
                    kind: stored_kind,
                    seq: stored_seq,
                    ..
                },
            ) => *reader == entry.peer && kind == stored_kind && seq == stored_seq,
            _ => false,
        }
    }
}

const SHARDS: usize = 16;
const ENTRY: u8 = b'e';
const DEDUPE: u8 = b'd';

/// Per-user state kept in memory while the node runs.
struct Owner {
    head: Seq,
    durable: watch::Sender<Seq>,
}

/// Per-user logs and device cursors.
pub struct Inbox {
    tree: sled::Tree,
    cursors: sled::Tree,
    owners: [Mutex<HashMap<UserId, Owner>>; SHARDS],
    commit: GroupCommit,
}

/// An append that is in sled but maybe not yet on disk.
pub struct Appended {
    /// The entry's position.
    pub seq: Seq,
    /// `false` when this was a retry of an earlier append.
    pub fresh: bool,
    durable: oneshot::Receiver<Result<(), InboxError>>,
}

impl Appended {
    /// Waits until the entry is durable.
    pub async fn durable(self) -> Result<Seq, InboxError> {
        match self.durable.await {
            Ok(Ok(())) => Ok(self.seq),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(InboxError::Storage("flush task stopped".into())),
        }
    }
}

fn user_prefix(tag: u8, user: &UserId) -> Vec<u8> {
    let name = user.as_str().as_bytes();
    let mut key = Vec::with_capacity(name.len() + 10);
    key.push(tag);
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key
}

fn entry_key(user: &UserId, seq: Seq) -> Vec<u8> {
    let mut key = user_prefix(ENTRY, user);
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

fn dedupe_key(owner: &UserId, idem: &Idempotency) -> Vec<u8> {
    let mut key = user_prefix(DEDUPE, owner);
    match idem {
        Idempotency::Chat(from, id) => {
            key.push(b'c');
            key.extend_from_slice(&user_prefix(0, from));
            key.extend_from_slice(&id.0.to_be_bytes());
        }
        Idempotency::Receipt(from, kind, seq) => {
            key.push(match kind {
                ReceiptKind::Delivered => b'D',
                ReceiptKind::Read => b'R',
            });
            key.extend_from_slice(&user_prefix(0, from));
            key.extend_from_slice(&seq.0.to_be_bytes());
        }
    }
    key
}

fn cursor_key(owner: &UserId, device: DeviceId) -> Vec<u8> {
    let mut key = user_prefix(b'c', owner);
    key.extend_from_slice(&device.0.to_be_bytes());
    key
}

fn seq_from(bytes: &[u8]) -> Result<Seq, InboxError> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| InboxError::Corrupt("seq width".into()))?;
    Ok(Seq(u64::from_be_bytes(raw)))
}

impl Inbox {
    /// Opens the inbox trees in `db`; appends become durable through `commit`.
    pub fn open(db: &sled::Db, commit: GroupCommit) -> Result<Self, InboxError> {
        Ok(Self {
            tree: db.open_tree("inbox")?,
            cursors: db.open_tree("cursors")?,
            owners: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            commit,
        })
    }

    fn shard(&self, owner: &UserId) -> std::sync::MutexGuard<'_, HashMap<UserId, Owner>> {
        let mut h = DefaultHasher::new();
        owner.hash(&mut h);
        let shard = &self.owners[h.finish() as usize % SHARDS];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads a user's state on first use. Everything already stored is durable: appends
    /// made since the node started went through [`Inbox::append`], which created the state.
    fn owner<'a>(
        &self,
        owners: &'a mut HashMap<UserId, Owner>,
        user: &UserId,
    ) -> Result<&'a mut Owner, InboxError> {
        if !owners.contains_key(user) {
            let head = match self.tree.scan_prefix(user_prefix(ENTRY, user)).next_back() {
                Some(item) => decode(&item?.1)?.seq,
                None => Seq(0),
            };
            owners.insert(
                user.clone(),
                Owner {
                    head,
                    durable: watch::channel(head).0,
                },
            );
        }
        Ok(owners.get_mut(user).expect("inserted above"))
    }

    /// Appends an entry to `owner`'s log, or finds the earlier append with the same
    /// idempotency key. Either way the returned [`Appended`] resolves once it is durable.
    pub fn append(
        &self,
        owner: &UserId,
        peer: &UserId,
        kind: EntryKind,
        idem: &Idempotency,
    ) -> Result<Appended, InboxError> {
        let dedupe = dedupe_key(owner, idem);
        let (seq, fresh, durable) = {
            let mut owners = self.shard(owner);
            let state = self.owner(&mut owners, owner)?;
            let seq = state.head.next();
            // Record first: see the module doc for why this order is crash-safe. One
            // compare-and-swap both looks for an earlier append and records this one.
            let record = seq.0.to_be_bytes();
            let earlier = match self
                .tree
                .compare_and_swap(&dedupe, None::<&[u8]>, Some(&record))?
            {
                Ok(()) => None,
                Err(taken) => {
                    let earlier = match taken.current {
                        Some(current) => self.named(owner, seq_from(&current)?, idem)?,
                        None => None,
                    };
                    if earlier.is_none() {
                        self.tree.insert(&dedupe, &record)?;
                    }
                    earlier
                }
            };
            if let Some(earlier) = earlier {
                (earlier, false, state.durable.clone())
            } else {
                let entry = Entry {
                    seq,
                    peer: peer.clone(),
                    kind,
                };
                let value =
                    postcard::to_stdvec(&entry).map_err(|e| InboxError::Storage(e.to_string()))?;
                self.tree.insert(entry_key(owner, seq), value)?;
                state.head = seq;
                (seq, true, state.durable.clone())
            }
        };
        let (tx, rx) = oneshot::channel();
        self.commit.then(Box::new(move |outcome| {
            if outcome.is_ok() {
                durable.send_if_modified(|d| {
                    let newer = seq > *d;
                    if newer {
                        *d = seq;
                    }
                    newer
                });
            }
            let _ = tx.send(outcome.map_err(InboxError::Storage));
        }));
        Ok(Appended {
            seq,
            fresh,
            durable: rx,
        })
    }

    /// `seq`, if the entry there is the append `idem` stands for. A record whose entry a
    /// crash took (or whose `seq` a later append reused) does not count.
    fn named(
        &self,
        owner: &UserId,
        seq: Seq,
        idem: &Idempotency,
    ) -> Result<Option<Seq>, InboxError> {
        Ok(self
            .get(owner, seq)?
            .filter(|entry| idem.names(entry))
            .map(|_| seq))
    }

    /// Watches `owner`'s durable head: the highest `seq` that is safe to push.
    pub fn subscribe(&self, owner: &UserId) -> Result<watch::Receiver<Seq>, InboxError> {
        let mut owners = self.shard(owner);
        Ok(self.owner(&mut owners, owner)?.durable.subscribe())
    }

    /// Entries of `owner` from `from` through `to`, in order, at most `limit` of them.
    pub fn read(
        &self,
        owner: &UserId,
        from: Seq,
        to: Seq,
        limit: usize,
    ) -> Result<Vec<Entry>, InboxError> {
        self.tree
            .range(entry_key(owner, from)..=entry_key(owner, to))
            .take(limit)
            .map(|item| decode(&item?.1))
            .collect()
    }

    /// One entry of `owner`'s log.
    pub fn get(&self, owner: &UserId, seq: Seq) -> Result<Option<Entry>, InboxError> {
        self.tree
            .get(entry_key(owner, seq))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// The device's cursor: every entry up to it was acknowledged by the device.
    pub fn cursor(&self, owner: &UserId, device: DeviceId) -> Result<Seq, InboxError> {
        self.cursors
            .get(cursor_key(owner, device))?
            .map_or(Ok(Seq(0)), |v| seq_from(&v))
    }

    /// Moves the device's cursor up to `seq` (never down: two sessions of one device may
    /// overlap for an idle timeout). Not flushed on its own: a cursor lost in a crash only
    /// means redelivery, which the SDK drops by `seq`.
    pub fn set_cursor(&self, owner: &UserId, device: DeviceId, seq: Seq) -> Result<(), InboxError> {
        self.cursors
            .fetch_and_update(cursor_key(owner, device), |old| {
                let old = old.and_then(|v| seq_from(v).ok()).unwrap_or_default();
                Some(old.max(seq).0.to_be_bytes().to_vec())
            })?;
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<Entry, InboxError> {
    postcard::from_bytes(bytes).map_err(|e| InboxError::Corrupt(e.to_string()))
}

/// An inbox and its flush task, for tests and for the node.
pub fn open(db: &sled::Db) -> Result<(Arc<Inbox>, tokio::task::JoinHandle<()>), InboxError> {
    let (commit, task) = GroupCommit::spawn(db.clone(), Arc::default());
    Ok((Arc::new(Inbox::open(db, commit)?), task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn chat(n: u128) -> EntryKind {
        EntryKind::Chat {
            id: ClientMsgId(n),
            sent_at_ms: 0,
            body: vec![n as u8],
            file: None,
        }
    }

    #[tokio::test]
    async fn appends_are_ordered_idempotent_and_published_when_durable() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (inbox, _task) = open(&db).unwrap();
        let (bob, alice) = (user("bob"), user("alice"));
        let mut durable = inbox.subscribe(&bob).unwrap();
        assert_eq!(*durable.borrow_and_update(), Seq(0));

        let first = inbox.append(
            &bob,
            &alice,
            chat(1),
            &Idempotency::Chat(alice.clone(), ClientMsgId(1)),
        );
        let first = first.unwrap().durable().await.unwrap();
        let second = inbox.append(
            &bob,
            &alice,
            chat(2),
            &Idempotency::Chat(alice.clone(), ClientMsgId(2)),
        );
        let second = second.unwrap();
        assert!(second.fresh);
        let second = second.durable().await.unwrap();
        let retry = inbox
            .append(
                &bob,
                &alice,
                chat(1),
                &Idempotency::Chat(alice.clone(), ClientMsgId(1)),
            )
            .unwrap();
        assert!(!retry.fresh);
        assert_eq!(retry.durable().await.unwrap(), first);
        assert_eq!((first, second), (Seq(1), Seq(2)));
        durable.changed().await.unwrap();
        assert_eq!(*durable.borrow(), Seq(2));
        let entries = inbox.read(&bob, Seq(1), Seq(10), 10).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [Seq(1), Seq(2)]
        );
        assert!(inbox.read(&alice, Seq(1), Seq(10), 10).unwrap().is_empty());
    }

    /// The state a crash can leave between an append's two inserts: the idempotency record
    /// is on disk, the entry is not (and its `seq` went to another message since).
    #[tokio::test]
    async fn a_record_whose_entry_is_missing_or_another_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let (inbox, _task) = open(&db).unwrap();
        let (bob, alice) = (user("bob"), user("alice"));
        let tree = db.open_tree("inbox").unwrap();
        let lost = Idempotency::Chat(alice.clone(), ClientMsgId(7));
        tree.insert(dedupe_key(&bob, &lost), &1u64.to_be_bytes())
            .unwrap();
        let reused = Idempotency::Receipt(alice.clone(), ReceiptKind::Read, Seq(5));
        tree.insert(dedupe_key(&bob, &reused), &2u64.to_be_bytes())
            .unwrap();

        let first = inbox.append(&bob, &alice, chat(7), &lost).unwrap();
        assert!(first.fresh, "a record without its entry was taken for one");
        assert_eq!(first.durable().await.unwrap(), Seq(1));
        let other = Idempotency::Chat(alice.clone(), ClientMsgId(8));
        let second = inbox.append(&bob, &alice, chat(8), &other).unwrap();
        assert_eq!(second.durable().await.unwrap(), Seq(2));

        // Seq 2 is now another message: the stale record pointing there does not count.
        let receipt = EntryKind::Receipt {
            kind: ReceiptKind::Read,
            id: ClientMsgId(1),
            seq: Seq(5),
        };
        let third = inbox
            .append(&bob, &alice, receipt.clone(), &reused)
            .unwrap();
        assert!(third.fresh);
        assert_eq!(third.durable().await.unwrap(), Seq(3));

        // And the records now in place find their entries.
        let retry = inbox.append(&bob, &alice, chat(7), &lost).unwrap();
        assert!(!retry.fresh);
        assert_eq!(retry.durable().await.unwrap(), Seq(1));
        let retry = inbox.append(&bob, &alice, receipt, &reused).unwrap();
        assert!(!retry.fresh);
        assert_eq!(retry.durable().await.unwrap(), Seq(3));
        let seqs: Vec<_> = inbox
            .read(&bob, Seq(1), Seq(10), 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [Seq(1), Seq(2), Seq(3)]);
    }

    #[tokio::test]
    async fn heads_and_cursors_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (bob, alice) = (user("bob"), user("alice"));
        {
            let db = sled::open(dir.path()).unwrap();
            let (inbox, task) = open(&db).unwrap();
            for n in 1..=3 {
                let idem = Idempotency::Chat(alice.clone(), ClientMsgId(n));
                inbox
                    .append(&bob, &alice, chat(n), &idem)
                    .unwrap()
                    .durable()
                    .await
                    .unwrap();
            }
            inbox.set_cursor(&bob, DeviceId(9), Seq(2)).unwrap();
            db.flush().unwrap();
            drop(inbox);
            task.await.unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let (inbox, _task) = open(&db).unwrap();
        assert_eq!(*inbox.subscribe(&bob).unwrap().borrow(), Seq(3));
        assert_eq!(inbox.cursor(&bob, DeviceId(9)).unwrap(), Seq(2));
        let idem = Idempotency::Chat(alice.clone(), ClientMsgId(4));
        let seq = inbox
            .append(&bob, &alice, chat(4), &idem)
            .unwrap()
            .durable()
            .await
            .unwrap();
        assert_eq!(seq, Seq(4));
    }
}
