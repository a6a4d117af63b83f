//! The inbox's unit tests: appends, retries, durability, retention and restarts.

use super::*;
use quiver_proto::{ClientMsgId, ReceiptOf};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// Opens sled at `path`, waiting while a handle dropped just before lets go of its lock
/// (sled's flusher thread ends on its own time; the node retries the same way).
fn sled_at(path: &Path) -> sled::Db {
    for _ in 0..100 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sled::open(path).unwrap()
}

/// What `owner`'s inbox holds, in order (up to nine entries).
fn kinds(inbox: &Inbox, owner: &UserId) -> Vec<EntryKind> {
    let entries = inbox.read(owner, Seq(1), Seq(9), 9).unwrap();
    entries.into_iter().map(|e| e.kind).collect()
}

fn chat(n: u128) -> EntryKind {
    EntryKind::Chat {
        id: ClientMsgId(n),
        sent_at_ms: 0,
        body: vec![n as u8],
        file: None,
    }
}

/// 4 KiB segments: a few [`big_chat`]s fill one.
fn small_segments(retention_secs: u64) -> InboxConfig {
    InboxConfig {
        retention_secs,
        segment_bytes: 4096,
        expire_every_secs: 1,
        ..InboxConfig::default()
    }
}

fn big_chat(n: u128) -> EntryKind {
    EntryKind::Chat {
        id: ClientMsgId(n),
        sent_at_ms: 0,
        body: vec![n as u8; 1000],
        file: None,
    }
}

#[tokio::test]
async fn appends_are_ordered_idempotent_and_published_when_durable() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled_at(&dir.path().join("db"));
    let (inbox, _task) = open(&db, dir.path()).unwrap();
    let (bob, alice) = (user("bob"), user("alice"));
    let mut durable = inbox.subscribe(&bob).unwrap();
    assert_eq!(*durable.borrow_and_update(), Seq(0));

    let first = inbox.append(&bob, &alice, chat(1));
    let first = first.unwrap().durable().await.unwrap();
    let second = inbox.append(&bob, &alice, chat(2));
    let second = second.unwrap();
    assert!(second.fresh);
    let second = second.durable().await.unwrap();
    let retry = inbox.append(&bob, &alice, chat(1)).unwrap();
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
    assert_eq!(inbox.get(&bob, Seq(2)).unwrap().unwrap(), entries[1]);
    assert!(inbox.get(&bob, Seq(3)).unwrap().is_none());
    assert!(inbox.read(&alice, Seq(1), Seq(10), 10).unwrap().is_empty());

    // The same id from another sender, and receipts of two kinds for one message,
    // are different messages.
    let carol = user("carol");
    let from_carol = inbox.append(&bob, &carol, chat(1)).unwrap();
    assert_eq!((from_carol.fresh, from_carol.seq), (true, Seq(3)));
    let receipt = |kind| EntryKind::Receipt {
        kind,
        id: ClientMsgId(1),
        seq: Seq(1),
    };
    let delivered = inbox.append(&alice, &bob, receipt(ReceiptKind::Delivered));
    let read = inbox.append(&alice, &bob, receipt(ReceiptKind::Read));
    assert_eq!(
        (delivered.unwrap().seq, read.unwrap().seq),
        (Seq(1), Seq(2))
    );
    let again = inbox
        .append(&alice, &bob, receipt(ReceiptKind::Read))
        .unwrap();
    assert_eq!((again.fresh, again.seq), (false, Seq(2)));
}

/// A framed read's frames are the frames of its entries, from the batches still in memory
/// and, after a restart, from the files.
#[tokio::test]
async fn framed_reads_frame_the_stored_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (bob, alice) = (user("bob"), user("alice"));
    let config = small_segments(0);
    for reopened in [false, true] {
        let db = sled_at(&dir.path().join("db"));
        let (inbox, task) = Inbox::open(&db, dir.path(), &config, Arc::default()).unwrap();
        if !reopened {
            for n in 1..=40 {
                let appended = inbox.append(&bob, &alice, big_chat(n)).unwrap();
                appended.durable().await.unwrap();
            }
        }
        let framed = inbox.read_framed(&bob, Seq(1), Seq(40), 40).unwrap();
        let entries = inbox.read(&bob, Seq(1), Seq(40), 40).unwrap();
        assert_eq!((framed.len(), entries.len()), (40, 40));
        for (framed, entry) in framed.iter().zip(&entries) {
            assert_eq!(&framed.entry, entry);
            assert_eq!(framed.frame, quiver_proto::encode_frame(entry).unwrap());
        }
        task.abort();
        drop(inbox);
        drop(db);
    }
}

/// DELIVERED receipts appended together are one entry, without the ones already given
/// (before, in the same batch, or before a restart).
#[tokio::test]
async fn receipts_go_in_one_entry_each_message_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    let config = small_segments(0);
    let of = |n: u64| ReceiptOf {
        id: ClientMsgId(u128::from(n)),
        seq: Seq(n),
    };
    let delivered = ReceiptKind::Delivered;
    {
        let db = sled_at(&dir.path().join("db"));
        let (inbox, task) = Inbox::open(&db, dir.path(), &config, Arc::default()).unwrap();
        let (one, new) = inbox
            .append_receipts(&alice, &bob, delivered, vec![of(1)], Urgency::Soon)
            .unwrap();
        assert_eq!((one.seq, new), (Seq(1), 1));
        one.durable().await.unwrap();
        let batch = vec![of(1), of(2), of(3), of(2)];
        let (more, new) = inbox
            .append_receipts(&alice, &bob, delivered, batch, Urgency::Now)
            .unwrap();
        assert_eq!((more.seq, new, more.fresh), (Seq(2), 2, true));
        more.durable().await.unwrap();
        let read = inbox
            .append_receipts(&alice, &bob, ReceiptKind::Read, vec![of(2)], Urgency::Now)
            .unwrap();
        assert_eq!((read.0.seq, read.1), (Seq(3), 1), "READ is another receipt");
        read.0.durable().await.unwrap();
        assert_eq!(
            kinds(&inbox, &alice),
            [
                EntryKind::Receipt {
                    kind: delivered,
                    id: ClientMsgId(1),
                    seq: Seq(1)
                },
                EntryKind::Receipts {
                    kind: delivered,
                    messages: vec![of(2), of(3)]
                },
                EntryKind::Receipt {
                    kind: ReceiptKind::Read,
                    id: ClientMsgId(2),
                    seq: Seq(2)
                },
            ]
        );
        task.abort();
    }
    let db = sled_at(&dir.path().join("db"));
    let (inbox, _task) = Inbox::open(&db, dir.path(), &config, Arc::default()).unwrap();
    let (again, new) = inbox
        .append_receipts(&alice, &bob, delivered, vec![of(3), of(2)], Urgency::Now)
        .unwrap();
    assert_eq!((again.fresh, new), (false, 0));
    again.durable().await.unwrap();
    let (next, new) = inbox
        .append_receipts(&alice, &bob, delivered, vec![of(3), of(4)], Urgency::Now)
        .unwrap();
    assert_eq!((next.seq, new), (Seq(4), 1));
}

#[tokio::test]
async fn heads_keys_and_cursors_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (bob, alice) = (user("bob"), user("alice"));
    let receipt = EntryKind::Receipt {
        kind: ReceiptKind::Delivered,
        id: ClientMsgId(1),
        seq: Seq(4),
    };
    {
        let db = sled_at(&dir.path().join("db"));
        let (inbox, task) = open(&db, dir.path()).unwrap();
        for n in 1..=3 {
            inbox
                .append(&bob, &alice, chat(n))
                .unwrap()
                .durable()
                .await
                .unwrap();
        }
        inbox
            .append(&alice, &bob, receipt.clone())
            .unwrap()
            .durable()
            .await
            .unwrap();
        inbox.set_cursor(&bob, DeviceId(9), Seq(2)).unwrap();
        db.flush().unwrap();
        drop(inbox);
        task.await.unwrap();
    }
    let db = sled_at(&dir.path().join("db"));
    let (inbox, _task) = open(&db, dir.path()).unwrap();
    assert_eq!(*inbox.subscribe(&bob).unwrap().borrow(), Seq(3));
    assert_eq!(*inbox.subscribe(&alice).unwrap().borrow(), Seq(1));
    assert_eq!(inbox.cursor(&bob, DeviceId(9)).unwrap(), Seq(2));
    // Retries after the restart find the appends from before it.
    let retry = inbox.append(&bob, &alice, chat(2)).unwrap();
    assert!(!retry.fresh);
    assert_eq!(retry.seq, Seq(2));
    let retry = inbox.append(&alice, &bob, receipt).unwrap();
    assert_eq!((retry.fresh, retry.seq), (false, Seq(1)));
    let seq = inbox
        .append(&bob, &alice, chat(4))
        .unwrap()
        .durable()
        .await
        .unwrap();
    assert_eq!(seq, Seq(4));
    assert_eq!(kinds(&inbox, &bob), [chat(1), chat(2), chat(3), chat(4)]);
}

/// Retention removes whole segments once old enough; each user's `seq`s go on from
/// where they were, after a restart too, and entries of a removal a crash cut short
/// (floor saved, file not yet deleted) do not come back.
#[tokio::test]
async fn expired_segments_go_and_seqs_go_on_above_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let (bob, alice) = (user("bob"), user("alice"));
    let config = small_segments(3600);
    let hours = |h: u64| SystemTime::now() + Duration::from_secs(h * 3600);
    {
        let db = sled_at(&dir.path().join("db"));
        let (inbox, task) = Inbox::open(&db, dir.path(), &config, Arc::default()).unwrap();
        for n in 1..=10 {
            let appended = inbox.append(&bob, &alice, big_chat(n)).unwrap();
            appended.durable().await.unwrap();
        }
        let receipt = EntryKind::Receipt {
            kind: ReceiptKind::Delivered,
            id: ClientMsgId(1),
            seq: Seq(1),
        };
        inbox
            .append(&alice, &bob, receipt)
            .unwrap()
            .durable()
            .await
            .unwrap();
        assert_eq!(inbox.expire(hours(0)).unwrap(), Expired::default());
        let expired = inbox.expire(hours(2)).unwrap();
        assert_eq!((expired.segments, expired.entries), (3, 11));
        assert!(expired.bytes > 10_000);
        assert!(inbox.read(&bob, Seq(1), Seq(10), 10).unwrap().is_empty());
        assert!(inbox.get(&bob, Seq(10)).unwrap().is_none());
        assert_eq!((inbox.floor(&bob), inbox.floor(&alice)), (Seq(10), Seq(1)));
        assert_eq!(*inbox.subscribe(&bob).unwrap().borrow(), Seq(10));
        let next = inbox.append(&bob, &alice, big_chat(11)).unwrap();
        assert_eq!(next.durable().await.unwrap(), Seq(11));
        drop(inbox);
        task.await.unwrap();
    }
    // A removal cut short: bob's floor saved at 11, the segment with 11 still there.
    {
        let db = sled_at(&dir.path().join("db"));
        let floors = db.open_tree("floors").unwrap();
        floors.insert("bob", &11u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let db = sled_at(&dir.path().join("db"));
    let (inbox, _task) = Inbox::open(&db, dir.path(), &config, Arc::default()).unwrap();
    assert_eq!(*inbox.subscribe(&bob).unwrap().borrow(), Seq(11));
    assert_eq!((inbox.floor(&bob), inbox.floor(&alice)), (Seq(11), Seq(1)));
    assert!(inbox.read(&bob, Seq(1), Seq(20), 20).unwrap().is_empty());
    let next = inbox.append(&bob, &alice, chat(12)).unwrap();
    assert_eq!(next.durable().await.unwrap(), Seq(12));
    let alices = inbox.append(&alice, &bob, chat(1)).unwrap();
    assert_eq!(alices.durable().await.unwrap(), Seq(2));
    let entries = inbox.read(&bob, Seq(1), Seq(20), 20).unwrap();
    assert_eq!(
        entries.into_iter().map(|e| e.kind).collect::<Vec<_>>(),
        [chat(12)]
    );
}

#[tokio::test]
async fn a_retention_of_zero_keeps_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (bob, alice) = (user("bob"), user("alice"));
    let db = sled_at(&dir.path().join("db"));
    let config = small_segments(0);
    let (inbox, _task) = Inbox::open(&db, dir.path(), &config, Arc::default()).unwrap();
    for n in 1..=8 {
        let appended = inbox.append(&bob, &alice, big_chat(n)).unwrap();
        appended.durable().await.unwrap();
    }
    assert!(inbox.footprint().1 > 1, "several segments");
    let far = SystemTime::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    assert_eq!(inbox.expire(far).unwrap(), Expired::default());
    assert_eq!(inbox.read(&bob, Seq(1), Seq(8), 8).unwrap().len(), 8);
}

/// A data folder from before the log: entries in sled's `inbox` tree, keyed
/// `e ‖ name length ‖ name ‖ seq`, with idempotency records beside them.
#[tokio::test]
async fn entries_an_older_node_kept_in_sled_move_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (bob, alice) = (user("bob"), user("alice"));
    {
        let db = sled_at(&dir.path().join("db"));
        let old = db.open_tree("inbox").unwrap();
        for n in 1..=2u64 {
            let entry = Entry {
                seq: Seq(n),
                peer: alice.clone(),
                kind: chat(u128::from(n)),
            };
            let mut key = vec![b'e', 3];
            key.extend_from_slice(b"bob");
            key.extend_from_slice(&n.to_be_bytes());
            old.insert(key, postcard::to_stdvec(&entry).unwrap())
                .unwrap();
        }
        old.insert(b"d\x03bobcsomething", &1u64.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    // One sled handle for both opens: reopening sled itself right after dropping it can
    // find its lock still held by its flusher thread (the node retries; see node.rs).
    let db = sled_at(&dir.path().join("db"));
    for _ in 0..2 {
        let (inbox, task) = open(&db, dir.path()).unwrap();
        assert!(!db.tree_names().iter().any(|n| n == b"inbox"));
        assert_eq!(*inbox.subscribe(&bob).unwrap().borrow(), Seq(2));
        assert_eq!(kinds(&inbox, &bob), [chat(1), chat(2)]);
        let retry = inbox.append(&bob, &alice, chat(2)).unwrap();
        assert_eq!((retry.fresh, retry.seq), (false, Seq(2)));
        drop(inbox);
        task.await.unwrap();
    }
}

#[tokio::test]
async fn a_full_share_refuses_new_chats_until_retention_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let (bob, alice) = (user("bob"), user("alice"));
    let config = InboxConfig {
        max_bytes_per_sender: 10_000,
        ..small_segments(3600)
    };
    let hours = |h: u64| SystemTime::now() + Duration::from_secs(h * 3600);
    let db = sled_at(&dir.path().join("db"));
    let (inbox, _task) = Inbox::open(&db, dir.path(), &config, Arc::default()).unwrap();
    for n in 1..=10 {
        let appended = inbox.append(&bob, &alice, big_chat(n)).unwrap();
        appended.durable().await.unwrap();
    }
    assert!(matches!(
        inbox.append(&bob, &alice, big_chat(11)),
        Err(InboxError::Full)
    ));
    // A retry of what is stored still finds it; receipts are not counted.
    assert!(!inbox.append(&bob, &alice, big_chat(10)).unwrap().fresh);
    let receipt = EntryKind::Receipt {
        kind: ReceiptKind::Read,
        id: ClientMsgId(1),
        seq: Seq(1),
    };
    let receipt = inbox.append(&alice, &bob, receipt).unwrap();
    receipt.durable().await.unwrap();
    // Alice's chats in Bob's inbox go: her share is free again.
    assert_eq!(inbox.expire(hours(2)).unwrap().entries, 11);
    let next = inbox.append(&bob, &alice, big_chat(11)).unwrap();
    assert_eq!(next.durable().await.unwrap(), Seq(11));
}
