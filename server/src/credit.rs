//! How many bidirectional streams a peer may open at once (a client, or a mesh node on
//! its link), and the accept loop that offers more as they are used.
//!
//! quinn sets aside table space for every stream the peer may open, the moment it may
//! open it: 5.4 KB of every client connection at 64 streams, idle or not, and 5.5 MB of
//! every mesh link at 100,000. So a connection starts with a small offer (a client's
//! [`FIRST_CLIENT_OFFER`]: its control stream and a few conversations), and the offer
//! doubles, up to its ceiling, whenever half of it is in use. It grows before the peer
//! runs out, so a peer that opens streams one by one never waits for one.

use std::future::Future;
use tokio::task::JoinSet;

/// Streams offered to a new client connection (including its control stream).
pub const FIRST_CLIENT_OFFER: u32 = 8;

/// One connection's stream offer.
#[derive(Debug)]
pub struct StreamCredit {
    offered: u32,
    max: u32,
}

impl StreamCredit {
    /// An offer of `first` streams, which may grow up to `max`.
    pub fn new(first: u32, max: u32) -> Self {
        Self {
            offered: first.min(max),
            max,
        }
    }

    /// A client connection's offer, up to `max_client_streams`.
    pub fn client(max_client_streams: u32) -> Self {
        Self::new(FIRST_CLIENT_OFFER, max_client_streams)
    }

    /// Streams offered now.
    pub fn offered(&self) -> u32 {
        self.offered
    }

    /// With `open` streams in use, the new (larger) offer to make, if one is due.
    pub fn grow(&mut self, open: u32) -> Option<u32> {
        if self.offered >= self.max || open.saturating_mul(2) < self.offered {
            return None;
        }
        self.offered = self.offered.saturating_mul(2).min(self.max);
        Some(self.offered)
    }

    /// Accepts `conn`'s bidirectional streams until the connection ends (returning why),
    /// each served by the task `serve` makes for it in `streams`, and grows the offer as
    /// they are used. `held` streams are open besides (a session's control stream).
    pub async fn accept<F>(
        mut self,
        conn: &quinn::Connection,
        held: u32,
        streams: &mut JoinSet<()>,
        mut serve: impl FnMut(quinn::SendStream, quinn::RecvStream) -> F,
    ) -> quinn::ConnectionError
    where
        F: Future<Output = ()> + Send + 'static,
    {
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(stream) => stream,
                Err(e) => return e,
            };
            while streams.try_join_next().is_some() {}
            let served = u32::try_from(streams.len()).unwrap_or(u32::MAX);
            // Open now: those held, those served, and this one.
            if let Some(offer) = self.grow(served.saturating_add(held).saturating_add(1)) {
                conn.set_max_concurrent_bi_streams(offer.into());
            }
            streams.spawn(serve(send, recv));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_doubles_when_half_is_used_up_to_the_ceiling() {
        let mut credit = StreamCredit::client(64);
        assert_eq!(credit.offered(), 8);
        assert_eq!(credit.grow(3), None, "five free streams are enough");
        assert_eq!(credit.grow(4), Some(16));
        assert_eq!(credit.grow(4), None);
        assert_eq!(credit.grow(8), Some(32));
        assert_eq!(credit.grow(16), Some(64));
        assert_eq!(credit.grow(64), None, "never past the ceiling");
        assert_eq!(credit.offered(), 64);
    }

    #[test]
    fn a_low_ceiling_is_the_first_offer() {
        let mut credit = StreamCredit::client(4);
        assert_eq!(credit.offered(), 4);
        assert_eq!(credit.grow(4), None);
        let mut credit = StreamCredit::new(1024, 1500);
        assert_eq!(credit.grow(512), Some(1500));
        assert_eq!(credit.grow(1500), None);
    }
}
