//! Faults: packet loss, duplication and reordering; network changes (migration); outages
//! longer than the idle timeout; a receiver that stops reading. Nothing may be lost,
//! repeated or reordered, and the node's memory stays bounded.

use quiver_sdk::{Client, ConnectionState, Event, Events, ReceiptKind, Seq, UserId};
use quiver_tests::relay::{Faults, Relay};
use quiver_tests::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// These tests are about faults, not rate limits: let one connection send as fast as it
/// can (the limit has its own test in `hostile.rs`).
fn fast_senders(config: &mut quiver_server::Config) {
    config.limits.messages_per_sec = 1_000_000;
    config.limits.message_burst = 1_000_000;
}

/// Runs a test body with a time limit: a hang is a failure, not a stuck CI run.
async fn bounded(
    body: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(240), body).await?
}

/// `tasks` senders, each sending `per_task` messages one after another ("t{task} {i}").
/// Returns every SENT seq. `progress` counts SENTs as they come.
async fn send_bursts(
    client: &Client,
    to: &UserId,
    tasks: usize,
    per_task: usize,
    progress: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<Seq>> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (client, to, progress) = (client.clone(), to.clone(), progress.clone());
        handles.push(tokio::spawn(async move {
            let mut seqs = Vec::with_capacity(per_task);
            for i in 0..per_task {
                seqs.push(client.send(&to, format!("t{t} {i}").as_bytes()).await?.seq);
                progress.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(seqs)
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await??);
    }
    all.sort();
    Ok(all)
}

/// Receives `n` messages and checks: each seq once, seqs increasing, and each sender
/// task's messages in the order that task sent them. Returns the seqs.
async fn receive_in_order(events: &mut Events, n: usize) -> anyhow::Result<Vec<Seq>> {
    let got = messages(events, n).await?;
    let seqs: Vec<Seq> = got.iter().map(|m| m.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq order, no repeats"
    );
    let mut next_per_task = std::collections::HashMap::<String, usize>::new();
    for m in &got {
        let text = m.text();
        let (task, i) = text.split_once(' ').expect("t{task} {i}");
        let expected = next_per_task.entry(task.to_owned()).or_default();
        assert_eq!(i.parse::<usize>()?, *expected, "{task} out of order");
        *expected += 1;
    }
    Ok(seqs)
}

/// Receipts of `kind` until `n` distinct seqs have one; fails on a repeated receipt.
async fn distinct_receipts(
    events: &mut Events,
    kind: ReceiptKind,
    n: usize,
) -> anyhow::Result<HashSet<Seq>> {
    let mut seen = HashSet::new();
    while seen.len() < n {
        match next_event(events).await? {
            Event::Receipt(r) if r.kind == kind => {
                assert!(seen.insert(r.seq), "receipt twice for {}", r.seq)
            }
            Event::Receipt(_) | Event::Message(_) => {}
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_through_loss_duplication_and_reordering_arrive_once_in_order(
) -> anyhow::Result<()> {
    let node = TestNode::start_with(fast_senders).await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let faults = Faults {
        drop: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        max_delay: Duration::from_millis(5),
    };
    let a_relay = Relay::start(node.quic_addr(), faults).await?;
    let b_relay = Relay::start(node.quic_addr(), faults).await?;
    let (a, mut a_events) = node
        .connect_with(&alice, |o| o.addr = a_relay.addr())
        .await?;
    let (_b, mut b_events) = node.connect_with(&bob, |o| o.addr = b_relay.addr()).await?;

    let started = Instant::now();
    let (tasks, per_task) = (20, 500);
    let receiving = tokio::spawn(async move {
        let seqs = receive_in_order(&mut b_events, tasks * per_task).await;
        (seqs, b_events)
    });
    let sent = send_bursts(&a, &bob.id, tasks, per_task, Default::default()).await?;
    let (received, mut b_events) = receiving.await?;
    assert_eq!(received?, sent, "every SENT message delivered exactly once");
    let delivered = distinct_receipts(&mut a_events, ReceiptKind::Delivered, sent.len()).await?;
    assert_eq!(delivered, sent.iter().copied().collect());
    assert_quiet(&mut b_events, Duration::from_millis(500)).await?;

    for (who, relay) in [("alice", &a_relay), ("bob", &b_relay)] {
        let s = relay.stats();
        eprintln!(
            "{who}'s relay: forwarded {} dropped {} duplicated {} delayed {}",
            s.forwarded.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
            s.duplicated.load(Ordering::Relaxed),
            s.delayed.load(Ordering::Relaxed)
        );
        assert!(
            s.dropped.load(Ordering::Relaxed) > 100,
            "the faults really happened"
        );
    }
    eprintln!(
        "{} messages with receipts through 5% loss in {:?}",
        sent.len(),
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_mid_burst_migrates_the_same_connection_and_loses_nothing() -> anyhow::Result<()>
{
    let node = TestNode::start_with(fast_senders).await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, mut a_events) = node.connect(&alice).await?;
    let (b, mut b_events) = node.connect(&bob).await?;
    let (a_conn, b_conn) = (a.connection().unwrap(), b.connection().unwrap());

    let (tasks, per_task) = (4, 750);
    let progress = Arc::new(AtomicUsize::new(0));
    let sending = {
        let (a, bob, progress) = (a.clone(), bob.id.clone(), progress.clone());
        tokio::spawn(async move { send_bursts(&a, &bob, tasks, per_task, progress).await })
    };
    let receiving = tokio::spawn(async move {
        let seqs = receive_in_order(&mut b_events, tasks * per_task).await;
        (seqs, b_events)
    });

    let mut addrs = vec![a.local_addr()?];
    for (at, who) in [(500, &a), (1200, &b), (1800, &a)] {
        while progress.load(Ordering::Relaxed) < at {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = progress.load(Ordering::Relaxed);
        let moved = Instant::now();
        let new_addr = who.rebind()?;
        if std::ptr::eq(who, &a) {
            addrs.push(new_addr);
        }
        while progress.load(Ordering::Relaxed) == before {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        eprintln!(
            "{} moved to {new_addr}; next SENT after {:?}",
            who.user(),
            moved.elapsed()
        );
    }
    let sent = sending.await??;
    let (received, _b_events) = receiving.await?;
    assert_eq!(received?, sent, "nothing lost or repeated");

    // The same connections throughout: no reconnect, no new handshake, no new session.
    assert_eq!(a.connection().unwrap().stable_id(), a_conn.stable_id());
    assert_eq!(b.connection().unwrap().stable_id(), b_conn.stable_id());
    assert_eq!(node.sessions_opened(), 2, "no new session on the node");
    let distinct: HashSet<_> = addrs.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "alice really used three local addresses: {addrs:?}"
    );
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(200), a_events.recv()).await
    {
        assert!(
            !matches!(
                event,
                Event::Connection(ConnectionState::Offline { .. })
                    | Event::Connection(ConnectionState::Connecting)
            ),
            "{event:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_longer_than_the_idle_timeout_are_survived_by_sender_and_receiver(
) -> anyhow::Result<()> {
    let node = TestNode::start_with(fast_senders).await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let a_relay = Relay::start(node.quic_addr(), Faults::default()).await?;
    let b_relay = Relay::start(node.quic_addr(), Faults::default()).await?;
    let mobile = |relay: &Relay| {
        let addr = relay.addr();
        move |o: &mut quiver_sdk::ConnectOptions| {
            o.addr = addr;
            o.keep_alive = Duration::from_millis(300);
            o.idle_timeout = Duration::from_millis(1500);
            o.connect_timeout = Duration::from_secs(1);
            o.backoff_min = Duration::from_millis(100);
            o.backoff_max = Duration::from_millis(400);
            o.resend_after = Duration::from_secs(2);
        }
    };
    let (a, mut a_events) = node.connect_with(&alice, mobile(&a_relay)).await?;
    let (b, mut b_events) = node.connect_with(&bob, mobile(&b_relay)).await?;
    let mut sent = Vec::new();
    for i in 0..50 {
        sent.push(a.send(&bob.id, format!("t0 {i}").as_bytes()).await?.seq);
    }
    let mut got = receive_in_order(&mut b_events, 50).await?;

    // The receiver's network goes dark for longer than its idle timeout.
    b_relay.set_blackhole(true);
    for i in 50..150 {
        sent.push(a.send(&bob.id, format!("t0 {i}").as_bytes()).await?.seq);
    }
    wait_for_state(&mut b_events, |s| {
        matches!(s, ConnectionState::Offline { .. })
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lifted = Instant::now();
    b_relay.set_blackhole(false);
    let rest = messages(&mut b_events, 100).await?;
    eprintln!(
        "receiver resumed {:?} after the network came back",
        lifted.elapsed()
    );
    got.extend(rest.iter().map(|m| m.seq));

    // The sender's network goes dark with messages in flight.
    a_relay.set_blackhole(true);
    let sending = {
        let (a, bob) = (a.clone(), bob.id.clone());
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 150..200 {
                seqs.push(a.send(&bob, format!("t0 {i}").as_bytes()).await?.seq);
            }
            anyhow::Ok(seqs)
        })
    };
    wait_for_state(&mut a_events, |s| {
        matches!(s, ConnectionState::Offline { .. })
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lifted = Instant::now();
    a_relay.set_blackhole(false);
    sent.extend(sending.await??);
    eprintln!(
        "sender's outbox drained {:?} after the network came back",
        lifted.elapsed()
    );
    let rest = messages(&mut b_events, 50).await?;
    got.extend(rest.iter().map(|m| m.seq));

    assert_eq!(
        got, sent,
        "every message once, in order, across both outages"
    );
    let texts: Vec<String> = rest.iter().map(|m| m.text()).collect();
    assert_eq!(
        texts,
        (150..200).map(|i| format!("t0 {i}")).collect::<Vec<_>>()
    );
    assert_quiet(&mut b_events, Duration::from_millis(500)).await?;
    assert_eq!(b.cursor(), *got.last().unwrap());
    Ok(())
}

async fn wait_for_state(
    events: &mut Events,
    want: impl Fn(&ConnectionState) -> bool,
) -> anyhow::Result<()> {
    loop {
        if let Event::Connection(state) = next_any_event(events).await? {
            if want(&state) {
                return Ok(());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_cannot_grow_the_nodes_push_backlog() -> anyhow::Result<()> {
    bounded(a_stalled_receiver_cannot_grow_the_nodes_push_backlog_body()).await
}

async fn a_stalled_receiver_cannot_grow_the_nodes_push_backlog_body() -> anyhow::Result<()> {
    let window = 256;
    let node = TestNode::start_with(|c| {
        fast_senders(c);
        c.limits.push_window = window;
    })
    .await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    // Bob is connected but his app does not read.
    let (_b, mut b_events) = node.connect(&bob).await?;
    let total = 100_000;
    let progress = Arc::new(AtomicUsize::new(0));
    let sending = {
        let (a, bob, progress) = (a.clone(), bob.id.clone(), progress.clone());
        tokio::spawn(async move { send_bursts(&a, &bob, 50, total / 50, progress).await })
    };
    let mut max_backlog = 0;
    while !sending.is_finished() {
        max_backlog = max_backlog.max(node.push_backlog());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = sending.await??;
    max_backlog = max_backlog.max(node.push_backlog());
    eprintln!("{total} messages to a stalled receiver: push backlog peaked at {max_backlog}");
    assert!(
        max_backlog <= window,
        "backlog {max_backlog} over the window {window}"
    );
    assert_eq!(
        node.push_backlog(),
        window,
        "the window is full and stays full"
    );

    // When Bob's app reads again, everything is there, once and in order.
    let received = receive_in_order(&mut b_events, total).await?;
    assert_eq!(received, sent);
    Ok(())
}
