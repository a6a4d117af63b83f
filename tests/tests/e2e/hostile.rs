//! Hostile and broken clients: forged senders, bad tokens, bad bytes. Each gets its error,
//! closes at most its own stream or connection, and an honest chat running beside it
//! loses nothing. The raw clients' tests run twice: over UDP and over the TCP carrier,
//! which must answer the same.

use crate::raw::{self, Via};
use quiver_proto::{
    encode_frame, ClientMsgId, ControlRequest, ControlResponse, ConversationRequest,
    ConversationResponse, ErrorCode, Seq,
};
use quiver_sdk::{ConnectError, Event, RestError};
use quiver_tests::*;
use std::time::Duration;

/// Alice and Bob chatting, plus Mallory who is Bob's friend too.
pub(crate) struct Scene {
    pub node: TestNode,
    pub alice: TestUser,
    pub bob: TestUser,
    pub mallory: TestUser,
}

async fn scene() -> anyhow::Result<Scene> {
    scene_with(|_| {}).await
}

/// The scene on a node whose configuration `adjust` changed.
pub(crate) async fn scene_with(
    adjust: impl FnOnce(&mut quiver_server::Config),
) -> anyhow::Result<Scene> {
    let node = TestNode::start_with(adjust).await?;
    let (alice, bob, mallory) = (
        node.user("alice").await?,
        node.user("bob").await?,
        node.user("mallory").await?,
    );
    node.befriend(&alice, &bob).await?;
    node.befriend(&mallory, &bob).await?;
    Ok(Scene {
        node,
        alice,
        bob,
        mallory,
    })
}

/// Sends `n` messages from Alice to Bob and checks that Bob gets exactly those, in order.
pub(crate) async fn honest_chat_still_works(
    s: &Scene,
    a: &quiver_sdk::Client,
    b_events: &mut quiver_sdk::Events,
    n: usize,
) -> anyhow::Result<()> {
    let mut sent = Vec::new();
    for i in 0..n {
        sent.push(
            a.send(&s.bob.id, format!("honest {i}").as_bytes())
                .await?
                .seq,
        );
    }
    let got = messages(b_events, n).await?;
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), sent);
    assert!(got.iter().all(|m| m.from == s.alice.id));
    Ok(())
}

#[tokio::test]
async fn the_sender_is_stamped_from_the_session_never_from_the_client() -> anyhow::Result<()> {
    the_sender_is_stamped_from_the_session_never_from_the_client_via(Via::Udp).await
}

#[tokio::test]
async fn the_sender_is_stamped_from_the_session_never_from_the_client_over_tcp(
) -> anyhow::Result<()> {
    the_sender_is_stamped_from_the_session_never_from_the_client_via(Via::Tcp).await
}

async fn the_sender_is_stamped_from_the_session_never_from_the_client_via(
    via: Via,
) -> anyhow::Result<()> {
    let s = scene().await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;

    // Mallory seals a body that claims to come from Alice, with the only key she has.
    let (conn, _ctl_send, _ctl_recv, welcome) =
        raw::hello_via(via, &s.node, &s.mallory.login.token).await?;
    assert!(matches!(welcome, ControlResponse::Welcome { ref user, .. } if *user == s.mallory.id));
    let key = s.node.rest().friends(&s.mallory.login.token).await?.friends[0]
        .key
        .clone();
    let key = quiver_sdk::FriendKey(quiver_sdk::key_from_hex(&key).unwrap());
    let id = ClientMsgId(77);
    let forged = quiver_sdk::seal::seal(&key, &s.alice.id, &s.bob.id, id, b"I am alice")?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&encode_frame(&ConversationRequest::Open {
        peer: s.bob.id.clone(),
    })?)
    .await?;
    send.write_all(&encode_frame(&ConversationRequest::Chat {
        id,
        sent_at_ms: 0,
        body: forged,
        file: None,
    })?)
    .await?;
    let sent: ConversationResponse = raw::read_one(&mut recv).await?;
    assert!(
        matches!(sent, ConversationResponse::Sent { .. }),
        "{sent:?}"
    );

    // Bob's SDK sees Mallory as the sender, and the claim of Alice fails to authenticate.
    match next_event(&mut b_events).await? {
        Event::Undecryptable { from, .. } => assert_eq!(from, s.mallory.id),
        other => panic!("expected an undecryptable message from mallory, got {other:?}"),
    }
    // An honest message from Mallory shows as hers.
    let (m, _m_events) = s.node.connect(&s.mallory).await?;
    m.send(&s.bob.id, b"hi, mallory here").await?;
    let got = next_message(&mut b_events).await?;
    assert_eq!(
        (got.from.clone(), got.text()),
        (s.mallory.id.clone(), "hi, mallory here".into())
    );

    // A token whose claims were edited to say "alice" does not verify.
    let (claims, tag) = s.mallory.login.token.split_once('.').unwrap();
    let alice_claims = s.alice.login.token.split_once('.').unwrap().0;
    assert_ne!(claims, alice_claims);
    let forged_token = format!("{alice_claims}.{tag}");
    let (_conn, _s, _r, answer) = raw::hello_via(via, &s.node, &forged_token).await?;
    assert!(matches!(
        answer,
        ControlResponse::Error {
            code: ErrorCode::Unauthenticated,
            ..
        }
    ));
    Ok(())
}

#[tokio::test]
async fn bad_and_expired_tokens_and_wrong_passwords_are_refused() -> anyhow::Result<()> {
    bad_and_expired_tokens_and_wrong_passwords_are_refused_via(Via::Udp).await
}

#[tokio::test]
async fn bad_and_expired_tokens_and_wrong_passwords_are_refused_over_tcp() -> anyhow::Result<()> {
    bad_and_expired_tokens_and_wrong_passwords_are_refused_via(Via::Tcp).await
}

async fn bad_and_expired_tokens_and_wrong_passwords_are_refused_via(
    via: Via,
) -> anyhow::Result<()> {
    let node = TestNode::start_with(|c| c.token_ttl_secs = 2).await?;
    let alice = node.user("alice").await?;
    let rest = node.rest();

    let err = rest
        .login("alice", "not-the-password", None)
        .await
        .unwrap_err();
    assert!(matches!(err, RestError::Api { status: 401, .. }), "{err}");
    let err = rest
        .login("nobody", "whatever-password", None)
        .await
        .unwrap_err();
    assert!(matches!(err, RestError::Api { status: 401, .. }), "{err}");

    let mut bad = alice.clone_with_token("garbage.token");
    let refused = node.connect(&bad).await.err().expect("refused");
    assert!(matches!(
        refused.downcast_ref(),
        Some(RestError::Api { status: 401, .. })
    ));
    let (_c, _s, _r, answer) = raw::hello_via(via, &node, "garbage.token").await?;
    assert!(matches!(
        answer,
        ControlResponse::Error {
            code: ErrorCode::Unauthenticated,
            ..
        }
    ));

    // The token works now and not after its lifetime (2 s; whole seconds, so a token
    // lives between 1 and 2 s).
    let fresh = node.rest().login("alice", &alice.password, None).await?;
    bad.login = fresh;
    let (c, _events) = node.connect(&bad).await?;
    drop(c);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (_c, _s, _r, answer) = raw::hello_via(via, &node, &bad.login.token).await?;
    assert!(
        matches!(answer, ControlResponse::Error { code: ErrorCode::Unauthenticated, ref message } if message.contains("expired")),
        "{answer:?}"
    );
    let mut options =
        quiver_sdk::ConnectOptions::new(node.quic_addr(), &node.ca_pem, &bad.login.token);
    options.tcp_only = via == Via::Tcp;
    let refused = quiver_sdk::Client::connect(options)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(
            refused,
            ConnectError::Refused {
                code: ErrorCode::Unauthenticated,
                ..
            }
        ),
        "{refused}"
    );
    let err = node.rest().friends(&bad.login.token).await.unwrap_err();
    assert!(matches!(err, RestError::Api { status: 401, .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn malformed_and_oversize_frames_close_only_their_stream() -> anyhow::Result<()> {
    malformed_and_oversize_frames_close_only_their_stream_via(Via::Udp).await
}

#[tokio::test]
async fn malformed_and_oversize_frames_close_only_their_stream_over_tcp() -> anyhow::Result<()> {
    malformed_and_oversize_frames_close_only_their_stream_via(Via::Tcp).await
}

async fn malformed_and_oversize_frames_close_only_their_stream_via(via: Via) -> anyhow::Result<()> {
    let s = scene().await?;
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    honest_chat_still_works(&s, &a, &mut b_events, 5).await?;

    let (conn, _ctl_send, _ctl_recv, _welcome) =
        raw::hello_via(via, &s.node, &s.mallory.login.token).await?;
    // Garbage where a frame should be.
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await?;
    let answers: Vec<ConversationResponse> = raw::read_all(&mut recv).await?;
    assert_eq!(
        answers,
        [ConversationResponse::Error {
            code: ErrorCode::Malformed
        }]
    );
    let stopped = send.stopped().await?;
    assert_eq!(
        stopped,
        Some(quinn::VarInt::from_u32(ErrorCode::Malformed.to_u32()))
    );

    // A 100 MB length prefix: refused before a byte of payload is read.
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&encode_frame(&ConversationRequest::Open {
        peer: s.bob.id.clone(),
    })?)
    .await?;
    send.write_all(&(100u32 << 20).to_be_bytes()).await?;
    let answers: Vec<ConversationResponse> = raw::read_all(&mut recv).await?;
    assert_eq!(
        answers,
        [ConversationResponse::Error {
            code: ErrorCode::FrameTooLarge
        }]
    );

    // A frame of the wrong kind at the start of a stream.
    let (mut send, mut recv) = conn.open_bi().await?;
    let chat = ConversationRequest::Chat {
        id: ClientMsgId(1),
        sent_at_ms: 0,
        body: vec![1],
        file: None,
    };
    send.write_all(&encode_frame(&chat)?).await?;
    let answers: Vec<ConversationResponse> = raw::read_all(&mut recv).await?;
    assert_eq!(
        answers,
        [ConversationResponse::Error {
            code: ErrorCode::UnexpectedFrame
        }]
    );

    // The same connection still works: a well-formed conversation gets Sent.
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&encode_frame(&ConversationRequest::Open {
        peer: s.bob.id.clone(),
    })?)
    .await?;
    send.write_all(&encode_frame(&chat)?).await?;
    let sent: ConversationResponse = raw::read_one(&mut recv).await?;
    assert!(
        matches!(sent, ConversationResponse::Sent { .. }),
        "{sent:?}"
    );
    assert!(conn.close_reason().is_none(), "only streams were closed");
    let _ = next_event(&mut b_events).await?; // Mallory's one-byte body, undecryptable

    honest_chat_still_works(&s, &a, &mut b_events, 5).await?;
    Ok(())
}

#[tokio::test]
async fn garbage_on_the_control_stream_closes_only_that_connection() -> anyhow::Result<()> {
    garbage_on_the_control_stream_closes_only_that_connection_via(Via::Udp).await
}

#[tokio::test]
async fn garbage_on_the_control_stream_closes_only_that_connection_over_tcp() -> anyhow::Result<()>
{
    garbage_on_the_control_stream_closes_only_that_connection_via(Via::Tcp).await
}

async fn garbage_on_the_control_stream_closes_only_that_connection_via(
    via: Via,
) -> anyhow::Result<()> {
    let s = scene().await?;
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;

    // Before hello.
    let conn = raw::connect_via(via, &s.node).await?;
    let (mut send, _recv) = conn.open_bi().await?;
    send.write_all(b"\x00\x00\x00\x05hello").await?;
    let closed = conn.closed().await;
    assert_eq!(app_code(&closed), Some(ErrorCode::Malformed), "{closed}");

    // After hello: an oversize frame.
    let (conn, mut send, _recv, _) = raw::hello_via(via, &s.node, &s.mallory.login.token).await?;
    send.write_all(&u32::MAX.to_be_bytes()).await?;
    let closed = conn.closed().await;
    assert_eq!(
        app_code(&closed),
        Some(ErrorCode::FrameTooLarge),
        "{closed}"
    );

    // A first frame that is not hello.
    let conn = raw::connect_via(via, &s.node).await?;
    let (mut send, _recv) = conn.open_bi().await?;
    send.write_all(&encode_frame(&ControlRequest::Ack { seq: Seq(1) })?)
        .await?;
    let closed = conn.closed().await;
    assert_eq!(
        app_code(&closed),
        Some(ErrorCode::UnexpectedFrame),
        "{closed}"
    );

    honest_chat_still_works(&s, &a, &mut b_events, 5).await?;
    Ok(())
}

#[tokio::test]
async fn acks_and_read_marks_for_seqs_that_are_not_yours_are_refused() -> anyhow::Result<()> {
    acks_and_read_marks_for_seqs_that_are_not_yours_are_refused_via(Via::Udp).await
}

#[tokio::test]
async fn acks_and_read_marks_for_seqs_that_are_not_yours_are_refused_over_tcp() -> anyhow::Result<()>
{
    acks_and_read_marks_for_seqs_that_are_not_yours_are_refused_via(Via::Tcp).await
}

async fn acks_and_read_marks_for_seqs_that_are_not_yours_are_refused_via(
    via: Via,
) -> anyhow::Result<()> {
    let s = scene().await?;
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    honest_chat_still_works(&s, &a, &mut b_events, 3).await?;

    // Mallory has nothing in her inbox: seq 2 exists only in Bob's.
    let (_conn, mut send, mut recv, _) =
        raw::hello_via(via, &s.node, &s.mallory.login.token).await?;
    for request in [
        ControlRequest::Ack { seq: Seq(2) },
        ControlRequest::Read { seq: Seq(2) },
    ] {
        send.write_all(&encode_frame(&request)?).await?;
        let answer: ControlResponse = raw::read_one(&mut recv).await?;
        let refused = matches!(
            answer,
            ControlResponse::Error {
                code: ErrorCode::InvalidSeq,
                ..
            }
        );
        assert!(refused, "{request:?} got {answer:?}");
    }

    // Alice got no READ from any of that.
    let (_a2, mut a2_events) = s.node.connect(&s.alice).await?;
    let delivered = receipts(&mut a2_events, quiver_sdk::ReceiptKind::Delivered, 3).await?;
    assert_eq!(delivered.len(), 3);
    assert_quiet(&mut a2_events, Duration::from_millis(300)).await?;
    Ok(())
}

#[tokio::test]
async fn the_stored_inbox_holds_ciphertext_only() -> anyhow::Result<()> {
    let s = scene().await?;
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let secret = "the eagle lands at midnight, bring the blue umbrella";
    for _ in 0..20 {
        a.send(&s.bob.id, secret.as_bytes()).await?;
    }
    let data_dir = s.node.data_dir().to_path_buf();
    drop(a);
    let _kept = s.node.shutdown_keeping_data().await;
    let mut saw_metadata = false;
    for file in files_below(&data_dir) {
        let bytes = std::fs::read(&file)?;
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "plaintext found in {}",
            file.display()
        );
        saw_metadata |= bytes.windows(9).any(|w| w == b"$argon2id");
    }
    assert!(
        saw_metadata,
        "the scan read the real store (password hashes are stored as text)"
    );
    Ok(())
}

fn app_code(error: &quinn::ConnectionError) -> Option<ErrorCode> {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ErrorCode::from_u32(u32::try_from(close.error_code.into_inner()).ok()?)
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_rate_limit_is_slowed_to_the_limit_and_others_keep_chatting(
) -> anyhow::Result<()> {
    let (rate, burst, flood) = (100, 100, 400);
    let s = scene_with(|c| {
        c.limits.messages_per_sec = rate;
        c.limits.message_burst = burst;
    })
    .await?;
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    let (m, _m_events) = s.node.connect(&s.mallory).await?;

    let started = std::time::Instant::now();
    let mut pending = Vec::new();
    for i in 0..flood {
        pending.push(
            m.enqueue(&s.bob.id, format!("flood {i}").as_bytes())
                .await?,
        );
    }
    // Meanwhile Alice, on her own connection, is not limited.
    let mut alice_sent = Vec::new();
    for i in 0..10 {
        alice_sent.push(
            a.send(&s.bob.id, format!("honest {i}").as_bytes())
                .await?
                .seq,
        );
    }
    let mut sent = Vec::new();
    for p in pending {
        sent.push(p.await?.seq);
    }
    let elapsed = started.elapsed().as_secs_f64();

    // The node refused the excess (RateLimited closes the stream); the SDK slowed down
    // and wrote the rest again, so the flood went in at the limit, whole and in order.
    assert!(s.node.rate_limited() > 0, "the flood was never limited");
    let least = f64::from(flood - burst) / f64::from(rate);
    assert!(
        elapsed >= least * 0.9,
        "{flood} accepted in {elapsed:.2}s; the limit allows no less than {least:.2}s"
    );
    let (got, from_alice): (Vec<_>, Vec<_>) = messages(&mut b_events, flood as usize + 10)
        .await?
        .into_iter()
        .partition(|m| m.from == s.mallory.id);
    assert_eq!(
        from_alice.iter().map(|m| m.seq).collect::<Vec<_>>(),
        alice_sent
    );
    let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    assert_eq!(
        texts,
        (0..flood).map(|i| format!("flood {i}")).collect::<Vec<_>>()
    );
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), sent);
    Ok(())
}

#[tokio::test]
async fn logging_out_revokes_the_tokens_of_one_device_or_all() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let laptop = node.user("alice").await?;
    let phone = laptop.new_device(&node).await?;
    let revoked = |answer: &ControlResponse| matches!(answer, ControlResponse::Error { code: ErrorCode::Unauthenticated, message } if message.contains("revoked"));

    node.rest().logout(&laptop.login.token, false).await?;
    let (_c, _s, _r, answer) = raw::hello(&node, &laptop.login.token).await?;
    assert!(revoked(&answer), "{answer:?}");
    let err = node.rest().friends(&laptop.login.token).await.unwrap_err();
    assert!(matches!(err, RestError::Api { status: 401, .. }), "{err}");
    let (_phone_client, _events) = node.connect(&phone).await?; // the other device is unaffected

    node.rest().logout(&phone.login.token, true).await?;
    let (_c, _s, _r, answer) = raw::hello(&node, &phone.login.token).await?;
    assert!(revoked(&answer), "{answer:?}");

    // Logging in again makes a new device whose token works.
    let again = node
        .rest()
        .login("alice", &laptop.password, Some(laptop.login.device))
        .await?;
    assert_ne!(
        again.device, laptop.login.device,
        "a logged-out device id is not reused"
    );
    let (_c, _s, _r, answer) = raw::hello(&node, &again.token).await?;
    assert!(
        matches!(answer, ControlResponse::Welcome { .. }),
        "{answer:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_at_once_are_served_within_the_stream_limit() -> anyhow::Result<()> {
    let s = scene().await?;
    let limit = u64::from(s.node.node().config().limits.max_client_streams);
    let (a, _a_events) = s.node.connect(&s.alice).await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    let (conn, _ctl_send, _ctl_recv, _) = raw::hello(&s.node, &s.mallory.login.token).await?;
    let open = encode_frame(&ConversationRequest::Open {
        peer: s.bob.id.clone(),
    })?;

    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let (conn, open) = (conn.clone(), open.clone());
        streams.spawn(async move {
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(&open).await?;
            send.finish()?;
            let answers: Vec<ConversationResponse> = raw::read_all(&mut recv).await?;
            anyhow::ensure!(answers.is_empty(), "{answers:?}");
            anyhow::Ok(())
        });
    }
    let mut peak = 0;
    let watching = async {
        loop {
            peak = peak.max(s.node.open_conversations());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let all_done = async {
        while let Some(done) = streams.join_next().await {
            done??;
        }
        anyhow::Ok(())
    };
    tokio::select! {
        done = all_done => done?,
        _ = watching => unreachable!(),
    }
    assert!(
        peak <= limit,
        "{peak} conversation streams open at once; the limit is {limit}"
    );
    assert!(peak > 1, "the streams really ran concurrently");
    honest_chat_still_works(&s, &a, &mut b_events, 5).await?;
    Ok(())
}

#[tokio::test]
async fn a_replayed_chat_frame_is_stored_once() -> anyhow::Result<()> {
    a_replayed_chat_frame_is_stored_once_via(Via::Udp).await
}

#[tokio::test]
async fn a_replayed_chat_frame_is_stored_once_over_tcp() -> anyhow::Result<()> {
    a_replayed_chat_frame_is_stored_once_via(Via::Tcp).await
}

async fn a_replayed_chat_frame_is_stored_once_via(via: Via) -> anyhow::Result<()> {
    let s = scene().await?;
    let (_b, mut b_events) = s.node.connect(&s.bob).await?;
    let (conn, _ctl_send, _ctl_recv, _) =
        raw::hello_via(via, &s.node, &s.mallory.login.token).await?;
    let chat = ConversationRequest::Chat {
        id: ClientMsgId(5),
        sent_at_ms: 0,
        body: vec![0; 48],
        file: None,
    };
    let mut seqs = Vec::new();
    // The same bytes, twice on one stream and once more on another.
    for replays in [2, 1] {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&encode_frame(&ConversationRequest::Open {
            peer: s.bob.id.clone(),
        })?)
        .await?;
        for _ in 0..replays {
            send.write_all(&encode_frame(&chat)?).await?;
        }
        send.finish()?;
        for answer in raw::read_all::<ConversationResponse>(&mut recv).await? {
            let ConversationResponse::Sent { seq, .. } = answer else {
                panic!("{answer:?}")
            };
            seqs.push(seq);
        }
    }
    assert_eq!(seqs.len(), 3);
    assert!(
        seqs.iter().all(|&seq| seq == seqs[0]),
        "one seq for every replay: {seqs:?}"
    );
    assert!(matches!(
        next_event(&mut b_events).await?,
        Event::Undecryptable { .. }
    ));
    assert_quiet(&mut b_events, Duration::from_millis(300)).await?;
    Ok(())
}
