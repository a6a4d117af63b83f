//! [`FriendCache`]: the friendships the embedded directory has read, kept in memory.
//!
//! Every chat asks whether its two users are friends. With the answer read from sled
//! each time, that read was 4 % of the node's time under chat load (docs/PERFORMANCE.md,
//! "Friendships from memory"). Only friendships are kept, and an unfriending (or a block)
//! forgets its pair. A read from sled that crossed an unfriending is not kept: each
//! forgetting moves a generation on, and a friendship read under an older generation is
//! answered but not remembered. The cache is bounded: when full it starts over.

use super::FriendKey;
use quiver_proto::UserId;
use std::collections::HashMap;
use std::sync::Mutex;

/// Friendships kept at most; past it the cache is emptied and fills again from sled.
const MAX_PAIRS: usize = 65_536;

/// The two friends, the lesser name first: one entry answers both orders.
fn ordered<'a>(a: &'a UserId, b: &'a UserId) -> (&'a UserId, &'a UserId) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

#[derive(Default)]
struct Known {
    /// Moves on at every forgetting.
    generation: u64,
    /// By the lesser name, then the other: looked up by reference, with no allocation.
    pairs: HashMap<UserId, HashMap<UserId, FriendKey>>,
    /// Pairs in `pairs`.
    len: usize,
}

/// Friendships read from the directory's storage, until one ends.
#[derive(Default)]
pub struct FriendCache {
    known: Mutex<Known>,
}

/// What the cache says of a pair: the key, or the generation to remember a read under.
pub enum Lookup {
    /// Known friends, with their key.
    Friends(FriendKey),
    /// Not known here: ask storage, and pass this generation to `remember`.
    Unknown(u64),
}

impl FriendCache {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key of `a` and `b` if their friendship is known; else the generation to pass
    /// to [`FriendCache::remember`] with what storage says.
    pub fn lookup(&self, a: &UserId, b: &UserId) -> Lookup {
        let known = self.known();
        let (first, second) = ordered(a, b);
        match known.pairs.get(first).and_then(|of| of.get(second)) {
            Some(key) => Lookup::Friends(*key),
            None => Lookup::Unknown(known.generation),
        }
    }

    /// Keeps the friendship of `a` and `b`, read from storage under `generation`,
    /// unless a friendship ended since.
    pub fn remember(&self, a: &UserId, b: &UserId, key: FriendKey, generation: u64) {
        let mut known = self.known();
        let known = &mut *known;
        if known.generation != generation {
            return;
        }
        if known.len >= MAX_PAIRS {
            known.pairs = HashMap::new();
            known.len = 0;
        }
        let (first, second) = ordered(a, b);
        let of = known.pairs.entry(first.clone()).or_default();
        if of.insert(second.clone(), key).is_none() {
            known.len += 1;
        }
    }

    /// The friendship of `a` and `b` ended (or never was): forget it, and every read
    /// that may have seen it.
    pub fn forget(&self, a: &UserId, b: &UserId) {
        let mut known = self.known();
        let known = &mut *known;
        known.generation += 1;
        let (first, second) = ordered(a, b);
        if let Some(of) = known.pairs.get_mut(first) {
            if of.remove(second).is_some() {
                known.len -= 1;
            }
            if of.is_empty() {
                known.pairs.remove(first);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    #[test]
    fn a_friendship_is_kept_for_both_orders_until_forgotten() {
        let cache = FriendCache::default();
        let (alice, bob) = (user("alice"), user("bob"));
        let Lookup::Unknown(generation) = cache.lookup(&alice, &bob) else {
            panic!("nothing is known at first");
        };
        cache.remember(&alice, &bob, [7; 32], generation);
        assert!(matches!(
            cache.lookup(&bob, &alice),
            Lookup::Friends([7, ..])
        ));
        cache.forget(&bob, &alice);
        assert!(matches!(cache.lookup(&alice, &bob), Lookup::Unknown(_)));
    }

    #[test]
    fn a_read_that_crossed_an_unfriending_is_not_kept() {
        let cache = FriendCache::default();
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let Lookup::Unknown(before) = cache.lookup(&alice, &bob) else {
            panic!("nothing is known at first");
        };
        // Storage said "friends", then the friendship ended before the answer was kept.
        cache.forget(&alice, &bob);
        cache.remember(&alice, &bob, [7; 32], before);
        assert!(matches!(cache.lookup(&alice, &bob), Lookup::Unknown(_)));
        // Any unfriending counts: which pair it was is not tracked.
        let Lookup::Unknown(before) = cache.lookup(&alice, &carol) else {
            panic!("unknown");
        };
        cache.forget(&bob, &carol);
        cache.remember(&alice, &carol, [8; 32], before);
        assert!(matches!(cache.lookup(&alice, &carol), Lookup::Unknown(_)));
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = FriendCache::default();
        let alice = user("alice");
        for n in 0..MAX_PAIRS + 10 {
            let other = user(&format!("user{n}"));
            cache.remember(&alice, &other, [1; 32], 0);
        }
        let known = cache.known();
        assert!(known.len <= MAX_PAIRS);
        assert_eq!(
            known.pairs.values().map(HashMap::len).sum::<usize>(),
            known.len
        );
    }
}
