//! Files in groups: sent once, fetched by every member (on one node and across a mesh),
//! refused to anyone outside the member's range of the group's log — a stranger holding a
//! leaked key, a member removed before the file was sent, one added after — and a
//! `GroupFile` naming a blob that is not the sender's refused.

use crate::raw;
use anyhow::{bail, ensure};
use quiver_proto::files::FileRef;
use quiver_proto::{encode_frame, ConversationRequest, ConversationResponse};
use quiver_sdk::{
    Client, ClientMsgId, ConnectOptions, Conversation, ErrorCode, Event, Events, FileError,
    FileOffer, GroupFile, GroupId, GroupKeys, GroupMessage, Rest, Store,
};
use quiver_tests::mesh::Cluster;
use quiver_tests::*;
use std::net::SocketAddr;
use std::path::Path;

/// The next group message, skipping membership changes.
async fn next_group_message(events: &mut Events) -> anyhow::Result<GroupMessage> {
    loop {
        match next_event(events).await? {
            Event::GroupMessage(m) => return Ok(m),
            Event::GroupChange { .. } | Event::Receipt(_) => {}
            other => bail!("unexpected event {other:?}"),
        }
    }
}

/// Connects `user` at `addr` with `group`'s keys as `rest` gives them to `user`, fetching
/// new epochs by itself; with `store`, keeping its history there.
async fn join(
    addr: SocketAddr,
    ca_pem: &str,
    rest: &Rest,
    user: &TestUser,
    group: &GroupId,
    store: Option<Store>,
) -> anyhow::Result<(Client, Events)> {
    let info = rest.group(&user.login.token, group).await?;
    let mut options = ConnectOptions::new(addr, ca_pem, &user.login.token);
    options
        .group_keys
        .insert(group.clone(), GroupKeys::from_info(&info));
    options.key_source = Some(rest.clone());
    options.store = store;
    Ok(Client::connect(options).await?)
}

/// Writes `len` bytes that differ from file to file (by `seed`) at `path`.
fn write_file(path: &Path, len: usize, seed: u8) -> anyhow::Result<Vec<u8>> {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect();
    std::fs::write(path, &bytes)?;
    Ok(bytes)
}

/// Downloads `offer` to `path` and checks the bytes are `want`.
async fn fetch(client: &Client, offer: &FileOffer, path: &Path, want: &[u8]) -> anyhow::Result<()> {
    client.download(offer, path, |_| {}).await?;
    ensure!(std::fs::read(path)? == want, "{} differs", path.display());
    Ok(())
}

/// Asserts that downloading `offer` is refused as not found (before any byte).
async fn refused(client: &Client, offer: &FileOffer, path: &Path) -> anyhow::Result<()> {
    let outcome = client.download(offer, path, |_| {}).await;
    ensure!(
        matches!(outcome, Err(FileError::Refused(ErrorCode::NotFound))),
        "{outcome:?}"
    );
    Ok(())
}

/// `offer` as if it were the file of the entry at `seq`, sealed at `epoch`.
fn pointed(offer: &FileOffer, seq: quiver_sdk::Seq, epoch: u32) -> FileOffer {
    let mut offer = offer.clone();
    let group = offer.group.as_ref().map(|g| g.group.clone());
    offer.group = group.map(|group| GroupFile { group, seq, epoch });
    offer
}

#[tokio::test]
async fn members_fetch_a_group_file_and_no_one_outside_their_range_does() -> anyhow::Result<()> {
    let node = TestNode::start().await?;
    let [alice, bob, carol, dave, erin] = {
        let mut users = Vec::new();
        for name in ["alice", "bob", "carol", "dave", "erin"] {
            users.push(node.user(name).await?);
        }
        <[TestUser; 5]>::try_from(users).map_err(|_| anyhow::anyhow!("a user was lost"))?
    };
    let rest = node.rest();
    let group = rest.create_group(&alice.login.token, "photos").await?.id;
    for member in [&bob, &carol, &dave] {
        node.befriend(&alice, member).await?;
    }
    for member in [&bob, &carol] {
        rest.add_member(&alice.login.token, &group, member.id.as_str())
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let (addr, ca) = (node.quic_addr(), node.ca_pem.clone());
    let bob_store = Store::open(dir.path().join("bob.sqlite3"))?;
    let (a, _a_events) = join(addr, &ca, &rest, &alice, &group, None).await?;
    let (b, mut b_events) = join(addr, &ca, &rest, &bob, &group, Some(bob_store.clone())).await?;
    let (c, mut c_events) = join(addr, &ca, &rest, &carol, &group, None).await?;

    // Three chunks and a bit: sealed, uploaded once, named in the group's log.
    let first = write_file(&dir.path().join("beach.jpg"), 200_000, 1)?;
    let sent = a
        .send_group_file(&group, dir.path().join("beach.jpg"), "image/jpeg", |_| {})
        .await?;
    let m = next_group_message(&mut b_events).await?;
    let offer = m
        .file
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no file: {m:?}"))?;
    ensure!(
        (
            m.seq,
            offer.info.name.as_str(),
            offer.info.media_type.as_str(),
            offer.file
        ) == (sent.sent.seq, "beach.jpg", "image/jpeg", sent.file),
        "{offer:?}"
    );
    let first_place = offer
        .group
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no group"))?;
    ensure!(first_place.epoch == 1, "{first_place:?}");
    fetch(&b, &offer, &dir.path().join("bob.jpg"), &first).await?;
    // The store keeps what it needs to fetch it again later.
    let page = bob_store.messages(&Conversation::Group(group.clone()), None, 10)?;
    let stored = page.messages.iter().find_map(FileOffer::from_stored);
    ensure!(stored.as_ref() == Some(&offer), "{stored:?}");
    let carols = next_group_message(&mut c_events).await?.file;
    let carols = carols.ok_or_else(|| anyhow::anyhow!("carol: no file"))?;
    fetch(&c, &carols, &dir.path().join("carol.jpg"), &first).await?;

    // A chat is no file: asking for one at its seq finds nothing.
    let chat = a.send_group(&group, b"nice").await?;
    refused(&b, &pointed(&offer, chat.seq, 1), &dir.path().join("x")).await?;

    // Carol is removed; Alice's next file is sealed at the new epoch (her client learns it
    // from the StaleEpoch refusal) and Bob fetches it.
    let removal = rest
        .remove_member(&alice.login.token, &group, carol.id.as_str())
        .await?;
    let second = write_file(&dir.path().join("after.bin"), 70_000, 2)?;
    let sent2 = a
        .send_group_file(&group, dir.path().join("after.bin"), "", |_| {})
        .await?;
    ensure!(sent2.sent.seq > removal.seq.unwrap_or_default());
    let offer2 = loop {
        if let Some(file) = next_group_message(&mut b_events).await?.file {
            break file;
        }
    };
    ensure!(
        offer2.group.as_ref().is_some_and(|g| g.epoch == 2),
        "{offer2:?}"
    );
    fetch(&b, &offer2, &dir.path().join("bob2.bin"), &second).await?;

    // Carol still fetches what was sent while she was a member; not what came after her
    // removal, though she knows where it is and asks with a key she holds.
    fetch(&c, &carols, &dir.path().join("carol-again.jpg"), &first).await?;
    let behind = pointed(&offer, sent2.sent.seq, 1);
    refused(&c, &behind, &dir.path().join("carol2.bin")).await?;

    // A stranger given a member's keys is refused; so is Dave, added after both files.
    let leaked = GroupKeys::from_info(&rest.group(&bob.login.token, &group).await?);
    let (e, _e_events) = node
        .connect_with(&erin, |o| {
            o.group_keys.insert(group.clone(), leaked.clone());
        })
        .await?;
    refused(&e, &offer, &dir.path().join("erin.jpg")).await?;
    refused(&e, &offer2, &dir.path().join("erin.bin")).await?;
    rest.add_member(&alice.login.token, &group, dave.id.as_str())
        .await?;
    let (d, _d_events) = join(addr, &ca, &rest, &dave, &group, None).await?;
    refused(&d, &offer2, &dir.path().join("dave.bin")).await?;

    // A GroupFile naming a blob that is not the sender's (Alice's), or that was never
    // uploaded, is refused and not stored; the stream goes on.
    let (conn, _ctl_send, _ctl_recv, _welcome) = raw::hello(&node, &bob.login.token).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let open = ConversationRequest::OpenGroup {
        group: group.clone(),
    };
    send.write_all(&encode_frame(&open)?).await?;
    let unknown = FileRef {
        blob: quiver_sdk::BlobId([9; 32]),
        size: 100,
    };
    for (n, file) in [(1u128, sent.file), (2, unknown)] {
        let forged = ConversationRequest::GroupFile {
            id: ClientMsgId(n),
            sent_at_ms: 0,
            epoch: 2,
            body: vec![0; 40],
            file,
        };
        send.write_all(&encode_frame(&forged)?).await?;
        let answer: ConversationResponse = raw::read_one(&mut recv).await?;
        ensure!(
            answer
                == ConversationResponse::Rejected {
                    id: ClientMsgId(n),
                    code: ErrorCode::NotFound
                },
            "{answer:?}"
        );
    }
    // Bob's honest messages still go through, and nothing forged reached the log.
    let honest = b.send_group(&group, b"still here").await?;
    ensure!(
        honest.seq.0 == sent2.sent.seq.0 + 2,
        "{honest:?} after {sent2:?}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_group_file_is_fetched_through_any_node_of_a_mesh() -> anyhow::Result<()> {
    let cluster = Cluster::start(3).await?;
    let alice = cluster.user(1, "alice").await?;
    let bob = cluster.user(2, "bob").await?;
    let mallory = cluster.user(2, "mallory").await?;
    let (n1, n2, n3) = (cluster.n(1), cluster.n(2), cluster.n(3));
    n1.befriend(&alice, &bob).await?;
    // The group lives on n3; Alice's blob on n1, her home; Bob reads through n2.
    let group = n3.rest().create_group(&alice.login.token, "mesh").await?.id;
    n3.rest()
        .add_member(&alice.login.token, &group, bob.id.as_str())
        .await?;
    let (a, _a_events) = join(n1.quic_addr(), &n1.ca_pem, &n1.rest(), &alice, &group, None).await?;
    let (b, mut b_events) =
        join(n2.quic_addr(), &n2.ca_pem, &n2.rest(), &bob, &group, None).await?;
    let dir = tempfile::tempdir()?;
    let bytes = write_file(&dir.path().join("plan.pdf"), 150_000, 3)?;
    let sent = a
        .send_group_file(
            &group,
            dir.path().join("plan.pdf"),
            "application/pdf",
            |_| {},
        )
        .await?;
    let offer = loop {
        let m = next_group_message(&mut b_events).await?;
        if let Some(file) = m.file {
            ensure!(m.seq == sent.sent.seq, "{:?} is not {:?}", m.seq, sent.sent);
            break file;
        }
    };
    fetch(&b, &offer, &dir.path().join("bob.pdf"), &bytes).await?;
    // A stranger on Bob's node, with Bob's keys, is refused by the group's home.
    let leaked = GroupKeys::from_info(&n2.rest().group(&bob.login.token, &group).await?);
    let (m, _m_events) = n2
        .connect_with(&mallory, |o| {
            o.group_keys.insert(group.clone(), leaked.clone());
        })
        .await?;
    refused(&m, &offer, &dir.path().join("mallory.pdf")).await?;
    Ok(())
}
