//! The inbox: one append-only log per user, keyed by `seq`, plus one cursor per device.
//!
//! This is the narrow storage interface DESIGN.md asks for. Entries of every user go to
//! one file ([`crate::log`]): one checksummed record per entry, written at once, made
//! durable by group commit ([`crate::commit`]). The index — where each user's entry
//! `seq` is, and which message each idempotency key already names — is in memory, rebuilt
//! by reading the file when the node starts. Device cursors stay in sled (a cursor write
//! is allowed to be lost; it only means redelivery).
//!
//! Why not sled for entries: an append was an entry and an idempotency record in sled, and
//! sled's tree (a node split every 8 appends, each writing both halves to its log) took
//! about half of the node's CPU under load (docs/PERFORMANCE.md). Here an append adds a
//! record to the log's tail in memory (the group commit writes the tail with one `pwrite`
//! and syncs it), and the record *is* the idempotency record: an entry names its own key
//! (a chat's sender and id, a receipt's reader, kind and `seq`), so after a crash a key
//! never outlives its entry or the reverse.
//!
//! Two heads per user: `head` (last appended) and the *durable* head (last synced), which
//! is published on a `watch` channel. Pushers read only up to the durable head, so a device
//! never sees an entry that a crash could take back (and whose `seq` would then be reused).
//!
//! Retention ([`Inbox::expire`]) removes whole sealed segments of the log once they are
//! older than `inbox.retention_secs`, oldest first. Each user whose entries go keeps a
//! *floor*: the highest `seq` removed. Floors are saved in sled, flushed, before a segment
//! file is deleted, so a user's `seq`s go on from where they were even when every entry
//! of theirs is gone; a device whose cursor is below the floor resumes at it.

use crate::commit::{GroupCommit, OnDurable, Urgency};
use crate::config::InboxConfig;
use crate::held::{self, Held, HeldLimits};
use crate::log::{Log, Place};
use crate::metrics::Metrics;
use idempotency::{each_digest, idempotency_digest, Digest};
use quiver_proto::{DeviceId, Entry, EntryKind, ReceiptKind, Seq, UserId};
use std::collections::hash_map::DefaultHasher;
use std::collections::{hash_map, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{oneshot, watch};

/// What can go wrong in the inbox.
#[derive(Debug, thiserror::Error, Clone)]
pub enum InboxError {
    /// The log file, its sync or sled (cursors) failed.
    #[error("inbox storage: {0}")]
    Storage(String),
    /// A stored value does not decode.
    #[error("inbox entry is corrupt: {0}")]
    Corrupt(String),
    /// The chat would take the recipient's inbox, or the sender's share of it, over
    /// its bound (`[inbox] max_bytes_per_user`, `max_bytes_per_sender`).
    #[error("the recipient's inbox is full")]
    Full,
}

impl From<sled::Error> for InboxError {
    fn from(e: sled::Error) -> Self {
        InboxError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for InboxError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::InvalidData => InboxError::Corrupt(e.to_string()),
            _ => InboxError::Storage(e.to_string()),
        }
    }
}

const SHARDS: usize = 16;

/// One user's index.
struct Owner {
    /// Entries up to this `seq` were removed by retention.
    floor: u64,
    /// Where entry `seq` is: `places[seq - floor - 1]`; `None` for a `seq` the log lacks.
    places: VecDeque<Option<Place>>,
    /// Idempotency digests of the appends so far.
    appended: HashMap<Digest, Seq>,
    /// The chat bytes held, in all and by sender.
    held: Held,
    durable: watch::Sender<Seq>,
}

impl Owner {
    fn new(floor: Seq) -> Self {
        Owner {
            floor: floor.0,
            places: VecDeque::new(),
            appended: HashMap::new(),
            held: Held::default(),
            durable: watch::channel(floor).0,
        }
    }

    fn head(&self) -> Seq {
        Seq(self.floor + self.places.len() as u64)
    }

    fn place(&self, seq: Seq) -> Option<Place> {
        let index = usize::try_from(seq.0.checked_sub(self.floor + 1)?).ok()?;
        self.places.get(index).copied().flatten()
    }

    /// Indexes `entry` at `place`, as read back from the log.
    fn index(&mut self, entry: &Entry, place: Place) {
        if entry.seq.0 <= self.floor {
            // In a segment whose removal a crash cut short: it goes again.
            return;
        }
        self.set_place(entry.seq, place);
        each_digest(&entry.peer, &entry.kind, |digest| {
            self.appended.insert(digest, entry.seq);
        });
        self.held.add(&entry.peer, held::weight(&entry.kind));
    }

    /// Records where entry `seq` (above the floor) is; `seq`s skipped on the way stay
    /// `None`.
    fn set_place(&mut self, seq: Seq, place: Place) {
        let index = (seq.0 - self.floor - 1) as usize;
        if self.places.len() <= index {
            self.places.resize(index + 1, None);
        }
        self.places[index] = Some(place);
    }

    /// Forgets the entries up to `floor`, the idempotency digests that named them and
    /// the bytes they held.
    fn expire(&mut self, floor: Seq, gone: &Gone) {
        for (sender, bytes) in &gone.held {
            self.held.release(sender, *bytes);
        }
        for (digest, seq) in &gone.digests {
            if let hash_map::Entry::Occupied(known) = self.appended.entry(*digest) {
                if known.get() == seq {
                    known.remove();
                }
            }
        }
        if floor.0 > self.floor {
            let gone = usize::try_from(floor.0 - self.floor).unwrap_or(usize::MAX);
            self.places.drain(..gone.min(self.places.len()));
            self.floor = floor.0;
        }
        // Neither gives memory back on its own: a user who got much less lately would
        // keep the index of their busiest stretch.
        if self.places.len() < self.places.capacity() / 4 {
            self.places.shrink_to(self.places.len() * 2);
        }
        if self.appended.len() < self.appended.capacity() / 4 {
            self.appended.shrink_to(self.appended.len() * 2);
        }
    }
}

/// One user's entries in a segment that retention removes.
#[derive(Default)]
struct Gone {
    /// The highest `seq` among them.
    floor: Seq,
    /// How many.
    entries: u64,
    /// Their idempotency digests.
    digests: Vec<(Digest, Seq)>,
    /// The chat bytes they held, by sender.
    held: Vec<(UserId, u64)>,
}

/// What one run of retention removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Segment files removed.
    pub segments: u64,
    /// Entries in them.
    pub entries: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Per-user logs and device cursors.
pub struct Inbox {
    log: Arc<Log>,
    /// Also holds sled's lock on the data folder, so no second node opens the log.
    cursors: sled::Tree,
    /// Each user's floor (see the module doc), by name.
    floors: sled::Tree,
    owners: [Mutex<HashMap<UserId, Owner>>; SHARDS],
    commit: GroupCommit,
    config: InboxConfig,
    metrics: Arc<Metrics>,
}

/// An append that is in the log but maybe not yet on disk.
pub struct Appended {
    /// The entry's position.
    pub seq: Seq,
    /// `false` when this was a retry of an earlier append.
    pub fresh: bool,
    durable: oneshot::Receiver<Result<(), String>>,
}

impl Appended {
    /// Waits until the entry is durable.
    pub async fn durable(self) -> Result<Seq, InboxError> {
        match self.durable.await {
            Ok(Ok(())) => Ok(self.seq),
            Ok(Err(e)) => Err(InboxError::Storage(e)),
            Err(_) => Err(InboxError::Storage("flush task stopped".into())),
        }
    }
}

fn cursor_key(owner: &UserId, device: DeviceId) -> Vec<u8> {
    let name = owner.as_str().as_bytes();
    let mut key = Vec::with_capacity(name.len() + 10);
    key.push(b'c');
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key.extend_from_slice(&device.0.to_be_bytes());
    key
}

fn seq_from(bytes: &[u8]) -> Result<Seq, InboxError> {
    let raw: [u8; 8] = bytes
        .try_into()
        .map_err(|_| InboxError::Corrupt("seq width".into()))?;
    Ok(Seq(u64::from_be_bytes(raw)))
}

/// `owner`'s index in its shard, made empty if it has none yet (without a copy of the
/// name when it has).
fn index_of<'a>(
    owners: &'a mut HashMap<UserId, Owner>,
    owner: &UserId,
) -> Result<&'a mut Owner, InboxError> {
    if !owners.contains_key(owner) {
        owners.insert(owner.clone(), Owner::new(Seq(0)));
    }
    owners
        .get_mut(owner)
        .ok_or_else(|| InboxError::Storage("owner vanished".into()))
}

/// A chat's sender waits for SENT, and a read mark holds up the reader's control stream; a
/// DELIVERED (one per message, made as a device acks it) has only a device's cursor
/// waiting for it.
fn urgency_of(receipt: ReceiptKind) -> Urgency {
    match receipt {
        ReceiptKind::Delivered => Urgency::Soon,
        ReceiptKind::Read => Urgency::Now,
    }
}

/// Writes the record of `entry` in `owner`'s log at the end of `tail`.
fn encode_into(owner: &UserId, entry: &Entry, tail: &mut Vec<u8>) -> std::io::Result<()> {
    postcard::to_io(&(owner, entry), tail)
        .map(drop)
        .map_err(std::io::Error::other)
}

fn decode(bytes: &[u8]) -> Result<(UserId, Entry), InboxError> {
    postcard::from_bytes(bytes).map_err(|e| InboxError::Corrupt(e.to_string()))
}

/// Which logs an [`Inbox`] keeps: the users' inboxes, or the groups' logs (the same
/// machinery, each group an "owner" named by its group id, in files and trees of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    /// `<data>/inbox`, trees `cursors` and `floors`.
    Users,
    /// `<data>/groups`, trees `group_cursors` and `group_floors`.
    Groups,
}

impl Logs {
    fn folder(self) -> &'static str {
        match self {
            Logs::Users => "inbox",
            Logs::Groups => "groups",
        }
    }

    fn tree(self, name: &str) -> String {
        match self {
            Logs::Users => name.to_owned(),
            Logs::Groups => format!("group_{name}"),
        }
    }
}

impl Inbox {
    /// Opens the log in `<data>/inbox` (reading it to build the index) and the cursors
    /// and floors in `db`, and starts the group-commit task that makes appends durable.
    /// A log from before segments (`<data>/inbox.log`) becomes the first segment, and
    /// entries an older node kept in sled are moved into the log.
    pub fn open(
        db: &sled::Db,
        data: &Path,
        config: &InboxConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), InboxError> {
        Self::open_logs(Logs::Users, db, data, config, metrics)
    }

    /// [`Inbox::open`] for `logs`.
    pub fn open_logs(
        logs: Logs,
        db: &sled::Db,
        data: &Path,
        config: &InboxConfig,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), InboxError> {
        let mut owners: [HashMap<UserId, Owner>; SHARDS] = std::array::from_fn(|_| HashMap::new());
        let floors = db.open_tree(logs.tree("floors"))?;
        for item in floors.iter() {
            let (name, floor) = item?;
            let owner = std::str::from_utf8(&name)
                .ok()
                .and_then(|name| UserId::parse(name).ok())
                .ok_or_else(|| InboxError::Corrupt("floor key".into()))?;
            let floor = seq_from(&floor)?;
            owners[shard_of(&owner)].insert(owner, Owner::new(floor));
        }
        let (log, opened) = Log::open(
            &data.join(logs.folder()),
            (logs == Logs::Users)
                .then(|| data.join("inbox.log"))
                .as_deref(),
            config.segment_bytes,
            |place, payload| {
                let (owner, entry) = decode(payload)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                owners[shard_of(&owner)]
                    .entry(owner)
                    .or_insert_with(|| Owner::new(Seq(0)))
                    .index(&entry, place);
                Ok(())
            },
        )?;
        for owner in owners.iter_mut().flat_map(|shard| shard.values_mut()) {
            owner.durable.send_replace(owner.head());
        }
        tracing::info!(
            records = opened.records,
            cut = opened.cut,
            segments = opened.segments,
            "inbox log read"
        );
        let log = Arc::new(log);
        let synced = log.clone();
        let (commit, task) = GroupCommit::spawn(move || sync_and_prefill(&synced), metrics.clone());
        let inbox = Arc::new(Self {
            log,
            cursors: db.open_tree(logs.tree("cursors"))?,
            floors,
            owners: owners.map(Mutex::new),
            commit,
            config: config.clone(),
            metrics,
        });
        if logs == Logs::Users {
            inbox.adopt_sled_entries(db)?;
        }
        Ok((inbox, task))
    }

    /// Moves entries an older node kept in sled's `inbox` tree into the log, then drops the
    /// tree. Safe to repeat after a crash: a `seq` the log has already is skipped.
    fn adopt_sled_entries(&self, db: &sled::Db) -> Result<(), InboxError> {
        const OLD_TREE: &[u8] = b"inbox";
        if !db.tree_names().iter().any(|name| name == OLD_TREE) {
            return Ok(());
        }
        let old = db.open_tree(OLD_TREE)?;
        let mut adopted = 0u64;
        for item in old.scan_prefix([b'e']) {
            let (key, value) = item?;
            let entry: Entry = postcard::from_bytes(&value)
                .map_err(|e| InboxError::Corrupt(format!("old inbox entry: {e}")))?;
            let owner = key
                .get(2..2 + usize::from(*key.get(1).unwrap_or(&0)))
                .and_then(|name| std::str::from_utf8(name).ok())
                .and_then(|name| UserId::parse(name).ok())
                .ok_or_else(|| InboxError::Corrupt("old inbox key".into()))?;
            let mut owners = self.shard(&owner);
            let state = owners
                .entry(owner.clone())
                .or_insert_with(|| Owner::new(Seq(0)));
            if entry.seq <= state.head() {
                continue;
            }
            let place = self
                .log
                .append_with(|tail| encode_into(&owner, &entry, tail))?;
            state.index(&entry, place);
            adopted += 1;
        }
        self.log.sync()?;
        for shard in &self.owners {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for owner in shard.values() {
                owner.durable.send_replace(owner.head());
            }
        }
        db.drop_tree(OLD_TREE)?;
        db.flush()?;
        tracing::info!(adopted, "moved inbox entries from sled into the log");
        Ok(())
    }

    fn shard(&self, owner: &UserId) -> std::sync::MutexGuard<'_, HashMap<UserId, Owner>> {
        self.owners[shard_of(owner)]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an entry from `peer` to `owner`'s log, or finds the earlier append of the
    /// same message (a chat: same sender and id; a receipt: same reader, kind and `seq`).
    /// Either way the returned [`Appended`] resolves once it is durable.
    pub fn append(
        &self,
        owner: &UserId,
        peer: &UserId,
        kind: EntryKind,
    ) -> Result<Appended, InboxError> {
        let urgency = match kind {
            EntryKind::Receipt { kind, .. } => urgency_of(kind),
            EntryKind::Receipts { kind, messages } => {
                return self
                    .append_receipts(owner, peer, kind, messages, urgency_of(kind))
                    .map(|(appended, _)| appended);
            }
            EntryKind::Chat { .. }
            | EntryKind::GroupChat { .. }
            | EntryKind::GroupFile { .. }
            | EntryKind::Member(_) => Urgency::Now,
        };
        let digest = idempotency_digest(peer, &kind);
        let (seq, fresh, durable) = 'append: {
            let mut owners = self.shard(owner);
            let state = index_of(&mut owners, owner)?;
            let head = state.head();
            // One probe of the digests, whether the append is a retry or not.
            let appended = &mut state.appended;
            let slot = match digest.map(|d| appended.entry(d)) {
                Some(hash_map::Entry::Occupied(known)) => {
                    break 'append (*known.get(), false, state.durable.clone());
                }
                Some(hash_map::Entry::Vacant(slot)) => Some(slot),
                None => None,
            };
            let bytes = held::weight(&kind);
            if state.held.admits(peer, bytes, self.held_limits()).is_err() {
                return Err(InboxError::Full);
            }
            let entry = Entry {
                seq: head.next(),
                peer: peer.clone(),
                kind,
            };
            // Under the shard lock: one user's records go to the log in `seq` order.
            let place = self
                .log
                .append_with(|tail| encode_into(owner, &entry, tail))?;
            if let Some(slot) = slot {
                slot.insert(entry.seq);
            }
            state.set_place(entry.seq, place);
            state.held.add(peer, bytes);
            (entry.seq, true, state.durable.clone())
        };
        Ok(self.durable_after_commit(urgency, seq, fresh, durable))
    }

    /// What resolves once the next group commit (of `urgency`) made `seq` durable, and
    /// publishes `seq` as `owner`'s durable head through `durable` then.
    fn durable_after_commit(
        &self,
        urgency: Urgency,
        seq: Seq,
        fresh: bool,
        durable: watch::Sender<Seq>,
    ) -> Appended {
        let (done, rx) = oneshot::channel();
        let then = OnDurable {
            head: durable,
            seq,
            done,
        };
        self.commit.then(urgency, then);
        Appended {
            seq,
            fresh,
            durable: rx,
        }
    }

    fn held_limits(&self) -> HeldLimits {
        HeldLimits {
            per_user: self.config.max_bytes_per_user,
            per_sender: self.config.max_bytes_per_sender,
        }
    }

    /// Watches `owner`'s durable head: the highest `seq` that is safe to push.
    pub fn subscribe(&self, owner: &UserId) -> Result<watch::Receiver<Seq>, InboxError> {
        let mut owners = self.shard(owner);
        let state = owners
            .entry(owner.clone())
            .or_insert_with(|| Owner::new(Seq(0)));
        Ok(state.durable.subscribe())
    }

    /// `owner`'s durable head: the highest `seq` that is safe to read (0: none).
    pub fn head(&self, owner: &UserId) -> Seq {
        self.shard(owner)
            .get(owner)
            .map_or(Seq(0), |s| *s.durable.borrow())
    }

    /// Bytes of the log from its oldest segment to its end, and how many segment files
    /// hold them.
    pub fn footprint(&self) -> (u64, usize) {
        self.log.footprint()
    }

    /// The highest `seq` of `owner` that retention removed (0: none).
    pub fn floor(&self, owner: &UserId) -> Seq {
        self.shard(owner)
            .get(owner)
            .map_or(Seq(0), |s| Seq(s.floor))
    }

    /// Retention: removes the sealed segments whose newest entry is older than
    /// `inbox.retention_secs` at `now`, oldest first, after saving the floor of every user
    /// with entries in them. The active segment is sealed once it is a quarter of the
    /// retention old, so it can go in time too. Blocking: file reads and a sled flush.
    pub fn expire(&self, now: SystemTime) -> Result<Expired, InboxError> {
        let mut expired = Expired::default();
        if self.config.retention_secs == 0 {
            return Ok(expired);
        }
        let retention = Duration::from_secs(self.config.retention_secs);
        let before = |age: Duration| now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
        self.log.seal_if_begun_before(before(retention / 4));
        let started = std::time::Instant::now();
        for start in self.log.sealed_before(before(retention)) {
            let mut gone: HashMap<UserId, Gone> = HashMap::new();
            self.log.scan(start, |_, payload| {
                let (owner, entry) = decode(payload)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                let theirs = gone.entry(owner).or_default();
                theirs.floor = theirs.floor.max(entry.seq);
                theirs.entries += 1;
                each_digest(&entry.peer, &entry.kind, |digest| {
                    theirs.digests.push((digest, entry.seq))
                });
                match held::weight(&entry.kind) {
                    0 => {}
                    bytes => theirs.held.push((entry.peer, bytes)),
                }
                Ok(())
            })?;
            // Floors first, durably: were the file gone and a floor not, a restart would
            // hand out that user's `seq`s again, below their devices' cursors.
            let mut batch = sled::Batch::default();
            for (owner, theirs) in &gone {
                let saved = self.floor(owner).max(theirs.floor);
                batch.insert(owner.as_str().as_bytes(), &saved.0.to_be_bytes());
            }
            self.floors.apply_batch(batch)?;
            self.floors.flush()?;
            for (owner, theirs) in &gone {
                expired.entries += theirs.entries;
                if let Some(state) = self.shard(owner).get_mut(owner) {
                    state.expire(theirs.floor, theirs);
                }
            }
            expired.bytes += self.log.remove(start)?;
            expired.segments += 1;
        }
        let metrics = &self.metrics;
        if expired.segments > 0 {
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            metrics.expire_micros.fetch_add(took, Ordering::Relaxed);
        }
        metrics
            .entries_expired
            .fetch_add(expired.entries, Ordering::Relaxed);
        metrics
            .segments_removed
            .fetch_add(expired.segments, Ordering::Relaxed);
        Ok(expired)
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

/// The group commit's flush: makes the log durable, then has zeroes written ahead of its
/// end if they run short ([`crate::log`]'s prefill), on the blocking pool, so the next
/// syncs write over them instead of growing the file.
fn sync_and_prefill(log: &Arc<Log>) -> std::io::Result<()> {
    let synced = log.sync();
    if log.begin_prefill() {
        let log = log.clone();
        let prefill = move || {
            if let Err(e) = log.prefill() {
                tracing::warn!(error = %e, "could not write zeroes ahead of the inbox log");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(prefill)),
            Err(_) => prefill(),
        }
    }
    synced
}

fn shard_of(owner: &UserId) -> usize {
    let mut h = DefaultHasher::new();
    owner.hash(&mut h);
    h.finish() as usize % SHARDS
}

/// An inbox in `<dir>/inbox` with its cursors in `db`, and its flush task; for tests.
pub fn open(
    db: &sled::Db,
    dir: &Path,
) -> Result<(Arc<Inbox>, tokio::task::JoinHandle<()>), InboxError> {
    Inbox::open(db, dir, &InboxConfig::default(), Arc::default())
}

mod idempotency;
mod read;
mod receipts;
pub use read::Framed;
#[cfg(test)]
mod tests;
