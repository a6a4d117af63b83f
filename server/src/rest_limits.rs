//! [`RestLimits`]: how often one client may knock on the REST API, decided before any
//! argon2 work or fsync is spent on it.
//!
//! Logins are limited per (account, address), not per account: a limit per account alone
//! let anyone who polled slowly with a wrong password keep the owner's *right* password
//! at 429. A guesser is stopped at its own address; the owner, from theirs, is not. A
//! guesser with many addresses meets the per-account backstop, which slows every further
//! attempt on that account by [`BACKSTOP_DELAY`] instead of refusing it: the owner waits
//! a second, never gets locked out, and guessing stays slow. Registrations and logins
//! are also limited per address, and authenticated requests per user (each friendship
//! change costs an fsync).

use crate::config::Limits;
use crate::rate::KeyedLimiter;
use quiver_proto::UserId;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Accounts or addresses tracked by a limiter before it forgets them all.
const LIMITER_KEYS: usize = 100_000;

/// What an attempt over the per-account backstop waits before it is tried.
pub const BACKSTOP_DELAY: Duration = Duration::from_secs(1);

/// What to do with a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Check the password now.
    Go,
    /// Check it after waiting this long (many addresses are trying this account).
    After(Duration),
    /// Refuse with 429: this address tried too often.
    Refuse,
}

/// The REST API's rate limits, shared by every connection.
pub struct RestLimits {
    /// Logins and registrations, by client address.
    by_address: KeyedLimiter<IpAddr>,
    /// Login attempts, by account and client address.
    by_account_address: KeyedLimiter<(UserId, IpAddr)>,
    /// Login attempts, by account over all addresses: past it, attempts are slowed.
    by_account: KeyedLimiter<UserId>,
    /// Authenticated requests, by user.
    by_user: KeyedLimiter<UserId>,
}

impl RestLimits {
    /// The limits `limits` names.
    pub fn new(limits: &Limits) -> Self {
        Self {
            by_address: KeyedLimiter::per_minute(
                limits.logins_per_minute_per_address,
                LIMITER_KEYS,
            ),
            by_account_address: KeyedLimiter::per_minute(
                limits.logins_per_minute_per_account,
                LIMITER_KEYS,
            ),
            by_account: KeyedLimiter::per_minute(
                limits.logins_per_minute_per_account_backstop,
                LIMITER_KEYS,
            ),
            by_user: KeyedLimiter::per_minute(limits.requests_per_minute_per_user, LIMITER_KEYS),
        }
    }

    /// A registration from `address`: may it go on?
    pub fn admit_registration(&self, address: IpAddr, now: Instant) -> bool {
        self.by_address.try_take(address, now)
    }

    /// A login to `user` from `address`.
    pub fn admit_login(&self, user: &UserId, address: IpAddr, now: Instant) -> Admit {
        if !self.by_address.try_take(address, now)
            || !self
                .by_account_address
                .try_take((user.clone(), address), now)
        {
            return Admit::Refuse;
        }
        if self.by_account.try_take(user.clone(), now) {
            Admit::Go
        } else {
            Admit::After(BACKSTOP_DELAY)
        }
    }

    /// An authenticated request by `user`: may it go on?
    pub fn admit_request(&self, user: &UserId, now: Instant) -> bool {
        self.by_user.try_take(user.clone(), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guesser_is_refused_at_its_address_and_the_owner_is_not() {
        let limits = Limits {
            logins_per_minute_per_account: 3,
            logins_per_minute_per_account_backstop: 5,
            ..Limits::default()
        };
        let rest = RestLimits::new(&limits);
        let victim = UserId::parse("victim").unwrap();
        let (guesser, owner) = ("10.0.0.9".parse().unwrap(), "10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        let guesses: Vec<Admit> = (0..5)
            .map(|_| rest.admit_login(&victim, guesser, t0))
            .collect();
        assert_eq!(guesses[..3], [Admit::Go, Admit::Go, Admit::Go]);
        assert_eq!(guesses[3..], [Admit::Refuse, Admit::Refuse]);
        assert_eq!(rest.admit_login(&victim, owner, t0), Admit::Go);
        assert_eq!(rest.admit_login(&victim, owner, t0), Admit::Go);
        // Five attempts over all addresses used the backstop: the owner is slowed, not
        // refused.
        assert_eq!(
            rest.admit_login(&victim, owner, t0),
            Admit::After(BACKSTOP_DELAY)
        );
    }
}
