//! Who shows what, in memory only — presence is never written anywhere: for each user,
//! what each connection that announced itself shows, and when the user was last seen.
//! A user's visible presence is `Offline` if any connection hides, else `Online` if any
//! is online, else `Away` if any is away, else `Offline`. Connections that announced
//! are the ones that receive friends' presence and typing (they asked for it).

use quiver_proto::datagram::PresenceState;
use quiver_proto::UserId;
use std::collections::HashMap;
use std::sync::Mutex;

/// What a user's friends see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Visible {
    /// Online, away or offline.
    pub state: PresenceState,
    /// When the user was last seen (connected and not hiding), ms since the Unix epoch.
    pub last_seen_ms: u64,
}

#[derive(Default)]
struct Shown {
    /// By session id: what that connection shows.
    sessions: HashMap<u64, PresenceState>,
    last_seen_ms: u64,
}

impl Shown {
    fn state(&self) -> PresenceState {
        let shows = |s| self.sessions.values().any(|v| *v == s);
        if shows(PresenceState::Offline) {
            PresenceState::Offline
        } else if shows(PresenceState::Online) {
            PresenceState::Online
        } else if shows(PresenceState::Away) {
            PresenceState::Away
        } else {
            PresenceState::Offline
        }
    }

    fn visible(&self) -> Visible {
        Visible {
            state: self.state(),
            last_seen_ms: self.last_seen_ms,
        }
    }
}

/// Every user's presence on this node.
#[derive(Default)]
pub struct Presence {
    users: Mutex<HashMap<UserId, Shown>>,
}

impl Presence {
    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Shown>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Session `id` of `user` shows `state` from `now_ms`; returns the user's visible
    /// presence if it changed.
    pub fn set(
        &self,
        user: &UserId,
        id: u64,
        state: PresenceState,
        now_ms: u64,
    ) -> Option<Visible> {
        let mut users = self.users();
        let shown = users.entry(user.clone()).or_default();
        let before = shown.state();
        if before != PresenceState::Offline {
            shown.last_seen_ms = now_ms;
        }
        shown.sessions.insert(id, state);
        let after = shown.state();
        if after != PresenceState::Offline {
            shown.last_seen_ms = now_ms;
        }
        (after != before).then(|| shown.visible())
    }

    /// Session `id` of `user` ended at `now_ms`; returns the visible presence if it changed.
    pub fn ended(&self, user: &UserId, id: u64, now_ms: u64) -> Option<Visible> {
        let mut users = self.users();
        let shown = users.get_mut(user)?;
        let before = shown.state();
        shown.sessions.remove(&id)?;
        if before != PresenceState::Offline {
            shown.last_seen_ms = now_ms;
        }
        let after = shown.state();
        (after != before).then(|| shown.visible())
    }

    /// What `user`'s friends see now.
    pub fn visible(&self, user: &UserId) -> Visible {
        self.users().get(user).map_or(
            Visible {
                state: PresenceState::Offline,
                last_seen_ms: 0,
            },
            Shown::visible,
        )
    }

    /// The sessions of `user` that announced themselves (and so receive presence and
    /// typing).
    pub fn listening(&self, user: &UserId) -> Vec<u64> {
        self.users()
            .get(user)
            .map(|s| s.sessions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Whether session `id` of `user` announced itself.
    pub fn announced(&self, user: &UserId, id: u64) -> bool {
        self.users()
            .get(user)
            .is_some_and(|s| s.sessions.contains_key(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceState::*;

    #[test]
    fn the_visible_state_follows_every_connection_and_hiding_wins() {
        let p = Presence::default();
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(p.set(&bob, 1, Online, 10).map(|v| v.state), Some(Online));
        assert_eq!(p.set(&bob, 2, Away, 20), None, "online still wins");
        assert_eq!(p.ended(&bob, 1, 30).map(|v| v.state), Some(Away));
        let gone = p.ended(&bob, 2, 40).unwrap();
        assert_eq!((gone.state, gone.last_seen_ms), (Offline, 40));
        assert_eq!(p.visible(&bob).last_seen_ms, 40);
        assert_eq!(p.set(&bob, 3, Online, 50).map(|v| v.state), Some(Online));
        let hidden = p.set(&bob, 4, Offline, 60).unwrap();
        assert_eq!(hidden.state, Offline, "a hiding connection hides the user");
        assert_eq!(p.ended(&bob, 3, 70), None, "still hidden");
        assert_eq!(
            p.visible(&bob).last_seen_ms,
            60,
            "hidden: last seen does not move"
        );
        assert_eq!(p.listening(&bob), [4]);
        assert!(p.announced(&bob, 4) && !p.announced(&bob, 3));
    }
}
