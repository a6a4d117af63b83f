//! Ending a friendship: neither side can send any more, and making friends again makes a
//! new key, so what was sealed with the old one no longer opens.

use quiver_sdk::{ErrorCode, Event, FriendKey, SendError};
use quiver_tests::mesh::Cluster;
use quiver_tests::*;
use std::time::{Duration, Instant};

async fn key_of(node: &TestNode, user: &TestUser, friend: &TestUser) -> anyhow::Result<FriendKey> {
    let friends = node.rest().friends(&user.login.token).await?.friends;
    let info = friends
        .iter()
        .find(|f| f.user == friend.id)
        .ok_or_else(|| anyhow::anyhow!("{} is not a friend of {}", friend.id, user.id))?;
    Ok(FriendKey(
        quiver_sdk::key_from_hex(&info.key).expect("hex key"),
    ))
}

fn not_friends(result: Result<quiver_sdk::Sent, SendError>) -> bool {
    matches!(
        result,
        Err(SendError::Rejected(ErrorCode::NotFriends)
            | SendError::StreamClosed(ErrorCode::NotFriends))
    )
}

#[tokio::test]
async fn a_removed_friend_cannot_send_and_a_new_friendship_has_a_new_key() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let old_key = key_of(&node, &alice, &bob).await?;
    let (a, mut a_events) = node.connect(&alice).await?;
    let (b, _b_events) = node.connect(&bob).await?;
    b.send(&alice.id, b"before").await?;
    assert_eq!(next_message(&mut a_events).await?.text(), "before");

    let removed = node.rest().remove_friend(&alice.login.token, "bob").await?;
    assert_eq!(removed.status, "removed");
    assert!(node
        .rest()
        .friends(&alice.login.token)
        .await?
        .friends
        .is_empty());
    assert!(node
        .rest()
        .friends(&bob.login.token)
        .await?
        .friends
        .is_empty());
    // On the conversation stream Bob already has open, and on a new one of Alice's.
    assert!(not_friends(b.send(&alice.id, b"after removal").await));
    assert!(not_friends(a.send(&bob.id, b"after removal").await));
    assert_quiet(&mut a_events, Duration::from_millis(300)).await?;

    node.befriend(&bob, &alice).await?;
    let new_key = key_of(&node, &alice, &bob).await?;
    assert_ne!(new_key.0, old_key.0, "a new friendship gets a new key");
    assert_eq!(key_of(&node, &bob, &alice).await?.0, new_key.0);
    a.set_key(bob.id.clone(), new_key.clone());
    // Bob's app still holds the old key: what it seals does not open for Alice.
    b.send(&alice.id, b"sealed with the old key").await?;
    match next_event(&mut a_events).await? {
        Event::Undecryptable { from, .. } => assert_eq!(from, bob.id),
        other => panic!("expected an undecryptable message, got {other:?}"),
    }
    b.set_key(alice.id.clone(), new_key);
    b.send(&alice.id, b"with the new key").await?;
    assert_eq!(
        next_message(&mut a_events).await?.text(),
        "with the new key"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_made_on_another_node_takes_effect_within_seconds() -> anyhow::Result<()> {
    let cluster = Cluster::start(2).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    cluster.n(1).befriend(&alice, &bob).await?;
    let (_a, mut a_events) = cluster.n(1).connect(&alice).await?;
    let (b, _b_events) = cluster.n(2).connect(&bob).await?;
    // Node 1 (Alice's home) checks and remembers the friendship.
    b.send(&alice.id, b"before").await?;
    next_message(&mut a_events).await?;

    // Removed through node 2; node 1 learns it when its memory of it goes stale (5 s).
    let removed_at = Instant::now();
    cluster
        .n(2)
        .rest()
        .remove_friend(&bob.login.token, "alice")
        .await?;
    let refused = loop {
        if not_friends(b.send(&alice.id, b"still friends?").await) {
            break removed_at.elapsed();
        }
        assert!(
            removed_at.elapsed() < Duration::from_secs(10),
            "never refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("refused {refused:?} after the removal on another node");
    assert!(refused < Duration::from_secs(7));
    Ok(())
}

/// Mallory, a friend of Alice's, spams and is blocked: she can no longer send, and her
/// requests after the block are answered as usual but never reach Alice. Each user talks
/// to their own node.
async fn block_and_check(
    alice_node: &TestNode,
    mallory_node: &TestNode,
    alice: &TestUser,
    mallory: &TestUser,
) -> anyhow::Result<()> {
    alice_node.befriend(mallory, alice).await?;
    let (m, _m_events) = mallory_node.connect(mallory).await?;
    m.send(&alice.id, b"buy my stuff").await?;

    let blocked = alice_node
        .rest()
        .block(&alice.login.token, mallory.id.as_str())
        .await?;
    assert_eq!(blocked.status, "blocked");
    let rest = mallory_node.rest();
    let asked = rest.request_friend(&mallory.login.token, "alice").await?;
    assert_eq!(asked.status, "pending", "she is not told");
    let seen = alice_node.rest().friends(&alice.login.token).await?;
    assert!(
        seen.friends.is_empty() && seen.incoming.is_empty(),
        "{seen:?}"
    );
    assert_eq!(seen.blocked, std::slice::from_ref(&mallory.id));
    assert!(rest
        .friends(&mallory.login.token)
        .await?
        .outgoing
        .is_empty());
    // Her node may trust its memory of the friendship for 5 s (in a mesh).
    let started = Instant::now();
    while !not_friends(m.send(&alice.id, b"still there?").await) {
        assert!(started.elapsed() < Duration::from_secs(10), "still sending");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Unblocked, her next request reaches Alice again.
    alice_node
        .rest()
        .unblock(&alice.login.token, mallory.id.as_str())
        .await?;
    rest.request_friend(&mallory.login.token, "alice").await?;
    let seen = alice_node.rest().friends(&alice.login.token).await?;
    assert_eq!(seen.incoming, std::slice::from_ref(&mallory.id));
    assert!(seen.blocked.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_blocked_user_cannot_send_and_their_requests_vanish() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, mallory) = (node.user("alice").await?, node.user("mallory").await?);
    block_and_check(&node, &node, &alice, &mallory).await
}

#[tokio::test]
async fn a_block_holds_across_the_mesh() -> anyhow::Result<()> {
    let cluster = Cluster::start(2).await?;
    let alice = cluster.user(1, "alice").await?;
    let mallory = cluster.user(2, "mallory").await?;
    block_and_check(cluster.n(1), cluster.n(2), &alice, &mallory).await
}
