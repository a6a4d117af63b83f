//! Typing and presence as QUIC datagrams: typing reaches a friend (and a group's
//! members) and never anyone else; presence changes reach friends, and a client killed
//! with SIGKILL shows offline within the node's idle timeout; a flood of datagrams is
//! capped without touching chat; nothing of either is written to disk.

use anyhow::{bail, ensure, Context};
use quiver_sdk::{Client, Event, Events, PresenceState, UserId};
use quiver_tests::*;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Connects `user` showing `Online` (and so receiving presence and typing).
async fn online(node: &TestNode, user: &TestUser) -> anyhow::Result<(Client, Events)> {
    node.connect_with(user, |o| o.presence = Some(PresenceState::Online))
        .await
}

/// The next typing event within `wait`, skipping presence events.
async fn typing(events: &mut Events, wait: Duration) -> anyhow::Result<Option<Event>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return Ok(None),
            Ok(None) => bail!("events ended"),
            Ok(Some(e @ Event::Typing { .. })) => return Ok(Some(e)),
            Ok(Some(Event::Presence { .. } | Event::Connection(_) | Event::GroupChange { .. })) => {
            }
            Ok(Some(other)) => bail!("unexpected {other:?}"),
        }
    }
}

/// Waits (5 s at most) for `from`'s typing to a friend.
async fn typed_by(events: &mut Events, from: &UserId) -> anyhow::Result<()> {
    let got = typing(events, Duration::from_secs(5)).await?;
    let want = Event::Typing {
        from: from.clone(),
        group: None,
    };
    ensure!(got == Some(want), "typing of {from}: {got:?}");
    Ok(())
}

/// The next presence event of `of` within `wait`.
async fn presence_of(
    events: &mut Events,
    of: &UserId,
    wait: Duration,
) -> anyhow::Result<(PresenceState, u64)> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => bail!("no presence of {of} in {wait:?}"),
            Ok(None) => bail!("events ended"),
            Ok(Some(Event::Presence {
                user,
                state,
                last_seen_ms,
            })) if user == *of => return Ok((state, last_seen_ms)),
            Ok(Some(_)) => {}
        }
    }
}

#[tokio::test]
async fn typing_reaches_a_friend_and_group_members_never_a_stranger() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob, eve) = (
        node.user("alice").await?,
        node.user("bob").await?,
        node.user("eve").await?,
    );
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = online(&node, &alice).await?;
    let (_b, mut b_events) = online(&node, &bob).await?;
    let (_e, mut e_events) = online(&node, &eve).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    a.typing(&bob.id)?;
    typed_by(&mut b_events, &alice.id).await?;
    a.typing(&eve.id)?; // not a friend: dropped by the node
    ensure!(typing(&mut e_events, Duration::from_millis(500))
        .await?
        .is_none());

    // A group: Bob is a member, Eve is not.
    let rest = node.rest();
    let group = rest.create_group(&alice.login.token, "team").await?.id;
    rest.add_member(&alice.login.token, &group, "bob").await?;
    a.group_typing(&group)?;
    let got = typing(&mut b_events, Duration::from_secs(5)).await?;
    ensure!(
        got == Some(Event::Typing {
            from: alice.id.clone(),
            group: Some(group.clone())
        }),
        "{got:?}"
    );
    ensure!(typing(&mut e_events, Duration::from_millis(500))
        .await?
        .is_none());

    // What one typing datagram costs on the wire (UDP payload bytes the client sent),
    // printed for the README: 20 of them, one at a time.
    let conn = a.connection().context("online")?;
    let mut sizes = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = conn.stats().udp_tx;
        a.typing(&bob.id)?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let after = conn.stats().udp_tx;
        if after.datagrams == before.datagrams + 1 {
            sizes.push(after.bytes - before.bytes);
        }
    }
    sizes.sort_unstable();
    println!("typing datagram to bob, UDP payload bytes: {sizes:?}");
    ensure!(!sizes.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_friends_and_a_killed_client_goes_offline() -> anyhow::Result<()> {
    let idle = Duration::from_secs(2);
    let node = TestNode::start_with(|c| c.limits.idle_timeout_ms = idle.as_millis() as u64).await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let dir = tempfile::tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &node.ca_pem)?;

    // Bob's app, a process of its own, online.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_presence_child"))
        .arg(node.quic_addr().to_string())
        .arg(&ca)
        .arg(&bob.login.token)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    ensure!(line.trim() == "online", "{line:?}");

    // Alice connects: she learns Bob is online; then sees him go away and come back.
    // Her keep-alive is under the node's 2 s idle timeout, like the child's: else her own
    // connection could time out with his, and the next connection's first news of Bob
    // would be the "online" he still showed then.
    let (a, mut a_events) = node
        .connect_with(&alice, |o| {
            o.presence = Some(PresenceState::Online);
            o.keep_alive = Duration::from_millis(500);
        })
        .await?;
    let (state, seen) = presence_of(&mut a_events, &bob.id, Duration::from_secs(5)).await?;
    ensure!(
        state == PresenceState::Online && seen > 0,
        "{state:?} {seen}"
    );
    let (b2, _b2_events) = online(&node, &bob.new_device(&node).await?).await?;
    b2.set_presence(PresenceState::Offline)?; // a device that hides hides Bob
    let (state, _) = presence_of(&mut a_events, &bob.id, Duration::from_secs(5)).await?;
    ensure!(state == PresenceState::Offline, "{state:?}");
    b2.set_presence(PresenceState::Away)?;
    let (state, _) = presence_of(&mut a_events, &bob.id, Duration::from_secs(5)).await?;
    ensure!(
        state == PresenceState::Online,
        "online on one device wins over away: {state:?}"
    );
    // What a presence change costs on the wire where it arrives (UDP payload bytes
    // Alice's client received for it), printed for the README: hide and show, 10 times.
    let conn = a.connection().context("online")?;
    let mut sizes = Vec::new();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = conn.stats().udp_rx;
        let state = if i % 2 == 0 {
            PresenceState::Offline
        } else {
            PresenceState::Away
        };
        b2.set_presence(state)?;
        presence_of(&mut a_events, &bob.id, Duration::from_secs(5)).await?;
        let after = conn.stats().udp_rx;
        if after.datagrams == before.datagrams + 1 {
            sizes.push(after.bytes - before.bytes);
        }
    }
    sizes.sort_unstable();
    println!("presence change of bob, UDP payload bytes received: {sizes:?}");
    ensure!(!sizes.is_empty());
    b2.close().await;

    // SIGKILL: no goodbye; the node notices within its idle timeout.
    let killed = Instant::now();
    child.kill()?;
    child.wait()?;
    let (state, seen) = presence_of(&mut a_events, &bob.id, idle * 3).await?;
    let took = killed.elapsed();
    ensure!(
        state == PresenceState::Offline && seen > 0,
        "{state:?} {seen}"
    );
    ensure!(
        took <= idle + Duration::from_millis(1_500),
        "offline after {took:?}"
    );
    drop(a);
    Ok(())
}

#[tokio::test]
async fn a_flood_of_datagrams_is_capped_and_chat_goes_on() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = online(&node, &alice).await?;
    let (_b, mut b_events) = online(&node, &bob).await?;
    let files = |dir: &std::path::Path| -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
        files_below(dir)
            .into_iter()
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                Some((p, m.len(), m.modified().ok()?))
            })
            .collect()
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = files(node.data_dir());

    let started = Instant::now();
    for i in 0..2_000 {
        a.typing(&bob.id)?;
        if i % 100 == 0 {
            a.set_presence(if i % 200 == 0 {
                PresenceState::Away
            } else {
                PresenceState::Online
            })?;
            tokio::task::yield_now().await;
        }
    }
    let mut typings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1_500);
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, b_events.recv()).await {
        if matches!(event, Event::Typing { .. }) {
            typings += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // A burst of 20 and 10 a second for the whole connection, presence included.
    let cap = 20.0 + 10.0 * elapsed;
    ensure!(
        typings > 0 && f64::from(typings) <= cap,
        "{typings} typings, cap {cap}"
    );
    ensure!(
        files(node.data_dir()) == before,
        "typing and presence wrote nothing to disk"
    );
    let metrics = node.rest().metrics().await?;
    let dropped = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("quiver_datagrams_dropped_total ")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    ensure!(dropped > 1_000, "{dropped} dropped");

    // Chat is untouched.
    for i in 0..50 {
        a.send(&bob.id, format!("after {i}").as_bytes()).await?;
    }
    let mut texts = Vec::new();
    while texts.len() < 50 {
        match tokio::time::timeout(Duration::from_secs(10), b_events.recv()).await? {
            Some(Event::Message(m)) => texts.push(m.text()),
            Some(_) => {}
            None => bail!("events ended"),
        }
    }
    ensure!(texts == (0..50).map(|i| format!("after {i}")).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_presence_reach_friends_connected_to_another_mesh_node() -> anyhow::Result<()> {
    let cluster = quiver_tests::mesh::Cluster::start(2).await?;
    let (n1, n2) = (cluster.n(1), cluster.n(2));
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    let eve = cluster.user(2, "eve").await?;
    n1.befriend(&alice, &bob).await?;
    let (a, _a_events) = online(n1, &alice).await?;
    let (_b, mut b_events) = online(n2, &bob).await?;
    let (_e, mut e_events) = online(n2, &eve).await?;
    // Bob learns Alice is online when she first shows it only if he was there; show a
    // change now that both are connected.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.set_presence(PresenceState::Away)?;
    let (state, _) = presence_of(&mut b_events, &alice.id, Duration::from_secs(5)).await?;
    ensure!(state == PresenceState::Away, "{state:?}");

    a.typing(&bob.id)?;
    typed_by(&mut b_events, &alice.id).await?;
    a.typing(&eve.id)?; // not a friend: dropped on n1
    ensure!(typing(&mut e_events, Duration::from_millis(500))
        .await?
        .is_none());
    ensure!(
        presence_of(&mut e_events, &alice.id, Duration::from_millis(300))
            .await
            .is_err(),
        "a stranger on the other node sees nothing of Alice"
    );
    Ok(())
}
