//! A connection's datagrams: typing indicators and presence (docs/PROTOCOL.md 3.6). Each
//! is checked (size, rate, decoding) and dropped when it fails — never an error, never
//! stored. Typing goes to a friend's (or the group's members') connections that
//! announced presence; a presence change goes to the friends' such connections, here
//! and, in a mesh, on the other nodes they are connected to ([`crate::presence_mesh`]).
//! Group typing goes to the members: from the group's home node, which knows them (a
//! node that does not home the group passes it there), to their connections there and
//! on the other nodes of a mesh their sessions are attached from, whatever the group's
//! size.

use crate::presence::Visible;
use crate::rate::TokenBucket;
use crate::shared::Shared;
use quiver_proto::datagram::{ClientDatagram, NodeDatagram, PresenceState, MAX_DATAGRAM};
use quiver_proto::{GroupId, UserId};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Datagrams one connection may send, a second, on average.
pub const DATAGRAMS_PER_SEC: f64 = 10.0;
/// ...and in a burst.
pub const DATAGRAM_BURST: u32 = 20;

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads session `id`'s datagrams until the connection ends.
pub async fn serve(
    shared: Arc<Shared>,
    user: UserId,
    id: u64,
    conn: quinn::Connection,
) -> Result<(), String> {
    let mut bucket = TokenBucket::new(DATAGRAMS_PER_SEC, DATAGRAM_BURST, Instant::now());
    loop {
        let bytes = conn.read_datagram().await.map_err(|e| e.to_string())?;
        shared.metrics.datagrams_in.fetch_add(1, Ordering::Relaxed);
        let message = (bytes.len() <= MAX_DATAGRAM && bucket.try_take(Instant::now()))
            .then(|| postcard::from_bytes::<ClientDatagram>(&bytes).ok())
            .flatten();
        let Some(message) = message else {
            shared
                .metrics
                .datagrams_dropped
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // Boxed: an idle connection waits above, and keeps no room for what a datagram
        // needs while it is handled.
        match message {
            ClientDatagram::Typing { to } => Box::pin(typing(&shared, &user, to)).await,
            ClientDatagram::GroupTyping { group } => group_typing(&shared, &user, group),
            ClientDatagram::Presence { state } => {
                Box::pin(presence(&shared, &user, id, &conn, state)).await
            }
        }
    }
}

/// `user` is typing to `to`: tells them, if they are friends.
async fn typing(shared: &Arc<Shared>, user: &UserId, to: UserId) {
    if shared.router.check_friends(user, &to).await.is_ok() {
        let typing = NodeDatagram::Typing { from: user.clone() };
        send(shared, &to, &typing);
        crate::presence_mesh::forward(shared, vec![to], typing);
    }
}

/// A connection ended: its user's friends learn if that changed what they see.
pub async fn ended(shared: &Arc<Shared>, user: &UserId, id: u64) {
    if let Some(visible) = shared.presence.ended(user, id, now_ms()) {
        tell_friends(shared, user, visible).await;
    }
}

fn group_typing(shared: &Arc<Shared>, user: &UserId, group: GroupId) {
    match shared.groups.view(&group, user) {
        Ok(view) => {
            let members = view.members.into_iter().map(|(member, _)| member);
            typing_to_members(shared, user, group, members.collect());
        }
        // Not a member, or a group homed on another node, which decides.
        Err(_) => crate::group_mesh::typing_to_home(shared, user.clone(), group),
    }
}

/// `from` is typing in `group`, homed here, whose members are `members`: tells their
/// connections here and, in a mesh, on the nodes their sessions are attached from.
pub fn typing_to_members(
    shared: &Arc<Shared>,
    from: &UserId,
    group: GroupId,
    members: Vec<UserId>,
) {
    let typing = NodeDatagram::GroupTyping {
        group,
        from: from.clone(),
    };
    let others: Vec<UserId> = members.into_iter().filter(|m| m != from).collect();
    for member in &others {
        send(shared, member, &typing);
    }
    crate::presence_mesh::forward_attached(shared, &others, typing);
}

async fn presence(
    shared: &Arc<Shared>,
    user: &UserId,
    id: u64,
    conn: &quinn::Connection,
    state: PresenceState,
) {
    let first = !shared.presence.announced(user, id);
    if let Some(visible) = shared.presence.set(user, id, state, now_ms()) {
        tell_friends(shared, user, visible).await;
    }
    if !first {
        return;
    }
    // A connection that just announced itself learns what its friends show now.
    let Ok(relations) = shared.directory.relations(user).await else {
        return;
    };
    for friend in relations.friends {
        let visible = shared.presence.visible(&friend.user);
        if visible.last_seen_ms > 0 {
            let _ = conn.send_datagram(encode(&presence_of(friend.user, visible)).into());
        }
    }
}

async fn tell_friends(shared: &Arc<Shared>, user: &UserId, visible: Visible) {
    let Ok(relations) = shared.directory.relations(user).await else {
        return;
    };
    let message = presence_of(user.clone(), visible);
    for friend in &relations.friends {
        send(shared, &friend.user, &message);
    }
    let friends = relations.friends.into_iter().map(|f| f.user).collect();
    crate::presence_mesh::forward(shared, friends, message);
}

fn presence_of(user: UserId, visible: Visible) -> NodeDatagram {
    NodeDatagram::Presence {
        user,
        state: visible.state,
        last_seen_ms: visible.last_seen_ms,
    }
}

fn encode(message: &NodeDatagram) -> Vec<u8> {
    postcard::to_stdvec(message).unwrap_or_default()
}

/// Sends `message` to each connection of `to` here that announced itself.
pub fn send(shared: &Shared, to: &UserId, message: &NodeDatagram) {
    let listening = shared.presence.listening(to);
    if listening.is_empty() {
        return;
    }
    let bytes = encode(message);
    for conn in shared.live.sessions.connections_of(to, &listening) {
        if conn.send_datagram(bytes.clone().into()).is_ok() {
            shared.metrics.datagrams_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}
