//! Offline delivery: the backlog first and in order, receipts for an offline sender,
//! restarts, several devices.

use quiver_sdk::{Event, ReceiptKind};
use quiver_tests::*;
use std::time::Duration;

#[tokio::test]
async fn offline_backlog_precedes_live_and_delivered_reaches_an_offline_sender(
) -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;

    let (a, a_events) = node.connect(&alice).await?;
    let mut backlog = Vec::new();
    for i in 0..50 {
        backlog.push(a.send(&bob.id, format!("offline {i}").as_bytes()).await?);
    }
    // Alice goes offline before Bob ever connects.
    a.close().await;
    drop((a, a_events));

    let (b, mut b_events) = node.connect(&bob).await?;
    // Live messages from Alice's second device race the backlog: they must come after it.
    let alice2 = alice.new_device(&node).await?;
    let (a2, _a2_events) = node.connect(&alice2).await?;
    let live = tokio::spawn(async move {
        let mut sent = Vec::new();
        for i in 0..20 {
            sent.push(
                a2.send(
                    &quiver_sdk::UserId::parse("bob").unwrap(),
                    format!("live {i}").as_bytes(),
                )
                .await
                .unwrap(),
            );
        }
        (a2, sent)
    });
    let got = messages(&mut b_events, 70).await?;
    let (a2, live_sent) = live.await?;
    let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    let expected: Vec<String> = (0..50)
        .map(|i| format!("offline {i}"))
        .chain((0..20).map(|i| format!("live {i}")))
        .collect();
    assert_eq!(texts, expected, "backlog first, in order, then live");
    let seqs: Vec<_> = got.iter().map(|m| m.seq).collect();
    let sent_seqs: Vec<_> = backlog.iter().chain(&live_sent).map(|s| s.seq).collect();
    assert_eq!(seqs, sent_seqs);
    assert_quiet(&mut b_events, Duration::from_millis(300)).await?;
    drop((b, a2));

    // Alice's first device comes back: DELIVERED for all 70 waited for it.
    let (_a, mut a_events) = node.connect(&alice).await?;
    let delivered = receipts(&mut a_events, ReceiptKind::Delivered, 70).await?;
    let mut receipt_seqs: Vec<_> = delivered.iter().map(|r| r.seq).collect();
    receipt_seqs.sort();
    assert_eq!(receipt_seqs, sent_seqs);
    Ok(())
}

#[tokio::test]
async fn nothing_is_lost_or_duplicated_across_a_node_restart() -> anyhow::Result<()> {
    let mut node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(
            a.send(&bob.id, format!("before restart {i}").as_bytes())
                .await?,
        );
    }
    // Bob reads half before the restart.
    let (b, mut b_events) = node.connect(&bob).await?;
    let first = messages(&mut b_events, 15).await?;
    let cursor = b.cursor();
    assert_eq!(cursor, first.last().unwrap().seq);
    // A polite close: the acks of what Bob took reach the node before the connection ends.
    b.close().await;
    drop((a, b, b_events));

    node.restart().await?;

    let (a, _a_events) = node.connect(&alice).await?;
    for i in 0..5 {
        sent.push(
            a.send(&bob.id, format!("after restart {i}").as_bytes())
                .await?,
        );
    }
    let (_b, mut b_events) = node.connect_from(&bob, Some(cursor)).await?;
    let rest = messages(&mut b_events, 20).await?;
    let all: Vec<_> = first.iter().chain(&rest).map(|m| m.seq).collect();
    assert_eq!(
        all,
        sent.iter().map(|s| s.seq).collect::<Vec<_>>(),
        "every message once, in order"
    );
    assert_eq!(rest.last().unwrap().text(), "after restart 4");
    assert_quiet(&mut b_events, Duration::from_millis(300)).await?;
    Ok(())
}

/// A node where Alice, a friend of Bob's, sent him `count` messages (`m0`, `m1`, …), each
/// SENT, and went away; Bob has not connected.
async fn alice_sends_bob(
    count: usize,
) -> anyhow::Result<(TestNode, TestUser, TestUser, Vec<quiver_sdk::Sent>)> {
    let node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let mut sent = Vec::new();
    for i in 0..count {
        sent.push(a.send(&bob.id, format!("m{i}").as_bytes()).await?);
    }
    Ok((node, alice, bob, sent))
}

/// What a crash in the middle of a write leaves at the end of the inbox log: a record
/// header and part of its payload. The node cuts it off (keeping the bytes aside), serves
/// every acknowledged message once, and appends after the cut, where a later start finds it.
#[tokio::test]
async fn a_torn_record_at_the_end_of_the_inbox_log_is_cut_and_nothing_acknowledged_is_lost(
) -> anyhow::Result<()> {
    use std::io::Write;
    let (mut node, alice, bob, mut sent) = alice_sends_bob(20).await?;
    node.restart_after(|data| {
        let segment = last_segment(data);
        // The node writes zeroes ahead of its records; a crash leaves the torn record
        // where the records end. Opening the log (as the node does) cuts the zeroes off.
        let inbox = segment.parent().expect("the inbox folder");
        drop(quiver_server::log::Log::open(
            inbox,
            None,
            u64::MAX,
            |_, _| Ok(()),
        )?);
        let mut log = std::fs::OpenOptions::new().append(true).open(&segment)?;
        // A header promising 100 bytes, then 10 of them.
        log.write_all(&100u32.to_le_bytes())?;
        log.write_all(&[0; 4])?;
        log.write_all(&[7; 10])?;
        Ok(())
    })
    .await?;
    let kept: Vec<_> = files_below(&node.data_dir().join("inbox"))
        .into_iter()
        .filter(|path| path.to_string_lossy().contains(".log.cut-"))
        .collect();
    assert_eq!(kept.len(), 1, "the torn bytes are kept aside");
    assert_eq!(std::fs::metadata(&kept[0])?.len(), 18);

    let (a, _a_events) = node.connect(&alice).await?;
    let after = a.send(&bob.id, b"after the cut").await?;
    assert_eq!(after.seq.0, sent.last().unwrap().seq.0 + 1);
    drop(a);
    node.restart().await?;
    let (_b, mut b_events) = node.connect(&bob).await?;
    let got = messages(&mut b_events, 21).await?;
    sent.push(after);
    assert_eq!(
        got.iter().map(|m| m.seq).collect::<Vec<_>>(),
        sent.iter().map(|s| s.seq).collect::<Vec<_>>(),
        "every acknowledged message once, in order, the one after the cut too"
    );
    assert_eq!(got.last().unwrap().text(), "after the cut");
    assert_quiet(&mut b_events, Duration::from_millis(300)).await?;
    Ok(())
}

/// The inbox log's segment files (`<data>/inbox/<start>.log`), oldest first.
fn segments(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = files_below(&data.join("inbox"))
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    found.sort();
    found
}

fn last_segment(data: &std::path::Path) -> std::path::PathBuf {
    segments(data).pop().expect("an inbox segment")
}

/// Retention: once entries are older than `inbox.retention_secs`, their segment files
/// are removed, delivered or not. Bob, away all that time, resumes after them: he gets
/// what came since, his device's cursor moves past the gap, and Bob's `seq`s go on from
/// where they were, across a restart that finds none of his entries too.
#[tokio::test]
async fn entries_past_retention_are_removed_and_a_device_resumes_after_them() -> anyhow::Result<()>
{
    let mut node = TestNode::start_with(|c| {
        c.inbox.retention_secs = 3600;
        c.inbox.segment_bytes = 4096;
    })
    .await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let mut old = Vec::new();
    for i in 0..30 {
        old.push(a.send(&bob.id, format!("old {i:0>300}").as_bytes()).await?);
    }
    let now = std::time::SystemTime::now();
    let young = node.node().expire_inbox(now)?;
    assert_eq!(young.entries, 0, "nothing is an hour old yet");
    let before = segments(node.data_dir()).len();
    assert!(
        before >= 3,
        "30 messages of 300 bytes fill segments of 4 KiB"
    );

    let expired = node
        .node()
        .expire_inbox(now + Duration::from_secs(2 * 3600))?;
    assert_eq!(expired.entries, 30);
    assert_eq!(
        segments(node.data_dir()).len(),
        1,
        "only the new, empty one"
    );
    let text = node.rest().metrics().await?;
    for line in [
        "quiver_inbox_entries_expired_total 30\n",
        "quiver_inbox_segments 1\n",
        "quiver_inbox_log_bytes 0\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }

    let last_old = old.last().unwrap().seq;
    let new = a.send(&bob.id, b"after retention").await?;
    assert_eq!(new.seq.0, last_old.0 + 1);
    let (b, mut b_events) = node.connect(&bob).await?;
    let got = next_message(&mut b_events).await?;
    assert_eq!(
        (got.text(), got.seq),
        ("after retention".to_string(), new.seq)
    );
    assert_quiet(&mut b_events, Duration::from_millis(300)).await?;
    // The SDK moved its cursor to where the node resumed, then past what Bob took.
    assert_eq!(b.cursor(), new.seq);
    drop((a, b, b_events));
    // Everything of Bob's goes, the segment still being written too (it began over a
    // quarter of the retention before): the restart finds none of his entries.
    let expired = node
        .node()
        .expire_inbox(now + Duration::from_secs(2 * 3600))?;
    assert!(expired.entries >= 1, "{expired:?}");

    node.restart().await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let after = a.send(&bob.id, b"after the restart").await?;
    assert_eq!(after.seq.0, new.seq.0 + 1, "seqs go on after a restart");
    let (_b, mut b_events) = node.connect(&bob).await?;
    assert_eq!(
        next_message(&mut b_events).await?.text(),
        "after the restart"
    );
    assert_quiet(&mut b_events, Duration::from_millis(300)).await?;
    Ok(())
}

#[tokio::test]
async fn messages_sent_while_the_node_restarts_between_send_and_receive_arrive_once(
) -> anyhow::Result<()> {
    let (mut node, _alice, bob, sent) = alice_sends_bob(25).await?;
    node.restart().await?;
    // No cursor from the SDK: the node's own record must be enough.
    let (_b, mut b_events) = node.connect(&bob).await?;
    let got = messages(&mut b_events, 25).await?;
    assert_eq!(
        got.iter().map(|m| m.seq).collect::<Vec<_>>(),
        sent.iter().map(|s| s.seq).collect::<Vec<_>>()
    );
    assert_quiet(&mut b_events, Duration::from_millis(300)).await?;
    Ok(())
}

#[tokio::test]
async fn each_of_two_devices_gets_each_message_exactly_once() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let bob_phone = bob.new_device(&node).await?;
    assert_ne!(bob.login.device, bob_phone.login.device);
    let (a, mut a_events) = node.connect(&alice).await?;
    for i in 0..10 {
        a.send(&bob.id, format!("early {i}").as_bytes()).await?;
    }
    // Both devices log in at once, with a backlog waiting.
    let ((_laptop, mut laptop_events), (_phone, mut phone_events)) =
        tokio::try_join!(node.connect(&bob), node.connect(&bob_phone))?;
    for i in 0..10 {
        a.send(&bob.id, format!("late {i}").as_bytes()).await?;
    }
    for events in [&mut laptop_events, &mut phone_events] {
        let got = messages(events, 20).await?;
        let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
        let expected: Vec<String> = (0..10)
            .map(|i| format!("early {i}"))
            .chain((0..10).map(|i| format!("late {i}")))
            .collect();
        assert_eq!(texts, expected);
        assert_quiet(events, Duration::from_millis(300)).await?;
    }
    // Two devices acknowledged each message, but DELIVERED is said once per message.
    let delivered = receipts(&mut a_events, ReceiptKind::Delivered, 20).await?;
    let mut seqs: Vec<_> = delivered.iter().map(|r| r.seq).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), 20);
    assert_quiet(&mut a_events, Duration::from_millis(300)).await?;
    let _ = Event::Disconnected {
        reason: String::new(),
    };
    Ok(())
}
