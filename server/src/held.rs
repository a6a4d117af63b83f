//! [`Held`]: the chat bytes one user's inbox holds, in all and from each sender, so that
//! neither a flood from one friend nor many friends together can make one inbox grow
//! without bound for the whole retention period (issue 16: one pair stored 98 MB in
//! 4.6 s, kept 30 days). Each sender has a share of its own, so one friend who fills
//! theirs does not keep the others out.
//!
//! Only chat bodies count: receipts are small and bounded by the chats they answer, and
//! refusing one would break delivery. Bytes are charged when a chat is appended (or read
//! back at start) and given back when retention removes it.

use quiver_proto::{EntryKind, UserId};
use std::collections::HashMap;

/// The bounds on one inbox, from `[inbox]` in the configuration.
#[derive(Debug, Clone, Copy)]
pub struct HeldLimits {
    /// All chat bytes in one inbox.
    pub per_user: u64,
    /// One sender's chat bytes in one inbox.
    pub per_sender: u64,
}

/// A chat over one of the bounds.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// The chat bytes one inbox holds.
#[derive(Debug, Default)]
pub struct Held {
    total: u64,
    by_sender: HashMap<UserId, u64>,
}

/// What an entry counts against the bounds.
pub fn weight(kind: &EntryKind) -> u64 {
    match kind {
        EntryKind::Chat { body, .. }
        | EntryKind::GroupChat { body, .. }
        | EntryKind::GroupFile { body, .. } => body.len() as u64,
        EntryKind::Receipt { .. } | EntryKind::Receipts { .. } | EntryKind::Member(_) => 0,
    }
}

impl Held {
    /// Whether `bytes` more from `sender` stay within `limits`.
    pub fn admits(&self, sender: &UserId, bytes: u64, limits: HeldLimits) -> Result<(), Full> {
        let from_sender = self.by_sender.get(sender).copied().unwrap_or(0);
        if bytes == 0
            || (self.total.saturating_add(bytes) <= limits.per_user
                && from_sender.saturating_add(bytes) <= limits.per_sender)
        {
            Ok(())
        } else {
            Err(Full)
        }
    }

    /// Counts `bytes` from `sender`.
    pub fn add(&mut self, sender: &UserId, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.total += bytes;
        *self.by_sender.entry(sender.clone()).or_default() += bytes;
    }

    /// Gives back `bytes` from `sender` (retention removed them).
    pub fn release(&mut self, sender: &UserId, bytes: u64) {
        self.total = self.total.saturating_sub(bytes);
        if let Some(held) = self.by_sender.get_mut(sender) {
            *held = held.saturating_sub(bytes);
            if *held == 0 {
                self.by_sender.remove(sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sender_fills_only_its_share() {
        let limits = HeldLimits {
            per_user: 100,
            per_sender: 40,
        };
        let (mallory, alice, carol) = (
            UserId::parse("mallory").unwrap(),
            UserId::parse("alice").unwrap(),
            UserId::parse("carol").unwrap(),
        );
        let mut held = Held::default();
        held.add(&mallory, 40);
        assert_eq!(held.admits(&mallory, 1, limits), Err(Full));
        assert_eq!(held.admits(&mallory, 0, limits), Ok(()), "receipts pass");
        assert_eq!(held.admits(&alice, 40, limits), Ok(()));
        held.add(&alice, 40);
        assert_eq!(
            held.admits(&carol, 21, limits),
            Err(Full),
            "the inbox is full"
        );
        held.release(&mallory, 40);
        assert_eq!(held.admits(&mallory, 40, limits), Ok(()));
        assert!(!held.by_sender.contains_key(&mallory), "forgotten at zero");
    }
}
