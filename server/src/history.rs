//! History pages (docs/PROTOCOL.md 3.5): a device pages back through its user's inbox, or
//! a group's log, newest first, instead of being pushed everything from `seq` 1.
//!
//! One page is bounded twice: by the entries it returns ([`MAX_HISTORY_PAGE`]) and by the
//! entries it looks at ([`SCAN_BUDGET`]), so a filter that matches little cannot make one
//! request read a whole inbox. Reads are file reads and run on the blocking pool. A user's
//! inbox lives on their home node: another node relays the stream there, byte for byte.

use crate::inbox::{Inbox, InboxError};
use crate::metrics::MeshKind;
use crate::net::{pump, varint, write_frame};
use crate::router::Home;
use crate::shared::Shared;
use quiver_proto::mesh::MeshOpen;
use quiver_proto::stream::ConversationStep;
use quiver_proto::MAX_HISTORY_PAGE;
use quiver_proto::{ConversationResponse, Entry, ErrorCode, GroupId, Seq, UserId};
use std::sync::Arc;

/// Most log entries one page looks at.
pub const SCAN_BUDGET: u64 = 5_000;

/// Entries read from the log at a time.
const CHUNK: u64 = 500;

/// Bytes copied at a time when relaying a page from the home node.
const RELAY_CHUNK: usize = 64 * 1024;

/// One page, newest first, and the `before` of the next one (`None`: nothing older).
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// The entries, newest first.
    pub entries: Vec<Entry>,
    /// The `before` of the next page; `None` when nothing older is left.
    pub next: Option<Seq>,
}

/// Which page is wanted.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    /// Only entries below this `seq` (from the newest when `None`).
    pub before: Option<Seq>,
    /// Entries wanted (capped at [`MAX_HISTORY_PAGE`], at least 1).
    pub limit: u32,
}

/// The entries of `owner`'s log that `keep` selects, within `range` (first and last
/// `seq` the asker may see, the last open when `None`) and below `want.before`, newest
/// first. Entries retention removed are not there, and the page ends at them. Blocking.
pub fn page(
    log: &Inbox,
    owner: &UserId,
    range: (Seq, Option<Seq>),
    want: Want,
    keep: impl Fn(&Entry) -> bool,
) -> Result<Page, InboxError> {
    let limit = want.limit.clamp(1, MAX_HISTORY_PAGE) as usize;
    let lowest = range.0 .0.max(log.floor(owner).0 + 1).max(1);
    let mut hi = log.head(owner).0;
    if let Some(last) = range.1 {
        hi = hi.min(last.0);
    }
    if let Some(before) = want.before {
        hi = hi.min(before.0.saturating_sub(1));
    }
    let mut entries = Vec::new();
    let mut scanned = 0;
    while hi >= lowest {
        if scanned >= SCAN_BUDGET {
            return Ok(Page {
                entries,
                next: Some(Seq(hi + 1)),
            });
        }
        let lo = hi.saturating_sub(CHUNK - 1).max(lowest);
        for entry in log
            .read(owner, Seq(lo), Seq(hi), CHUNK as usize)?
            .into_iter()
            .rev()
        {
            if !keep(&entry) {
                continue;
            }
            let seq = entry.seq;
            entries.push(entry);
            if entries.len() == limit {
                let next = (seq.0 > lowest).then_some(seq);
                return Ok(Page { entries, next });
            }
        }
        scanned += hi - lo + 1;
        hi = lo - 1;
    }
    Ok(Page {
        entries,
        next: None,
    })
}

/// Answers a client's history request (`History` or `GroupHistory`) on `send`.
pub async fn serve(
    shared: &Arc<Shared>,
    user: UserId,
    step: ConversationStep,
    send: quinn::SendStream,
) {
    match step {
        ConversationStep::History {
            peer,
            before,
            limit,
        } => inbox(shared, user, peer, Want { before, limit }, send, true).await,
        ConversationStep::GroupHistory {
            group: id,
            before,
            limit,
        } => group(shared, user, id, Want { before, limit }, send, true).await,
        // The session passes only history steps.
        _ => refuse(shared, send, ErrorCode::UnexpectedFrame).await,
    }
}

/// A page of `user`'s own inbox, about `peer` or every peer. On another node than the
/// user's home, the request is relayed there when `may_relay` (a client's stream), and
/// refused when not (a peer's: homes never move, so that is a race with a directory
/// change, worth a retry).
pub async fn inbox(
    shared: &Arc<Shared>,
    user: UserId,
    peer: Option<UserId>,
    want: Want,
    send: quinn::SendStream,
    may_relay: bool,
) {
    match shared.router.home(&user).await {
        Ok(Home::Here) => {
            let log = shared.router.inbox().clone();
            let read = tokio::task::spawn_blocking(move || {
                let about = |e: &Entry| peer.as_ref().is_none_or(|p| e.peer == *p);
                page(&log, &user, (Seq(1), None), want, about)
            })
            .await;
            answer(shared, send, read).await
        }
        Ok(Home::Peer(node)) if may_relay => {
            let open = MeshOpen::History {
                user,
                peer,
                before: want.before,
                limit: want.limit,
            };
            relay(shared, &node, open, send).await
        }
        Ok(Home::Peer(_)) => refuse(shared, send, ErrorCode::Unavailable).await,
        Err(code) => refuse(shared, send, code).await,
    }
}

/// A page of `group`'s log for `user`, a member (or one who was), within their range. On
/// another node than the group's home, relayed there when `may_relay` (a client's
/// stream), refused when not (a peer's).
pub async fn group(
    shared: &Arc<Shared>,
    user: UserId,
    group: GroupId,
    want: Want,
    send: quinn::SendStream,
    may_relay: bool,
) {
    match crate::group_mesh::served_at(shared, &group, may_relay).await {
        Ok(None) => {}
        Ok(Some(node)) => {
            let open = MeshOpen::GroupHistory {
                user,
                group,
                before: want.before,
                limit: want.limit,
            };
            return relay(shared, &node, open, send).await;
        }
        Err(code) => return refuse(shared, send, code).await,
    }
    let groups = shared.groups.clone();
    let Some(range) = groups.range(&group, &user) else {
        return refuse(shared, send, ErrorCode::NotMember).await;
    };
    let read = tokio::task::spawn_blocking(move || {
        let owner = crate::groups::store::owner(&group);
        page(groups.log(), &owner, range, want, |_| true)
    })
    .await;
    answer(shared, send, read).await
}

/// Writes a page read on the blocking pool, or the error it met.
async fn answer(
    shared: &Arc<Shared>,
    mut send: quinn::SendStream,
    read: Result<Result<Page, InboxError>, tokio::task::JoinError>,
) {
    let page = match read {
        Ok(Ok(page)) => page,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "history page failed");
            return refuse(shared, send, ErrorCode::Internal).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "history page task failed");
            return refuse(shared, send, ErrorCode::Internal).await;
        }
    };
    for entry in page.entries {
        let frame = ConversationResponse::HistoryEntry { entry };
        if write_frame(&mut send, &frame).await.is_err() {
            return; // the client went away
        }
    }
    let end = ConversationResponse::HistoryEnd { next: page.next };
    if write_frame(&mut send, &end).await.is_ok() {
        let _ = send.finish();
    }
}

/// Passes the request to the user's home node and its answer back.
async fn relay(shared: &Arc<Shared>, node: &str, open: MeshOpen, send: quinn::SendStream) {
    let Some(mesh) = shared.router.mesh() else {
        return refuse(shared, send, ErrorCode::Unavailable).await;
    };
    shared.metrics.mesh_request(MeshKind::History);
    match mesh.open(node, &open).await {
        Ok((mut up, down)) => {
            let _ = up.finish();
            pump(down, send, RELAY_CHUNK).await
        }
        Err(code) => refuse(shared, send, code).await,
    }
}

/// Closes the stream with one `Error` frame.
pub async fn refuse(shared: &Arc<Shared>, mut send: quinn::SendStream, code: ErrorCode) {
    tracing::debug!(%code, "history page refused");
    shared.metrics.error(code);
    if write_frame(&mut send, &ConversationResponse::Error { code })
        .await
        .is_ok()
    {
        let _ = send.finish();
    } else {
        let _ = send.reset(varint(code));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::{ClientMsgId, EntryKind};

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn chat(n: u128) -> EntryKind {
        EntryKind::Chat {
            id: ClientMsgId(n),
            sent_at_ms: 0,
            body: vec![],
            file: None,
        }
    }

    /// Every `seq` of `owner`'s log that pages of `limit` give, page after page.
    fn all_pages(
        log: &Inbox,
        owner: &UserId,
        range: (Seq, Option<Seq>),
        limit: u32,
        keep: impl Fn(&Entry) -> bool + Copy,
    ) -> (Vec<u64>, usize) {
        let (mut seqs, mut pages, mut before) = (Vec::new(), 0, None);
        loop {
            let page = page(log, owner, range, Want { before, limit }, keep).unwrap();
            assert!(page.entries.len() <= limit as usize);
            seqs.extend(page.entries.iter().map(|e| e.seq.0));
            pages += 1;
            match page.next {
                Some(next) => before = Some(next),
                None => return (seqs, pages),
            }
        }
    }

    #[tokio::test]
    async fn pages_go_back_newest_first_once_each_and_end_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path().join("db")).unwrap();
        let (log, _task) = crate::inbox::open(&db, dir.path()).unwrap();
        let (ann, bob, owner) = (user("ann"), user("bob"), user("owner"));
        let mut last = None;
        for n in 1..=12_000u128 {
            let from = if n % 100 == 0 { &ann } else { &bob };
            last = Some(log.append(&owner, from, chat(n)).unwrap());
        }
        last.unwrap().durable().await.unwrap();

        let (seqs, pages) = all_pages(&log, &owner, (Seq(1), None), 500, |_| true);
        assert_eq!(seqs, (1..=12_000).rev().collect::<Vec<_>>());
        assert_eq!(pages, 24, "the last full page ends at seq 1 with no next");

        // A filter that matches one entry in 100 looks at SCAN_BUDGET entries a page.
        let (seqs, pages) = all_pages(&log, &owner, (Seq(1), None), 500, |e| e.peer == ann);
        assert_eq!(seqs, (1..=120).rev().map(|n| n * 100).collect::<Vec<_>>());
        assert_eq!(pages, 3, "12,000 entries at 5,000 a page");

        // A member's range: from 101 to 250, nothing outside.
        let range = (Seq(101), Some(Seq(250)));
        let (seqs, _) = all_pages(&log, &owner, range, 7, |_| true);
        assert_eq!(seqs, (101..=250).rev().collect::<Vec<_>>());

        // Nobody's log, and a page below the start: empty, and no next.
        let empty = page(
            &log,
            &ann,
            (Seq(1), None),
            Want {
                before: None,
                limit: 5,
            },
            |_| true,
        );
        assert_eq!(
            empty.unwrap(),
            Page {
                entries: vec![],
                next: None
            }
        );
        let below = Want {
            before: Some(Seq(1)),
            limit: 5,
        };
        let below = page(&log, &owner, (Seq(1), None), below, |_| true).unwrap();
        assert_eq!(
            below,
            Page {
                entries: vec![],
                next: None
            }
        );
        // A limit above the cap is the cap.
        let huge = Want {
            before: None,
            limit: u32::MAX,
        };
        let huge = page(&log, &owner, (Seq(1), None), huge, |_| true).unwrap();
        assert_eq!(huge.entries.len(), MAX_HISTORY_PAGE as usize);
    }
}
