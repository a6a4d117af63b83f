//! Groups: one order for every member's every device, catching up, removal, hostile
//! members and strangers — through the SDK against a real node.

use anyhow::{bail, ensure};
use quiver_sdk::{
    Client, ClientMsgId, ErrorCode, Event, Events, GroupChange, GroupId, GroupKeys, GroupMessage,
    RestError, SendError, Seq,
};
use quiver_tests::*;
use std::collections::HashSet;
use std::time::Duration;

/// Group messages until `n` have arrived, skipping membership changes and receipts.
async fn group_messages(events: &mut Events, n: usize) -> anyhow::Result<Vec<GroupMessage>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next_event(events).await? {
            Event::GroupMessage(m) => out.push(m),
            Event::GroupChange { .. } | Event::Receipt(_) => {}
            other => bail!("unexpected event {other:?}"),
        }
    }
    Ok(out)
}

/// Queues `bodies` to `group` at once (pipelined) and waits until every one is SENT.
async fn send_all(
    client: &Client,
    group: &GroupId,
    bodies: impl IntoIterator<Item = String>,
) -> Result<Vec<quiver_sdk::Sent>, SendError> {
    let mut pending = Vec::new();
    for body in bodies {
        pending.push(client.enqueue_group(group, body.as_bytes()).await?);
    }
    let mut sent = Vec::new();
    for p in pending {
        sent.push(p.await?);
    }
    Ok(sent)
}

/// Registers `names` on `node`.
async fn users<const N: usize>(node: &TestNode, names: [&str; N]) -> anyhow::Result<[TestUser; N]> {
    let mut out = Vec::with_capacity(N);
    for name in names {
        out.push(node.user(name).await?);
    }
    out.try_into()
        .map_err(|_| anyhow::anyhow!("a user was lost"))
}

/// A node with `owner` and `others` (each a friend of the owner) in one new group.
async fn group_of(
    node: &TestNode,
    owner: &TestUser,
    others: &[&TestUser],
) -> anyhow::Result<GroupId> {
    let rest = node.rest();
    let info = rest.create_group(&owner.login.token, "team").await?;
    for other in others {
        node.befriend(owner, other).await?;
        let added = rest
            .add_member(&owner.login.token, &info.id, other.id.as_str())
            .await?;
        ensure!(added.status == "added", "{added:?}");
    }
    Ok(info.id)
}

/// Connects `user` with the group's keys as `user` sees them.
async fn join(
    node: &TestNode,
    user: &TestUser,
    group: &GroupId,
) -> anyhow::Result<(quiver_sdk::Client, Events)> {
    let info = node.rest().group(&user.login.token, group).await?;
    let keys = GroupKeys::from_info(&info);
    node.connect_with(user, |o| {
        o.group_keys.insert(group.clone(), keys);
    })
    .await
}

/// The status and code of a refused REST call.
pub(crate) fn api_error(
    result: Result<impl std::fmt::Debug, RestError>,
) -> anyhow::Result<(u16, String)> {
    match result {
        Err(RestError::Api { status, error, .. }) => Ok((status, error)),
        other => bail!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn three_senders_six_devices_one_order_each_entry_once() -> anyhow::Result<()> {
    let node = TestNode::start_with(|c| c.limits.messages_per_sec = 100_000).await?;
    let [alice, bob, carol] = users(&node, ["alice", "bob", "carol"]).await?;
    let group = group_of(&node, &alice, &[&bob, &carol]).await?;
    let (mut devices, mut receivers) = (Vec::new(), Vec::new());
    for user in [&alice, &bob, &carol] {
        for device in [user.new_device(&node).await?, user.new_device(&node).await?] {
            let (client, mut events) = join(&node, &device, &group).await?;
            devices.push(client);
            receivers.push(tokio::spawn(async move {
                group_messages(&mut events, 1000).await
            }));
        }
    }
    // The first device of each user sends; 334 + 333 + 333 at once.
    let senders = [(0usize, 334usize), (2, 333), (4, 333)].map(|(d, n)| {
        let (client, group) = (devices[d].clone(), group.clone());
        tokio::spawn(async move {
            let bodies = (0..n).map(|i| format!("{}-{i}", client.user()));
            send_all(&client, &group, bodies).await
        })
    });
    let mut sent = Vec::new();
    for s in senders {
        sent.extend(s.await??);
    }
    let mut sent_seqs: Vec<Seq> = sent.iter().map(|s| s.seq).collect();
    sent_seqs.sort();
    let mut seen = Vec::new();
    for r in receivers {
        seen.push(r.await??);
    }
    let first: Vec<(Seq, String, ClientMsgId, String)> = seen[0]
        .iter()
        .map(|m| (m.seq, m.from.to_string(), m.id, m.text()))
        .collect();
    for (i, other) in seen.iter().enumerate() {
        let this: Vec<_> = other
            .iter()
            .map(|m| (m.seq, m.from.to_string(), m.id, m.text()))
            .collect();
        ensure!(this == first, "device {i} saw another sequence");
    }
    let seqs: Vec<Seq> = first.iter().map(|e| e.0).collect();
    ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing");
    ensure!(seqs == sent_seqs, "what was SENT is not what arrived");
    let ids: HashSet<ClientMsgId> = first.iter().map(|e| e.2).collect();
    ensure!(ids.len() == 1000, "an entry came twice");
    for user in ["alice", "bob", "carol"] {
        let mine: Vec<&String> = first.iter().filter(|e| e.1 == user).map(|e| &e.3).collect();
        let expected: Vec<String> = (0..mine.len()).map(|i| format!("{user}-{i}")).collect();
        ensure!(
            mine.iter()
                .map(|s| s.as_str())
                .eq(expected.iter().map(|s| s.as_str())),
            "{user}'s messages out of their order"
        );
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_offline_member_catches_up_5000_in_order_before_live_ones() -> anyhow::Result<()> {
    let node = TestNode::start_with(|c| c.limits.messages_per_sec = 100_000).await?;
    let (alice, bob) = (node.user("alice").await?, node.user("bob").await?);
    let group = group_of(&node, &alice, &[&bob]).await?;
    let (a, _a_events) = join(&node, &alice, &group).await?;
    let (b, mut b_events) = join(&node, &bob, &group).await?;
    // Bob is there, then goes away with his cursor kept on the node.
    a.send_group(&group, b"before").await?;
    ensure!(group_messages(&mut b_events, 1).await?[0].text() == "before");
    b.close().await;
    drop(b_events);

    send_all(&a, &group, (0..5000).map(|i| format!("old {i}"))).await?;
    let (_b, mut b_events) = join(&node, &bob, &group).await?;
    let live = tokio::spawn({
        let (a, group) = (a.clone(), group.clone());
        async move {
            for i in 0..20 {
                a.send_group(&group, format!("live {i}").as_bytes()).await?;
            }
            Ok::<_, SendError>(())
        }
    });
    let got = group_messages(&mut b_events, 5020).await?;
    live.await??;
    let expected: Vec<String> = (0..5000)
        .map(|i| format!("old {i}"))
        .chain((0..20).map(|i| format!("live {i}")))
        .collect();
    let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    ensure!(
        texts == expected,
        "not in order, or not once: {:?} .. {:?}",
        &texts[..3],
        &texts[texts.len() - 3..]
    );
    ensure!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_quiet(&mut b_events, Duration::from_millis(300)).await?;
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_removed_member_gets_nothing_after_the_removal_and_cannot_send() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let [alice, bob, carol] = users(&node, ["alice", "bob", "carol"]).await?;
    let group = group_of(&node, &alice, &[&bob, &carol]).await?;
    let rest = node.rest();
    let bob_info = rest.group(&bob.login.token, &group).await?;
    let bob2 = bob.new_device(&node).await?;
    let (a, _a_events) = join(&node, &alice, &group).await?;
    let (b, mut b_events) = join(&node, &bob, &group).await?;
    let (_b2, mut b2_events) = join(&node, &bob2, &group).await?;
    // Carol's client fetches a new key by itself when an entry needs it.
    let carol_keys = GroupKeys::from_info(&rest.group(&carol.login.token, &group).await?);
    let (_c, mut c_events) = node
        .connect_with(&carol, |o| {
            o.group_keys.insert(group.clone(), carol_keys);
            o.key_source = Some(node.rest());
        })
        .await?;

    // Alice keeps sending while she removes Bob.
    let sender = tokio::spawn({
        let (a, group) = (a.clone(), group.clone());
        async move {
            for i in 0..50 {
                a.send_group(&group, format!("before {i}").as_bytes())
                    .await?;
            }
            Ok::<_, SendError>(())
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let removed = rest
        .remove_member(&alice.login.token, &group, bob.id.as_str())
        .await?;
    let removal = removed.seq.expect("a removal is an entry");
    // Sends sealed at the old epoch after the removal are refused as stale: Alice takes
    // the new key and goes on.
    let stale = sender.await?;
    ensure!(
        matches!(
            stale,
            Ok(()) | Err(SendError::Rejected(ErrorCode::StaleEpoch))
        ),
        "{stale:?}"
    );
    // Alice's client has no key source: her app gives it the new key.
    a.set_group_keys(&rest.group(&alice.login.token, &group).await?);
    for i in 0..20 {
        a.send_group(&group, format!("after {i}").as_bytes())
            .await?;
    }

    for events in [&mut b_events, &mut b2_events] {
        loop {
            match next_event(events).await? {
                Event::GroupMessage(m) => ensure!(m.seq < removal, "got {} after removal", m.seq),
                Event::GroupChange { seq, change, .. } if seq == removal => {
                    ensure!(matches!(change, GroupChange::Removed { .. }), "{change:?}");
                    break;
                }
                Event::GroupChange { seq, .. } => ensure!(seq < removal),
                other => bail!("unexpected {other:?}"),
            }
        }
        assert_quiet(events, Duration::from_millis(500)).await?;
    }
    // Bob's send is refused with a clear code, and his REST view of the group is gone.
    let refused = b.send_group(&group, b"let me in").await;
    ensure!(
        matches!(
            refused,
            Err(SendError::Rejected(ErrorCode::NotMember))
                | Err(SendError::StreamClosed(ErrorCode::NotMember))
        ),
        "{refused:?}"
    );
    ensure!(api_error(rest.group(&bob.login.token, &group).await)?.0 == 403);

    // Carol gets everything, in one order. A device holding only what Bob held opens
    // what was sealed before the removal and nothing after it.
    let mut last = Seq(0);
    loop {
        let m = group_messages(&mut c_events, 1).await?.remove(0);
        ensure!(m.seq > last, "carol: {} after {}", m.seq, last);
        last = m.seq;
        if m.text() == "after 19" {
            break;
        }
    }
    let carol2 = carol.new_device(&node).await?;
    let bobs_keys = GroupKeys::from_info(&bob_info);
    let (_spy, mut spy_events) = node
        .connect_with(&carol2, |o| {
            o.group_keys.insert(group.clone(), bobs_keys);
        })
        .await?;
    let (mut opened, mut closed) = (0, 0);
    while closed < 20 {
        match next_event(&mut spy_events).await? {
            Event::GroupMessage(m) => {
                ensure!(m.seq < removal, "opened {} sealed after removal", m.seq);
                opened += 1;
            }
            Event::GroupUndecryptable { seq, .. } => {
                ensure!(seq > removal, "{seq} is before the removal");
                closed += 1;
            }
            Event::GroupChange { .. } => {}
            other => bail!("unexpected {other:?}"),
        }
    }
    ensure!(opened > 0, "nothing from before the removal opened");
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn strangers_and_members_without_rights_are_refused_while_a_group_chats() -> anyhow::Result<()>
{
    let node = TestNode::start().await?;
    let [alice, bob, eve] = users(&node, ["alice", "bob", "eve"]).await?;
    let group = group_of(&node, &alice, &[&bob]).await?;
    let rest = node.rest();
    let (a, _a_events) = join(&node, &alice, &group).await?;
    let (_b, mut b_events) = join(&node, &bob, &group).await?;
    // The honest group chats all along, until the attacks are over.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let chat = tokio::spawn({
        let (a, group) = (a.clone(), group.clone());
        async move {
            let mut sent = 0;
            while !*stopped.borrow_and_update() {
                a.send_group(&group, format!("m{sent}").as_bytes()).await?;
                sent += 1;
                let _ = tokio::time::timeout(Duration::from_millis(5), stopped.changed()).await;
            }
            Ok::<_, SendError>(sent)
        }
    });

    // Eve, not a member, with keys she made up.
    let (e, _e_events) = node.connect(&eve).await?;
    let mut fake = rest.group(&alice.login.token, &group).await?;
    fake.keys.iter_mut().for_each(|k| k.key = "11".repeat(32));
    e.set_group_keys(&fake);
    let refused = e.send_group(&group, b"hello").await;
    ensure!(
        matches!(refused, Err(SendError::StreamClosed(ErrorCode::NotMember))),
        "{refused:?}"
    );
    ensure!(api_error(rest.group(&eve.login.token, &group).await)? == (403, "not_member".into()));

    // Bob, a plain member, may not add or remove.
    node.befriend(&bob, &eve).await?;
    let add = rest.add_member(&bob.login.token, &group, "eve").await;
    ensure!(api_error(add)? == (403, "not_member".into()));
    let remove = rest.remove_member(&bob.login.token, &group, "alice").await;
    ensure!(api_error(remove)?.0 == 403);

    // A forged group id: well formed but no such group, and malformed.
    let forged = GroupId::parse("g0123456789abcdef")?;
    ensure!(api_error(rest.group(&eve.login.token, &forged).await)?.0 == 403);
    e.set_group_keys(&quiver_proto_info(&forged));
    let refused = e.send_group(&forged, b"x").await;
    ensure!(
        matches!(refused, Err(SendError::StreamClosed(ErrorCode::NotMember))),
        "{refused:?}"
    );
    let add = rest.add_member(&eve.login.token, &forged, "alice").await;
    ensure!(api_error(add)?.0 == 403);

    // Eve floods invitations into her own group at Bob (not her friend... now he is; use
    // a stranger) — each refused once the first is waiting, then rate limited.
    let mallory = node.user("mallory").await?;
    let eves = rest.create_group(&eve.login.token, "spam").await?;
    let (mut invited, mut conflict, mut limited) = (0, 0, 0);
    let attempts = 100_000;
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..attempts {
        if in_flight.len() >= 64 {
            tally(
                in_flight.join_next().await,
                &mut invited,
                &mut conflict,
                &mut limited,
            )?;
        }
        let (rest, token, id) = (rest.clone(), eve.login.token.clone(), eves.id.clone());
        let target = if i % 2 == 0 { "mallory" } else { "alice" };
        in_flight.spawn(async move { rest.add_member(&token, &id, target).await });
    }
    while let Some(done) = in_flight.join_next().await {
        tally(Some(done), &mut invited, &mut conflict, &mut limited)?;
    }
    ensure!(invited == 2, "invited {invited}");
    ensure!(invited + conflict + limited == attempts);
    ensure!(limited > attempts * 9 / 10, "only {limited} rate limited");
    let waiting = rest.groups(&mallory.login.token).await?.invitations;
    ensure!(waiting.len() == 1, "{waiting:?}");

    stop.send(true)?;
    let sent = chat.await??;
    let got = group_messages(&mut b_events, sent).await?;
    let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    ensure!(texts == (0..sent).map(|i| format!("m{i}")).collect::<Vec<_>>());
    println!("honest group: {sent} messages during the attacks, all delivered in order");
    node.shutdown().await;
    Ok(())
}

fn tally(
    done: Option<
        Result<Result<quiver_sdk::GroupChangeResponse, RestError>, tokio::task::JoinError>,
    >,
    invited: &mut usize,
    conflict: &mut usize,
    limited: &mut usize,
) -> anyhow::Result<()> {
    match done.expect("a task")? {
        Ok(r) if r.status == "invited" => *invited += 1,
        Err(RestError::Api { status: 409, .. }) => *conflict += 1,
        Err(RestError::Api { status: 429, .. }) => *limited += 1,
        other => bail!("unexpected {other:?}"),
    }
    Ok(())
}

/// A description of a group nobody is in, with a key its holder made up.
fn quiver_proto_info(group: &GroupId) -> quiver_sdk::GroupInfo {
    quiver_sdk::GroupInfo {
        id: group.clone(),
        name: "forged".into(),
        epoch: 0,
        members: Vec::new(),
        keys: vec![quiver_sdk::GroupKeyInfo {
            epoch: 0,
            key: "22".repeat(32),
        }],
    }
}

#[tokio::test]
async fn receipts_say_delivered_to_n_of_m_and_read_by_k_of_m() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let [alice, bob, carol] = users(&node, ["alice", "bob", "carol"]).await?;
    let group = group_of(&node, &alice, &[&bob, &carol]).await?;
    let (a, mut a_events) = join(&node, &alice, &group).await?;
    let (b, mut b_events) = join(&node, &bob, &group).await?;
    // Carol stays offline.
    let sent = a.send_group(&group, b"did you get it?").await?;
    let got = group_messages(&mut b_events, 1).await?.remove(0);
    ensure!(got.seq == sent.seq);
    b.mark_group_read(&group, got.seq)?;
    group_messages(&mut a_events, 1).await?; // Alice's own device has it too.

    let rest = node.rest();
    let asked = || rest.group_receipts(&alice.login.token, &group, sent.seq);
    wait_for(|| async { asked().await.is_ok_and(|r| (r.delivered, r.read) == (2, 1)) }).await?;
    let receipts = asked().await?;
    ensure!(receipts.members == 3);
    let mut each: Vec<(String, bool, bool)> = receipts
        .by_member
        .expect("a small group lists each member")
        .into_iter()
        .map(|m| (m.user.to_string(), m.delivered, m.read))
        .collect();
    each.sort();
    ensure!(
        each == [
            ("alice".to_string(), true, false),
            ("bob".to_string(), true, true),
            ("carol".to_string(), false, false),
        ],
        "{each:?}"
    );
    // A stranger may not ask.
    let eve = node.user("eve").await?;
    let refused = rest
        .group_receipts(&eve.login.token, &group, sent.seq)
        .await;
    ensure!(api_error(refused)?.0 == 403);
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_busy_group_holds_a_quiet_one_back_by_at_most_its_push_window() -> anyhow::Result<()> {
    let window = 64;
    let node = TestNode::start_with(|c| {
        c.limits.push_window = window;
        c.limits.messages_per_sec = 100_000;
    })
    .await?;
    let [alice, bob, carol] = users(&node, ["alice", "bob", "carol"]).await?;
    let busy = group_of(&node, &alice, &[&bob]).await?;
    let quiet = group_of(&node, &carol, &[&bob]).await?;
    let (a, _a_events) = join(&node, &alice, &busy).await?;
    let (c, _c_events) = join(&node, &carol, &quiet).await?;
    // Bob is away while the busy group fills up, then the quiet one says one thing.
    send_all(&a, &busy, (0..2000).map(|i| format!("busy {i}"))).await?;
    c.send_group(&quiet, b"over here").await?;

    let mut keys = std::collections::HashMap::new();
    for group in [&busy, &quiet] {
        let info = node.rest().group(&bob.login.token, group).await?;
        keys.insert(group.clone(), GroupKeys::from_info(&info));
    }
    let (_b, mut b_events) = node.connect_with(&bob, |o| o.group_keys = keys).await?;
    let mut busy_before = 0;
    loop {
        let m = group_messages(&mut b_events, 1).await?.remove(0);
        if m.group == quiet {
            break;
        }
        busy_before += 1;
    }
    println!("busy entries before the quiet one: {busy_before} (window {window})");
    ensure!(
        busy_before <= window as usize,
        "{busy_before} busy entries came first"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn groups_a_user_was_removed_from_do_not_count_against_their_limit() -> anyhow::Result<()> {
    let mut node = TestNode::start_with(|c| c.groups.max_groups_per_user = 2).await?;
    let [alice, bob, carol] = users(&node, ["alice", "bob", "carol"]).await?;
    let rest = node.rest();
    let first = group_of(&node, &bob, &[&alice]).await?;
    group_of(&node, &carol, &[&alice]).await?;
    // Alice is in two groups: a third is refused.
    let third = rest.create_group(&bob.login.token, "third").await?;
    let full = rest.add_member(&bob.login.token, &third.id, "alice").await;
    ensure!(api_error(full)? == (409, "quota_exceeded".into()));
    // Removed from one, she has room again.
    rest.remove_member(&bob.login.token, &first, "alice")
        .await?;
    let added = rest
        .add_member(&bob.login.token, &third.id, "alice")
        .await?;
    ensure!(added.status == "added", "{added:?}");
    // The count is made again from what is stored: after a restart she is full again.
    node.restart().await?;
    let rest = node.rest();
    let fourth = rest.create_group(&carol.login.token, "fourth").await?;
    let full = rest
        .add_member(&carol.login.token, &fourth.id, "alice")
        .await;
    ensure!(api_error(full)? == (409, "quota_exceeded".into()));
    node.shutdown().await;
    Ok(())
}

/// Group history pages: each member pages back through exactly the entries their
/// devices get — from the entry that added them, up to the one that removed them — and
/// a stranger is refused.
#[tokio::test]
async fn members_page_group_history_within_their_range() -> anyhow::Result<()> {
    use quiver_sdk::{HistoryError, HistoryOf};
    let node = TestNode::start().await?;
    let [alice, bob, carol, dave] = users(&node, ["alice", "bob", "carol", "dave"]).await?;
    let group = group_of(&node, &alice, &[&bob]).await?;
    let (a, _a_events) = join(&node, &alice, &group).await?;
    send_all(&a, &group, (0..700).map(|i| format!("early {i}"))).await?;
    node.befriend(&alice, &carol).await?;
    let rest = node.rest();
    let carol_added = rest
        .add_member(&alice.login.token, &group, carol.id.as_str())
        .await?;
    ensure!(carol_added.status == "added");
    send_all(&a, &group, (0..300).map(|i| format!("middle {i}"))).await?;
    rest.remove_member(&alice.login.token, &group, bob.id.as_str())
        .await?;
    let a = {
        // A new epoch after the removal: Alice seals with its key.
        let (a, events) = join(&node, &alice, &group).await?;
        drop(events);
        a
    };
    send_all(&a, &group, (0..200).map(|i| format!("late {i}"))).await?;

    /// Every page of the group's history as (seq, text or change) pairs.
    async fn pages(client: &Client, group: &GroupId) -> anyhow::Result<Vec<(Seq, String)>> {
        let (mut out, mut before) = (Vec::new(), None);
        loop {
            let page = client
                .history(&HistoryOf::Group(group.clone()), before, 500)
                .await?;
            ensure!(page.events.len() <= 500);
            for event in page.events {
                out.push(match event {
                    Event::GroupMessage(m) => (m.seq, m.text()),
                    Event::GroupChange { seq, change, .. } => (seq, format!("{change:?}")),
                    // Bob, removed, holds no keys any more.
                    Event::GroupUndecryptable { seq, .. } => (seq, "sealed".into()),
                    other => bail!("{other:?}"),
                });
            }
            match page.next {
                Some(next) => before = Some(next),
                None => return Ok(out),
            }
        }
    }
    let everything = pages(&a, &group).await?;
    // Created, Alice's add of Bob, 700, Carol's add, 300, Bob's removal, 200.
    ensure!(
        everything.len() == 1 + 1 + 700 + 1 + 300 + 1 + 200,
        "{}",
        everything.len()
    );
    let seqs: Vec<u64> = everything.iter().map(|(s, _)| s.0).collect();
    ensure!(seqs == (1..=seqs.len() as u64).rev().collect::<Vec<_>>());

    let (c, _c_events) = join(&node, &carol, &group).await?;
    let carols = pages(&c, &group).await?;
    ensure!(carols.len() == 1 + 300 + 1 + 200, "{}", carols.len());
    ensure!(
        carols.last().unwrap().1.contains("Added"),
        "{:?}",
        carols.last()
    );
    ensure!(carols == everything[..carols.len()]);

    let (b, _b_events) = node.connect(&bob).await?;
    let bobs = pages(&b, &group).await?;
    let (removal, _) = &everything[200];
    ensure!(
        bobs[0].0 == *removal && bobs[0].1.contains("Removed"),
        "{:?}",
        bobs[0]
    );
    let seqs = |entries: &[(Seq, String)]| entries.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    ensure!(
        seqs(&bobs) == seqs(&everything[200..everything.len() - 1]),
        "Bob: from his add to his removal"
    );

    let (d, _d_events) = node.connect(&dave).await?;
    let refused = d.history(&HistoryOf::Group(group.clone()), None, 10).await;
    ensure!(
        refused == Err(HistoryError::Refused(ErrorCode::NotMember)),
        "{refused:?}"
    );
    Ok(())
}
