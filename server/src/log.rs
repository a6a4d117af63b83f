//! The inbox log file: one append-only file of framed, checksummed records.
//!
//! A record is `length (u32 LE) ‖ CRC-32 of the payload (u32 LE) ‖ payload`. Appends
//! collect in memory; [`Log::sync`] writes all of them with one `pwrite` at the end of
//! the file and makes them durable (`fdatasync`); the inbox calls it through group
//! commit. Opening the file reads it and keeps the longest prefix of whole records whose
//! checksums hold: a crash can tear the tail (a record half written, or later pages
//! written and earlier ones not), and that tail was never synced, so never acknowledged.
//! It is cut off (and kept aside, in case it was damage instead).
//!
//! A failed `fdatasync` is final: Linux may have dropped the dirty pages it could not
//! write, so a later sync that succeeds would prove nothing about them. Every later sync
//! fails too, the node stops acknowledging, and a restart reads what really is on disk.
//!
//! The log knows nothing of what a payload means; [`crate::inbox`] does.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

const HEADER: usize = 8;
/// Largest payload a record may carry; a length above it marks a torn or foreign tail.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Where a record is: what [`Log::append_with`] returns and [`Log::read_with`] takes.
/// Its offset in the file, plus one: an index holds one per stored entry, and the niche
/// makes `Option<Place>` 8 bytes. The length is in the record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place(NonZeroU64);

impl Place {
    fn at(offset: u64) -> Self {
        Self(NonZeroU64::MIN.saturating_add(offset))
    }

    fn offset(self) -> u64 {
        self.0.get() - 1
    }
}

/// The open log file.
pub struct Log {
    file: File,
    tail: Mutex<Tail>,
    /// Held while [`Log::sync`] writes and syncs, so the file grows in order.
    writing: Mutex<()>,
    /// Bytes of whole records in the file; what [`Log::read_with`] may read.
    written: AtomicU64,
    /// An `fdatasync` failed: see the module doc.
    failed: AtomicBool,
    /// The last batches written, newest last: the push loops read what was just synced,
    /// and find it here without a `pread`.
    recent: RwLock<Recent>,
}

/// [`Log::recent`]: batches by where they start, and their bytes in all.
#[derive(Default)]
struct Recent {
    batches: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
    /// A batch let go, cleared, to be the next tail: big buffers made and freed at every
    /// sync cost glibc's malloc more than the rest of the log (`malloc_consolidate`).
    spare: Option<Vec<u8>>,
}

/// Most bytes of [`Log::recent`] batches kept.
const RECENT_BYTES: usize = 8 << 20;

/// Appended records not yet written to the file.
struct Tail {
    /// Where `pending` starts in the file.
    at: u64,
    pending: Vec<u8>,
}

/// What opening found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Whole records kept.
    pub records: u64,
    /// Bytes cut off the end (a torn tail).
    pub cut: u64,
}

impl Log {
    /// Opens (or creates) the log at `path`, hands every whole record to `each` in order
    /// and cuts off whatever follows the last one.
    pub fn open(
        path: &Path,
        mut each: impl FnMut(Place, &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<(Log, Opened)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let size = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let (mut end, mut records) = (0u64, 0u64);
        let mut payload = Vec::new();
        loop {
            let mut header = [0u8; HEADER];
            if reader.read_exact(&mut header).is_err() {
                break;
            }
            let (len, crc) = split_header(header);
            if len > MAX_PAYLOAD || end + (HEADER + len) as u64 > size {
                break;
            }
            payload.resize(len, 0);
            if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
                break;
            }
            each(Place::at(end), &payload)?;
            end += (HEADER + len) as u64;
            records += 1;
        }
        drop(reader);
        let cut = size - end;
        if cut > 0 {
            let kept = keep_cut(&file, path, end, cut)?;
            tracing::warn!(path = %path.display(), kept_at = %kept.display(), at = end, cut, "cut a torn or damaged tail off the inbox log");
            file.set_len(end)?;
        }
        // What a crashed process wrote may be in the page cache only; what is indexed
        // now counts as durable, so make it so.
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            // A new file's name must survive a crash too.
            File::open(dir)?.sync_all()?;
        }
        Ok((
            Log {
                file,
                tail: Mutex::new(Tail {
                    at: end,
                    pending: Vec::new(),
                }),
                writing: Mutex::new(()),
                written: AtomicU64::new(end),
                failed: AtomicBool::new(false),
                recent: RwLock::default(),
            },
            Opened { records, cut },
        ))
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`Log::append_with`] of a payload at hand.
    #[cfg(test)]
    fn append(&self, payload: &[u8]) -> std::io::Result<Place> {
        self.append_with(|tail| {
            tail.extend_from_slice(payload);
            Ok(())
        })
    }

    /// Appends one record to memory, its payload written by `write` at the end of the
    /// tail; [`Log::sync`] writes it to the file and makes it durable, and only then can
    /// it be read back.
    pub fn append_with(
        &self,
        write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<Place> {
        let mut tail = self.tail();
        let start = tail.pending.len();
        tail.pending.extend_from_slice(&[0; HEADER]);
        let written = write(&mut tail.pending);
        let len = tail.pending.len() - start - HEADER;
        if let Err(e) = written {
            tail.pending.truncate(start);
            return Err(e);
        }
        if len > MAX_PAYLOAD {
            tail.pending.truncate(start);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "record too large",
            ));
        }
        let (header, payload) = tail.pending[start..].split_at_mut(HEADER);
        let crc = crc32fast::hash(payload);
        header[..4].copy_from_slice(&(len as u32).to_le_bytes());
        header[4..].copy_from_slice(&crc.to_le_bytes());
        Ok(Place::at(tail.at + start as u64))
    }

    /// Writes every record appended so far to the file, in one write, and makes it
    /// durable (`fdatasync`). On failure the records stay in memory for the next call,
    /// so the file never gets a gap.
    pub fn sync(&self) -> std::io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if self.failed.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "an earlier fdatasync of the inbox log failed; restart the node",
            ));
        }
        let (at, records) = {
            let mut tail = self.tail();
            let next = self.spare(tail.pending.len());
            let records = std::mem::replace(&mut tail.pending, next);
            let at = tail.at;
            tail.at += records.len() as u64;
            (at, records)
        };
        if let Err(e) = self.file.write_all_at(&records, at) {
            let mut tail = self.tail();
            let mut back = records;
            back.append(&mut tail.pending);
            tail.pending = back;
            tail.at = at;
            return Err(e);
        }
        let written = at + records.len() as u64;
        self.remember(at, records);
        self.written.store(written, Ordering::Release);
        let synced = self.file.sync_data();
        if let Err(e) = &synced {
            tracing::error!(error = %e, "fdatasync of the inbox log failed; no more appends will be acknowledged");
            self.failed.store(true, Ordering::Release);
        }
        synced
    }

    fn recent_batches(&self) -> std::sync::RwLockWriteGuard<'_, Recent> {
        self.recent.write().unwrap_or_else(|p| p.into_inner())
    }

    /// An empty buffer for the next tail, at least `capacity` bytes if it must be made.
    fn spare(&self, capacity: usize) -> Vec<u8> {
        self.recent_batches()
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    fn remember(&self, at: u64, records: Vec<u8>) {
        let mut recent = self.recent_batches();
        recent.bytes += records.len();
        recent.batches.push_back((at, records));
        while recent.bytes > RECENT_BYTES && recent.batches.len() > 1 {
            if let Some((_, mut old)) = recent.batches.pop_front() {
                recent.bytes -= old.len();
                old.clear();
                recent.spare = Some(old);
            }
        }
    }

    /// `read` of the payload at `place`, if it is in a recent batch; else `read` back.
    fn recent<R, F: FnOnce(&[u8]) -> R>(&self, place: Place, read: F) -> Result<R, F> {
        let recent = self.recent.read().unwrap_or_else(|p| p.into_inner());
        let offset = place.offset();
        // Batches are in file order: the one that may hold `place` starts at or before it.
        let after = recent.batches.partition_point(|(at, _)| *at <= offset);
        let Some((at, batch)) = after.checked_sub(1).and_then(|i| recent.batches.get(i)) else {
            return Err(read);
        };
        let start = usize::try_from(offset - at).unwrap_or(usize::MAX);
        let record = batch.get(start..).unwrap_or_default();
        let Some((header, rest)) = record.split_first_chunk::<HEADER>() else {
            return Err(read);
        };
        let (len, _) = split_header(*header);
        match rest.get(..len) {
            Some(payload) => Ok(read(payload)),
            None => Err(read),
        }
    }

    /// Reads back the payload at `place`, checking its checksum. A record not yet written
    /// by [`Log::sync`] cannot be read.
    #[cfg(test)]
    fn read(&self, place: Place) -> std::io::Result<Vec<u8>> {
        self.read_with(place, <[u8]>::to_vec)
    }

    /// Hands the payload at `place`, its checksum checked, to `read` where it lies: in a
    /// recent batch in memory, or read from the file. A record not yet written by
    /// [`Log::sync`] cannot be read.
    pub fn read_with<R>(&self, place: Place, read: impl FnOnce(&[u8]) -> R) -> std::io::Result<R> {
        let offset = place.offset();
        let written = self.written.load(Ordering::Acquire);
        // Whole records are written at once: one that starts below `written` is there.
        if offset >= written {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "record not written yet",
            ));
        }
        let read = match self.recent(place, read) {
            Ok(found) => return Ok(found),
            Err(read) => read,
        };
        let damaged = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("inbox log record at {offset} does not check"),
            )
        };
        let mut header = [0u8; HEADER];
        self.file.read_exact_at(&mut header, offset)?;
        let (len, crc) = split_header(header);
        let start = offset + HEADER as u64;
        if len > MAX_PAYLOAD || start + len as u64 > written {
            return Err(damaged());
        }
        let mut payload = vec![0u8; len];
        self.file.read_exact_at(&mut payload, start)?;
        if crc32fast::hash(&payload) != crc {
            return Err(damaged());
        }
        Ok(read(&payload))
    }

    /// Bytes of whole records, written or not.
    #[cfg(test)]
    fn len(&self) -> u64 {
        let tail = self.tail();
        tail.at + tail.pending.len() as u64
    }
}

/// Copies the `cut` bytes from `at` to `<path>.cut-<unix seconds>` before they are cut off.
/// After a crash they are a torn write nobody was told of; after damage in the middle of
/// the file they hold acknowledged records, and an operator may want them back.
fn keep_cut(file: &File, path: &Path, at: u64, cut: u64) -> std::io::Result<std::path::PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".cut-{secs}"));
    let kept = std::path::PathBuf::from(name);
    let mut source = file.try_clone()?;
    source.seek(SeekFrom::Start(at))?;
    let mut copy = File::create(&kept)?;
    std::io::copy(&mut source.take(cut), &mut copy)?;
    copy.sync_all()?;
    Ok(kept)
}

fn split_header(header: [u8; HEADER]) -> (usize, u32) {
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    (
        u32::from_le_bytes([l0, l1, l2, l3]) as usize,
        u32::from_le_bytes([c0, c1, c2, c3]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(path: &Path) -> (Log, Opened, Vec<Vec<u8>>) {
        let mut seen = Vec::new();
        let (log, opened) = Log::open(path, |_, p| {
            seen.push(p.to_vec());
            Ok(())
        })
        .unwrap();
        (log, opened, seen)
    }

    #[test]
    fn an_index_slot_for_a_place_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Option<Place>>(), 8);
        assert_eq!(Place::at(0).offset(), 0);
        assert_eq!(Place::at(1 << 50).offset(), 1 << 50);
    }

    #[test]
    fn records_come_back_in_order_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.log");
        let (log, opened, seen) = reopen(&path);
        assert_eq!((opened, seen.len()), (Opened::default(), 0));
        let places: Vec<Place> = (0..3u8)
            .map(|n| log.append(&vec![n; 10 + n as usize]).unwrap())
            .collect();
        // Appended, not yet written: not readable, and not in the file.
        assert_eq!(
            log.read(places[1]).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        log.sync().unwrap();
        assert_eq!(log.read(places[1]).unwrap(), vec![1u8; 11]);
        let whole = log.len();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        drop(log);

        let (log, opened, seen) = reopen(&path);
        assert_eq!(opened, Opened { records: 3, cut: 0 });
        assert_eq!(seen, [vec![0u8; 10], vec![1u8; 11], vec![2u8; 12]]);
        // Half a record at the end, as a crash mid-write leaves it.
        let torn = log.append(&[7u8; 100]).unwrap();
        log.sync().unwrap();
        drop(log);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(torn.offset() + 50).unwrap();
        drop(file);

        let (log, opened, seen) = reopen(&path);
        assert_eq!(
            opened,
            Opened {
                records: 3,
                cut: 50
            }
        );
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("inbox.log.cut-"))
            .collect();
        assert_eq!(kept.len(), 1, "the cut bytes are kept aside");
        assert_eq!(std::fs::read(dir.path().join(&kept[0])).unwrap().len(), 50);
        assert_eq!(seen.len(), 3);
        assert_eq!(log.len(), whole);
        // The next record goes where the torn one was, and is read back whole.
        let next = log.append(b"after the cut").unwrap();
        assert_eq!(next.offset(), whole);
        log.sync().unwrap();
        drop(log);
        let (_, opened, seen) = reopen(&path);
        assert_eq!(opened.records, 4);
        assert_eq!(seen[3], b"after the cut");
    }

    /// More batches than are kept in memory: every record reads back the same, from
    /// memory or from the file, and old batches' buffers are reused for new tails.
    #[test]
    fn reads_are_right_from_recent_batches_and_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = reopen(&dir.path().join("inbox.log"));
        let record = |n: usize| vec![(n % 251) as u8; 1000 + n % 7];
        let mut places = Vec::new();
        for batch in 0..120 {
            for i in 0..100 {
                places.push(log.append(&record(batch * 100 + i)).unwrap());
            }
            log.sync().unwrap();
        }
        let recent = log.recent_batches();
        assert!(recent.batches.len() < 120, "some batches were let go");
        assert!(recent.bytes <= RECENT_BYTES);
        assert!(recent.spare.is_some());
        drop(recent);
        for (n, place) in places.iter().enumerate() {
            assert_eq!(log.read(*place).unwrap(), record(n), "record {n}");
        }
        let in_memory = |place| log.recent(place, |_: &[u8]| ()).is_ok();
        assert!(
            !in_memory(places[0]),
            "the first batch is read from the file"
        );
        assert!(in_memory(places[places.len() - 1]));
    }

    #[test]
    fn a_damaged_record_ends_the_log_there_and_is_refused_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox.log");
        let (log, _, _) = reopen(&path);
        let first = log.append(b"first").unwrap();
        let second = log.append(b"second").unwrap();
        log.append(b"third").unwrap();
        log.sync().unwrap();
        assert_eq!(log.read(second).unwrap(), b"second", "from memory");
        drop(log);
        // Reopened: nothing recent in memory, reads go to the file.
        let (log, opened, _) = reopen(&path);
        assert_eq!(opened.records, 3);
        // One byte of the second payload flipped: later pages written, an earlier one not.
        let at = second.offset() + HEADER as u64 + 2;
        let mut byte = [0u8];
        log.file.read_exact_at(&mut byte, at).unwrap();
        log.file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
        assert_eq!(
            log.read(second).unwrap_err().kind(),
            std::io::ErrorKind::InvalidData
        );
        assert_eq!(log.read(first).unwrap(), b"first");
        drop(log);
        let (log, opened, seen) = reopen(&path);
        assert_eq!(seen, [b"first".to_vec()]);
        assert_eq!(opened.records, 1);
        assert_eq!(log.len(), second.offset());
    }
}
