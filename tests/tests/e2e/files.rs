//! File messages end to end: a 256 MiB file while chat goes on, resumed uploads and
//! downloads, offline recipients, quotas and sizes, corruption, and collection.

use anyhow::{bail, Context};
use quiver_proto::files::{sealed_len, BlobId, FileResponse};
use quiver_proto::{encode_frame, ConversationRequest, ConversationResponse, ErrorCode};
use quiver_sdk::{Client, Event, Events, FileError, FileOffer, Seq};
use quiver_tests::{files_below, next_event, TestNode, TestUser, WAIT};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use quiver_bench::files::random_file;

/// The next message that carries a file.
pub async fn next_file(events: &mut Events) -> anyhow::Result<(Seq, FileOffer)> {
    loop {
        match next_event(events).await? {
            Event::Message(m) => {
                if let Some(file) = m.file {
                    return Ok((m.seq, file));
                }
            }
            Event::Receipt(_) => {}
            other => bail!("unexpected event {other:?}"),
        }
    }
}

fn same_bytes(a: &Path, b: &Path) -> anyhow::Result<bool> {
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}

struct Pair {
    node: TestNode,
    alice: TestUser,
    bob: TestUser,
    dir: tempfile::TempDir,
}

async fn pair_with(adjust: impl FnOnce(&mut quiver_server::Config)) -> anyhow::Result<Pair> {
    let node = TestNode::start_with(adjust).await?;
    let alice = node.user("alice").await?;
    let bob = node.user("bob").await?;
    node.befriend(&alice, &bob).await?;
    Ok(Pair {
        node,
        alice,
        bob,
        dir: tempfile::tempdir()?,
    })
}

/// How often the chat next to a transfer sends: a brisk conversation, not a flood.
const CHAT_PACE: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_file_arrives_whole_while_chat_in_the_same_pair_keeps_flowing(
) -> anyhow::Result<()> {
    use quiver_bench::files::{beside, offers_of, receipts_of, Chat};
    let p = pair_with(|c| c.files.max_file_bytes = 1 << 30).await?;
    let source = p.dir.path().join("big.bin");
    let len = 256 << 20;
    random_file(&source, len, 256)?;
    let (alice, alice_events) = p.node.connect(&p.alice).await?;
    let (bob, bob_events) = p.node.connect(&p.bob).await?;
    let mut receipts = receipts_of(alice_events);
    let mut offers = offers_of(bob_events);

    let mut idle = Chat::default();
    for _ in 0..50 {
        idle.one(&alice, &p.bob.id, &mut receipts).await?;
    }
    let upload = alice.send_file(&p.bob.id, &source, "application/octet-stream", |_| {});
    let (during_upload, sent, upload_time) =
        beside(upload, CHAT_PACE, &alice, &p.bob.id, &mut receipts).await?;
    let sent = sent?;
    assert_eq!(sent.file.size, sealed_len(len as u64));
    assert_eq!(sent.report.starts, [0], "one clean run");
    assert!(
        during_upload.count() >= 10,
        "chat kept flowing during the upload: only {} chats got SENT and DELIVERED",
        during_upload.count()
    );

    let offer = tokio::time::timeout(WAIT, offers.recv())
        .await?
        .context("bob's events ended")?;
    assert_eq!(offer.info.name, "big.bin");
    assert_eq!(offer.info.size, len as u64);
    let target = p.dir.path().join("received.bin");
    let download = bob.download(&offer, &target, |_| {});
    let (during_download, report, download_time) =
        beside(download, CHAT_PACE, &alice, &p.bob.id, &mut receipts).await?;
    assert_eq!(report?.starts, [0]);
    assert!(same_bytes(&source, &target)?, "byte-identical");

    let mib = len as f64 / (1 << 20) as f64;
    println!(
        "256 MiB: upload {:.1} MiB/s ({upload_time:.2?}), download {:.1} MiB/s ({download_time:.2?})",
        mib / upload_time.as_secs_f64(),
        mib / download_time.as_secs_f64(),
    );
    println!("chat idle: {}", idle.figures());
    println!("chat during upload: {}", during_upload.figures());
    println!("chat during download: {}", during_download.figures());
    Ok(())
}

/// Closes the client's connection (as a lost network would) once a transfer passes
/// `fraction` of its bytes, once.
fn cut_at(client: &Client, fraction: f64) -> impl FnMut(quiver_sdk::Progress) + Send + 'static {
    let client = client.clone();
    let mut cut = false;
    move |progress| {
        if !cut && progress.done as f64 > progress.total as f64 * fraction {
            cut = true;
            if let Some(conn) = client.connection() {
                conn.close(0u32.into(), b"test: network lost");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_downloads_resume_after_a_lost_connection() -> anyhow::Result<()> {
    let p = pair_with(|_| {}).await?;
    let source = p.dir.path().join("photo.jpg");
    let len = 12 << 20;
    random_file(&source, len, 7)?;
    let (alice, _alice_events) = p.node.connect(&p.alice).await?;
    let (bob, mut bob_events) = p.node.connect(&p.bob).await?;

    let sent = alice
        .send_file(&p.bob.id, &source, "image/jpeg", cut_at(&alice, 0.4))
        .await?;
    let size = sent.file.size;
    let starts = &sent.report.starts;
    assert_eq!(starts.len(), 2, "one resume: {starts:?}");
    assert!(
        starts[1] > size * 3 / 10,
        "resumed from {} of {size}, not from zero",
        starts[1]
    );
    assert!(
        sent.report.sent_or_received < size + size / 4,
        "sent {} bytes for a file of {size}",
        sent.report.sent_or_received
    );

    let (_, offer) = next_file(&mut bob_events).await?;
    assert_eq!(offer.info.media_type, "image/jpeg");
    let target = p.dir.path().join("photo-received.jpg");
    let report = bob.download(&offer, &target, cut_at(&bob, 0.5)).await?;
    assert_eq!(report.starts.len(), 2, "one resume: {:?}", report.starts);
    assert!(report.starts[1] > size * 4 / 10, "{:?}", report.starts);
    assert!(
        report.sent_or_received < size + size / 4,
        "received {} bytes for a file of {size}",
        report.sent_or_received
    );
    assert!(same_bytes(&source, &target)?);
    assert!(!quiver_sdk::files::part_path(&target).exists());
    Ok(())
}

#[tokio::test]
async fn a_file_sent_while_the_recipient_is_offline_arrives_when_it_connects() -> anyhow::Result<()>
{
    let p = pair_with(|_| {}).await?;
    let source = p.dir.path().join("notes.txt");
    random_file(&source, 300_000, 11)?;
    let (alice, _alice_events) = p.node.connect(&p.alice).await?;
    let sent = alice
        .send_file(&p.bob.id, &source, "text/plain", |_| {})
        .await?;
    alice.close().await;

    let (bob, mut bob_events) = p.node.connect(&p.bob).await?;
    let (seq, offer) = next_file(&mut bob_events).await?;
    assert_eq!(seq, sent.sent.seq);
    let target = p.dir.path().join("notes-received.txt");
    bob.download(&offer, &target, |_| {}).await?;
    assert!(same_bytes(&source, &target)?);
    Ok(())
}

#[tokio::test]
async fn over_size_and_over_quota_are_refused_before_any_byte_is_stored() -> anyhow::Result<()> {
    let p = pair_with(|c| {
        c.files.max_file_bytes = 1 << 20;
        c.files.quota_bytes = 2 << 20;
    })
    .await?;
    let (alice, _events) = p.node.connect(&p.alice).await?;
    let partial = p.node.data_dir().join("blobs").join("partial");
    let big = p.dir.path().join("big.bin");
    random_file(&big, 1 << 20, 1)?; // 1 MiB plaintext is over 1 MiB sealed
    let refused = alice.send_file(&p.bob.id, &big, "x/y", |_| {}).await;
    assert_eq!(
        refused.err(),
        Some(FileError::Refused(ErrorCode::FileTooLarge))
    );
    assert!(files_below(&partial).is_empty(), "nothing stored");
    assert_eq!(p.node.node().file_usage(&p.alice.id), 0);

    for seed in [2, 3] {
        let file = p.dir.path().join(format!("ok-{seed}.bin"));
        random_file(&file, 900 << 10, seed)?;
        alice.send_file(&p.bob.id, &file, "x/y", |_| {}).await?;
    }
    let used = p.node.node().file_usage(&p.alice.id);
    assert_eq!(used, 2 * sealed_len(900 << 10));
    let third = p.dir.path().join("third.bin");
    random_file(&third, 900 << 10, 4)?;
    let refused = alice.send_file(&p.bob.id, &third, "x/y", |_| {}).await;
    assert_eq!(
        refused.err(),
        Some(FileError::Refused(ErrorCode::QuotaExceeded))
    );
    assert!(files_below(&partial).is_empty(), "nothing stored");
    assert_eq!(p.node.node().file_usage(&p.alice.id), used);
    Ok(())
}

/// The blob file of `blob` in the node's store.
fn blob_path(node: &TestNode, blob: &BlobId) -> PathBuf {
    node.data_dir().join("blobs").join(blob.to_hex())
}

#[tokio::test]
async fn a_corrupted_chunk_is_detected_on_download_and_on_upload() -> anyhow::Result<()> {
    let p = pair_with(|_| {}).await?;
    let source = p.dir.path().join("doc.pdf");
    random_file(&source, 1 << 20, 5)?;
    let (alice, _alice_events) = p.node.connect(&p.alice).await?;
    let sent = alice
        .send_file(&p.bob.id, &source, "application/pdf", |_| {})
        .await?;

    // Flip one byte of the stored blob, in chunk 3.
    let stored = blob_path(&p.node, &sent.file.blob);
    let mut bytes = std::fs::read(&stored)?;
    bytes[3 * quiver_proto::files::SEALED_CHUNK_LEN + 100] ^= 0x40;
    std::fs::write(&stored, &bytes)?;

    let (bob, mut bob_events) = p.node.connect(&p.bob).await?;
    let (_, offer) = next_file(&mut bob_events).await?;
    let target = p.dir.path().join("doc-received.pdf");
    let outcome = bob.download(&offer, &target, |_| {}).await;
    match outcome {
        Err(FileError::Corrupt(why)) => assert!(why.contains("chunk 3"), "{why}"),
        other => bail!("expected a corrupt chunk, got {other:?}"),
    }
    assert!(!target.exists());
    assert!(!quiver_sdk::files::part_path(&target).exists());

    // Upload bytes that do not match the id they claim: refused, nothing kept.
    let (conn, _control, _recv, _) = crate::raw::hello(&p.node, &p.alice.login.token).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let data = vec![9u8; 5000];
    let claimed = BlobId([1; 32]);
    let upload = ConversationRequest::Upload {
        blob: claimed,
        size: data.len() as u64,
    };
    send.write_all(&encode_frame(&upload)?).await?;
    let ready: FileResponse = crate::raw::read_one(&mut recv).await?;
    assert_eq!(
        ready,
        FileResponse::Ready {
            offset: 0,
            size: 5000
        }
    );
    send.write_all(&data).await?;
    send.finish()?;
    let answer: FileResponse = crate::raw::read_one(&mut recv).await?;
    assert!(
        matches!(
            answer,
            FileResponse::Error {
                code: ErrorCode::Corrupt,
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(!blob_path(&p.node, &claimed).exists());
    let partial = p.node.data_dir().join("blobs").join("partial");
    assert!(files_below(&partial).is_empty());
    Ok(())
}

#[tokio::test]
async fn only_friends_of_the_sender_can_download_and_unreferenced_blobs_are_collected(
) -> anyhow::Result<()> {
    let p = pair_with(|c| {
        c.files.retention_secs = 1;
        c.files.upload_ttl_secs = 1;
    })
    .await?;
    let carol = p.node.user("carol").await?;
    let source = p.dir.path().join("a.bin");
    random_file(&source, 100_000, 9)?;
    let (alice, _alice_events) = p.node.connect(&p.alice).await?;
    let sent = alice.send_file(&p.bob.id, &source, "x/y", |_| {}).await?;
    let (bob, mut bob_events) = p.node.connect(&p.bob).await?;
    let (_, offer) = next_file(&mut bob_events).await?;

    // Carol is not Alice's friend: the blob does not exist for her.
    let (carol_client, _carol_events) = p.node.connect(&carol).await?;
    carol_client.set_key(p.alice.id.clone(), quiver_sdk::FriendKey([0; 32]));
    let target = p.dir.path().join("carol.bin");
    let outcome = carol_client.download(&offer, &target, |_| {}).await;
    assert_eq!(outcome.err(), Some(FileError::Refused(ErrorCode::NotFound)));

    // Referred to by a message younger than the retention: kept.
    assert_eq!(p.node.node().collect_blobs()?.blobs, 0);
    assert!(blob_path(&p.node, &sent.file.blob).exists());
    // An upload nobody finishes: a raw stream that sends half and stops.
    let (conn, _control, _recv, _) = crate::raw::hello(&p.node, &p.alice.login.token).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let upload = ConversationRequest::Upload {
        blob: BlobId([2; 32]),
        size: 4000,
    };
    send.write_all(&encode_frame(&upload)?).await?;
    let _ready: FileResponse = crate::raw::read_one(&mut recv).await?;
    send.write_all(&[1u8; 2000]).await?;
    conn.close(0u32.into(), b"gone");
    // The small unfinished upload counts as the minimum charge (64 KiB), not 4000 bytes.
    let usage = p.node.node().file_usage(&p.alice.id);
    assert_eq!(usage, sent.file.size + 64 * 1024);

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let collected = p.node.node().collect_blobs()?;
    assert_eq!(
        (collected.blobs, collected.uploads),
        (1, 1),
        "{collected:?}"
    );
    assert_eq!(p.node.node().file_usage(&p.alice.id), 0, "quota given back");
    assert!(!blob_path(&p.node, &sent.file.blob).exists());
    let target = p.dir.path().join("late.bin");
    let outcome = bob.download(&offer, &target, |_| {}).await;
    assert_eq!(outcome.err(), Some(FileError::Refused(ErrorCode::NotFound)));
    Ok(())
}

#[tokio::test]
async fn a_cancelled_upload_stops_and_a_new_one_resumes_it() -> anyhow::Result<()> {
    let p = pair_with(|_| {}).await?;
    let source = p.dir.path().join("video.mp4");
    random_file(&source, 6 << 20, 3)?;
    let (alice, _events) = p.node.connect(&p.alice).await?;
    let (cancel_tx, cancel_rx) = std::sync::mpsc::channel::<quiver_sdk::Cancel>();
    let mut cancelled = false;
    let transfer = alice.send_file(&p.bob.id, &source, "video/mp4", move |progress| {
        if !cancelled && progress.done > progress.total / 2 {
            if let Ok(cancel) = cancel_rx.try_recv() {
                cancel.cancel();
                cancelled = true;
            }
        }
    });
    cancel_tx.send(transfer.canceller())?;
    assert_eq!(transfer.await.err(), Some(FileError::Cancelled));
    let sent = alice
        .send_file(&p.bob.id, &source, "video/mp4", |_| {})
        .await?;
    assert!(
        sent.report.starts[0] > 0,
        "the second upload resumed the first: {:?}",
        sent.report.starts
    );
    Ok(())
}

#[tokio::test]
async fn bad_transfers_close_only_their_stream_and_foreign_blobs_cannot_be_named(
) -> anyhow::Result<()> {
    let p = pair_with(|_| {}).await?;
    let carol = p.node.user("carol").await?;
    p.node.befriend(&carol, &p.bob).await?;
    let source = p.dir.path().join("mine.bin");
    random_file(&source, 50_000, 13)?;
    let (alice, _alice_events) = p.node.connect(&p.alice).await?;
    let sent = alice.send_file(&p.bob.id, &source, "x/y", |_| {}).await?;

    let (conn, _control, _recv, _) = crate::raw::hello(&p.node, &carol.login.token).await?;
    let refused = |answer: &FileResponse, want: ErrorCode| matches!(answer, FileResponse::Error { code, .. } if *code == want);
    // More bytes than announced.
    let (mut send, mut recv) = conn.open_bi().await?;
    let upload = ConversationRequest::Upload {
        blob: BlobId([3; 32]),
        size: 100,
    };
    send.write_all(&encode_frame(&upload)?).await?;
    let _ready: FileResponse = crate::raw::read_one(&mut recv).await?;
    let _ = send.write_all(&[0u8; 5000]).await;
    let answer: FileResponse = crate::raw::read_one(&mut recv).await?;
    assert!(refused(&answer, ErrorCode::Malformed), "{answer:?}");
    // A download past the end, and one of a blob that is not there (Bob may read
    // Alice's files; Carol may not, so for her the blob does not exist at all).
    let (bob_conn, _control, _recv, _) = crate::raw::hello(&p.node, &p.bob.login.token).await?;
    for (conn, blob, offset, want) in [
        (
            &bob_conn,
            sent.file.blob,
            sent.file.size + 1,
            ErrorCode::Malformed,
        ),
        (&bob_conn, BlobId([4; 32]), 0, ErrorCode::NotFound),
        (&conn, sent.file.blob, 0, ErrorCode::NotFound),
    ] {
        let (mut send, mut recv) = conn.open_bi().await?;
        let download = ConversationRequest::Download {
            blob,
            owner: p.alice.id.clone(),
            offset,
        };
        send.write_all(&encode_frame(&download)?).await?;
        let answer: FileResponse = crate::raw::read_one(&mut recv).await?;
        assert!(refused(&answer, want), "{answer:?}");
    }
    // Carol names Alice's blob as a file of her own: refused, nothing stored.
    let (mut send, mut recv) = conn.open_bi().await?;
    let open = ConversationRequest::Open {
        peer: p.bob.id.clone(),
    };
    let chat = ConversationRequest::Chat {
        id: quiver_sdk::ClientMsgId(77),
        sent_at_ms: 0,
        body: vec![1; 40],
        file: Some(sent.file),
    };
    send.write_all(&encode_frame(&open)?).await?;
    send.write_all(&encode_frame(&chat)?).await?;
    let answer: ConversationResponse = crate::raw::read_one(&mut recv).await?;
    assert_eq!(
        answer,
        ConversationResponse::Rejected {
            id: quiver_sdk::ClientMsgId(77),
            code: ErrorCode::NotFound
        }
    );
    // The connection and the node are fine.
    let again = alice.send(&p.bob.id, b"still fine").await?;
    assert!(again.seq > sent.sent.seq);
    assert!(conn.close_reason().is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_resumes_an_upload_the_node_still_holds_for_a_vanished_one(
) -> anyhow::Result<()> {
    use quiver_tests::relay::{Faults, Relay};
    let p = pair_with(|_| {}).await?;
    let source = p.dir.path().join("voice.ogg");
    random_file(&source, 6 << 20, 17)?;
    let relay = Arc::new(Relay::start(p.node.quic_addr(), Faults::default()).await?);
    let addr = relay.addr();
    let (phone, _events) = p.node.connect_with(&p.alice, |o| o.addr = addr).await?;
    // At 40 % the phone's network goes dark for good, and the app is killed: nothing
    // tells the node, whose connection (and upload) stays up until its idle timeout.
    let dark = relay.clone();
    let (went_dark, dark_now) = tokio::sync::oneshot::channel();
    let mut went_dark = Some(went_dark);
    let transfer = phone.send_file(&p.bob.id, &source, "audio/ogg", move |progress| {
        if progress.done > progress.total * 4 / 10 {
            if let Some(tell) = went_dark.take() {
                dark.set_blackhole(true);
                let _ = tell.send(progress.done);
            }
        }
    });
    let cancel = transfer.canceller();
    let cut_at = tokio::time::timeout(WAIT, dark_now).await??;
    cancel.cancel();
    let cancelled = tokio::time::timeout(WAIT, transfer).await?;
    assert_eq!(
        cancelled.err(),
        Some(FileError::Cancelled),
        "cancel is not stuck"
    );
    drop(phone);

    // The app starts again on another network and sends the same file: the node hands
    // the old upload over and it resumes, long before the old connection times out.
    let (again, _events) = p.node.connect(&p.alice).await?;
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        again.send_file(&p.bob.id, &source, "audio/ogg", |_| {}),
    )
    .await??;
    let starts = &sent.report.starts;
    assert!(
        starts[0] > 0 && starts[0] <= cut_at,
        "resumed from {starts:?} (cut at {cut_at})"
    );
    let stored = p
        .node
        .data_dir()
        .join("blobs")
        .join(sent.file.blob.to_hex());
    assert_eq!(std::fs::metadata(stored)?.len(), sent.file.size);
    Ok(())
}

#[tokio::test]
async fn the_node_stores_files_as_ciphertext_only() -> anyhow::Result<()> {
    let p = pair_with(|_| {}).await?;
    let secret = "the eagle lands at midnight, bring the blue umbrella. ";
    let name = "operation-blue-umbrella.txt";
    let source = p.dir.path().join(name);
    std::fs::write(&source, secret.repeat(5000))?;
    let (alice, _events) = p.node.connect(&p.alice).await?;
    let sent = alice
        .send_file(&p.bob.id, &source, "text/plain", |_| {})
        .await?;
    let data_dir = p.node.data_dir().to_path_buf();
    drop(alice);
    let _kept = p.node.shutdown_keeping_data().await;
    let mut saw_blob = false;
    for file in files_below(&data_dir) {
        let bytes = std::fs::read(&file)?;
        for needle in [secret.as_bytes(), name.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "plaintext found in {}",
                file.display()
            );
        }
        saw_blob |= file.ends_with(sent.file.blob.to_hex());
    }
    assert!(saw_blob, "the scan read the blob itself");
    Ok(())
}
