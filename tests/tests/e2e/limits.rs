//! Caps on what one address or one user can hold open, and logging out ending the
//! device's live sessions. Each over-the-limit client gets its code; others carry on.

use crate::raw;
use quiver_proto::{encode_frame, ClientMsgId, ConversationRequest, ConversationResponse};
use quiver_sdk::{ErrorCode, Event, SendError};
use quiver_tests::*;
use std::time::Duration;

/// Waits for the client to give up with a reason that mentions `code`.
async fn disconnected(events: &mut quiver_sdk::Events, code: ErrorCode) -> anyhow::Result<()> {
    loop {
        match next_any_event(events).await? {
            Event::Disconnected { reason } => {
                let name = format!("{code:?}");
                anyhow::ensure!(reason.contains(&name), "{reason}");
                return Ok(());
            }
            Event::Connection(_) | Event::Receipt(_) => {}
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_closes_the_devices_live_sessions() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (laptop, bob) = (node.user("alice").await?, node.user("bob").await?);
    let phone = laptop.new_device(&node).await?;
    node.befriend(&laptop, &bob).await?;
    let (_l, mut laptop_events) = node.connect(&laptop).await?;
    let (_p, mut phone_events) = node.connect(&phone).await?;
    let (b, _b_events) = node.connect(&bob).await?;

    node.rest().logout(&laptop.login.token, false).await?;
    disconnected(&mut laptop_events, ErrorCode::Unauthenticated).await?;
    // The phone was not logged out: it still gets messages.
    b.send(&laptop.id, b"for the phone").await?;
    assert_eq!(
        next_message(&mut phone_events).await?.text(),
        "for the phone"
    );

    node.rest().logout(&phone.login.token, true).await?;
    disconnected(&mut phone_events, ErrorCode::Unauthenticated).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() -> anyhow::Result<()> {
    let node = TestNode::start_with(|c| c.limits.max_connections_per_address = 2).await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let (_b, mut b_events) = node.connect(&bob).await?;
    let third = node
        .connect_with(&alice, |o| o.connect_timeout = Duration::from_secs(5))
        .await;
    let Err(e) = third else {
        anyhow::bail!("a third connection from one address was served");
    };
    assert!(format!("{e}").contains("TooManyConnections"), "{e}");
    // The two within the cap are unaffected.
    a.send(&bob.id, b"still here").await?;
    assert_eq!(next_message(&mut b_events).await?.text(), "still here");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_per_user_are_capped_over_all_its_connections() -> anyhow::Result<()> {
    let node = TestNode::start_with(|c| c.limits.max_conversations_per_user = 2).await?;
    let alice = node.user("alice").await?;
    let alice_phone = alice.new_device(&node).await?;
    let mut friends = Vec::new();
    for name in ["bob", "carol", "dave"] {
        let friend = node.user(name).await?;
        node.befriend(&alice, &friend).await?;
        friends.push(friend);
    }
    let (laptop, _l_events) = node.connect(&alice).await?;
    let (phone, _p_events) = node.connect(&alice_phone).await?;
    let (_bob, mut bob_events) = node.connect(&friends[0]).await?;
    laptop.send(&friends[0].id, b"one").await?;
    laptop.send(&friends[1].id, b"two").await?;
    // A third conversation, from another device of the same user, is over the cap.
    let third = phone.send(&friends[2].id, b"three").await;
    assert!(
        matches!(
            third,
            Err(SendError::StreamClosed(ErrorCode::TooManyStreams))
        ),
        "{third:?}"
    );
    // The open ones carry on.
    laptop.send(&friends[0].id, b"one more").await?;
    let got = messages(&mut bob_events, 2).await?;
    assert_eq!(got[1].text(), "one more");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_can_write_to_more_peers_than_its_stream_limit() -> anyhow::Result<()> {
    let node = TestNode::start_with(|c| c.limits.logins_per_minute_per_address = 10_000).await?;
    let limit = node.node().config().limits.max_client_streams as usize;
    let alice = node.user("alice").await?;
    let mut friends = Vec::new();
    for i in 0..limit + 6 {
        let friend = node.user(&format!("friend{i:03}")).await?;
        node.befriend(&alice, &friend).await?;
        friends.push(friend);
    }
    // Streams idle long enough to be closed on their own only after the test is over:
    // room is made because a new conversation waits for a stream.
    let (a, _a_events) = node
        .connect_with(&alice, |o| {
            o.close_idle_streams_after = Duration::from_secs(600);
        })
        .await?;
    for (i, friend) in friends.iter().enumerate() {
        let sent = tokio::time::timeout(WAIT, a.send(&friend.id, format!("hi {i}").as_bytes()))
            .await
            .map_err(|_| anyhow::anyhow!("message {i} waits for a stream forever"))??;
        assert_eq!(sent.seq.0, 1);
        let open = node.open_conversations() as usize;
        assert!(
            open < limit,
            "{open} conversation streams open (limit {limit})"
        );
    }
    // The first friend gets a second message on a new stream, in order.
    a.send(&friends[0].id, b"again").await?;
    let (_f, mut f_events) = node.connect(&friends[0]).await?;
    let got = messages(&mut f_events, 2).await?;
    assert_eq!(
        (got[0].text(), got[1].text()),
        ("hi 0".into(), "again".into())
    );
    Ok(())
}

/// Whether opening one more stream on `conn` waits for the node to offer it (an offered
/// stream opens at once, without a round trip).
async fn not_offered(conn: &quinn::Connection) -> bool {
    tokio::time::timeout(Duration::from_millis(300), conn.open_bi())
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_offered_a_few_streams_and_more_as_it_uses_them() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let limit = node.node().config().limits.max_client_streams as usize;
    let first = quiver_server::credit::FIRST_CLIENT_OFFER as usize;
    assert!(first < limit, "the test needs room to grow");
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (conn, _control_send, _control_recv, _) = raw::hello(&node, &alice.login.token).await?;

    // Opened but unused streams: the node has not seen them, so the offer stays small.
    let mut held = Vec::new();
    for _ in 1..first {
        held.push(conn.open_bi().await?);
    }
    assert!(
        not_offered(&conn).await,
        "more than {first} streams offered"
    );

    // Used, they make the offer grow; conversations held open all at once reach the limit.
    let open = encode_frame(&ConversationRequest::Open {
        peer: bob.id.clone(),
    })?;
    for (send, _) in &mut held {
        send.write_all(&open).await?;
    }
    while held.len() < limit - 1 {
        let (mut send, recv) = tokio::time::timeout(WAIT, conn.open_bi())
            .await
            .map_err(|_| anyhow::anyhow!("stream {} was never offered", held.len() + 1))??;
        send.write_all(&open).await?;
        held.push((send, recv));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.open_conversations() < held.len() as u64 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "conversations not served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        not_offered(&conn).await,
        "more than {limit} streams offered"
    );

    // Every one of them carries a chat to its end.
    for (i, (send, recv)) in held.iter_mut().enumerate() {
        let chat = ConversationRequest::Chat {
            id: ClientMsgId(i as u128 + 1),
            sent_at_ms: 1,
            body: format!("on stream {i}").into_bytes(),
            file: None,
        };
        send.write_all(&encode_frame(&chat)?).await?;
        let sent: ConversationResponse = raw::read_one(recv).await?;
        assert!(
            matches!(sent, ConversationResponse::Sent { .. }),
            "{sent:?}"
        );
    }
    Ok(())
}
