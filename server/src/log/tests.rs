//! The segment log's tests: appends, crashes mid-write, torn tails, segments rolled
//! and removed.

use super::*;

/// Segments far larger than any test writes, unless a test says otherwise.
const BIG: u64 = 1 << 40;

fn reopen_with(dir: &Path, segment_bytes: u64) -> (Log, Opened, Vec<Vec<u8>>) {
    let mut seen = Vec::new();
    let (log, opened) = Log::open(dir, None, segment_bytes, |_, p: &[u8]| {
        seen.push(p.to_vec());
        Ok(())
    })
    .unwrap();
    (log, opened, seen)
}

fn reopen(dir: &Path) -> (Log, Opened, Vec<Vec<u8>>) {
    reopen_with(dir, BIG)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(Segment::name(start))
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
    let (log, opened, seen) = reopen(dir.path());
    assert_eq!(opened.records + opened.cut, 0);
    assert!(seen.is_empty());
    let places: Vec<Place> = (0..3u8)
        .map(|n| log.append(&vec![n; 10 + n as usize]).unwrap())
        .collect();
    // Appended, not yet written: not readable, and not in the file.
    assert_eq!(
        log.read(places[1]).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    let first = segment_path(dir.path(), 0);
    assert_eq!(std::fs::metadata(&first).unwrap().len(), 0);
    log.sync().unwrap();
    assert_eq!(log.read(places[1]).unwrap(), vec![1u8; 11]);
    let whole = log.len();
    assert_eq!(std::fs::metadata(&first).unwrap().len(), whole);
    drop(log);

    // A restart seals the segment and begins the next where it ends.
    let (log, opened, seen) = reopen(dir.path());
    assert_eq!((opened.records, opened.cut, opened.segments), (3, 0, 2));
    assert_eq!(seen, [vec![0u8; 10], vec![1u8; 11], vec![2u8; 12]]);
    assert_eq!(log.read(places[2]).unwrap(), vec![2u8; 12], "from the file");
    // Half a record at the end, as a crash mid-write leaves it.
    let torn = log.append(&[7u8; 100]).unwrap();
    assert_eq!(torn.offset(), whole);
    log.sync().unwrap();
    drop(log);
    let second = segment_path(dir.path(), whole);
    let file = OpenOptions::new().write(true).open(&second).unwrap();
    file.set_len(50).unwrap();
    drop(file);

    let (log, opened, seen) = reopen(dir.path());
    assert_eq!((opened.records, opened.cut), (3, 50));
    let kept: Vec<_> = names(dir.path())
        .into_iter()
        .filter(|name| name.contains(".log.cut-"))
        .collect();
    assert_eq!(kept.len(), 1, "the cut bytes are kept aside");
    assert_eq!(std::fs::read(dir.path().join(&kept[0])).unwrap().len(), 50);
    assert_eq!(seen.len(), 3);
    assert_eq!(log.len(), whole);
    // The emptied segment goes on as the active one: the next record goes where the
    // torn one was, and is read back whole.
    assert_eq!(opened.segments, 2);
    let next = log.append(b"after the cut").unwrap();
    assert_eq!(next.offset(), whole);
    log.sync().unwrap();
    drop(log);
    let (_, opened, seen) = reopen(dir.path());
    assert_eq!(opened.records, 4);
    assert_eq!(seen[3], b"after the cut");
}

/// More batches than are kept in memory: every record reads back the same, from
/// memory or from the file, and old batches' buffers are reused for new tails.
#[test]
fn reads_are_right_from_recent_batches_and_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen_with(dir.path(), 1 << 20);
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
    assert!(log.footprint().1 > 10, "a new segment after each MiB");
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

/// A segment is sealed once it holds `segment_bytes` (after the write that crossed
/// it) or when it began before a given time; sealed ones are removed oldest first,
/// and what they held can no longer be read.
#[test]
fn segments_are_sealed_by_size_or_age_and_removed_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen_with(dir.path(), 4096);
    let mut places = Vec::new();
    for n in 0..10u8 {
        places.push(log.append(&[n; 1000]).unwrap());
        log.sync().unwrap();
    }
    // 1,008 bytes a record: the fifth crosses 4,096 and the next goes to a new file.
    assert_eq!(places[5].offset(), 5 * 1008);
    assert_eq!(
        names(dir.path()),
        [Segment::name(0), Segment::name(5040), Segment::name(10080)]
    );
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(log.sealed_before(later), [0, 5040]);
    assert!(log.sealed_before(SystemTime::UNIX_EPOCH).is_empty());

    // Not yet old enough to seal; then old enough.
    log.seal_if_begun_before(SystemTime::UNIX_EPOCH);
    assert_eq!(log.sealed_before(later).len(), 2);
    log.seal_if_begun_before(later);
    assert_eq!(log.sealed_before(later).len(), 2, "the active one is empty");
    let last = log.append(b"last").unwrap();
    log.sync().unwrap();
    log.seal_if_begun_before(later);
    assert_eq!(log.sealed_before(later).len(), 3);

    let mut scanned = Vec::new();
    log.scan(5040, |place, payload| {
        scanned.push((place, payload[0]));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        scanned,
        (5..10).map(|n| (places[n], n as u8)).collect::<Vec<_>>()
    );
    assert_eq!(
        log.remove(5040).unwrap_err().kind(),
        std::io::ErrorKind::NotFound,
        "oldest first"
    );
    assert_eq!(log.remove(0).unwrap(), 5040);
    assert!(!segment_path(dir.path(), 0).exists());
    // Gone from memory too: the recent batches must not answer for it either.
    log.recent_batches().batches.clear();
    let gone = log.read(places[0]).unwrap_err();
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(log.read(places[5]).unwrap(), [5u8; 1000]);
    assert_eq!(
        log.remove(last.offset() + 12).unwrap_err().kind(),
        std::io::ErrorKind::NotFound,
        "the active segment is never removed"
    );
    drop(log);

    // Reopened, the log goes on where it ended, with the removed records gone.
    let (log, opened, seen) = reopen_with(dir.path(), 4096);
    assert_eq!(opened.records, 6);
    assert_eq!(seen.last().unwrap(), b"last");
    let next = log.append(b"next").unwrap();
    assert_eq!(next.offset(), last.offset() + 12);
    assert_eq!(log.read(places[7]).unwrap(), [7u8; 1000]);
}

/// When the next segment cannot be made (here a folder holds its name), the active one
/// goes on taking records, and a later write tries again, not every one.
#[test]
fn a_segment_that_cannot_be_made_leaves_the_log_writable() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen_with(dir.path(), 4096);
    std::fs::create_dir(segment_path(dir.path(), 5040)).unwrap();
    let mut places = Vec::new();
    for n in 0..8u8 {
        places.push(log.append(&[n; 1000]).unwrap());
        log.sync().unwrap();
    }
    assert_eq!(log.footprint(), (8 * 1008, 1), "all in the first segment");
    let retry_at = log.writing.lock().unwrap().retry_at;
    assert!(retry_at.is_some_and(|at| at > Instant::now()));
    for (n, place) in places.iter().enumerate() {
        assert_eq!(log.read(*place).unwrap(), [n as u8; 1000]);
    }
    // Once the pause is over, the next write makes the segment.
    log.writing.lock().unwrap().retry_at = Some(Instant::now());
    log.append(b"next").unwrap();
    log.sync().unwrap();
    assert_eq!(log.footprint().1, 2);
}

#[test]
fn a_log_from_before_segments_becomes_the_first_segment() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("inbox.log");
    let segments = dir.path().join("inbox");
    {
        let (log, _, _) = reopen(&segments);
        log.append(b"old").unwrap();
        log.sync().unwrap();
    }
    std::fs::rename(segment_path(&segments, 0), &legacy).unwrap();
    std::fs::remove_dir_all(&segments).unwrap();
    let mut seen = Vec::new();
    let (log, opened) = Log::open(&segments, Some(&legacy), BIG, |place, p: &[u8]| {
        seen.push((place, p.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(opened.records, 1);
    assert_eq!(seen, [(Place::at(0), b"old".to_vec())]);
    assert!(!legacy.exists());
    assert_eq!(log.read(Place::at(0)).unwrap(), b"old");
    drop(log);
    // Both at once is a folder someone put together by hand: refused, not merged.
    std::fs::write(&legacy, b"").unwrap();
    assert!(Log::open(&segments, Some(&legacy), BIG, |_, _| Ok(())).is_err());
}

/// Damage in a sealed segment loses the rest of that segment only: the next one
/// starts at a record of its own.
#[test]
fn a_damaged_record_ends_its_segment_and_is_refused_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen(dir.path());
    let first = log.append(b"first").unwrap();
    let second = log.append(b"second").unwrap();
    log.append(b"third").unwrap();
    log.sync().unwrap();
    assert_eq!(log.read(second).unwrap(), b"second", "from memory");
    drop(log);
    // Reopened: nothing recent in memory, reads go to the file; a new segment begins.
    let (log, opened, _) = reopen(dir.path());
    assert_eq!(opened.records, 3);
    let fourth = log.append(b"fourth").unwrap();
    log.sync().unwrap();
    drop(log);
    let (log, _, _) = reopen(dir.path());
    // One byte of the second payload flipped: later pages written, an earlier one not.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment_path(dir.path(), 0))
        .unwrap();
    let at = second.offset() + HEADER as u64 + 2;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
    assert_eq!(
        log.read(second).unwrap_err().kind(),
        std::io::ErrorKind::InvalidData
    );
    assert_eq!(log.read(first).unwrap(), b"first");
    drop(log);
    let (log, opened, seen) = reopen(dir.path());
    assert_eq!(seen, [b"first".to_vec(), b"fourth".to_vec()]);
    assert_eq!(
        (opened.records, opened.cut),
        (2, 14 + 13),
        "second and third"
    );
    assert_eq!(log.read(fourth).unwrap(), b"fourth");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Zeroes go ahead of the records; later records are written over them (the file does
/// not grow), and opening cuts them off quietly: no record lost, nothing kept aside.
#[test]
fn zeroes_go_ahead_of_the_records_and_are_cut_quietly_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen(dir.path());
    let first = segment_path(dir.path(), 0);
    let mut places = vec![log.append(&[1u8; 100]).unwrap()];
    log.sync().unwrap();
    assert!(log.begin_prefill());
    assert!(!log.begin_prefill(), "one prefill at a time");
    log.prefill().unwrap();
    let written = log.len();
    assert_eq!(file_len(&first), written + prefill::AHEAD);
    assert!(!log.begin_prefill(), "zeroes enough");
    for n in 2..=20u8 {
        places.push(log.append(&[n; 1000]).unwrap());
        log.sync().unwrap();
    }
    assert_eq!(
        file_len(&first),
        written + prefill::AHEAD,
        "written over zeroes"
    );
    assert_eq!(log.read(places[5]).unwrap(), [6u8; 1000]);
    // Records past the zeroes move their end on: a prefill starts after them.
    let big = vec![21u8; prefill::AHEAD as usize];
    places.push(log.append(&big).unwrap());
    log.sync().unwrap();
    let whole = log.len();
    assert_eq!(log.prefilled().to, whole);
    assert_eq!(file_len(&first), whole);
    assert!(log.begin_prefill());
    log.prefill().unwrap();
    assert_eq!(file_len(&first), whole + prefill::AHEAD);
    drop(log);

    let (log, opened, seen) = reopen(dir.path());
    assert_eq!((opened.records, opened.cut), (21, 0));
    assert_eq!(seen[19], [20u8; 1000]);
    assert_eq!(seen[20], big);
    assert_eq!(file_len(&first), whole, "the zeroes are cut off");
    assert!(!names(dir.path()).iter().any(|n| n.contains(".cut-")));
    assert_eq!(log.read(places[19]).unwrap(), [20u8; 1000]);
}

/// Zeroes stop at the end of the segment's share, and a sealed segment keeps its records
/// only.
#[test]
fn a_sealed_segment_is_cut_to_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen_with(dir.path(), 4096);
    for n in 0..6u8 {
        log.append(&[n + 1; 1000]).unwrap();
        log.sync().unwrap();
        if log.begin_prefill() {
            log.prefill().unwrap();
        }
        if n == 0 {
            assert_eq!(file_len(&segment_path(dir.path(), 0)), 4096);
        }
    }
    // The fifth record crossed 4,096 bytes: the segment was sealed after it.
    assert_eq!(file_len(&segment_path(dir.path(), 0)), 5 * 1008);
    assert_eq!(
        file_len(&segment_path(dir.path(), 5040)),
        4096,
        "zeroes to its end"
    );
    drop(log);
    let (_, opened, seen) = reopen_with(dir.path(), 4096);
    assert_eq!((opened.records, opened.cut), (6, 0));
    assert_eq!(seen[5], [6u8; 1000]);
}

/// A log with records reopens with a segment size as large as the config allows (it has
/// no upper bound), and fills zeroes ahead, without overflowing where they end.
#[test]
fn the_largest_segment_size_does_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen(dir.path());
    let place = log.append(&[1u8; 100]).unwrap();
    log.sync().unwrap();
    drop(log);
    let (log, _, _) = reopen_with(dir.path(), u64::MAX);
    log.append(&[2u8; 100]).unwrap();
    log.sync().unwrap();
    assert!(log.begin_prefill());
    log.prefill().unwrap();
    assert_eq!(log.prefilled().to, log.len() + prefill::AHEAD);
    assert_eq!(log.read(place).unwrap(), [1u8; 100]);
}

/// An empty record would read as zeroes: refused.
#[test]
fn an_empty_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen(dir.path());
    let refused = log.append(b"").unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);
    let place = log.append(b"x").unwrap();
    assert_eq!(place.offset(), 0, "nothing of the refused one is left");
}

/// A torn record in the zeroes (a crash mid-write) is still a torn tail: cut and kept
/// aside, zeroes and all.
#[test]
fn a_torn_record_among_the_zeroes_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen(dir.path());
    log.append(&[1u8; 100]).unwrap();
    log.sync().unwrap();
    assert!(log.begin_prefill());
    log.prefill().unwrap();
    let written = log.len();
    drop(log);
    let first = segment_path(dir.path(), 0);
    let file = OpenOptions::new().write(true).open(&first).unwrap();
    // A header promising 50 bytes, and 10 of them.
    let mut torn = 50u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[9u8; 14]);
    file.write_all_at(&torn, written).unwrap();
    drop(file);
    let (_, opened, _) = reopen(dir.path());
    assert_eq!((opened.records, opened.cut), (1, prefill::AHEAD));
    assert_eq!(
        names(dir.path())
            .iter()
            .filter(|n| n.contains(".cut-"))
            .count(),
        1
    );
}

/// Syncs and prefills at once, from two threads: neither writes over the other.
#[test]
fn syncs_and_prefills_at_once_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _, _) = reopen(dir.path());
    let log = Arc::new(log);
    let filler = {
        let log = log.clone();
        std::thread::spawn(move || {
            for _ in 0..2000 {
                if log.begin_prefill() {
                    log.prefill().unwrap();
                }
                std::thread::yield_now();
            }
        })
    };
    let mut expected = Vec::new();
    for n in 0..3000u32 {
        let record = vec![(n % 255) as u8 + 1; 100 + (n as usize * 37) % 3000];
        log.append(&record).unwrap();
        expected.push(record);
        if n % 3 == 0 {
            log.sync().unwrap();
        }
    }
    log.sync().unwrap();
    filler.join().unwrap();
    drop(log);
    let (_, opened, seen) = reopen(dir.path());
    assert_eq!(opened.cut, 0);
    assert!(seen == expected, "every record back, in order");
}
