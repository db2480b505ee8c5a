//! The per-device request limit on the device API (`--rate-limit`, 50 requests a second by
//! default): one misbehaving or stolen token must not take the server from every other
//! camera on set. Counted per grant (one pairing of one device), so refreshing the token
//! does not reset it; a second's worth may come in one burst. Answered with 429 and
//! `Retry-After`, which the Rushes client and real devices honour.
//!
//! Kept in memory, per process (GCRA from `governor`): several servers behind one address
//! each allow the limit, which still bounds what one token costs each of them.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// Grants remembered before idle ones are forgotten (a burst's worth of time after their
/// last request they are back to a full allowance anyway).
const FORGET_ABOVE: usize = 10_000;

pub struct TokenLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl TokenLimiter {
    /// `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: u32) -> Option<TokenLimiter> {
        let rate = NonZeroU32::new(per_second)?;
        Some(TokenLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_second(rate)),
            clock: DefaultClock::default(),
        })
    }

    /// Counts a request of `grant_id`; `Err(wait)` when it is over the limit.
    pub fn check(&self, grant_id: &str) -> Result<(), Duration> {
        if self.limiter.len() > FORGET_ABOVE {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&grant_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// `Retry-After` is whole seconds: the wait rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_limit_passes_then_each_grant_waits_alone() {
        let limiter = TokenLimiter::new(5).unwrap();
        for _ in 0..5 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(
            limiter.check("b").is_ok(),
            "another grant has its own allowance"
        );
        assert!(TokenLimiter::new(0).is_none());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(20)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
    }
}
