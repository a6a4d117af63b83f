//! [`TokenBucket`]: a rate limit as a plain state machine — time comes in as a parameter,
//! so it is tested without a clock.

use std::time::Instant;

/// Allows `per_sec` events a second on average and bursts of up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_sec: f64::from(per_sec),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 5, t0);
        assert_eq!(
            (0..8).filter(|_| bucket.try_take(t0)).count(),
            5,
            "the burst"
        );
        let later = t0 + Duration::from_millis(300);
        assert_eq!(
            (0..8).filter(|_| bucket.try_take(later)).count(),
            3,
            "10/s for 0.3 s"
        );
        let much_later = t0 + Duration::from_secs(60);
        assert_eq!(
            (0..100).filter(|_| bucket.try_take(much_later)).count(),
            5,
            "capped"
        );
    }
}
