//! Paged history (docs/PROTOCOL.md 3.5): a device asks the node for older entries of its
//! inbox or of a group's log, a page at a time and newest first, to fill a chat screen or
//! a new store rather than be pushed everything from the start.
//!
//! A page is read on its own stream and opened as pushes are (the same keys, the same
//! [`Event`]s), but not acknowledged: history does not move the device's cursor, and
//! pushes go on beside it. A client with a store keeps what it pages there (each message
//! once, whether it came by page or by push).

use crate::client::Client;
use crate::error::HistoryError;
use crate::event::Event;
use crate::frames::{read_frame, write_frame};
use crate::unbatch::Opened;
use quiver_proto::{ConversationRequest, ConversationResponse, GroupId, Seq, UserId};

/// Whose history to page through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HistoryOf {
    /// Your inbox: every friend's messages to you and receipts for yours.
    Inbox,
    /// Your inbox, only what is about one friend.
    Friend(UserId),
    /// A group's log, within your membership.
    Group(GroupId),
}

/// One page, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// The entries, opened: [`Event::Message`], [`Event::Receipt`],
    /// [`Event::GroupMessage`], [`Event::GroupChange`] or an undecryptable one. A batch
    /// of receipts is one event per message, so a page may hold more events than entries.
    pub events: Vec<Event>,
    /// Pass it as `before` for the next page; `None` when nothing older is left.
    pub next: Option<Seq>,
}

impl Client {
    /// One page of history: entries below `before` (from the newest when `None`), at most
    /// `limit` (the node caps pages at [`quiver_proto::MAX_HISTORY_PAGE`]). A page may
    /// hold fewer and still have a `next`: keep going until `next` is `None`.
    pub async fn history(
        &self,
        of: &HistoryOf,
        before: Option<Seq>,
        limit: u32,
    ) -> Result<HistoryPage, HistoryError> {
        let link = self.inner.link().ok_or(HistoryError::Offline)?;
        let (mut send, mut recv) = link
            .conn
            .open_bi()
            .await
            .map_err(|e| HistoryError::Stream(e.to_string()))?;
        let inbox = |peer: Option<&UserId>| ConversationRequest::History {
            peer: peer.cloned(),
            before,
            limit,
        };
        let request = match of {
            HistoryOf::Inbox => inbox(None),
            HistoryOf::Friend(peer) => inbox(Some(peer)),
            HistoryOf::Group(group) => ConversationRequest::GroupHistory {
                group: group.clone(),
                before,
                limit,
            },
        };
        write_frame(&mut send, &request)
            .await
            .map_err(HistoryError::Stream)?;
        let _ = send.finish();
        let mut events = Vec::new();
        let mut entries = 0;
        loop {
            let frame = read_frame::<ConversationResponse>(&mut recv)
                .await
                .map_err(HistoryError::Stream)?;
            let entry = match frame {
                Some(ConversationResponse::HistoryEntry { entry }) => entry,
                Some(ConversationResponse::HistoryEnd { next }) => {
                    return Ok(HistoryPage { events, next })
                }
                Some(ConversationResponse::Error { code }) => {
                    return Err(HistoryError::Refused(code))
                }
                Some(other) => {
                    return Err(HistoryError::Stream(format!("unexpected {other:?}")));
                }
                None => return Err(HistoryError::Stream("ended before the page did".into())),
            };
            if entries >= quiver_proto::MAX_HISTORY_PAGE {
                return Err(HistoryError::Stream("a page longer than the cap".into()));
            }
            entries += 1;
            let opened = match of {
                HistoryOf::Group(group) => {
                    Opened::one(self.inner.open_group_entry(group.clone(), entry).await)
                }
                _ => self.inner.open_entry(entry).await,
            };
            // Newest first, as the page (a batch's receipts too).
            for event in opened.events().rev() {
                if let Some(store) = &self.inner.options.store {
                    crate::persist::taken(store, &event, None);
                }
                events.push(event);
            }
        }
    }
}
