//! Online chat: both directions, receipts in order, idempotent retries.

use quiver_sdk::{ErrorCode, ReceiptKind, SendError};
use quiver_tests::*;

#[tokio::test]
async fn alice_and_bob_chat_both_ways_with_sent_delivered_read_in_order() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, mut a_events) = node.connect(&alice).await?;
    let (b, mut b_events) = node.connect(&bob).await?;

    let sent = a.send(&bob.id, b"hi bob").await?;
    let got = next_message(&mut b_events).await?;
    assert_eq!(
        (got.from.clone(), got.text(), got.seq, got.id),
        (alice.id.clone(), "hi bob".into(), sent.seq, sent.id)
    );
    b.mark_read(got.seq)?;

    let delivered = next_receipt(&mut a_events).await?;
    let read = next_receipt(&mut a_events).await?;
    assert_eq!(
        (delivered.kind, delivered.seq, delivered.id, &delivered.peer),
        (ReceiptKind::Delivered, sent.seq, sent.id, &bob.id)
    );
    assert_eq!(
        (read.kind, read.seq, read.id),
        (ReceiptKind::Read, sent.seq, sent.id)
    );

    let reply = b.send(&alice.id, b"hi alice").await?;
    let got = next_message(&mut a_events).await?;
    assert_eq!(
        (got.from.clone(), got.text(), got.seq),
        (bob.id.clone(), "hi alice".into(), reply.seq)
    );
    let delivered = next_receipt(&mut b_events).await?;
    assert_eq!(
        (delivered.kind, delivered.seq),
        (ReceiptKind::Delivered, reply.seq)
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_burst_arrives_in_order_exactly_once() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let (_b, mut b_events) = node.connect(&bob).await?;
    // Concurrent sends on one conversation stream: Sent answers are pipelined.
    let sends = (0..500).map(|i| {
        let (a, bob) = (a.clone(), bob.id.clone());
        async move { a.send(&bob, format!("m{i}").as_bytes()).await }
    });
    let sent = futures_join_all(sends).await;
    let mut seqs: Vec<_> = sent
        .into_iter()
        .map(|s| s.map(|s| s.seq))
        .collect::<Result<_, _>>()?;
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 500, "every send got its own seq");
    let got = messages(&mut b_events, 500).await?;
    let order: Vec<_> = got.iter().map(|m| m.seq).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in seq order");
    assert_eq!(order, seqs);
    assert_quiet(&mut b_events, std::time::Duration::from_millis(300)).await?;
    Ok(())
}

#[tokio::test]
async fn retrying_a_message_id_returns_the_same_seq_and_delivers_once() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let id = quiver_sdk::Client::new_message_id();
    let first = a.send_with_id(&bob.id, id, b"once").await?;
    let again = a.send_with_id(&bob.id, id, b"once").await?;
    assert_eq!(first, again);
    let (_b, mut b_events) = node.connect(&bob).await?;
    assert_eq!(next_message(&mut b_events).await?.seq, first.seq);
    assert_quiet(&mut b_events, std::time::Duration::from_millis(300)).await?;
    Ok(())
}

#[tokio::test]
async fn a_non_friend_cannot_message() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob, mallory) = (
        node.user("alice").await?,
        node.user("bob").await?,
        node.user("mallory").await?,
    );
    node.befriend(&alice, &bob).await?;
    let (m, _m_events) = node.connect(&mallory).await?;
    // Mallory has no key for Bob; even with one, the node refuses the conversation.
    assert!(matches!(
        m.send(&bob.id, b"spam").await,
        Err(SendError::NoKey(_))
    ));
    m.set_key(bob.id.clone(), quiver_sdk::FriendKey([1; 32]));
    let refused = m.send(&bob.id, b"spam").await;
    assert_eq!(refused, Err(SendError::StreamClosed(ErrorCode::NotFriends)));
    let (_b, mut b_events) = node.connect(&bob).await?;
    assert_quiet(&mut b_events, std::time::Duration::from_millis(300)).await?;
    // A pending request is not a friendship either.
    node.rest()
        .request_friend(&mallory.login.token, "bob")
        .await?;
    assert!(m.send(&bob.id, b"still spam").await.is_err());
    assert_quiet(&mut b_events, std::time::Duration::from_millis(300)).await?;
    Ok(())
}
