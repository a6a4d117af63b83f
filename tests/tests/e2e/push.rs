//! Push notifications through a real HTTP gateway (axum on loopback): an away device is
//! notified once per burst and once more after the window, a connected one never, no
//! notification for receipts, a 5xx is retried, a rejected target is forgotten, logout
//! forgets the target, and a gateway that hangs does not slow chat.

use anyhow::ensure;
use quiver_sdk::{PushTarget, UserId};
use quiver_server::config::PushConfig;
use quiver_tests::gateway::{Answer, Gateway};
use quiver_tests::*;
use std::time::Duration;

/// A node that notifies through `gateway`, with a coalescing window of `window_ms`.
async fn node_with(gateway: &Gateway, window_ms: u64) -> anyhow::Result<TestNode> {
    node_notifying(gateway, window_ms, PushConfig::default().group_max_members).await
}

/// The same, notifying groups of up to `group_max` members at every chat (larger ones
/// are swept).
async fn node_notifying(
    gateway: &Gateway,
    window_ms: u64,
    group_max: usize,
) -> anyhow::Result<TestNode> {
    let url = gateway.url.clone();
    TestNode::start_with(|c| {
        c.push.gateway_url = Some(url);
        c.push.coalesce_ms = window_ms;
        c.push.timeout_ms = 2_000;
        c.push.group_max_members = group_max;
        c.limits.messages_per_sec = 100_000;
    })
    .await
}

pub(crate) fn target(token: &str) -> PushTarget {
    PushTarget {
        kind: "fcm".into(),
        token: token.into(),
        app_id: "chat.quiver.test".into(),
    }
}

/// Alice and Bob, friends; Bob's device registered for push and away.
async fn pair(node: &TestNode) -> anyhow::Result<(TestUser, TestUser)> {
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    node.befriend(&alice, &bob).await?;
    node.rest()
        .set_push_target(&bob.login.token, &target("bob-phone"))
        .await?;
    Ok((alice, bob))
}

/// Sends `n` messages from `client` to `to`, pipelined, and waits for every SENT.
async fn burst(client: &quiver_sdk::Client, to: &UserId, n: usize) -> anyhow::Result<()> {
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(client.enqueue(to, format!("m{i}").as_bytes()).await?);
    }
    for p in pending {
        p.await?;
    }
    Ok(())
}

pub(crate) fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_away_device_gets_one_notification_per_burst_and_one_after_the_window(
) -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    let node = node_with(&gateway, 2_000).await?;
    let (alice, bob) = pair(&node).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    burst(&a, &bob.id, 50).await?;

    let seen = gateway.wait_for(1, Duration::from_secs(5)).await?;
    let first = &seen[0]["notification"];
    ensure!(first["sender"] == "alice" && first["seq"] == 1, "{first}");
    // The unread count is the device's when the notification leaves: 1 to 50.
    let unread = first["counts"]["unread"].as_u64().unwrap_or(0);
    ensure!(
        (1..=50).contains(&unread) && first["prio"] == "high",
        "{first}"
    );
    let device = &first["devices"][0];
    ensure!(
        device["pushkey"] == "bob-phone" && device["kind"] == "fcm",
        "{device}"
    );
    ensure!(device["app_id"] == "chat.quiver.test", "{device}");
    ensure!(first.get("body").is_none(), "no body: {first}");

    // The window ends: one more, with the newest chat and the unread count then.
    let seen = gateway.wait_for(2, Duration::from_secs(5)).await?;
    let last = &seen[1]["notification"];
    ensure!(
        last["seq"] == 50 && last["counts"]["unread"] == 50,
        "{last}"
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    ensure!(gateway.seen().len() == 2, "{:?}", gateway.seen());
    let metrics = node.rest().metrics().await?;
    ensure!(metric(&metrics, "quiver_push_sent_total") == 2, "{metrics}");
    Ok(())
}

#[tokio::test]
async fn a_connected_device_and_receipts_get_none() -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    let node = node_with(&gateway, 0).await?;
    let (alice, bob) = pair(&node).await?;
    // Alice is away too, with a target: the DELIVERED and READ receipts Bob's device
    // makes land in her inbox, and send her nothing.
    node.rest()
        .set_push_target(&alice.login.token, &target("alice-phone"))
        .await?;
    let (b, mut b_events) = node.connect(&bob).await?;
    {
        let (a, _a_events) = node.connect(&alice).await?;
        burst(&a, &bob.id, 5).await?;
        a.close().await;
    }
    for m in messages(&mut b_events, 5).await? {
        b.mark_read(m.seq)?;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    ensure!(gateway.seen().is_empty(), "{:?}", gateway.seen());
    Ok(())
}

#[tokio::test]
async fn a_5xx_is_retried_and_a_rejected_target_is_forgotten() -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    let node = node_with(&gateway, 0).await?;
    let (alice, bob) = pair(&node).await?;
    let (a, _a_events) = node.connect(&alice).await?;

    gateway.answer([Answer::Status(500), Answer::Status(503), Answer::Accept]);
    a.send(&bob.id, b"one").await?;
    let seen = gateway.wait_for(3, Duration::from_secs(5)).await?;
    ensure!(
        seen.iter().all(|n| n["notification"]["seq"] == 1),
        "{seen:?}"
    );
    let metrics = node.rest().metrics().await?;
    ensure!(
        metric(&metrics, "quiver_push_retried_total") == 2,
        "{metrics}"
    );
    ensure!(metric(&metrics, "quiver_push_sent_total") == 1, "{metrics}");

    gateway.answer([Answer::Reject]);
    a.send(&bob.id, b"two").await?;
    gateway.wait_for(4, Duration::from_secs(5)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = node.rest().metrics().await?;
    ensure!(
        metric(&metrics, "quiver_push_rejected_total") == 1,
        "{metrics}"
    );
    a.send(&bob.id, b"three").await?;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    ensure!(gateway.seen().len() == 4, "nothing for a forgotten target");

    // A new target, then logout: logging out forgets it too.
    node.rest()
        .set_push_target(&bob.login.token, &target("bob-phone-2"))
        .await?;
    a.send(&bob.id, b"four").await?;
    gateway.wait_for(5, Duration::from_secs(5)).await?;
    node.rest().logout(&bob.login.token, false).await?;
    a.send(&bob.id, b"five").await?;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    ensure!(gateway.seen().len() == 5, "nothing after logout");
    Ok(())
}

#[tokio::test]
async fn a_gateway_that_hangs_does_not_slow_chat() -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    gateway.answer(std::iter::repeat_n(Answer::Hang, 1_000));
    let url = gateway.url.clone();
    let node = TestNode::start_with(|c| {
        c.push.gateway_url = Some(url);
        c.push.coalesce_ms = 0;
        c.push.timeout_ms = 60_000;
        c.push.in_flight = 4;
        c.push.queue = 50;
        c.limits.messages_per_sec = 100_000;
    })
    .await?;
    let (alice, bob) = pair(&node).await?;
    let (a, _a_events) = node.connect(&alice).await?;
    // Every chat wants a notification and the gateway answers none for a minute: 4
    // requests hang, the notifier waits, its queue of 50 fills and the rest is dropped;
    // the burst is SENT all the same, long before any request to the gateway could end.
    tokio::time::timeout(Duration::from_secs(30), burst(&a, &bob.id, 200)).await??;
    let metrics = node.rest().metrics().await?;
    ensure!(
        metric(&metrics, "quiver_push_dropped_total") > 0,
        "{metrics}"
    );
    ensure!(metric(&metrics, "quiver_push_sent_total") == 0, "{metrics}");
    ensure!(gateway.seen().len() <= 4, "at most in_flight requests out");
    Ok(())
}

#[tokio::test]
async fn push_targets_are_checked() -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    let node = node_with(&gateway, 0).await?;
    let bob = node.user("bob").await?;
    let rest = node.rest();
    let status = |r: Result<(), quiver_sdk::RestError>| match r {
        Err(quiver_sdk::RestError::Api { status, .. }) => status,
        Ok(()) => 200,
        Err(_) => 0,
    };
    let mut sms = target("t");
    sms.kind = "sms".into();
    ensure!(status(rest.set_push_target(&bob.login.token, &sms).await) == 400);
    let huge = target(&"t".repeat(5_000));
    ensure!(status(rest.set_push_target(&bob.login.token, &huge).await) == 400);
    ensure!(status(rest.set_push_target("not-a-token", &target("t")).await) == 401);
    ensure!(status(rest.set_push_target(&bob.login.token, &target("t")).await) == 200);
    ensure!(status(rest.remove_push_target(&bob.login.token).await) == 200);
    Ok(())
}

/// In a mesh, the target is kept in Redis (registered through any node), and the node
/// that keeps the inbox notifies, once: Bob homed on n2 registers through n1; Alice, on
/// n1, sends him a chat; the gateway gets one notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_mesh_the_inbox_home_notifies_once() -> anyhow::Result<()> {
    use quiver_tests::mesh::Cluster;
    let gateway = Gateway::start().await?;
    let url = gateway.url.clone();
    let cluster = Cluster::start_with(2, |c| {
        c.push.gateway_url = Some(url.clone());
        c.push.coalesce_ms = 0;
    })
    .await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    cluster.n(1).befriend(&alice, &bob).await?;
    cluster
        .n(1)
        .rest()
        .set_push_target(&bob.login.token, &target("bob-phone"))
        .await?;
    let (a, _a_events) = cluster.n(1).connect(&alice).await?;
    a.send(&bob.id, b"across the mesh").await?;
    let seen = gateway.wait_for(1, Duration::from_secs(5)).await?;
    ensure!(seen[0]["notification"]["sender"] == "alice", "{seen:?}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    ensure!(gateway.seen().len() == 1, "{:?}", gateway.seen());
    let mut sent = Vec::new();
    for i in [1, 2] {
        let text = cluster.n(i).rest().metrics().await?;
        sent.push(metric(&text, "quiver_push_sent_total"));
    }
    ensure!(sent == [0, 1], "n2, Bob's home, sent it: {sent:?}");
    Ok(())
}

#[tokio::test]
async fn a_group_chat_notifies_away_members_once_per_window_never_the_sender() -> anyhow::Result<()>
{
    group_chat_notifies(PushConfig::default().group_max_members).await
}

/// A group over `group_max_members` (3 members, 2 notified at every chat): its members
/// are swept instead, with the same outcome for them.
#[tokio::test]
async fn a_large_group_is_swept_once_per_window_never_the_sender() -> anyhow::Result<()> {
    group_chat_notifies(2).await
}

/// Alice sends 20 chats to a group of 3 (the node notifying groups of up to `group_max`
/// at every chat), and 20 more once Bob, away, was notified: he is notified once more,
/// at the window's end, of the newest; Carol, connected, and Alice, the sender, never.
async fn group_chat_notifies(group_max: usize) -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    let node = node_notifying(&gateway, 2_000, group_max).await?;
    let rest = node.rest();
    let (alice, bob, carol) = (
        node.user("alice").await?,
        node.user("bob").await?,
        node.user("carol").await?,
    );
    let group = rest.create_group(&alice.login.token, "team").await?.id;
    for member in [&bob, &carol] {
        node.befriend(&alice, member).await?;
        rest.add_member(&alice.login.token, &group, member.id.as_str())
            .await?;
    }
    // Everyone has a push target; Bob is away, Carol connected, Alice sends.
    for (user, token) in [
        (&alice, "alice-phone"),
        (&bob, "bob-phone"),
        (&carol, "carol-phone"),
    ] {
        rest.set_push_target(&user.login.token, &target(token))
            .await?;
    }
    let keys = |user: &TestUser| {
        let (rest, token, group) = (node.rest(), user.login.token.clone(), group.clone());
        async move {
            let info = rest.group(&token, &group).await?;
            anyhow::Ok(quiver_sdk::GroupKeys::from_info(&info))
        }
    };
    let alice_keys = keys(&alice).await?;
    let carol_keys = keys(&carol).await?;
    let (a, _a_events) = node
        .connect_with(&alice, |o| {
            o.group_keys.insert(group.clone(), alice_keys);
        })
        .await?;
    let (_c, _c_events) = node
        .connect_with(&carol, |o| {
            o.group_keys.insert(group.clone(), carol_keys);
        })
        .await?;
    let burst = |from: usize| {
        let (a, group) = (a.clone(), group.clone());
        async move {
            let mut pending = Vec::new();
            for i in from..from + 20 {
                pending.push(a.enqueue_group(&group, format!("g{i}").as_bytes()).await?);
            }
            let mut last = None;
            for p in pending {
                last = Some(p.await?.seq);
            }
            anyhow::Ok(last)
        }
    };
    burst(0).await?;

    let seen = gateway.wait_for(1, Duration::from_secs(5)).await?;
    let first = &seen[0]["notification"];
    ensure!(
        first["group"] == group.as_str() && first["sender"] == "alice",
        "{first}"
    );
    ensure!(first["devices"][0]["pushkey"] == "bob-phone", "{first}");
    let unread = first["counts"]["unread"].as_u64().unwrap_or(0);
    ensure!(unread >= 1, "{first}");
    // A second burst within the window: one more notification at the window's end,
    // with the newest chat; nothing for Alice or Carol.
    let newest = burst(20).await?.map(|seq| seq.0);
    let seen = gateway.wait_for(2, Duration::from_secs(5)).await?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let all = gateway.seen();
    ensure!(all.len() == 2, "two notifications in all: {all:?}");
    let last = &seen[1]["notification"];
    ensure!(
        last["devices"][0]["pushkey"] == "bob-phone" && last["seq"].as_u64() == newest,
        "{last}, newest {newest:?}"
    );
    Ok(())
}

/// In a mesh a group lives on one node and its members are homed on others: the group's
/// home passes the notice to the member's home node, which knows whether their devices
/// are connected, and that node notifies the gateway.
#[tokio::test]
async fn a_group_chat_notifies_an_away_member_homed_on_another_node() -> anyhow::Result<()> {
    member_homed_elsewhere_notified(PushConfig::default().group_max_members).await
}

/// The same for a group over `group_max_members` (2 members, 1 notified at every chat):
/// the sweep passes the notice to Bob's home.
#[tokio::test]
async fn a_large_groups_sweep_notifies_a_member_homed_on_another_node() -> anyhow::Result<()> {
    member_homed_elsewhere_notified(1).await
}

async fn member_homed_elsewhere_notified(group_max: usize) -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    let url = gateway.url.clone();
    let cluster = quiver_tests::mesh::Cluster::start_with(2, |c| {
        c.push.group_max_members = group_max;
        c.push.gateway_url = Some(url.clone());
        c.push.coalesce_ms = 2_000;
        c.push.timeout_ms = 2_000;
        c.limits.messages_per_sec = 100_000;
    })
    .await?;
    let (n1, n2) = (cluster.n(1), cluster.n(2));
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    n1.befriend(&alice, &bob).await?;
    // The group lives on n1; Bob, homed on n2, is away with a push target.
    let group = n1.rest().create_group(&alice.login.token, "team").await?.id;
    n1.rest()
        .add_member(&alice.login.token, &group, bob.id.as_str())
        .await?;
    n2.rest()
        .set_push_target(&bob.login.token, &target("bob-phone"))
        .await?;
    let info = n1.rest().group(&alice.login.token, &group).await?;
    let (a, _a_events) = n1
        .connect_with(&alice, |o| {
            o.group_keys
                .insert(group.clone(), quiver_sdk::GroupKeys::from_info(&info));
        })
        .await?;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(a.send_group(&group, format!("g{i}").as_bytes()).await?);
    }
    let seen = gateway.wait_for(1, Duration::from_secs(5)).await?;
    let first = &seen[0]["notification"];
    ensure!(
        first["group"] == group.as_str()
            && first["sender"] == "alice"
            && first["devices"][0]["pushkey"] == "bob-phone",
        "{first}"
    );
    let unread = first["counts"]["unread"].as_u64().unwrap_or(0);
    ensure!(unread >= 1, "{first}");
    // Alice, the sender, is never notified.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    ensure!(
        gateway
            .seen()
            .iter()
            .all(|n| n["notification"]["devices"][0]["pushkey"] == "bob-phone"),
        "{:?}",
        gateway.seen()
    );
    Ok(())
}
