//! The blob store: sealed file bytes on disk, named by their SHA-256, with per-user quotas
//! and the collection of blobs nothing refers to any more.
//!
//! Layout under `<data_dir>/blobs`: one file per complete blob (`<hex id>`), and one file
//! per upload in progress (`partial/<user>-<hex id>`), which grows as bytes arrive and is
//! checked against its id before it becomes a blob. Metadata lives in sled:
//! - `blobs`: id → `BlobMeta` (size, uploaders, kept until);
//! - `uploads`: user and id → `UploadMeta` (size, last touched);
//! - `usage`: user → bytes charged to their quota (their blobs and their uploads).
//!
//! A blob is referred to by each file message that names it, for `retention_secs` after
//! the message, and by a finished upload not yet sent, for `upload_ttl_secs`; each
//! reference pushes `keep_until` later. [`Blobs::collect`] removes blobs past it, and
//! uploads untouched for `upload_ttl_secs`, and gives their bytes back to the quota.

use crate::config::FileLimits;
use quiver_proto::files::{BlobId, FileRef};
use quiver_proto::{ErrorCode, UserId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What can go wrong in the blob store itself.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// sled failed.
    #[error("blob metadata: {0}")]
    Storage(#[from] sled::Error),
    /// The disk failed.
    #[error("blob file {path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A complete blob.
#[derive(Debug, Serialize, Deserialize)]
struct BlobMeta {
    size: u64,
    /// Users who uploaded these bytes; the first one's quota carries them.
    owners: Vec<UserId>,
    /// Milliseconds since the Unix epoch after which nothing refers to it.
    keep_until_ms: u64,
}

/// An upload in progress.
#[derive(Debug, Serialize, Deserialize)]
struct UploadMeta {
    size: u64,
    touched_ms: u64,
}

/// Where an upload starts.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadStart {
    /// The blob is already complete here: nothing to send.
    Complete,
    /// Send the bytes from `offset` on; they go to `path`.
    Partial {
        /// Bytes already on disk.
        offset: u64,
        /// The partial file to append to.
        path: PathBuf,
    },
}

/// What a collection removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Blobs removed.
    pub blobs: u64,
    /// Abandoned uploads removed.
    pub uploads: u64,
    /// Bytes given back to quotas.
    pub bytes: u64,
}

/// The right to write one user's upload of one blob. A newer upload of the same blob by
/// the same user (a client that reconnected before the node noticed the old connection
/// died) takes it over: the holder is told through [`UploadClaim::superseded`].
pub struct UploadClaim {
    _held: tokio::sync::OwnedMutexGuard<()>,
    cancel: Arc<Notify>,
    key: (UserId, BlobId),
    slots: Arc<Mutex<HashMap<(UserId, BlobId), Slot>>>,
}

impl UploadClaim {
    /// Resolves when a newer upload wants the blob: stop writing and let go.
    pub async fn superseded(&self) {
        self.cancel.notified().await
    }
}

impl Drop for UploadClaim {
    fn drop(&mut self) {
        let mut slots = lock(&self.slots);
        if slots
            .get(&self.key)
            .is_some_and(|slot| Arc::ptr_eq(&slot.cancel, &self.cancel))
        {
            slots.remove(&self.key);
        }
    }
}

struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    cancel: Arc<Notify>,
}

/// The node's blob store.
pub struct Blobs {
    dir: PathBuf,
    partial: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    uploads: sled::Tree,
    usage: sled::Tree,
    limits: FileLimits,
    /// Serialises quota and metadata changes (read, check, write).
    accounting: Mutex<()>,
    slots: Arc<Mutex<HashMap<(UserId, BlobId), Slot>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn upload_key(user: &UserId, blob: &BlobId) -> Vec<u8> {
    let mut key = user.as_str().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&blob.0);
    key
}

fn decode<T: for<'a> Deserialize<'a>>(bytes: &[u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("metadata always encodes")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Logs a store failure and turns it into what the client is told.
fn unavailable(e: BlobError) -> ErrorCode {
    tracing::error!(error = %e, "blob store failed");
    ErrorCode::Unavailable
}

impl Blobs {
    /// Opens the store in `dir` with metadata in `db`.
    pub fn open(db: &sled::Db, dir: &Path, limits: FileLimits) -> Result<Self, BlobError> {
        let partial = dir.join("partial");
        std::fs::create_dir_all(&partial).map_err(io(&partial))?;
        Ok(Self {
            dir: dir.to_owned(),
            partial,
            db: db.clone(),
            meta: db.open_tree("blobs")?,
            uploads: db.open_tree("uploads")?,
            usage: db.open_tree("usage")?,
            limits,
            accounting: Mutex::new(()),
            slots: Arc::default(),
        })
    }

    fn blob_path(&self, blob: &BlobId) -> PathBuf {
        self.dir.join(blob.to_hex())
    }

    fn partial_path(&self, user: &UserId, blob: &BlobId) -> PathBuf {
        self.partial.join(format!("{user}-{}", blob.to_hex()))
    }

    /// Bytes charged to `user`'s quota now.
    pub fn usage(&self, user: &UserId) -> u64 {
        self.usage
            .get(user.as_str())
            .ok()
            .flatten()
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0)
    }

    /// What a file of `size` bytes is charged: at least `min_charge_bytes`.
    fn charge(&self, size: u64) -> u64 {
        size.max(self.limits.min_charge_bytes)
    }

    /// Unfinished uploads of `user`'s here now, counting up to `at_most`.
    fn unfinished(&self, user: &UserId, at_most: usize) -> usize {
        let mut prefix = user.as_str().as_bytes().to_vec();
        prefix.push(0);
        self.uploads.scan_prefix(prefix).take(at_most).count()
    }

    fn set_usage(&self, user: &UserId, bytes: u64) -> Result<(), BlobError> {
        self.usage.insert(user.as_str(), &bytes.to_be_bytes())?;
        Ok(())
    }

    /// Waits for the right to write `user`'s upload of `blob`, taking it from an older
    /// upload of the same if there is one.
    pub async fn claim(&self, user: &UserId, blob: BlobId) -> UploadClaim {
        let key = (user.clone(), blob);
        let cancel = Arc::new(Notify::new());
        let (held, older) = {
            let mut slots = lock(&self.slots);
            match slots.get_mut(&key) {
                Some(slot) => (
                    slot.lock.clone(),
                    Some(std::mem::replace(&mut slot.cancel, cancel.clone())),
                ),
                None => {
                    let held = Arc::new(tokio::sync::Mutex::new(()));
                    let slot = Slot {
                        lock: held.clone(),
                        cancel: cancel.clone(),
                    };
                    slots.insert(key.clone(), slot);
                    (held, None)
                }
            }
        };
        if let Some(older) = older {
            // A stored permit: the older upload sees it even if it is not waiting yet.
            older.notify_one();
        }
        UploadClaim {
            _held: held.lock_owned().await,
            cancel,
            key,
            slots: self.slots.clone(),
        }
    }

    /// Starts or resumes `user`'s upload of `blob` (`size` sealed bytes). Every refusal
    /// (too large, over quota) comes before a byte is stored. Call under a claim.
    pub fn begin_upload(
        &self,
        user: &UserId,
        blob: BlobId,
        size: u64,
        _claim: &UploadClaim,
    ) -> Result<UploadStart, ErrorCode> {
        if size > self.limits.max_file_bytes {
            return Err(ErrorCode::FileTooLarge);
        }
        if size < quiver_proto::files::TAG_LEN as u64 {
            return Err(ErrorCode::Malformed);
        }
        let _accounting = lock(&self.accounting);
        self.begin_locked(user, blob, size).map_err(unavailable)?
    }

    fn begin_locked(
        &self,
        user: &UserId,
        blob: BlobId,
        size: u64,
    ) -> Result<Result<UploadStart, ErrorCode>, BlobError> {
        if let Some(meta) = self.meta.get(blob.0)?.and_then(|v| decode::<BlobMeta>(&v)) {
            if meta.size != size {
                return Ok(Err(ErrorCode::Malformed));
            }
            if meta.owners.contains(user) {
                return Ok(Ok(UploadStart::Complete));
            }
            // The same sealed bytes from someone else: this user must still send them
            // (knowing an id is not having the file). Once they match, they become a
            // co-owner of the one copy, which stays on the first uploader's quota.
        }
        let key = upload_key(user, &blob);
        let path = self.partial_path(user, &blob);
        let touched = UploadMeta {
            size,
            touched_ms: now_ms(),
        };
        match self
            .uploads
            .get(&key)?
            .and_then(|v| decode::<UploadMeta>(&v))
        {
            Some(upload) if upload.size == size => {
                let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                self.uploads.insert(key, encode(&touched))?;
                return Ok(Ok(UploadStart::Partial {
                    offset: offset.min(size),
                    path,
                }));
            }
            // An id names one content, so one size: start again if they disagree.
            Some(upload) => self.drop_upload(user, &blob, upload.size)?,
            None => {}
        }
        let used = self.usage(user);
        let cap = self.limits.max_unfinished_uploads as usize;
        let charge = self.charge(size);
        if used.saturating_add(charge) > self.limits.quota_bytes
            || self.unfinished(user, cap) >= cap
        {
            return Ok(Err(ErrorCode::QuotaExceeded));
        }
        self.set_usage(user, used + charge)?;
        self.uploads.insert(key, encode(&touched))?;
        // The partial file is made when the first bytes arrive: an upload abandoned
        // before then costs no inode.
        Ok(Ok(UploadStart::Partial { offset: 0, path }))
    }

    /// Removes an upload and gives its bytes back. Under `accounting`.
    fn drop_upload(&self, user: &UserId, blob: &BlobId, size: u64) -> Result<(), BlobError> {
        let path = self.partial_path(user, blob);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        self.uploads.remove(upload_key(user, blob))?;
        let used = self.usage(user);
        self.set_usage(user, used.saturating_sub(self.charge(size)))
    }

    /// Checks a finished upload against its id and makes it a blob, durably. A mismatch
    /// (a chunk corrupted on the way) removes it: `Corrupt`.
    pub async fn finish_upload(
        self: &Arc<Self>,
        user: &UserId,
        blob: BlobId,
        size: u64,
        _claim: &UploadClaim,
    ) -> Result<(), ErrorCode> {
        let path = self.partial_path(user, &blob);
        let hashed = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || sync_and_hash(&path))
                .await
                .map_err(|_| ErrorCode::Internal)?
                .map_err(unavailable)?
        };
        let outcome = {
            let _accounting = lock(&self.accounting);
            self.complete_locked(user, blob, size, &path, hashed)
                .map_err(unavailable)?
        };
        if outcome.is_ok() {
            crate::sled_flush::flush(&self.db)
                .await
                .map_err(|e| unavailable(e.into()))?;
        }
        outcome
    }

    fn complete_locked(
        &self,
        user: &UserId,
        blob: BlobId,
        size: u64,
        path: &Path,
        hashed: (u64, [u8; 32]),
    ) -> Result<Result<(), ErrorCode>, BlobError> {
        if hashed != (size, blob.0) {
            tracing::info!(%user, %blob, "upload does not match its id");
            self.drop_upload(user, &blob, size)?;
            return Ok(Err(ErrorCode::Corrupt));
        }
        let target = self.blob_path(&blob);
        let keep_until_ms = now_ms() + self.upload_ttl_ms();
        let meta = match self.meta.get(blob.0)?.and_then(|v| decode::<BlobMeta>(&v)) {
            // Someone else uploaded the same bytes before: keep one copy, on their quota.
            Some(mut meta) => {
                self.drop_upload(user, &blob, size)?;
                if !meta.owners.contains(user) {
                    meta.owners.push(user.clone());
                }
                meta.keep_until_ms = meta.keep_until_ms.max(keep_until_ms);
                meta
            }
            None => {
                std::fs::rename(path, &target).map_err(io(&target))?;
                if let Ok(dir) = std::fs::File::open(&self.dir) {
                    let _ = dir.sync_all();
                }
                self.uploads.remove(upload_key(user, &blob))?;
                BlobMeta {
                    size,
                    owners: vec![user.clone()],
                    keep_until_ms,
                }
            }
        };
        self.meta.insert(blob.0, encode(&meta))?;
        Ok(Ok(()))
    }

    /// A file message from `owner` names `file`: it must be a complete blob they uploaded;
    /// it is kept `retention_secs` from now at least.
    pub fn retain(&self, owner: &UserId, file: &FileRef) -> Result<(), ErrorCode> {
        let _accounting = lock(&self.accounting);
        let meta = self
            .meta
            .get(file.blob.0)
            .map_err(|e| unavailable(e.into()))?;
        let Some(mut meta) = meta.and_then(|v| decode::<BlobMeta>(&v)) else {
            return Err(ErrorCode::NotFound);
        };
        if meta.size != file.size || !meta.owners.contains(owner) {
            return Err(ErrorCode::NotFound);
        }
        let retention = self.limits.retention_secs.saturating_mul(1000);
        meta.keep_until_ms = meta.keep_until_ms.max(now_ms().saturating_add(retention));
        self.meta
            .insert(file.blob.0, encode(&meta))
            .map_err(|e| unavailable(e.into()))?;
        Ok(())
    }

    /// The file and size of a complete blob that `owner` uploaded.
    pub fn find(&self, owner: &UserId, blob: &BlobId) -> Result<(PathBuf, u64), ErrorCode> {
        let meta = self.meta.get(blob.0).map_err(|e| unavailable(e.into()))?;
        match meta.and_then(|v| decode::<BlobMeta>(&v)) {
            Some(meta) if meta.owners.contains(owner) => Ok((self.blob_path(blob), meta.size)),
            _ => Err(ErrorCode::NotFound),
        }
    }

    fn upload_ttl_ms(&self) -> u64 {
        self.limits.upload_ttl_secs.saturating_mul(1000)
    }

    /// Removes blobs nothing refers to any more and uploads abandoned for longer than
    /// `upload_ttl_secs`, as of `now_ms`; gives their bytes back to quotas.
    pub fn collect(&self, now_ms: u64) -> Result<Collected, BlobError> {
        let mut collected = Collected::default();
        let expired: Vec<_> = self
            .meta
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| Some((BlobId(k.as_ref().try_into().ok()?), decode(&v)?)))
            .filter(|(_, meta): &(BlobId, BlobMeta)| meta.keep_until_ms < now_ms)
            .collect();
        for (blob, meta) in expired {
            let _accounting = lock(&self.accounting);
            // Looked at again under the lock: a message may have just referred to it.
            let current = self.meta.get(blob.0)?.and_then(|v| decode::<BlobMeta>(&v));
            if current.is_none_or(|m| m.keep_until_ms >= now_ms) {
                continue;
            }
            let path = self.blob_path(&blob);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
            self.meta.remove(blob.0)?;
            if let Some(first) = meta.owners.first() {
                let used = self.usage(first);
                self.set_usage(first, used.saturating_sub(self.charge(meta.size)))?;
            }
            collected.blobs += 1;
            collected.bytes += self.charge(meta.size);
        }
        let ttl = self.upload_ttl_ms();
        let abandoned: Vec<_> = self
            .uploads
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| Some((k, decode::<UploadMeta>(&v)?)))
            .filter(|(_, u)| u.touched_ms.saturating_add(ttl) < now_ms)
            .collect();
        for (key, upload) in abandoned {
            let Some(at) = key.iter().position(|&b| b == 0) else {
                continue;
            };
            let user = std::str::from_utf8(&key[..at]).ok();
            let user = user.and_then(|u| UserId::parse(u).ok());
            let blob = key[at + 1..].try_into().ok().map(BlobId);
            let (Some(user), Some(blob)) = (user, blob) else {
                continue;
            };
            if lock(&self.slots).contains_key(&(user.clone(), blob)) {
                continue; // being written right now
            }
            let _accounting = lock(&self.accounting);
            self.drop_upload(&user, &blob, upload.size)?;
            collected.uploads += 1;
            collected.bytes += self.charge(upload.size);
        }
        Ok(collected)
    }
}

/// Makes a file durable and returns its length and SHA-256.
fn sync_and_hash(path: &Path) -> Result<(u64, [u8; 32]), BlobError> {
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        len += n as u64;
    }
    let digest = hash.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    Ok((len, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store charging files their size alone, unless `limits` says otherwise.
    fn store(mut limits: FileLimits) -> (tempfile::TempDir, Arc<Blobs>) {
        if limits.min_charge_bytes == FileLimits::default().min_charge_bytes {
            limits.min_charge_bytes = 0;
        }
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        let blobs = Blobs::open(&db, &dir.path().join("blobs"), limits).unwrap();
        (dir, Arc::new(blobs))
    }

    fn id_of(bytes: &[u8]) -> BlobId {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        BlobId(digest.as_ref().try_into().unwrap())
    }

    #[tokio::test]
    async fn small_files_pay_the_minimum_and_unfinished_uploads_are_capped_and_fileless() {
        let (dir, blobs) = store(FileLimits {
            quota_bytes: 10_000,
            min_charge_bytes: 1_000,
            max_unfinished_uploads: 3,
            ..FileLimits::default()
        });
        let alice = UserId::parse("alice").unwrap();
        let mut claims = Vec::new();
        for i in 0..3u8 {
            let blob = id_of(&[i]);
            let claim = blobs.claim(&alice, blob).await;
            assert!(matches!(
                blobs.begin_upload(&alice, blob, 16, &claim),
                Ok(UploadStart::Partial { offset: 0, .. })
            ));
            claims.push(claim);
        }
        assert_eq!(blobs.usage(&alice), 3_000, "16 bytes are charged 1,000");
        let fourth = id_of(b"fourth");
        let claim = blobs.claim(&alice, fourth).await;
        assert_eq!(
            blobs.begin_upload(&alice, fourth, 16, &claim),
            Err(ErrorCode::QuotaExceeded),
            "three unfinished uploads is the cap"
        );
        let partial = dir.path().join("blobs").join("partial");
        assert_eq!(
            std::fs::read_dir(&partial).unwrap().count(),
            0,
            "no bytes, no file"
        );
        let far = now_ms() + 365 * 24 * 3600 * 1000;
        drop(claims);
        let collected = blobs.collect(far).unwrap();
        assert_eq!((collected.uploads, collected.bytes), (3, 3_000));
        assert_eq!(blobs.usage(&alice), 0);
        assert!(matches!(
            blobs.begin_upload(&alice, fourth, 16, &claim),
            Ok(UploadStart::Partial { .. })
        ));
    }

    #[tokio::test]
    async fn uploads_resume_complete_and_are_collected_when_unreferenced() {
        let (_dir, blobs) = store(FileLimits {
            quota_bytes: 100,
            ..FileLimits::default()
        });
        let alice = UserId::parse("alice").unwrap();
        let bytes = vec![7u8; 60];
        let blob = id_of(&bytes);
        let claim = blobs.claim(&alice, blob).await;
        let UploadStart::Partial { offset: 0, path } =
            blobs.begin_upload(&alice, blob, 60, &claim).unwrap()
        else {
            panic!("a new upload starts at 0")
        };
        std::fs::write(&path, &bytes[..25]).unwrap();
        assert_eq!(
            blobs.begin_upload(&alice, blob, 60, &claim).unwrap(),
            UploadStart::Partial {
                offset: 25,
                path: path.clone()
            }
        );
        let other = id_of(b"other");
        let claim_other = blobs.claim(&alice, other).await;
        assert_eq!(
            blobs.begin_upload(&alice, other, 50, &claim_other),
            Err(ErrorCode::QuotaExceeded),
            "60 charged + 50 > 100"
        );
        std::fs::write(&path, &bytes).unwrap();
        blobs.finish_upload(&alice, blob, 60, &claim).await.unwrap();
        assert_eq!(blobs.usage(&alice), 60);
        let file = FileRef { blob, size: 60 };
        blobs.retain(&alice, &file).unwrap();
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(blobs.retain(&bob, &file), Err(ErrorCode::NotFound));
        assert_eq!(blobs.find(&alice, &blob).unwrap().1, 60);

        // Still referred to: kept.
        assert_eq!(blobs.collect(now_ms()).unwrap(), Collected::default());
        let far = now_ms() + 365 * 24 * 3600 * 1000;
        let collected = blobs.collect(far).unwrap();
        assert_eq!((collected.blobs, collected.bytes), (1, 60));
        assert_eq!(blobs.usage(&alice), 0);
        assert_eq!(blobs.find(&alice, &blob), Err(ErrorCode::NotFound));
    }

    #[tokio::test]
    async fn the_same_bytes_are_kept_once_but_each_uploader_must_send_them() {
        let (dir, blobs) = store(FileLimits::default());
        let [alice, bob] = ["alice", "bob"].map(|n| UserId::parse(n).unwrap());
        let bytes = vec![5u8; 30];
        let blob = id_of(&bytes);
        for user in [&alice, &bob] {
            let claim = blobs.claim(user, blob).await;
            let start = blobs.begin_upload(user, blob, 30, &claim).unwrap();
            let UploadStart::Partial { offset: 0, path } = start else {
                panic!("{user} must send the bytes, known id or not: {start:?}")
            };
            std::fs::write(&path, &bytes).unwrap();
            blobs.finish_upload(user, blob, 30, &claim).await.unwrap();
            drop(claim);
            let claim = blobs.claim(user, blob).await;
            let again = blobs.begin_upload(user, blob, 30, &claim).unwrap();
            assert_eq!(again, UploadStart::Complete, "{user} has it now");
        }
        assert_eq!((blobs.usage(&alice), blobs.usage(&bob)), (30, 0));
        let file = FileRef { blob, size: 30 };
        blobs.retain(&bob, &file).unwrap();
        let stored = dir.path().join("blobs").join(blob.to_hex());
        assert!(stored.exists());
        assert!(std::fs::read_dir(dir.path().join("blobs/partial"))
            .unwrap()
            .next()
            .is_none());
    }

    #[tokio::test]
    async fn a_mismatching_upload_is_corrupt_and_gives_its_quota_back() {
        let (_dir, blobs) = store(FileLimits::default());
        let alice = UserId::parse("alice").unwrap();
        let bytes = vec![1u8; 40];
        let blob = id_of(&bytes);
        let claim = blobs.claim(&alice, blob).await;
        let UploadStart::Partial { path, .. } =
            blobs.begin_upload(&alice, blob, 40, &claim).unwrap()
        else {
            panic!("new upload")
        };
        let mut corrupted = bytes.clone();
        corrupted[17] ^= 1;
        std::fs::write(&path, &corrupted).unwrap();
        assert_eq!(
            blobs.finish_upload(&alice, blob, 40, &claim).await,
            Err(ErrorCode::Corrupt)
        );
        assert_eq!(blobs.usage(&alice), 0);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_newer_upload_takes_over_the_claim() {
        let (_dir, blobs) = store(FileLimits::default());
        let alice = UserId::parse("alice").unwrap();
        let blob = id_of(b"x");
        let first = blobs.claim(&alice, blob).await;
        let second = {
            let blobs = blobs.clone();
            let alice = alice.clone();
            tokio::spawn(async move { blobs.claim(&alice, blob).await.key.1 })
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), first.superseded())
            .await
            .expect("told to let go");
        drop(first);
        assert_eq!(second.await.unwrap(), blob);
    }
}
