//! The mesh: nodes in mesh mode with a real `redis-server`, linked over QUIC with mutual
//! TLS. Users homed on one node chat with users on others as if on one node.

use quiver_proto::mesh::{MeshOpen, ReceiptAnswer, MESH_ALPN};
use quiver_sdk::{ReceiptKind, Seq};
use quiver_tests::mesh::{Cluster, ClusterCa};
use quiver_tests::*;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_different_nodes_chat_with_sent_delivered_read() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(3, "bob").await?;
    cluster.n(1).befriend(&alice, &bob).await?;

    // Logging in anywhere names the home node, where a device normally connects.
    let login = cluster
        .n(1)
        .rest()
        .login("bob", &bob.password, None)
        .await?;
    assert_eq!(login.quic_addr, cluster.n(3).quic_addr().to_string());

    // Alice on her home node; Bob on node 2, which is nobody's home here.
    let (a, mut a_events) = cluster.n(1).connect(&alice).await?;
    let (b, mut b_events) = cluster.n(2).connect(&bob).await?;

    let sent = a.send(&bob.id, b"hi bob, across the mesh").await?;
    let got = next_message(&mut b_events).await?;
    assert_eq!(
        (got.from.clone(), got.text(), got.seq, got.id),
        (
            alice.id.clone(),
            "hi bob, across the mesh".into(),
            sent.seq,
            sent.id
        )
    );
    b.mark_read(got.seq)?;
    let delivered = next_receipt(&mut a_events).await?;
    let read = next_receipt(&mut a_events).await?;
    assert_eq!(
        (delivered.kind, delivered.seq, delivered.id, &delivered.peer),
        (ReceiptKind::Delivered, sent.seq, sent.id, &bob.id)
    );
    assert_eq!((read.kind, read.seq), (ReceiptKind::Read, sent.seq));

    let reply = b.send(&alice.id, b"hi alice").await?;
    let got = next_message(&mut a_events).await?;
    assert_eq!((got.text(), got.seq), ("hi alice".into(), reply.seq));
    a.mark_read(got.seq)?;
    let receipts = receipts(&mut b_events, ReceiptKind::Read, 1).await?;
    assert_eq!(receipts[0].seq, reply.seq);

    // Redis knows where Bob's device is connected: node 2.
    let locations = cluster
        .n(2)
        .node()
        .locations(&bob.id)
        .await
        .expect("mesh mode");
    assert_eq!(locations, [(bob.login.device, "n2".to_string())]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_backlog_arrives_in_order_once_on_another_node() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(3, "bob").await?;
    cluster.n(1).befriend(&alice, &bob).await?;
    let (a, _a_events) = cluster.n(1).connect(&alice).await?;

    // Bob first on node 1: five live messages, then he goes away.
    let (b, mut b_events) = cluster.n(1).connect(&bob).await?;
    for i in 0..5 {
        a.send(&bob.id, format!("live {i}").as_bytes()).await?;
    }
    let live = messages(&mut b_events, 5).await?;
    b.close().await;
    drop(b_events);

    let mut seqs = Vec::new();
    for i in 0..50 {
        seqs.push(
            a.send(&bob.id, format!("offline {i}").as_bytes())
                .await?
                .seq,
        );
    }
    // Back on node 2, with the cursor the app kept.
    let cursor = live.last().map(|m| m.seq);
    let (b, mut b_events) = cluster.n(2).connect_from(&bob, cursor).await?;
    let got = messages(&mut b_events, 50).await?;
    let texts: Vec<_> = got.iter().map(|m| m.text()).collect();
    let expected: Vec<_> = (0..50).map(|i| format!("offline {i}")).collect();
    assert_eq!(
        texts, expected,
        "the backlog, in order, nothing from before"
    );
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs);
    assert_quiet(&mut b_events, Duration::from_millis(500)).await?;

    // History through node 2, read on Bob's home (node 3): all 55, newest first.
    let (mut paged, mut before) = (Vec::new(), None);
    loop {
        let page = b.history(&quiver_sdk::HistoryOf::Inbox, before, 20).await?;
        paged.extend(page.events.into_iter().map(|e| match e {
            quiver_sdk::Event::Message(m) => m.text(),
            other => format!("{other:?}"),
        }));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let mut all: Vec<_> = live.iter().map(|m| m.text()).collect();
    all.extend(expected);
    all.reverse();
    assert_eq!(paged, all);
    let text = cluster.n(2).rest().metrics().await?;
    assert!(
        text.contains("quiver_mesh_requests_total{kind=\"history\"} 3\n"),
        "{text}"
    );

    // A new device of Bob's, logged in through n1 (not his home): its cursor starts at
    // the head on n3, so none of the 55 is pushed to it; the next message is.
    let laptop = bob.new_device(cluster.n(1)).await?;
    let (_laptop, mut laptop_events) = cluster.n(2).connect(&laptop).await?;
    assert_quiet(&mut laptop_events, Duration::from_millis(500)).await?;
    let next = a.send(&bob.id, b"for the laptop").await?;
    let got = next_message(&mut laptop_events).await?;
    assert_eq!(
        (got.seq, got.text()),
        (next.seq, "for the laptop".to_string())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_on_two_nodes_each_get_each_message_once() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(3, "bob").await?;
    let phone = bob.new_device(cluster.n(3)).await?;
    cluster.n(1).befriend(&alice, &bob).await?;
    let (a, mut a_events) = cluster.n(1).connect(&alice).await?;
    let (_laptop, mut laptop_events) = cluster.n(1).connect(&bob).await?;
    let (_phone, mut phone_events) = cluster.n(2).connect(&phone).await?;

    let sends = (0..100).map(|i| {
        let (a, bob) = (a.clone(), bob.id.clone());
        async move { a.send(&bob, format!("m{i}").as_bytes()).await }
    });
    let mut seqs = Vec::new();
    for sent in futures_join_all(sends).await {
        seqs.push(sent?.seq);
    }
    seqs.sort();
    for events in [&mut laptop_events, &mut phone_events] {
        let got = messages(events, 100).await?;
        assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs);
        assert_quiet(events, Duration::from_millis(300)).await?;
    }
    // DELIVERED once per message, however many devices have it.
    let delivered = receipts(&mut a_events, ReceiptKind::Delivered, 100).await?;
    let mut delivered: Vec<Seq> = delivered.iter().map(|r| r.seq).collect();
    delivered.sort();
    assert_eq!(delivered, seqs);
    assert_quiet(&mut a_events, Duration::from_millis(300)).await?;
    Ok(())
}

/// Dials `addr` as a mesh peer presenting `identity` (or no certificate) and asks for a
/// receipt to be stored; returns the answer, or why there was none.
async fn dial_mesh(
    addr: std::net::SocketAddr,
    trusted_ca: &ClusterCa,
    identity: Option<&ClusterCa>,
    server_name: &str,
) -> anyhow::Result<ReceiptAnswer> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = trusted_ca.ca_pem()?;
    for cert in rustls_pemfile_certs(&ca_pem) {
        roots.add(cert)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut tls = match identity {
        Some(ca) => {
            let (cert, key) = ca.node("n9")?;
            let certs = rustls_pemfile_certs(&std::fs::read_to_string(cert)?);
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![MESH_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let attempt = async {
        let conn = endpoint.connect(addr, server_name)?.await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let open = MeshOpen::Receipt {
            owner: quiver_sdk::UserId::parse("nobody")?,
            reader: quiver_sdk::UserId::parse("someone")?,
            kind: ReceiptKind::Delivered,
            id: quiver_sdk::Client::new_message_id(),
            seq: Seq(1),
        };
        send.write_all(&quiver_proto::encode_frame(&open)?).await?;
        send.finish()?;
        let bytes = recv.read_to_end(1024).await?;
        let (answer, _) = quiver_proto::decode_frame::<ReceiptAnswer>(&bytes, 1024)?
            .ok_or_else(|| anyhow::anyhow!("short answer"))?;
        anyhow::Ok(answer)
    };
    tokio::time::timeout(Duration::from_secs(10), attempt).await?
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_of_the_cluster_ca_can_open_mesh_links() -> anyhow::Result<()> {
    let cluster = Cluster::start(1).await?;
    let mesh = cluster.n(1).node().mesh_addr().expect("mesh mode");

    // A member of the cluster is served (the control that shows the dialer works).
    let answer = dial_mesh(mesh, &cluster.ca, Some(&cluster.ca), "n1").await?;
    assert!(
        matches!(answer, ReceiptAnswer::Refused { .. }),
        "a member is answered (there is just no such user): {answer:?}"
    );

    // A node with a certificate from another CA is refused.
    let other = ClusterCa::new("Some other CA")?;
    let foreign = dial_mesh(mesh, &cluster.ca, Some(&other), "n1").await;
    assert!(foreign.is_err(), "foreign CA got {foreign:?}");

    // A client (no certificate at all) is refused.
    let client = dial_mesh(mesh, &cluster.ca, None, "n1").await;
    assert!(client.is_err(), "certificate-less client got {client:?}");

    // A whole node from another CA joins Redis but cannot take part: a message for a user
    // homed on it never gets SENT.
    let stranger = Cluster::node(&other, &cluster.redis.url(), "n9").await?;
    let alice = cluster.user(1, "alice").await?;
    let mallory = stranger.user("mallory").await?;
    cluster.n(1).befriend(&alice, &mallory).await?;
    let (a, _a_events) = cluster.n(1).connect(&alice).await?;
    let send = tokio::time::timeout(Duration::from_secs(3), a.send(&mallory.id, b"hello?")).await;
    assert!(
        send.is_err(),
        "SENT through a link that must not exist: {send:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_on_one_node_keep_chatting_while_redis_is_down() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(1, "bob").await?;
    cluster.n(1).befriend(&alice, &bob).await?;
    let (a, mut a_events) = cluster.n(1).connect(&alice).await?;
    let (b, mut b_events) = cluster.n(1).connect(&bob).await?;
    a.send(&bob.id, b"before").await?;
    next_message(&mut b_events).await?;
    receipts(&mut a_events, ReceiptKind::Delivered, 1).await?;

    cluster.redis.stop()?;
    // Both are homed here and their friendship is known: the node can still decide.
    for i in 0..20 {
        a.send(&bob.id, format!("during {i}").as_bytes()).await?;
    }
    let got = messages(&mut b_events, 20).await?;
    assert_eq!(got[19].text(), "during 19");
    b.send(&alice.id, b"still here").await?;
    let got = messages(&mut a_events, 1).await?;
    assert_eq!(got[0].text(), "still here");
    // What needs Redis fails cleanly meanwhile, and the node says it is not ready.
    let refused = cluster
        .n(1)
        .rest()
        .register("carol", "carol-password")
        .await;
    assert!(refused.is_err(), "registered without a directory");
    let mut unready = false;
    for _ in 0..50 {
        if cluster.n(1).rest().ready().await.is_err() {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unready, "still ready seconds after Redis went away");

    // Redis comes back; the node reconnects by itself.
    cluster.redis.resume()?;
    let mut carol = None;
    for _ in 0..50 {
        if let Ok(user) = cluster.user(1, "carol").await {
            carol = Some(user);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let carol = carol.expect("the node never got Redis back");
    cluster.n(1).rest().ready().await?;
    cluster.n(1).befriend(&carol, &alice).await?;
    let friends = cluster
        .n(1)
        .rest()
        .friends(&alice.login.token)
        .await?
        .friends;
    let key = friends
        .iter()
        .find(|f| f.user == carol.id)
        .expect("friends");
    let key = quiver_sdk::key_from_hex(&key.key).expect("hex key");
    a.set_key(carol.id.clone(), quiver_sdk::FriendKey(key));
    let (c, _c_events) = cluster.n(1).connect(&carol).await?;
    c.send(&alice.id, b"hello after the outage").await?;
    let got = messages(&mut a_events, 1).await?;
    assert_eq!(got[0].text(), "hello after the outage");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_directory_keeps_the_friendship_rules() -> anyhow::Result<()> {
    use quiver_server::directory::{
        Directory, DirectoryError, FriendRequestOutcome, RedisDirectory,
    };
    let redis = quiver_tests::mesh::RedisServer::start()?;
    let dir = RedisDirectory::connect(&redis.url()).await?;
    let user = |name: &str| quiver_sdk::UserId::parse(name).expect("valid");
    let (alice, bob) = (user("alice"), user("bob"));
    dir.create_user(&alice, "h", "n1").await?;
    dir.create_user(&bob, "h", "n2").await?;
    assert!(matches!(
        dir.create_user(&bob, "h", "n1").await,
        Err(DirectoryError::UserExists)
    ));
    assert_eq!(dir.home(&bob).await?.as_deref(), Some("n2"));
    assert_eq!(dir.home(&user("nobody")).await?, None);
    assert!(matches!(
        dir.accept_friend(&bob, &alice).await,
        Err(DirectoryError::NoRequest)
    ));
    assert!(matches!(
        dir.request_friend(&alice, &user("nobody")).await,
        Err(DirectoryError::NoSuchUser)
    ));
    assert!(matches!(
        dir.request_friend(&alice, &alice).await,
        Err(DirectoryError::SelfFriend)
    ));
    assert_eq!(
        dir.request_friend(&alice, &bob).await?,
        FriendRequestOutcome::Pending
    );
    assert_eq!(dir.friendship(&alice, &bob).await?, None);
    assert_eq!(
        dir.relations(&bob).await?.incoming,
        std::slice::from_ref(&alice)
    );
    let key = dir.accept_friend(&bob, &alice).await?;
    assert_eq!(dir.friendship(&alice, &bob).await?, Some(key));
    assert_eq!(dir.friendship(&bob, &alice).await?, Some(key));
    assert_eq!(
        dir.request_friend(&alice, &bob).await?,
        FriendRequestOutcome::AlreadyFriends(key)
    );
    let relations = dir.relations(&alice).await?;
    assert!(relations.outgoing.is_empty() && relations.incoming.is_empty());
    assert_eq!(relations.friends.len(), 1);

    let device = dir.register_device(&alice, None).await?;
    assert_eq!(dir.register_device(&alice, Some(device)).await?, device);
    assert!(dir.has_device(&alice, device).await?);
    dir.remove_devices(&alice, Some(device)).await?;
    assert!(!dir.has_device(&alice, device).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_closes_the_devices_sessions_on_other_nodes() -> anyhow::Result<()> {
    let cluster = Cluster::start(2).await?;
    let bob = cluster.user(1, "bob").await?;
    let phone = bob.new_device(cluster.n(1)).await?;
    // Both devices connected to node 2, which is not their home.
    let (_laptop, mut laptop_events) = cluster.n(2).connect(&bob).await?;
    let (_phone, mut phone_events) = cluster.n(2).connect(&phone).await?;

    // The laptop logs out through node 1; its session on node 2 ends, the phone's does not.
    cluster.n(1).rest().logout(&bob.login.token, false).await?;
    loop {
        match next_any_event(&mut laptop_events).await? {
            quiver_sdk::Event::Disconnected { reason } => {
                assert!(reason.contains("Unauthenticated"), "{reason}");
                break;
            }
            quiver_sdk::Event::Connection(_) => {}
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_quiet(&mut phone_events, Duration::from_millis(500)).await?;
    assert_eq!(
        cluster.n(2).node().locations(&bob.id).await,
        Some(vec![(phone.login.device, "n2".to_string())])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_crosses_the_mesh_to_a_recipient_who_was_offline() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    cluster.n(1).befriend(&alice, &bob).await?;
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("trip.jpg");
    crate::files::random_file(&source, 3 << 20, 21)?;
    let blob_on = |node: usize, blob: &quiver_sdk::BlobId| {
        let path = cluster.n(node).data_dir().join("blobs").join(blob.to_hex());
        path.exists()
    };

    // Alice is connected away from home (n3): her upload is relayed to n1, her home,
    // where her files live.
    let (a, _a_events) = cluster.n(3).connect(&alice).await?;
    let sent = a.send_file(&bob.id, &source, "image/jpeg", |_| {}).await?;
    assert!(blob_on(1, &sent.file.blob), "stored on the owner's home");
    assert!(!blob_on(3, &sent.file.blob) && !blob_on(2, &sent.file.blob));
    assert_eq!(cluster.n(1).node().file_usage(&alice.id), sent.file.size);

    // Bob was offline. He connects to his home, n2, which fetches the file from n1.
    let (b, mut b_events) = cluster.n(2).connect(&bob).await?;
    let (seq, offer) = crate::files::next_file(&mut b_events).await?;
    assert_eq!(seq, sent.sent.seq);
    let target = dir.path().join("trip-received.jpg");
    b.download(&offer, &target, |_| {}).await?;
    assert_eq!(std::fs::read(&source)?, std::fs::read(&target)?);
    assert!(!blob_on(2, &sent.file.blob), "passed through, not copied");
    Ok(())
}

/// A node learns of the others at its heartbeat; a logout made right after another node
/// joined must still find the devices connected there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_on_a_node_that_joined_after_the_last_heartbeat_count() -> anyhow::Result<()> {
    use quiver_server::mesh::{NodeAddrs, Registry};
    let redis = quiver_tests::mesh::RedisServer::start()?;
    let url = redis.url();
    let connect = || quiver_server::directory::connect_redis(&url);
    let addrs = |port| NodeAddrs {
        mesh: ([127, 0, 0, 1], port).into(),
        client: ([127, 0, 0, 1], port + 1).into(),
    };
    let beat = Duration::from_secs(60);
    let n1 = Registry::new(connect().await?, "n1", addrs(7000), beat);
    n1.heartbeat().await?;
    // n2 joins after n1's last look at the node set.
    let n2 = Registry::new(connect().await?, "n2", addrs(7100), beat);
    n2.heartbeat().await?;
    assert!(n1.node("n2").is_none(), "n1 has not reread the nodes yet");
    let bob = quiver_sdk::UserId::parse("bob")?;
    n2.set_location(&bob, quiver_sdk::DeviceId(5))
        .await
        .expect("location written");
    assert_eq!(
        n1.locations(&bob).await?,
        [(quiver_sdk::DeviceId(5), "n2".to_string())]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_link_offers_more_streams_than_at_first_as_they_are_used() -> anyhow::Result<()> {
    use quiver_proto::{encode_frame, ClientMsgId, ConversationRequest, ConversationResponse};
    let cluster = Cluster::start(2).await?;
    let bob = cluster.user(2, "bob").await?;
    // Conversations with Bob from node 1, all open at once: each holds a stream of the
    // link to Bob's home, more than the link is offered at first.
    let want = quiver_server::mesh::FIRST_LINK_OFFER as usize + 100;
    let (per_connection, per_user) = (60, 600);
    let mut senders = Vec::new();
    for i in 0..want.div_ceil(per_user) {
        let sender = cluster.user(1, &format!("sender{i}")).await?;
        cluster.n(1).befriend(&sender, &bob).await?;
        senders.push(sender);
    }
    let open = encode_frame(&ConversationRequest::Open {
        peer: bob.id.clone(),
    })?;
    let (mut connections, mut streams) = (Vec::new(), Vec::new());
    while streams.len() < want {
        let sender = &senders[streams.len() / per_user];
        let (conn, control_send, control_recv, _) =
            crate::raw::hello(cluster.n(1), &sender.login.token).await?;
        for _ in 0..per_connection.min(want - streams.len()) {
            let (mut send, recv) = tokio::time::timeout(WAIT, conn.open_bi()).await??;
            send.write_all(&open).await?;
            streams.push((send, recv));
        }
        connections.push((conn, control_send, control_recv));
    }
    // Every conversation gets its chat through to Bob's home and its SENT back: none
    // waits on the link for a stream that a held-open one would have to give back.
    for (i, (send, _)) in streams.iter_mut().enumerate() {
        let chat = ConversationRequest::Chat {
            id: ClientMsgId(i as u128 + 1),
            sent_at_ms: 1,
            body: vec![7; 16],
            file: None,
        };
        send.write_all(&encode_frame(&chat)?).await?;
    }
    for (i, (_, recv)) in streams.iter_mut().enumerate() {
        let sent: ConversationResponse = tokio::time::timeout(WAIT, crate::raw::read_one(recv))
            .await
            .map_err(|_| anyhow::anyhow!("conversation {i} got no answer"))??;
        assert!(
            matches!(sent, ConversationResponse::Sent { .. }),
            "{sent:?}"
        );
    }
    Ok(())
}

/// A read mark that arrives while the ack before it is still dialing the sender's home
/// node must not wait behind that ack for ever. The ack holds the link while it dials; the
/// node keeps driving it while the read mark waits, so when the home stays silent the
/// device is told (its connection is closed, to acknowledge again later) instead of being
/// left on a control loop that answers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_mark_behind_an_ack_dialing_a_silent_home_does_not_stall() -> anyhow::Result<()> {
    use quiver_server::mesh::{NodeAddrs, Registry};
    let mut cluster = Cluster::start(2).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    cluster.n(1).befriend(&alice, &bob).await?;
    let (a, _a_events) = cluster.n(1).connect(&alice).await?;
    let sent = a.send(&bob.id, b"hi bob").await?;
    a.close().await;

    // Alice's home goes away and its registration comes back pointing at a socket that
    // never answers: dialing it takes the whole dial timeout.
    cluster.nodes[0].stop().await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let addrs = NodeAddrs {
        mesh: silent.local_addr()?,
        client: silent.local_addr()?,
    };
    let redis = quiver_server::directory::connect_redis(&cluster.redis.url()).await?;
    Registry::new(redis, "n1", addrs, Duration::from_secs(60))
        .heartbeat()
        .await?;
    // Until Bob's node rereads the registry, it would dial n1's old address, where the
    // closing endpoint refuses at once.
    wait_for(|| async { cluster.n(2).node().mesh_peer("n1") == Some(addrs) }).await?;

    let (b, mut b_events) = cluster.n(2).connect(&bob).await?;
    let got = next_message(&mut b_events).await?;
    assert_eq!(got.seq, sent.seq);
    // The SDK acknowledged it; once its DELIVERED is on the way, the ack holds the link.
    let receipt_requests = "quiver_mesh_requests_total{kind=\"receipt\"}";
    wait_for(|| async {
        let text = cluster.n(2).rest().metrics().await.unwrap_or_default();
        quiver_bench::stats::metric(&text, receipt_requests).unwrap_or(0.0) >= 1.0
    })
    .await?;
    b.mark_read(got.seq)?;

    loop {
        match next_any_event(&mut b_events).await? {
            quiver_sdk::Event::Connection(quiver_sdk::ConnectionState::Offline { reason }) => {
                assert!(reason.contains("could not record delivery"), "{reason}");
                break;
            }
            quiver_sdk::Event::ServerError { code, .. } => {
                assert_eq!(code, quiver_sdk::ErrorCode::Unavailable);
            }
            // `Online` may come after the message.
            quiver_sdk::Event::Connection(_) => {}
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    drop(silent);
    Ok(())
}
