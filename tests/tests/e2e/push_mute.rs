//! Muted groups, through a real HTTP gateway: a member who mutes a group gets no
//! notification of its chats on any device (at every chat and in a large group's sweep)
//! while chats of friends still notify them, until they unmute; in a mesh the mute made
//! on one node holds where the member is homed (the directory in Redis); the list of
//! muted groups is bounded.

use super::push::{metric, target};
use anyhow::ensure;
use quiver_sdk::{GroupId, RestError};
use quiver_server::config::Config;
use quiver_tests::gateway::Gateway;
use quiver_tests::*;
use serde_json::Value;
use std::time::Duration;

/// No coalescing (every chat notifies at once), groups of up to `group_max` notified
/// at every chat and larger ones swept, at most 3 groups a user.
fn notifying(c: &mut Config, gateway: &Gateway, group_max: usize) {
    c.push.gateway_url = Some(gateway.url.clone());
    c.push.coalesce_ms = 0;
    c.push.timeout_ms = 2_000;
    c.push.group_max_members = group_max;
    c.groups.max_groups_per_user = 3;
}

/// The notifications of `pushkey`'s device among `seen`, each with its group (or `None`
/// for a chat between friends).
fn to_device(seen: &[Value], pushkey: &str) -> Vec<Option<String>> {
    seen.iter()
        .map(|n| &n["notification"])
        .filter(|n| n["devices"][0]["pushkey"] == pushkey)
        .map(|n| n["group"].as_str().map(str::to_owned))
        .collect()
}

/// `user` connected to `node` with `group`'s keys, to chat in it.
async fn member(
    node: &TestNode,
    user: &TestUser,
    group: &GroupId,
) -> anyhow::Result<(quiver_sdk::Client, quiver_sdk::Events)> {
    let info = node.rest().group(&user.login.token, group).await?;
    let keys = quiver_sdk::GroupKeys::from_info(&info);
    node.connect_with(user, |o| {
        o.group_keys.insert(group.clone(), keys);
    })
    .await
}

#[tokio::test]
async fn a_muted_group_notifies_no_device_of_the_member_until_unmuted() -> anyhow::Result<()> {
    muted_member(32).await
}

#[tokio::test]
async fn a_muted_large_group_is_not_swept_to_the_member() -> anyhow::Result<()> {
    muted_member(1).await
}

/// Alice chats in a group with Bob and Carol, both away with push targets; Bob muted
/// it. Carol is notified, Bob is not — but a chat from Alice to him alone is; once he
/// unmutes, the group's next chat notifies him.
async fn muted_member(group_max: usize) -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    let node = TestNode::start_with(|c| notifying(c, &gateway, group_max)).await?;
    let rest = node.rest();
    let (alice, bob, carol) = (
        node.user("alice").await?,
        node.user("bob").await?,
        node.user("carol").await?,
    );
    let group = rest.create_group(&alice.login.token, "team").await?.id;
    for (member, key) in [(&bob, "bob-phone"), (&carol, "carol-phone")] {
        node.befriend(&alice, member).await?;
        rest.add_member(&alice.login.token, &group, member.id.as_str())
            .await?;
        rest.set_push_target(&member.login.token, &target(key))
            .await?;
    }
    ensure!(rest.mute_group(&bob.login.token, &group).await? == std::slice::from_ref(&group));
    ensure!(rest.muted_groups(&bob.login.token).await? == std::slice::from_ref(&group));
    ensure!(rest.muted_groups(&carol.login.token).await?.is_empty());

    let (a, _a_events) = member(&node, &alice, &group).await?;
    a.send_group(&group, b"muted for bob").await?;
    gateway.wait_for(1, Duration::from_secs(5)).await?;
    a.send(&bob.id, b"just to bob").await?;
    gateway.wait_for(2, Duration::from_secs(5)).await?;
    // Time for a late notice of the group chat to Bob, were there one.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = gateway.seen();
    let named = Some(group.as_str().to_owned());
    ensure!(
        to_device(&seen, "carol-phone") == [named.clone()],
        "{seen:?}"
    );
    ensure!(to_device(&seen, "bob-phone") == [None], "{seen:?}");
    let metrics = rest.metrics().await?;
    ensure!(
        metric(&metrics, "quiver_push_muted_total") == 1,
        "{metrics}"
    );

    ensure!(rest
        .unmute_group(&bob.login.token, &group)
        .await?
        .is_empty());
    a.send_group(&group, b"for everyone").await?;
    let seen = gateway.wait_for(4, Duration::from_secs(5)).await?;
    ensure!(
        to_device(&seen, "bob-phone") == [None, named.clone()],
        "{seen:?}"
    );
    Ok(())
}

/// At most as many groups muted as a user may be in (3 here): one more is refused with
/// 409 `quota_exceeded`, muting one again is not one more, unmuting makes room; a
/// request without a valid token is refused.
#[tokio::test]
async fn muted_groups_are_bounded() -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    let node = TestNode::start_with(|c| notifying(c, &gateway, 32)).await?;
    let bob = node.user("bob").await?;
    bounded(node.rest(), &bob.login.token).await?;
    let refused = node
        .rest()
        .mute_group("not a token", &GroupId::from_bits(9))
        .await;
    ensure!(
        matches!(refused, Err(RestError::Api { status: 401, .. })),
        "{refused:?}"
    );
    Ok(())
}

/// Fills `token`'s user's muted groups (3 at most) and checks the bound holds.
async fn bounded(rest: quiver_sdk::Rest, token: &str) -> anyhow::Result<()> {
    let already = rest.muted_groups(token).await?.len();
    let groups: Vec<GroupId> = (1..=4).map(GroupId::from_bits).collect();
    for group in &groups[..3 - already] {
        rest.mute_group(token, group).await?;
    }
    let over = rest.mute_group(token, &groups[3]).await;
    ensure!(
        matches!(&over, Err(RestError::Api { status: 409, error, .. }) if error == "quota_exceeded"),
        "{over:?}"
    );
    ensure!(rest.muted_groups(token).await?.len() == 3);
    let first = rest.muted_groups(token).await?[0].clone();
    ensure!(
        rest.mute_group(token, &first).await?.len() == 3,
        "again is not more"
    );
    rest.unmute_group(token, &first).await?;
    ensure!(rest.mute_group(token, &groups[3]).await?.len() == 3);
    ensure!(!rest.muted_groups(token).await?.contains(&first));
    Ok(())
}

/// A mesh: the group lives on n1, Bob is homed on n2 (where he is notified) and mutes
/// it through n1; the mute is in the shared directory, so n2 sends him nothing for the
/// group, and his muted groups are bounded there too. Unmuted through n2, he is
/// notified again.
#[tokio::test]
async fn in_a_mesh_a_mute_made_on_one_node_holds_on_the_members_home() -> anyhow::Result<()> {
    let gateway = Gateway::start().await?;
    let cluster =
        quiver_tests::mesh::Cluster::start_with(2, |c| notifying(c, &gateway, 32)).await?;
    let (n1, n2) = (cluster.n(1), cluster.n(2));
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    n1.befriend(&alice, &bob).await?;
    let group = n1.rest().create_group(&alice.login.token, "team").await?.id;
    n1.rest()
        .add_member(&alice.login.token, &group, bob.id.as_str())
        .await?;
    n2.rest()
        .set_push_target(&bob.login.token, &target("bob-phone"))
        .await?;
    n1.rest().mute_group(&bob.login.token, &group).await?;
    ensure!(n2.rest().muted_groups(&bob.login.token).await? == std::slice::from_ref(&group));

    let (a, _a_events) = member(n1, &alice, &group).await?;
    a.send_group(&group, b"muted for bob").await?;
    a.send(&bob.id, b"just to bob").await?;
    gateway.wait_for(1, Duration::from_secs(5)).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = gateway.seen();
    ensure!(to_device(&seen, "bob-phone") == [None], "{seen:?}");

    n2.rest().unmute_group(&bob.login.token, &group).await?;
    a.send_group(&group, b"for everyone").await?;
    let seen = gateway.wait_for(2, Duration::from_secs(5)).await?;
    let named = Some(group.as_str().to_owned());
    ensure!(to_device(&seen, "bob-phone") == [None, named], "{seen:?}");

    bounded(n2.rest(), &bob.login.token).await
}
