//! Groups across a mesh (real Redis, real nodes): members homed on three nodes, requests
//! made on any node carried out by the group's home, and the home killed with SIGKILL in
//! the middle of a burst.

use anyhow::{bail, ensure, Context};
use quiver_sdk::{
    Client, ClientMsgId, ConnectOptions, Event, Events, GroupId, GroupKeys, GroupMessage,
    HistoryOf, Rest, RestError, SendError, Seq, UserId,
};
use quiver_server::Config;
use quiver_tests::mesh::{free_port, mesh_config, Cluster, ClusterCa, RedisServer};
use quiver_tests::*;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A mesh node in a process of its own (`node_child`), which a test can kill with
/// SIGKILL and start again on the same data folder and ports.
struct ChildNode {
    child: Option<Child>,
    config: PathBuf,
    quic: SocketAddr,
    http: SocketAddr,
}

impl ChildNode {
    /// Writes `config` next to its data folder and starts the node.
    async fn start(config: &Config) -> anyhow::Result<Self> {
        let path = config.data_dir.with_extension("json");
        std::fs::create_dir_all(path.parent().context("config folder")?)?;
        std::fs::write(&path, serde_json::to_vec(config)?)?;
        let mut node = Self {
            child: None,
            config: path,
            quic: config.quic_addr,
            http: config.http_addr,
        };
        node.spawn().await?;
        Ok(node)
    }

    /// Starts the process and waits for its banner, off the test's runtime (which also
    /// runs the other nodes).
    async fn spawn(&mut self) -> anyhow::Result<()> {
        let config = self.config.clone();
        let child = tokio::task::spawn_blocking(move || -> anyhow::Result<Child> {
            let mut child = Command::new(env!("CARGO_BIN_EXE_node_child"))
                .arg(&config)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdout = child.stdout.take().context("child stdout")?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            ensure!(line.starts_with("ready "), "node_child said {line:?}");
            Ok(child)
        })
        .await??;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown, no final flush.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn rest(&self, ca_pem: &str) -> anyhow::Result<Rest> {
        Ok(Rest::new(&format!("https://{}", self.http), ca_pem)?)
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Group messages until `n` arrived (counting each in `count`), skipping membership
/// changes; then nothing more for a moment.
async fn collect(
    events: &mut Events,
    n: usize,
    count: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<GroupMessage>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Some(Event::GroupMessage(m))) => {
                out.push(m);
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(Event::GroupUndecryptable { seq, reason, .. })) => {
                bail!("entry {seq} could not be opened: {reason}")
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("events ended after {} messages", out.len()),
            Err(_) => bail!("only {} of {n} messages within a minute", out.len()),
        }
    }
    let quiet = tokio::time::timeout(Duration::from_millis(1500), async {
        loop {
            match events.recv().await {
                Some(Event::GroupMessage(m)) => return Some(m),
                Some(_) => {}
                None => return None,
            }
        }
    });
    if let Ok(Some(extra)) = quiet.await {
        bail!("a message beyond the {n} sent arrived: seq {}", extra.seq);
    }
    Ok(out)
}

/// Connects a device at `addr` with `group`'s keys as fetched through `rest`.
async fn join(
    addr: SocketAddr,
    ca_pem: &str,
    rest: &Rest,
    user: &TestUser,
    group: &GroupId,
) -> anyhow::Result<(Client, Events)> {
    let info = rest.group(&user.login.token, group).await?;
    let mut options = ConnectOptions::new(addr, ca_pem, &user.login.token);
    options
        .group_keys
        .insert(group.clone(), GroupKeys::from_info(&info));
    // New epochs (after a removal) are fetched through the device's own node too.
    options.key_source = Some(rest.clone());
    // Typing reaches connections that announce presence.
    options.presence = Some(quiver_sdk::PresenceState::Online);
    Ok(Client::connect(options).await?)
}

/// Queues `n` messages to `group` at once and waits until each is SENT.
async fn burst(client: Client, group: GroupId, n: usize) -> Result<Vec<Seq>, SendError> {
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("{}-{i}", client.user());
        pending.push(client.enqueue_group(&group, body.as_bytes()).await?);
    }
    let mut seqs = Vec::with_capacity(n);
    for p in pending {
        seqs.push(p.await?.seq);
    }
    Ok(seqs)
}

/// Waits (5 s at most) for `from`'s typing in `group`, skipping everything else.
async fn typed_in(events: &mut Events, from: &UserId, group: &GroupId) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Typing {
                from: who,
                group: Some(g),
            })) if who == *from && g == *group => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => bail!("events ended"),
            Err(_) => bail!("no typing of {from} in {group} within 5 s"),
        }
    }
}

fn summary(messages: &[GroupMessage]) -> Vec<(Seq, ClientMsgId)> {
    messages.iter().map(|m| (m.seq, m.id)).collect()
}

#[tokio::test]
async fn the_group_home_killed_mid_burst_loses_and_repeats_nothing() -> anyhow::Result<()> {
    const EACH: usize = 200;
    let redis = RedisServer::start()?;
    let ca = ClusterCa::new("Quiver group mesh CA")?;
    let ca_pem = ca.ca_pem()?;
    let fast = |c: &mut Config| c.limits.messages_per_sec = 100_000;
    // n1, the group's home, runs in a process of its own on fixed ports.
    let dir = tempfile::tempdir()?;
    let mut config = Config {
        data_dir: dir.path().join("n1"),
        quic_addr: format!("127.0.0.1:{}", free_port()?).parse()?,
        http_addr: format!("127.0.0.1:{}", free_port()?).parse()?,
        ..Config::default()
    };
    fast(&mut config);
    mesh_config(&mut config, "n1", &ca, &redis.url())?;
    if let Some(mesh) = config.mesh.as_mut() {
        mesh.mesh_addr = format!("127.0.0.1:{}", free_port()?).parse()?;
    }
    let mut n1 = ChildNode::start(&config).await?;
    let n2 = Cluster::node_with(&ca, &redis.url(), "n2", fast).await?;
    let n3 = Cluster::node_with(&ca, &redis.url(), "n3", fast).await?;

    let rest1 = n1.rest(&ca_pem)?;
    rest1.register("alice", "alice-password").await?;
    let alice = TestUser {
        id: UserId::parse("alice")?,
        password: "alice-password".into(),
        login: rest1.login("alice", "alice-password", None).await?,
    };
    let bob = n2.user("bob").await?;
    let carol = n3.user("carol").await?;
    for other in [&bob, &carol] {
        rest1
            .request_friend(&alice.login.token, other.id.as_str())
            .await?;
        rest1
            .accept_friend(&other.login.token, alice.id.as_str())
            .await?;
    }
    let group = rest1.create_group(&alice.login.token, "mesh").await?.id;
    for other in [&bob, &carol] {
        // Asked on the member's own node, carried out by the group's home.
        let rest = if other.id == bob.id {
            n2.rest()
        } else {
            n3.rest()
        };
        let added = rest
            .add_member(&alice.login.token, &group, other.id.as_str())
            .await?;
        ensure!(added.status == "added", "{added:?}");
    }

    let (a, mut a_events) = join(n1.quic, &ca_pem, &rest1, &alice, &group).await?;
    let (b, mut b_events) = join(n2.quic_addr(), &ca_pem, &n2.rest(), &bob, &group).await?;
    let (c, mut c_events) = join(n3.quic_addr(), &ca_pem, &n3.rest(), &carol, &group).await?;
    let total = 3 * EACH;
    let carol_has = Arc::new(AtomicUsize::new(0));
    let receivers = [
        (&mut a_events, Arc::new(AtomicUsize::new(0))),
        (&mut b_events, Arc::new(AtomicUsize::new(0))),
        (&mut c_events, carol_has.clone()),
    ]
    .map(|(events, count)| collect(events, total, count));
    let senders = [a.clone(), b.clone(), c.clone()].map(|client| {
        let group = group.clone();
        tokio::spawn(async move { burst(client, group, EACH).await })
    });
    let killer = async {
        while carol_has.load(Ordering::Relaxed) < total / 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n1.kill();
        let had = carol_has.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        n1.spawn().await?;
        anyhow::Ok(had)
    };
    let [ra, rb, rc] = receivers;
    let (killed_at, seen_a, seen_b, seen_c) = tokio::join!(killer, ra, rb, rc);
    let killed_at = killed_at?;
    let mut sent = Vec::new();
    for s in senders {
        sent.extend(s.await??);
    }
    sent.sort();
    let seen = [seen_a?, seen_b?, seen_c?];
    let first = summary(&seen[0]);
    for (i, other) in seen.iter().enumerate() {
        ensure!(summary(other) == first, "device {i} saw another sequence");
    }
    let seqs: Vec<Seq> = first.iter().map(|e| e.0).collect();
    ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs not increasing");
    ensure!(seqs == sent, "what was SENT is not what arrived");
    let ids: HashSet<ClientMsgId> = first.iter().map(|e| e.1).collect();
    ensure!(ids.len() == total, "an entry was stored twice");
    eprintln!("group home killed after carol had {killed_at} of {total}; all {total} arrived once, in order, on 3 nodes");
    drop((a, b, c));
    Ok(())
}

#[tokio::test]
async fn group_requests_on_any_node_are_carried_out_by_the_home() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    let carol = cluster.user(3, "carol").await?;
    let mallory = cluster.user(3, "mallory").await?;
    let (n1, n2, n3) = (cluster.n(1), cluster.n(2), cluster.n(3));
    n1.befriend(&alice, &bob).await?;
    // Made on n2 by a user homed on n1: n2 is the group's home.
    let group = n2
        .rest()
        .create_group(&alice.login.token, "across")
        .await?
        .id;
    let added = n3
        .rest()
        .add_member(&alice.login.token, &group, bob.id.as_str())
        .await?;
    ensure!(added.status == "added", "{added:?}");
    // Carol is no friend of Alice's: invited, she accepts on her own node.
    let invited = n1
        .rest()
        .add_member(&alice.login.token, &group, carol.id.as_str())
        .await?;
    ensure!(invited.status == "invited", "{invited:?}");
    let listed = n3.rest().groups(&carol.login.token).await?;
    ensure!(
        listed.invitations.iter().any(|i| i.id == group),
        "carol's list on n3 misses the invitation: {listed:?}"
    );
    n3.rest()
        .accept_invitation(&carol.login.token, &group)
        .await?;
    for (node, user) in [(n1, &alice), (n2, &bob), (n3, &carol)] {
        let listed = node.rest().groups(&user.login.token).await?;
        ensure!(listed
            .groups
            .iter()
            .any(|g| g.id == group && g.members.len() == 3));
    }
    // A stranger on another node than the home is refused, and so is a forged id.
    let refused = n3.rest().group(&mallory.login.token, &group).await;
    ensure!(
        matches!(&refused, Err(RestError::Api { status: 403, error, .. }) if error == "not_member"),
        "{refused:?}"
    );
    // A member without rights, asking on a node that is not the home, is refused there.
    let removal = n1
        .rest()
        .remove_member(&bob.login.token, &group, alice.id.as_str())
        .await;
    ensure!(
        matches!(&removal, Err(RestError::Api { status: 403, .. })),
        "{removal:?}"
    );
    let forged = GroupId::parse("g00000000000000ab")?;
    let refused = n1.rest().group(&alice.login.token, &forged).await;
    ensure!(
        matches!(&refused, Err(RestError::Api { status: 403, .. })),
        "{refused:?}"
    );

    // Chat: members connected to three nodes, the log on n2.
    let (a, mut a_events) = join(
        n1.quic_addr(),
        &cluster.ca.ca_pem()?,
        &n1.rest(),
        &alice,
        &group,
    )
    .await?;
    let (_b, mut b_events) = join(
        n2.quic_addr(),
        &cluster.ca.ca_pem()?,
        &n2.rest(),
        &bob,
        &group,
    )
    .await?;
    let (c, mut c_events) = join(
        n3.quic_addr(),
        &cluster.ca.ca_pem()?,
        &n3.rest(),
        &carol,
        &group,
    )
    .await?;
    let first = a.send_group(&group, b"hello from n1").await?;
    for events in [&mut a_events, &mut b_events, &mut c_events] {
        let got = collect(events, 1, Arc::default()).await?;
        ensure!(got[0].seq == first.seq && got[0].text() == "hello from n1");
    }
    // Typing on n1 in a group homed on n2 reaches the members on n2 and n3.
    a.group_typing(&group)?;
    typed_in(&mut b_events, &alice.id, &group).await?;
    typed_in(&mut c_events, &alice.id, &group).await?;
    // Carol is removed through n1; nothing after reaches her on n3, and her send is
    // refused by the home through her node.
    let removed = n1
        .rest()
        .remove_member(&alice.login.token, &group, carol.id.as_str())
        .await?;
    let after = a.send_group(&group, b"after carol left").await?;
    ensure!(after.seq > removed.seq.context("removal seq")?);
    let got = collect(&mut b_events, 1, Arc::default()).await?;
    ensure!(
        got[0].text() == "after carol left",
        "bob got {:?}",
        got[0].text()
    );
    let refused = c.send_group(&group, b"let me back").await;
    ensure!(
        matches!(
            refused,
            Err(SendError::StreamClosed(quiver_sdk::ErrorCode::NotMember))
                | Err(SendError::Rejected(quiver_sdk::ErrorCode::NotMember))
                | Err(SendError::Rejected(quiver_sdk::ErrorCode::StaleEpoch))
        ),
        "{refused:?}"
    );
    let mut carol_saw = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(800), c_events.recv()).await
    {
        if let Event::GroupMessage(m) = event {
            carol_saw.push(m.text());
        }
    }
    ensure!(
        !carol_saw.iter().any(|t| t == "after carol left"),
        "a removed member got what came after the removal: {carol_saw:?}"
    );
    // Alice, on n1, pages the log kept on n2: relayed by her node.
    let page = a
        .history(&HistoryOf::Group(group.clone()), None, 10)
        .await?;
    let texts: Vec<String> = page
        .events
        .iter()
        .filter_map(|e| match e {
            Event::GroupMessage(m) => Some(m.text()),
            _ => None,
        })
        .collect();
    ensure!(
        texts == ["after carol left", "hello from n1"],
        "history through n1: {texts:?}"
    );
    // Receipts: asked on n3, answered by n2, the read mark passed up from n1.
    a.mark_group_read(&group, after.seq)?;
    wait_for(|| async {
        n3.rest()
            .group_receipts(&alice.login.token, &group, after.seq)
            .await
            .is_ok_and(|r| r.read >= 1)
    })
    .await
    .context("alice's read mark did not reach the group's home")?;
    Ok(())
}

/// Hostile: a member floods the node they are connected to with read marks of groups that
/// do not exist (each one a look-up of the group's home): each is refused with
/// `NotMember`, and a group homed on the other node keeps chatting.
#[tokio::test]
async fn forged_group_read_marks_on_a_mesh_node_are_refused_while_a_group_chats(
) -> anyhow::Result<()> {
    const FORGED: u64 = 2_000;
    let cluster = Cluster::start(2).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    let (n1, n2) = (cluster.n(1), cluster.n(2));
    n1.befriend(&alice, &bob).await?;
    let group = n1.rest().create_group(&alice.login.token, "team").await?.id;
    n1.rest()
        .add_member(&alice.login.token, &group, bob.id.as_str())
        .await?;
    let ca = cluster.ca.ca_pem()?;
    let (a, _a_events) = join(n1.quic_addr(), &ca, &n1.rest(), &alice, &group).await?;
    let (b, mut b_events) = join(n2.quic_addr(), &ca, &n2.rest(), &bob, &group).await?;
    for bits in 0..FORGED {
        b.mark_group_read(&GroupId::from_bits(bits), Seq(1))?;
    }
    let sent = a.send_group(&group, b"still chatting").await?;
    let (mut refused, mut arrived) = (0, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while refused < FORGED || !arrived {
        match tokio::time::timeout_at(deadline, b_events.recv()).await {
            Ok(Some(Event::ServerError {
                code: quiver_sdk::ErrorCode::NotMember,
                ..
            })) => refused += 1,
            Ok(Some(Event::GroupMessage(m))) => {
                ensure!(m.seq == sent.seq && m.text() == "still chatting");
                arrived = true;
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("events ended"),
            Err(_) => {
                bail!("after 30 s: {refused} of {FORGED} refused, message arrived: {arrived}")
            }
        }
    }
    // The node still serves the honest group.
    let again = b.send_group(&group, b"and back").await?;
    ensure!(again.seq > sent.seq);
    Ok(())
}

#[tokio::test]
async fn per_user_group_limits_are_the_meshs_not_each_nodes() -> anyhow::Result<()> {
    let cluster = Cluster::start_with(3, |c| {
        c.groups.max_groups_per_user = 3;
        c.groups.creations_per_hour = 4;
        c.groups.max_invitations_per_user = 2;
    })
    .await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    let carol = cluster.user(3, "carol").await?;
    let nodes = [cluster.n(1), cluster.n(2), cluster.n(3)];
    let token = &alice.login.token;

    // A group on each node: three, her limit; a fourth, on any node, is refused.
    let mut mine = Vec::new();
    for node in nodes {
        mine.push(node.rest().create_group(token, "one of three").await?.id);
    }
    let full = nodes[0].rest().create_group(token, "fourth").await;
    ensure!(crate::groups::api_error(full)? == (409, "quota_exceeded".into()));
    // Left one (homed on n2): room again, for her fourth creation of the hour...
    nodes[0].rest().leave_group(token, &mine[1]).await?;
    nodes[1].rest().create_group(token, "fourth").await?;
    // ... and none for a fifth, whichever node is asked.
    nodes[0].rest().leave_group(token, &mine[2]).await?;
    let fifth = nodes[2].rest().create_group(token, "fifth").await;
    ensure!(crate::groups::api_error(fifth)? == (429, "rate_limited".into()));

    // Invitations waiting for Carol (no friend of Bob's) count across nodes too.
    let bobs = bob.login.token.as_str();
    for (i, node) in nodes.iter().enumerate() {
        let group = node.rest().create_group(bobs, "invites").await?.id;
        let invited = node
            .rest()
            .add_member(bobs, &group, carol.id.as_str())
            .await;
        if i < 2 {
            ensure!(invited?.status == "invited");
        } else {
            ensure!(crate::groups::api_error(invited)? == (409, "quota_exceeded".into()));
        }
    }
    let waiting = nodes[2].rest().groups(&carol.login.token).await?;
    ensure!(waiting.invitations.len() == 2, "{waiting:?}");
    Ok(())
}

#[tokio::test]
async fn a_read_mark_made_while_the_groups_home_is_down_reaches_it_when_it_is_back(
) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(2).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    let (n1, n2) = (cluster.n(1), cluster.n(2));
    n1.befriend(&alice, &bob).await?;
    let group = n1.rest().create_group(&alice.login.token, "g").await?.id;
    n1.rest()
        .add_member(&alice.login.token, &group, bob.id.as_str())
        .await?;
    let (a, _a_events) = join(n1.quic_addr(), &n1.ca_pem, &n1.rest(), &alice, &group).await?;
    let (b, mut b_events) = join(n2.quic_addr(), &n2.ca_pem, &n2.rest(), &bob, &group).await?;
    let sent = a.send_group(&group, b"read me").await?;
    let got = loop {
        if let Event::GroupMessage(m) = next_event(&mut b_events).await? {
            break m;
        }
    };
    ensure!(got.seq == sent.seq);
    a.close().await;

    // The group's home stops; Bob reads meanwhile, on his own node.
    cluster.nodes[0].stop().await;
    // Its close reaches n2 at once; give n2 a moment to see its attachment gone (a mark
    // written before that would go into a link already closed, and be lost).
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.mark_group_read(&group, got.seq)?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.nodes[0].restart_on_same_ports().await?;

    // Bob's node attaches again and writes the mark it kept: the home has it.
    let n1 = cluster.n(1);
    wait_for(|| async {
        let receipts = n1
            .rest()
            .group_receipts(&alice.login.token, &group, got.seq)
            .await;
        receipts
            .ok()
            .and_then(|r| r.by_member)
            .is_some_and(|each| each.iter().any(|m| m.user == bob.id && m.read))
    })
    .await?;
    drop(b);
    Ok(())
}

/// Typing in a group of 300 (the home on n1), more than a lookup per member could carry:
/// Alice types on n1 and Bob hears it on n2; Bob types on n2 and Dave, also on n2, hears
/// it through the home. The home knows where the members' sessions are from their
/// attachments, not from a lookup per member.
#[tokio::test]
async fn typing_in_a_group_of_300_reaches_members_on_every_node() -> anyhow::Result<()> {
    const FILLERS: usize = 297;
    let cluster = Cluster::start_with(2, |config| {
        config.limits.logins_per_minute_per_address = 1_000_000;
        config.limits.requests_per_minute_per_user = 1_000_000;
    })
    .await?;
    let (n1, n2) = (cluster.n(1), cluster.n(2));
    let ca = cluster.ca.ca_pem()?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    let dave = cluster.user(2, "dave").await?;
    let group = n1
        .rest()
        .create_group(&alice.login.token, "crowd")
        .await?
        .id;
    // Members who never connect, then Bob and Dave: each invited by Alice and accepting.
    let limit = Arc::new(tokio::sync::Semaphore::new(8));
    let mut joining = tokio::task::JoinSet::new();
    let fillers = (0..FILLERS).map(|i| (n1.rest(), format!("member-{i:03}"), None));
    let named = [(n2.rest(), &bob), (n2.rest(), &dave)]
        .map(|(rest, user)| (rest, user.id.as_str().to_string(), Some(user.login.clone())));
    for (rest, name, login) in fillers.chain(named) {
        let (limit, owner, group) = (limit.clone(), alice.login.token.clone(), group.clone());
        joining.spawn(async move {
            let _permit = limit.acquire().await?;
            let login = match login {
                Some(login) => login,
                None => {
                    rest.register(&name, "filler-password").await?;
                    rest.login(&name, "filler-password", None).await?
                }
            };
            let added = rest.add_member(&owner, &group, &name).await?;
            ensure!(added.status == "invited", "{name}: {added:?}");
            rest.accept_invitation(&login.token, &group).await?;
            anyhow::Ok(())
        });
    }
    while let Some(joined) = joining.join_next().await {
        joined??;
    }
    let info = n1.rest().group(&alice.login.token, &group).await?;
    ensure!(
        info.members.len() == FILLERS + 3,
        "{} members",
        info.members.len()
    );

    let (a, mut a_events) = join(n1.quic_addr(), &ca, &n1.rest(), &alice, &group).await?;
    let (b, mut b_events) = join(n2.quic_addr(), &ca, &n2.rest(), &bob, &group).await?;
    let (_d, mut d_events) = join(n2.quic_addr(), &ca, &n2.rest(), &dave, &group).await?;
    // An entry down every session: Bob's and Dave's are attached to the home by then.
    a.send_group(&group, b"typing test").await?;
    for events in [&mut a_events, &mut b_events, &mut d_events] {
        collect(events, 1, Arc::default()).await?;
    }
    a.group_typing(&group)?;
    typed_in(&mut b_events, &alice.id, &group).await?;
    b.group_typing(&group)?;
    typed_in(&mut d_events, &bob.id, &group).await?;
    typed_in(&mut a_events, &bob.id, &group).await?;
    Ok(())
}
