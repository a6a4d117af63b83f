//! [`DiskBudget`]: the free space the node leaves on its data folder's file system.
//!
//! Accounts are free and each brings its own file quota and inbox bounds, so the sum of
//! the quotas can be far more than the disk. Below the reserve, new chats and uploads are
//! refused with `StorageFull` (a clear "try later" for the client) instead of the node
//! failing writes half-way, and receipts, cursors and the log's own bookkeeping still
//! have room. Free space is read with `statvfs`, at most every [`RECHECK`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a reading of the free space is trusted.
const RECHECK: Duration = Duration::from_millis(250);

/// The reserve of free space on the data folder's file system.
pub struct DiskBudget {
    folder: PathBuf,
    reserve: u64,
    /// The last reading: was there room, and when (nanoseconds after `born`).
    room: AtomicBool,
    read_at: AtomicU64,
    born: Instant,
    /// One reader at a time; the others use the last reading.
    reading: Mutex<()>,
}

impl DiskBudget {
    /// Keeps `reserve` bytes free on the file system of `folder` (0: no reserve).
    pub fn new(folder: PathBuf, reserve: u64) -> Self {
        let budget = Self {
            folder,
            reserve,
            room: AtomicBool::new(true),
            read_at: AtomicU64::new(0),
            born: Instant::now(),
            reading: Mutex::new(()),
        };
        budget.read();
        budget
    }

    /// Whether new chats and uploads may be stored.
    pub fn has_room(&self) -> bool {
        if self.reserve == 0 {
            return true;
        }
        let age = self
            .nanos()
            .saturating_sub(self.read_at.load(Ordering::Relaxed));
        if age > RECHECK.as_nanos() as u64 {
            if let Ok(_one) = self.reading.try_lock() {
                self.read();
            }
        }
        self.room.load(Ordering::Relaxed)
    }

    /// The free bytes for unprivileged users, if the file system says.
    pub fn free_bytes(&self) -> Option<u64> {
        let stats = rustix::fs::statvfs(&self.folder).ok()?;
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    fn read(&self) {
        if self.reserve == 0 {
            return;
        }
        // A file system that cannot say is not taken for a full one.
        let room = self.free_bytes().is_none_or(|free| free >= self.reserve);
        if room != self.room.swap(room, Ordering::Relaxed) {
            tracing::warn!(room, reserve = self.reserve, "disk reserve crossed");
        }
        self.read_at.store(self.nanos(), Ordering::Relaxed);
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_above_the_free_space_leaves_no_room() {
        let dir = tempfile::tempdir().unwrap();
        let none = DiskBudget::new(dir.path().into(), 0);
        assert!(none.has_room());
        let free = none.free_bytes().unwrap();
        assert!(DiskBudget::new(dir.path().into(), 1).has_room());
        assert!(!DiskBudget::new(dir.path().into(), free.saturating_mul(2)).has_room());
    }
}
