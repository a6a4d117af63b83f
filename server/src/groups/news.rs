//! [`GroupNews`]: the groups too large to notify member by member at every chat
//! (`[push] group_max_members`) that had a chat since they were last swept, with their
//! newest chat. A chat notes its group here in O(1), whatever the group's size; the
//! sweeper ([`crate::group_push`]) takes the news at most once per coalescing window and
//! notifies the members then. One entry per group homed here, at most.

use quiver_proto::{GroupId, Seq, UserId};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::Notify;

/// A group's newest chat since the last sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct News {
    /// Who sent it: the one member not told.
    pub from: UserId,
    /// Its place in the group's log.
    pub seq: Seq,
}

/// Groups with chats not yet swept.
#[derive(Default)]
pub struct GroupNews {
    news: Mutex<HashMap<GroupId, News>>,
    arrived: Notify,
}

impl GroupNews {
    /// `from`'s chat is at `seq` in `group`: the newest wins.
    pub fn note(&self, group: &GroupId, from: &UserId, seq: Seq) {
        let mut news = self.news.lock().unwrap_or_else(|p| p.into_inner());
        match news.get_mut(group) {
            Some(known) if known.seq >= seq => {}
            Some(known) => {
                known.from = from.clone();
                known.seq = seq;
            }
            None => {
                news.insert(
                    group.clone(),
                    News {
                        from: from.clone(),
                        seq,
                    },
                );
            }
        }
        drop(news);
        self.arrived.notify_one();
    }

    /// Waits until there is news, then takes all of it.
    pub async fn take(&self) -> HashMap<GroupId, News> {
        loop {
            let news = std::mem::take(&mut *self.news.lock().unwrap_or_else(|p| p.into_inner()));
            if !news.is_empty() {
                return news;
            }
            self.arrived.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_newest_chat_of_each_group_is_taken_once() {
        let news = GroupNews::default();
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        let (g1, g2) = (GroupId::from_bits(1), GroupId::from_bits(2));
        news.note(&g1, &alice, Seq(3));
        news.note(&g1, &bob, Seq(5));
        news.note(&g1, &alice, Seq(4)); // an older chat answered late changes nothing
        news.note(&g2, &alice, Seq(1));
        let taken = news.take().await;
        assert_eq!(taken.len(), 2);
        assert_eq!(
            taken[&g1],
            News {
                from: bob,
                seq: Seq(5)
            }
        );
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), news.take());
        assert!(again.await.is_err(), "nothing new: it waits");
    }
}
