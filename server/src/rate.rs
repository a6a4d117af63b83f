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
    pub fn new(per_sec: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_sec,
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

/// One bucket per key (an account, an address), for limits shared by every connection.
///
/// Bounded: past `max_keys` keys the table is cleared, which forgives everyone at once
/// rather than letting an attacker who rotates keys grow the node's memory.
pub struct KeyedLimiter<K> {
    per_sec: f64,
    burst: u32,
    max_keys: usize,
    buckets: std::sync::Mutex<std::collections::HashMap<K, TokenBucket>>,
}

impl<K: std::hash::Hash + Eq> KeyedLimiter<K> {
    /// `per_minute` events per key per minute, in bursts of up to `per_minute`.
    pub fn per_minute(per_minute: u32, max_keys: usize) -> Self {
        Self {
            per_sec: f64::from(per_minute) / 60.0,
            burst: per_minute,
            max_keys,
            buckets: Default::default(),
        }
    }

    /// `per_hour` events per key per hour, in bursts of up to `per_hour`.
    pub fn per_hour(per_hour: u32, max_keys: usize) -> Self {
        Self {
            per_sec: f64::from(per_hour) / 3600.0,
            ..Self::per_minute(per_hour, max_keys)
        }
    }

    /// Takes one token from `key`'s bucket if there is one.
    pub fn try_take(&self, key: K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= self.max_keys && !buckets.contains_key(&key) {
            buckets.clear();
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(per_sec, burst, now))
            .try_take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5, t0);
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

    #[test]
    fn keyed_limits_are_per_key_and_bounded() {
        let t0 = Instant::now();
        let limiter = KeyedLimiter::per_minute(2, 3);
        assert!(limiter.try_take("a", t0) && limiter.try_take("a", t0));
        assert!(!limiter.try_take("a", t0), "a used its two");
        assert!(limiter.try_take("b", t0), "b has its own bucket");
        assert!(limiter.try_take("c", t0));
        assert!(limiter.try_take("d", t0), "a fourth key clears the table");
        assert!(limiter.try_take("a", t0), "a was forgiven with the rest");
        assert!(
            limiter.try_take("a", t0 + Duration::from_secs(30)),
            "refills at 2/min"
        );
    }
}
