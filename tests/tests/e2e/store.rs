//! The client store across app kills: a real child process (the app, `outbox_child`)
//! queues messages with a store on disk and is killed with SIGKILL; a new process on the
//! same store sends what was left — every message stored once on the node, in order.

use anyhow::{bail, ensure, Context};
use quiver_sdk::store::MessageState;
use quiver_sdk::{Conversation, Event, FriendKey, HistoryOf, Session, Store};
use quiver_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Starts the app with `args`.
fn app(args: &[&str]) -> anyhow::Result<(Child, BufReader<ChildStdout>)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_outbox_child"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = BufReader::new(child.stdout.take().context("stdout")?);
    Ok((child, stdout))
}

/// Waits (at most 60 s) for the app to print `want`.
async fn expect_line(
    stdout: BufReader<ChildStdout>,
    want: &str,
) -> anyhow::Result<BufReader<ChildStdout>> {
    let want = want.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        let mut stdout = stdout;
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        anyhow::Ok((stdout, line))
    });
    let (stdout, line) = tokio::time::timeout(Duration::from_secs(60), read).await???;
    ensure!(
        line.trim() == want,
        "the app printed {line:?}, not {want:?}"
    );
    Ok(stdout)
}

/// A store for `user`'s device, logged in, with the friendship key for `friend`.
async fn store_for(
    node: &TestNode,
    path: &Path,
    user: &TestUser,
    friend: &TestUser,
) -> anyhow::Result<()> {
    let store = Store::open(path)?;
    store.save_session(&Session {
        user: user.id.clone(),
        device: user.login.device,
        token: user.login.token.clone(),
    })?;
    let friends = node.rest().friends(&user.login.token).await?.friends;
    let entry = friends
        .iter()
        .find(|f| f.user == friend.id)
        .context("friend")?;
    let key = quiver_sdk::key_from_hex(&entry.key).context("hex key")?;
    store.save_friend_key(&friend.id, &FriendKey(key))?;
    Ok(())
}

/// The app queues `count` messages (with the node down when `offline`), is killed, and a
/// second run on the same store drains the outbox. Bob's inbox then holds each message
/// once, in order, and Alice's store has each SENT at the `seq` Bob has.
async fn killed_and_restarted(count: usize, offline: bool) -> anyhow::Result<usize> {
    let mut node = TestNode::start_with(|c| c.limits.messages_per_sec = 100_000).await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    let dir = tempfile::tempdir()?;
    let (store, ca) = (dir.path().join("alice.sqlite3"), dir.path().join("ca.pem"));
    std::fs::write(&ca, &node.ca_pem)?;
    store_for(&node, &store, &alice, &bob).await?;
    let (store_arg, ca_arg) = (
        store.to_str().context("path")?,
        ca.to_str().context("path")?,
    );

    let addr = node.quic_addr().to_string();
    let count_arg = count.to_string();
    let (mut first, stdout) = app(&["queue", store_arg, &addr, ca_arg, "bob", &count_arg])?;
    let stdout = expect_line(stdout, "connected").await?;
    if offline {
        node.stop().await;
    }
    writeln!(first.stdin.as_mut().context("stdin")?, "go")?;
    expect_line(stdout, "queued").await?;
    first.kill()?; // SIGKILL
    first.wait()?;
    let left = Store::open(&store)?.outbox()?.len();
    if offline {
        ensure!(
            left == count,
            "{left} of {count} in the outbox while the node was down"
        );
        node.restart().await?;
    }

    let addr = node.quic_addr().to_string();
    let (mut second, stdout) = app(&["drain", store_arg, &addr, ca_arg])?;
    expect_line(stdout, "drained").await?;
    ensure!(second.wait()?.success());

    let (b, _b_events) = node.connect(&bob).await?;
    let (mut got, mut before) = (Vec::new(), None);
    loop {
        let page = b
            .history(&HistoryOf::Friend(alice.id.clone()), before, 500)
            .await?;
        for event in page.events {
            match event {
                Event::Message(m) => got.push((m.seq, m.text())),
                other => bail!("{other:?}"),
            }
        }
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    got.reverse();
    let texts: Vec<String> = got.iter().map(|(_, t)| t.clone()).collect();
    let want: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
    ensure!(
        texts == want,
        "bob has {} messages, want {count} once each in order",
        texts.len()
    );

    let kept =
        Store::open(&store)?.messages(&Conversation::Friend(bob.id.clone()), None, 10_000)?;
    let mut sent: Vec<_> = kept
        .messages
        .iter()
        .map(|m| (m.seq, m.text(), m.state >= MessageState::Sent && m.outgoing))
        .collect();
    sent.reverse();
    let want: Vec<_> = got
        .into_iter()
        .map(|(seq, text)| (Some(seq), text, true))
        .collect();
    ensure!(
        sent == want,
        "alice's store: every message SENT at bob's seq"
    );
    Ok(left)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_queued_offline_survive_a_kill_and_go_out_once_in_order() -> anyhow::Result<()> {
    killed_and_restarted(100, true).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_killed_mid_send_sends_the_rest_once_in_order() -> anyhow::Result<()> {
    let left = killed_and_restarted(1000, false).await?;
    eprintln!("{left} of 1000 were waiting for SENT at the kill");
    ensure!(
        left > 0,
        "the kill came after every SENT: nothing was in flight"
    );
    Ok(())
}

/// An app on a store file: it logs in once; a friendship made after it connected opens
/// by itself (the SDK fetches the key when a message does not open); started again on
/// the same file it needs no login, and its history and unread count are there.
#[tokio::test]
async fn an_app_logs_in_once_and_never_handles_a_key() -> anyhow::Result<()> {
    use quiver_sdk::{App, UserId};
    let node = TestNode::start().await?;
    let url = format!("https://{}", node.node().http_addr());
    let dir = tempfile::tempdir()?;
    let app = |name: &str| -> anyhow::Result<App> {
        let store = Store::open(dir.path().join(format!("{name}.sqlite3")))?;
        Ok(App::new(store, &url, &node.ca_pem)?)
    };
    let (alice, bob) = (app("alice")?, app("bob")?);
    for (who, name) in [(&alice, "alice"), (&bob, "bob")] {
        who.register(name, "a-long-password").await?;
        who.login(name, "a-long-password").await?;
    }
    let (a, mut a_events) = alice.connect().await?;
    bob.request_friend("alice").await?;
    alice.accept_friend("bob").await?;
    let (b, _b_events) = bob.connect().await?;
    let alice_id = UserId::parse("alice")?;
    b.send(&alice_id, b"hi, new friend").await?;
    let got = next_message(&mut a_events).await?;
    ensure!(got.text() == "hi, new friend", "{got:?}");
    a.close().await;
    drop((a, a_events, alice));

    let alice = app("alice")?;
    let device = alice.session()?.device;
    let (a, _a_events) = alice.connect().await?;
    ensure!(a.device() == device, "the same device as before");
    let bob_id = UserId::parse("bob")?;
    a.send(&bob_id, b"back again").await?;
    let list = alice.store().conversations()?;
    ensure!(list.len() == 1, "{list:?}");
    let line = &list[0];
    ensure!(line.conversation == Conversation::Friend(bob_id.clone()));
    ensure!(
        line.last.text() == "back again" && line.unread == 1,
        "{line:?}"
    );
    a.mark_read(got.seq)?;
    ensure!(alice.store().conversations()?[0].unread == 0);
    // One store per account: Bob cannot log in on Alice's.
    let other = alice.login("bob", "a-long-password").await;
    ensure!(
        matches!(other, Err(quiver_sdk::AppError::OtherUser(ref who)) if who == "alice"),
        "{other:?}"
    );
    Ok(())
}

/// An app whose node is out of reach starts all the same: the app queues messages (kept
/// in its store), and once the node is back the client connects by itself and sends
/// them, once each, in order.
#[tokio::test]
async fn an_app_started_offline_sends_its_queue_when_the_node_is_back() -> anyhow::Result<()> {
    use quiver_sdk::{App, ConnectionState, UserId};
    let mut node = TestNode::start().await?;
    let url = format!("https://{}", node.node().http_addr());
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("alice.sqlite3"))?;
    let alice = App::new(store.clone(), &url, &node.ca_pem)?;
    alice.register("alice", "a-long-password").await?;
    alice.login("alice", "a-long-password").await?;
    let bob = node.user("bob").await?;
    alice.request_friend("bob").await?;
    node.rest().accept_friend(&bob.login.token, "alice").await?;
    alice.friends().await?; // the key, into the store

    node.stop().await;
    let started = std::time::Instant::now();
    let (a, _a_events) = alice
        .connect_with(|o| o.connect_timeout = Duration::from_millis(500))
        .await?;
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    ensure!(a.state() != ConnectionState::Online);
    let bob_id = UserId::parse("bob")?;
    let mut pending = Vec::new();
    for i in 0..10 {
        pending.push(
            a.enqueue(&bob_id, format!("offline {i}").as_bytes())
                .await?,
        );
    }
    ensure!(store.outbox()?.len() == 10);

    node.restart_on_same_ports().await?;
    let mut seqs = Vec::new();
    for p in pending {
        seqs.push(tokio::time::timeout(Duration::from_secs(30), p).await??.seq);
    }
    let (_b, mut b_events) = node.connect(&bob).await?;
    let got = messages(&mut b_events, 10).await?;
    let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    ensure!(texts == (0..10).map(|i| format!("offline {i}")).collect::<Vec<_>>());
    ensure!(got.iter().map(|m| m.seq).collect::<Vec<_>>() == seqs);
    assert_quiet(&mut b_events, Duration::from_millis(300)).await?;
    ensure!(store.outbox()?.is_empty());
    Ok(())
}
