//! The TCP carrier: QUIC packets in TLS over TCP, for networks that block UDP. A client
//! pinned to TCP does everything a UDP one does; in a real network namespace where
//! nftables drops UDP mid-session, the phone moves to TCP by itself and back when UDP
//! returns, on the same connection, losing and repeating nothing.

use crate::phone::PhoneScene;
use anyhow::{ensure, Context};
use quiver_sdk::Event;
use quiver_tests::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_tcp_chats_sends_files_and_types_like_one_on_udp() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, mut a_events) = node
        .connect_with(&alice, |o| {
            o.presence = Some(quiver_sdk::PresenceState::Online)
        })
        .await?;
    let (b, mut b_events) = node
        .connect_with(&bob, |o| {
            o.tcp_only = true;
            o.presence = Some(quiver_sdk::PresenceState::Online);
        })
        .await?;
    ensure!(b.on_tcp(), "bob is on the TCP carrier");
    let text = node.rest().metrics().await?;
    ensure!(
        text.lines().any(|l| l == "quiver_tcp_tunnels_open 1"),
        "one tunnel open on the node"
    );

    // Chat both ways, in order.
    for i in 0..50 {
        b.send(&alice.id, format!("from tcp {i}").as_bytes())
            .await?;
        a.send(&bob.id, format!("from udp {i}").as_bytes()).await?;
    }
    let to_alice = texts(&mut a_events, 50).await?;
    let to_bob = texts(&mut b_events, 50).await?;
    ensure!(to_alice == (0..50).map(|i| format!("from tcp {i}")).collect::<Vec<_>>());
    ensure!(to_bob == (0..50).map(|i| format!("from udp {i}")).collect::<Vec<_>>());

    // A file up and down over TCP.
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("photo.bin");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &content)?;
    b.send_file(&alice.id, &source, "image/jpeg", |_| {})
        .await?;
    let offer = loop {
        match next_event(&mut a_events).await? {
            Event::Message(m) if m.file.is_some() => break m.file.context("file")?,
            _ => continue,
        }
    };
    let target = dir.path().join("copy.bin");
    a.download(&offer, &target, |_| {}).await?;
    ensure!(std::fs::read(&target)? == content, "byte-identical");
    // Typing: a datagram inside the tunnelled QUIC connection.
    let deadline = Instant::now() + WAIT;
    let typed = loop {
        a.typing(&bob.id)?;
        match tokio::time::timeout(Duration::from_millis(300), b_events.recv()).await {
            Ok(Some(Event::Typing { from, .. })) => break from,
            _ => ensure!(Instant::now() < deadline, "no typing over TCP"),
        }
    };
    ensure!(typed == alice.id);
    ensure!(b.on_tcp() && b.carrier_moves() == 0, "stayed on TCP");
    Ok(())
}

/// The texts of the next `n` messages, other events (presence) skipped.
async fn texts(events: &mut quiver_sdk::Events, n: usize) -> anyhow::Result<Vec<String>> {
    let mut texts = Vec::new();
    while texts.len() < n {
        if let Event::Message(m) = next_event(events).await? {
            texts.push(m.text());
        }
    }
    Ok(texts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_blocked_mid_session_moves_to_tcp_and_back_losing_nothing() -> anyhow::Result<()> {
    let scene = PhoneScene::new().await?;
    let count = 300;
    let app = scene
        .start_app(&["--send", &count.to_string(), "--probe-ms", "1000"])
        .await?;
    let (a, mut a_events) = scene.alice_client().await?;
    let bob = scene.bob.id.clone();
    let sending = tokio::spawn(async move {
        for i in 0..count {
            a.send(&bob, i.to_string().as_bytes()).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(a)
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    scene.phone.block_udp()?;
    let blocked = Instant::now();
    // The move takes about 3 s (UDP suspect after 1 s, then two probes of 1 s each); 7 s
    // leaves room for one more round if the first tunnel cannot open on a loaded machine.
    tokio::time::sleep(Duration::from_secs(7)).await;
    scene.phone.unblock_udp()?;
    let unblocked = Instant::now();

    // Everything Bob sent reaches Alice once, in order.
    let from_bob: Vec<String> = messages(&mut a_events, count)
        .await?
        .iter()
        .map(|m| m.text())
        .collect();
    ensure!(
        from_bob == (0..count).map(|i| i.to_string()).collect::<Vec<_>>(),
        "Bob's messages once and in order: {from_bob:?}"
    );
    let _a = sending.await??;
    // And everything Alice sent reaches Bob once, in order.
    let (mut got, mut carriers) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + WAIT;
    while (got.len() < count || carriers.len() < 2) && Instant::now() < deadline {
        for (at, line) in app.take() {
            if let Some(text) = line.strip_prefix("msg ") {
                got.push(text.to_owned());
            } else if let Some(carrier) = line.strip_prefix("carrier ") {
                carriers.push((at, carrier.to_owned()));
            } else if line.starts_with("state") {
                ensure!(line == "state Online", "the phone reconnected: {line}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(
        got == (0..count).map(|i| i.to_string()).collect::<Vec<_>>(),
        "Alice's messages once and in order: {got:?}"
    );
    let moves: Vec<&str> = carriers.iter().map(|(_, c)| c.as_str()).collect();
    ensure!(moves == ["tcp", "udp"], "to TCP and back: {moves:?}");
    let to_tcp = carriers[0].0.saturating_duration_since(blocked);
    let to_udp = carriers[1].0.saturating_duration_since(unblocked);
    eprintln!("moved to TCP {to_tcp:?} after UDP was blocked, back {to_udp:?} after it returned");
    ensure!(
        scene.node.sessions_opened() == 2,
        "the same connection throughout: {} sessions",
        scene.node.sessions_opened()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tunnels_are_bounded_and_an_honest_one_chats_on() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = TestNode::start_with(|c| {
        c.limits.max_connections_per_address = 4;
        c.limits.handshake_timeout_ms = 500;
    })
    .await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    let (_b, mut b_events) = node.connect_with(&bob, |o| o.tcp_only = true).await?;
    let chat = |n: usize| {
        let (a, bob) = (a.clone(), bob.id.clone());
        async move {
            for i in 0..n {
                a.send(&bob, format!("honest {i}").as_bytes()).await?;
            }
            anyhow::Ok(())
        }
    };
    chat(5).await?;
    ensure!(texts(&mut b_events, 5).await?.len() == 5);

    // From another address: TCP connections that never speak TLS take the address's
    // four tunnel slots; a fifth is closed at once; the four after the handshake timeout.
    let attacker = || async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.2:0".parse()?)?;
        anyhow::Ok(socket.connect(node.quic_addr()).await?)
    };
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(attacker().await?);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fifth = attacker().await?;
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_millis(400), fifth.read(&mut byte)).await;
    ensure!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a fifth tunnel is refused: {closed:?}"
    );
    for mut stream in idle {
        let closed = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut byte)).await;
        ensure!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "closed after the handshake timeout"
        );
    }

    // A tunnel that speaks TLS, then sends a length no packet has: closed, alone.
    let tls = quiver_sdk::tls::rustls_config(&node.ca_pem, &[quiver_proto::carrier::TUNNEL_ALPN])
        .map_err(anyhow::Error::msg)?;
    let tcp = attacker().await?;
    let mut tunnel = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect("127.0.0.1".try_into()?, tcp)
        .await?;
    tunnel.write_all(&u16::MAX.to_be_bytes()).await?;
    tunnel.write_all(&[0u8; 64]).await?;
    let closed = tokio::time::timeout(Duration::from_secs(3), tunnel.read(&mut byte)).await;
    ensure!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a bad length ends the tunnel"
    );

    // Bob's tunnel carried on throughout.
    chat(5).await?;
    ensure!(texts(&mut b_events, 5).await?.len() == 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiving_phone_that_moves_onto_a_udp_blocking_network_goes_on_over_tcp(
) -> anyhow::Result<()> {
    // The train: Wi-Fi (UDP fine) goes away; the phone falls to a network that drops UDP.
    let scene = PhoneScene::new().await?;
    scene.phone.block_udp_on(Some("cell"))?;
    let app = scene.start_app(&[]).await?;
    let (a, _a_events) = scene.alice_client().await?;
    let count = 150;
    let mut sent_at = Vec::new();
    for i in 0..count {
        if i == 50 {
            // A quiet moment, then Wi-Fi goes: nothing of the phone's own is in flight.
            tokio::time::sleep(Duration::from_millis(500)).await;
            scene.phone.link_down("wifi")?;
        }
        sent_at.push(Instant::now());
        a.send(&scene.bob.id, i.to_string().as_bytes()).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut got, mut carriers) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + WAIT;
    // The phone reports its carrier every 20 ms: the messages the move set free can all
    // arrive before it says so.
    while (got.len() < count || carriers.is_empty()) && Instant::now() < deadline {
        for (at, line) in app.take() {
            if let Some(text) = line.strip_prefix("msg ") {
                got.push((at, text.to_owned()));
            } else if let Some(carrier) = line.strip_prefix("carrier ") {
                carriers.push(carrier.to_owned());
            } else if line.starts_with("state") {
                ensure!(line == "state Online", "the phone reconnected: {line}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    let expected: Vec<String> = (0..count).map(|i| i.to_string()).collect();
    ensure!(texts == expected, "once and in order: {texts:?}");
    ensure!(carriers == ["tcp"], "moved to TCP: {carriers:?}");
    let worst = (50..count)
        .map(|i| got[i].0.saturating_duration_since(sent_at[i]))
        .max()
        .unwrap_or_default();
    eprintln!("worst delay after moving onto the UDP-blocking network: {worst:?}");
    // A second to suspect UDP, two probes of a second each, then the tunnel.
    ensure!(worst <= Duration::from_secs(5), "{worst:?}");
    ensure!(
        scene.node.sessions_opened() == 2,
        "the same connection throughout"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_behind_a_udp_blocking_firewall_finds_a_restarted_node_over_tcp(
) -> anyhow::Result<()> {
    let mut scene = PhoneScene::new().await?;
    scene.phone.block_udp()?;
    let app = scene.start_app(&[]).await?;
    let (a, _a_events) = scene.alice_client().await?;
    let bob = scene.bob.id.clone();
    a.send(&bob, b"before").await?;
    let restarted = Instant::now();
    scene.node.restart_on_same_ports().await?;
    // Alice reconnects by herself; her message waits in her outbox until then.
    a.send(&bob, b"after").await?;
    let (mut texts, mut carriers, mut back) = (Vec::new(), Vec::new(), None);
    let deadline = Instant::now() + WAIT;
    while back.is_none() && Instant::now() < deadline {
        for (at, line) in app.take() {
            if let Some(text) = line.strip_prefix("msg ") {
                texts.push(text.to_owned());
                if text == "after" {
                    back = Some(at.saturating_duration_since(restarted));
                }
            } else if let Some(carrier) = line.strip_prefix("carrier ") {
                carriers.push(carrier.to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = back.context("the phone never got the message sent after the restart")?;
    eprintln!("behind the firewall, the phone had the first message after the restart {back:?} later; carriers {carriers:?}");
    ensure!(
        texts == ["before", "after"],
        "each once, in order: {texts:?}"
    );
    ensure!(
        carriers.first().map(String::as_str) == Some("tcp"),
        "{carriers:?}"
    );
    Ok(())
}
