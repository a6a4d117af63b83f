//! The inbox log: append-only segment files of framed, checksummed records.
//!
//! A record is `length (u32 LE) ‖ CRC-32 of the payload (u32 LE) ‖ payload`. Appends
//! collect in memory; [`Log::sync`] writes all of them with one `pwrite` at the end of
//! the active segment and makes them durable (`fdatasync`); the inbox calls it through
//! group commit. Opening reads every segment and keeps, in each, the longest prefix of
//! whole records whose checksums hold: a crash can tear the tail (a record half written,
//! or later pages written and earlier ones not), and that tail was never synced, so never
//! acknowledged. It is cut off (and kept aside, in case it was damage instead).
//!
//! Segments: a [`Place`] is a record's offset in the log as if it were one file, and a
//! segment is named by the offset it starts at (`<offset, 20 digits>.log`). The active
//! segment is sealed and a new one begun once it holds [`Log::open`]'s `segment_bytes`, or
//! when [`Log::seal_if_begun_before`] says so, and at every open (so a restart never
//! writes into a segment it did not begin). Retention removes whole sealed segments,
//! oldest first ([`Log::remove`]): no record is ever moved or rewritten. Damage inside one
//! segment loses the rest of that segment only: the next starts at a record boundary.
//!
//! Past the end of the records the active segment holds zeroes, written ahead of them off
//! the commit path (`prefill`), so that a sync overwrites blocks instead of growing the
//! file, which costs a journal commit; a header of zeroes is no record, and opening cuts
//! such a tail off without counting it as damage.
//!
//! A failed `fdatasync` is final: Linux may have dropped the dirty pages it could not
//! write, so a later sync that succeeds would prove nothing about them. Every later sync
//! fails too, the node stops acknowledging, and a restart reads what really is on disk.
//!
//! The log knows nothing of what a payload means; [`crate::inbox`] does.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

mod prefill;

use prefill::{all_zeroes, Prefilled};

const HEADER: usize = 8;
/// Largest payload a record may carry; a length above it marks a torn or foreign tail.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Where a record is: what [`Log::append_with`] returns and [`Log::read_with`] takes.
/// Its offset in the log, plus one: an index holds one per stored entry, and the niche
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

/// One segment file.
struct Segment {
    /// Where it starts in the log.
    start: u64,
    file: File,
    path: PathBuf,
    /// When it was sealed (its last write): set once, when a newer segment begins.
    sealed: OnceLock<SystemTime>,
}

impl Segment {
    fn name(start: u64) -> String {
        format!("{start:020}.log")
    }

    fn start_of(name: &str) -> Option<u64> {
        let digits = name.strip_suffix(".log")?;
        let well_formed = digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit());
        well_formed.then(|| digits.parse().ok()).flatten()
    }

    fn open(dir: &Path, start: u64) -> std::io::Result<Segment> {
        let path = dir.join(Segment::name(start));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        Ok(Segment {
            start,
            file,
            path,
            sealed: OnceLock::new(),
        })
    }
}

/// The open log.
pub struct Log {
    dir: PathBuf,
    /// Every segment by where it starts; the last is the active one.
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    tail: Mutex<Tail>,
    /// Held while [`Log::sync`] writes and syncs, so the log grows in order.
    writing: Mutex<Active>,
    /// A segment holding this many bytes is sealed after its next write.
    segment_bytes: u64,
    /// Bytes of whole records in the log; what [`Log::read_with`] may read.
    written: AtomicU64,
    /// An `fdatasync` failed: see the module doc.
    failed: AtomicBool,
    /// The last batches written, newest last: the push loops read what was just synced,
    /// and find it here without a `pread`.
    recent: RwLock<Recent>,
    /// How far the active segment's file holds zeroes or records ([`prefill`]).
    prefilled: Mutex<Prefilled>,
    /// [`Prefilled::to`], read without the lock.
    prefilled_to: AtomicU64,
    /// Where the active segment's zeroes stop: its start plus `segment_bytes`.
    prefill_limit: AtomicU64,
    /// A [`Log::prefill`] runs.
    prefilling: AtomicBool,
}

/// The segment [`Log::sync`] writes to.
struct Active {
    segment: Arc<Segment>,
    /// When it was begun.
    begun: SystemTime,
    /// Making the next segment failed; not tried again before this.
    retry_at: Option<Instant>,
}

/// Least time between two tries to make the next segment after one failed: [`Log::sync`]
/// runs hundreds of times a second under load.
const RETRY_SEGMENT: Duration = Duration::from_secs(1);

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
    /// Where `pending` starts in the log.
    at: u64,
    pending: Vec<u8>,
}

/// What opening found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Whole records kept.
    pub records: u64,
    /// Bytes cut off the ends of segments (torn tails, or damage).
    pub cut: u64,
    /// Segment files, the new active one included.
    pub segments: usize,
}

impl Log {
    /// Opens (or creates) the log in folder `dir`, hands every whole record to `each` in
    /// order, cuts off what follows the last whole record of each segment, and begins a
    /// new active segment. A log from before segments, one file at `legacy`, becomes the
    /// first segment.
    pub fn open(
        dir: &Path,
        legacy: Option<&Path>,
        segment_bytes: u64,
        mut each: impl FnMut(Place, &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<(Log, Opened)> {
        std::fs::create_dir_all(dir)?;
        let mut starts = segment_starts(dir)?;
        if let Some(old) = legacy.filter(|old| old.exists()) {
            if !starts.is_empty() {
                return Err(std::io::Error::other(format!(
                    "both {} and segments in {} exist; move one away",
                    old.display(),
                    dir.display()
                )));
            }
            std::fs::rename(old, dir.join(Segment::name(0)))?;
            tracing::info!(from = %old.display(), "the inbox log is now the first segment");
            sync_dir(dir)?;
            starts.push(0);
        }
        let mut segments = BTreeMap::new();
        let mut opened = Opened::default();
        let mut end = 0;
        for (i, &start) in starts.iter().enumerate() {
            let segment = Segment::open(dir, start)?;
            // A segment never reaches into the next one's range.
            let room = starts.get(i + 1).map_or(u64::MAX, |next| next - start);
            let (kept, records) = read_segment(&segment, room, &mut each)?;
            let size = segment.file.metadata()?.len();
            if size > kept && all_zeroes(&segment.file, kept, size - kept)? {
                // Zeroes written ahead of the records ([`prefill`]), not damage.
                segment.file.set_len(kept)?;
            } else if size > kept {
                let saved = keep_cut(&segment.file, &segment.path, kept, size - kept)?;
                tracing::warn!(path = %segment.path.display(), kept_at = %saved.display(), at = kept, cut = size - kept, "cut a torn or damaged tail off an inbox log segment");
                segment.file.set_len(kept)?;
                opened.cut += size - kept;
            }
            // What a crashed process wrote may be in the page cache only; what is indexed
            // now counts as durable, so make it so.
            segment.file.sync_all()?;
            opened.records += records;
            end = start + kept;
            segments.insert(start, Arc::new(segment));
        }
        // The last segment goes on as the active one only if it is empty.
        let active = match segments.last_key_value() {
            Some((&start, last)) if start == end => last.clone(),
            _ => {
                let active = Arc::new(Segment::open(dir, end)?);
                segments.insert(end, active.clone());
                active
            }
        };
        for segment in segments.values().filter(|s| s.start != end) {
            // Its last write: sealed segments are never written again.
            let _ = segment.sealed.set(segment.file.metadata()?.modified()?);
        }
        // A new file's name must survive a crash too.
        sync_dir(dir)?;
        opened.segments = segments.len();
        let segment_bytes = segment_bytes.max(1);
        let prefilled = Prefilled::new(active.clone(), end);
        Ok((
            Log {
                dir: dir.to_path_buf(),
                segments: RwLock::new(segments),
                tail: Mutex::new(Tail {
                    at: end,
                    pending: Vec::new(),
                }),
                writing: Mutex::new(Active {
                    segment: active,
                    begun: SystemTime::now(),
                    retry_at: None,
                }),
                segment_bytes,
                written: AtomicU64::new(end),
                failed: AtomicBool::new(false),
                recent: RwLock::default(),
                prefilled: Mutex::new(prefilled),
                prefilled_to: AtomicU64::new(end),
                prefill_limit: AtomicU64::new(end.saturating_add(segment_bytes)),
                prefilling: AtomicBool::new(false),
            },
            opened,
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
        if len == 0 {
            // Its header would be all zeroes, which [`prefill`] writes ahead of records.
            tail.pending.truncate(start);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty record",
            ));
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
        let mut active = self.writing.lock().unwrap_or_else(|p| p.into_inner());
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
        let segment = active.segment.clone();
        if let Err(e) = self.write_records(&segment, at, &records) {
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
        let synced = segment.file.sync_data();
        if let Err(e) = &synced {
            tracing::error!(error = %e, "fdatasync of the inbox log failed; no more appends will be acknowledged");
            self.failed.store(true, Ordering::Release);
        } else if written - segment.start >= self.segment_bytes {
            self.begin_segment(&mut active, written);
        }
        synced
    }

    /// Seals the active segment if it holds records and was begun before `cutoff`, so
    /// that retention can remove it in time even when little is written.
    pub fn seal_if_begun_before(&self, cutoff: SystemTime) {
        let mut active = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let written = self.written.load(Ordering::Acquire);
        let holds_records = written > active.segment.start;
        if holds_records && active.begun < cutoff && !self.failed.load(Ordering::Acquire) {
            self.begin_segment(&mut active, written);
        }
    }

    /// Seals the active segment and begins the next at `at`, the end of what is written.
    /// If the new file cannot be made, the active segment goes on, and it is tried again
    /// after a write [`RETRY_SEGMENT`] later.
    fn begin_segment(&self, active: &mut Active, at: u64) {
        if active.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let begun = Segment::open(&self.dir, at).and_then(|s| sync_dir(&self.dir).map(|()| s));
        match begun {
            Ok(segment) => {
                let now = SystemTime::now();
                let _ = active.segment.sealed.set(now);
                let segment = Arc::new(segment);
                self.prefill_next(&active.segment, at, segment.clone());
                self.segments_mut().insert(at, segment.clone());
                *active = Active {
                    segment,
                    begun: now,
                    retry_at: None,
                };
            }
            Err(e) => {
                tracing::error!(error = %e, "could not begin a new inbox log segment");
                active.retry_at = Some(Instant::now() + RETRY_SEGMENT);
            }
        }
    }

    fn segments_mut(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<Segment>>> {
        self.segments.write().unwrap_or_else(|p| p.into_inner())
    }

    fn segment_at(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        let (_, segment) = segments.range(..=offset).next_back()?;
        Some(segment.clone())
    }

    /// Where the sealed segments start, oldest first, up to the first that is not sealed
    /// or was sealed after `cutoff`: what retention may remove ([`Log::scan`],
    /// [`Log::remove`]), in the order it must.
    pub fn sealed_before(&self, cutoff: SystemTime) -> Vec<u64> {
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        segments
            .values()
            .map_while(|s| (*s.sealed.get()? <= cutoff).then_some(s.start))
            .collect()
    }

    /// Hands every record of the sealed segment at `start` to `each`, in order.
    pub fn scan(
        &self,
        start: u64,
        mut each: impl FnMut(Place, &[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let segment = self
            .segment_at(start)
            .filter(|s| s.start == start && s.sealed.get().is_some())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such segment"))?;
        read_segment(&segment, u64::MAX, &mut each).map(drop)
    }

    /// Removes the oldest segment, which starts at `start` and must be sealed: its records
    /// can no longer be read. Oldest first, so that [`Log::read_with`] of a place in it
    /// finds no segment, never the one before. Returns its size in bytes.
    pub fn remove(&self, start: u64) -> std::io::Result<u64> {
        let segment = {
            let mut segments = self.segments_mut();
            match segments.first_key_value() {
                Some((&first, s)) if first == start && s.sealed.get().is_some() => {
                    segments.pop_first().map(|(_, s)| s)
                }
                _ => None,
            }
        };
        let Some(segment) = segment else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not the oldest segment, or not sealed",
            ));
        };
        let size = segment.file.metadata()?.len();
        std::fs::remove_file(&segment.path)?;
        sync_dir(&self.dir)?;
        Ok(size)
    }

    /// Bytes from the oldest segment's start to the end of what is written (the files'
    /// sizes, give or take bytes cut at open), and how many segment files there are.
    pub fn footprint(&self) -> (u64, usize) {
        let segments = self.segments.read().unwrap_or_else(|p| p.into_inner());
        let (first, count) = (segments.keys().next().copied(), segments.len());
        let bytes = first.map_or(0, |first| self.written.load(Ordering::Acquire) - first);
        (bytes, count)
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
        let Some(segment) = self.segment_at(offset) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("inbox log record at {offset} was removed"),
            ));
        };
        let within = offset - segment.start;
        let mut header = [0u8; HEADER];
        segment.file.read_exact_at(&mut header, within)?;
        let (len, crc) = split_header(header);
        if len > MAX_PAYLOAD || offset + (HEADER + len) as u64 > written {
            return Err(damaged());
        }
        let mut payload = vec![0u8; len];
        segment
            .file
            .read_exact_at(&mut payload, within + HEADER as u64)?;
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

/// Reads the segment's records from its start, at most `room` bytes of them, handing
/// each whole one to `each`; stops at the first that is torn or does not check. Returns
/// the bytes of whole records and how many there were.
fn read_segment(
    segment: &Segment,
    room: u64,
    each: &mut impl FnMut(Place, &[u8]) -> std::io::Result<()>,
) -> std::io::Result<(u64, u64)> {
    let size = segment.file.metadata()?.len().min(room);
    let mut reader = BufReader::with_capacity(1 << 20, &segment.file);
    let (mut end, mut records) = (0u64, 0u64);
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; HEADER];
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let (len, crc) = split_header(header);
        // Length 0: zeroes written ahead of the records ([`prefill`]), no record.
        if len == 0 || len > MAX_PAYLOAD || end + (HEADER + len) as u64 > size {
            break;
        }
        payload.resize(len, 0);
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            break;
        }
        each(Place::at(segment.start + end), &payload)?;
        end += (HEADER + len) as u64;
        records += 1;
    }
    Ok((end, records))
}

/// Where the segments in `dir` start, in order.
fn segment_starts(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut starts = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let name = item?.file_name();
        if let Some(start) = name.to_str().and_then(Segment::start_of) {
            starts.push(start);
        }
    }
    starts.sort_unstable();
    Ok(starts)
}

/// Makes the folder's list of names durable: a new or removed segment survives a crash.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
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
mod tests;
