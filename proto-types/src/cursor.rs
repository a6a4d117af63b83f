//! [`CursorTracker`]: the highest contiguous acknowledged `seq`, plus the acknowledged
//! `seq`s above it that arrived out of order.
//!
//! Entries of different conversations travel on different streams, so acks arrive out of
//! order across conversations; the cursor only moves over an unbroken run. The set above
//! the cursor is bounded by the node's push window.

use crate::Seq;
use std::collections::BTreeSet;

/// Tracks which `seq`s have been acknowledged.
#[derive(Clone, Debug, Default)]
pub struct CursorTracker {
    cursor: Seq,
    above: BTreeSet<u64>,
}

impl CursorTracker {
    /// Starts with everything up to and including `cursor` acknowledged.
    pub fn new(cursor: Seq) -> Self {
        Self {
            cursor,
            above: BTreeSet::new(),
        }
    }

    /// The highest `seq` such that it and every `seq` below it are acknowledged.
    pub fn cursor(&self) -> Seq {
        self.cursor
    }

    /// How many acknowledged `seq`s wait above a gap.
    pub fn pending_above(&self) -> usize {
        self.above.len()
    }

    /// Whether `seq` was already acknowledged.
    pub fn contains(&self, seq: Seq) -> bool {
        seq <= self.cursor || self.above.contains(&seq.0)
    }

    /// Records `seq`; returns `false` if it was already recorded (a redelivery).
    pub fn mark(&mut self, seq: Seq) -> bool {
        if seq.0 == 0 || self.contains(seq) {
            return false;
        }
        self.above.insert(seq.0);
        while self.above.remove(&(self.cursor.0 + 1)) {
            self.cursor = self.cursor.next();
        }
        true
    }

    /// Moves the cursor up to at least `seq` (the other side knows more than we do).
    pub fn advance_to(&mut self, seq: Seq) {
        if seq > self.cursor {
            self.cursor = seq;
            self.above = self.above.split_off(&(seq.0 + 1));
        }
        while self.above.remove(&(self.cursor.0 + 1)) {
            self.cursor = self.cursor.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_moves_only_over_contiguous_runs() {
        let mut t = CursorTracker::new(Seq(0));
        assert!(t.mark(Seq(2)));
        assert_eq!(t.cursor(), Seq(0));
        assert!(
            !t.mark(Seq(2)),
            "second ack of the same seq is a redelivery"
        );
        assert!(t.mark(Seq(1)));
        assert_eq!(t.cursor(), Seq(2));
        assert!(t.mark(Seq(4)));
        assert!(t.contains(Seq(4)) && !t.contains(Seq(3)));
        t.advance_to(Seq(3));
        assert_eq!(t.cursor(), Seq(4));
        assert_eq!(t.pending_above(), 0);
        assert!(!t.mark(Seq(0)));
    }
}
