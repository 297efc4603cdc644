//! The per-connection message rate limit: a token bucket driven by the caller's clock, so tests
//! drive it with made-up times.

use std::time::Duration;

/// Allows `rate` messages per second sustained, and bursts of up to `rate` messages (one
/// second's worth) after a quiet spell.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens held, in millionths of a message.
    micro_tokens: u64,
    /// The most tokens held, in millionths.
    capacity: u64,
    /// Messages per second.
    rate: u64,
    /// The time the bucket was last filled up to.
    filled_at: Duration,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket at time `now` (any monotonic origin) for `rate` messages per second
    /// (at least 1).
    pub fn new(rate: u32, now: Duration) -> Self {
        let rate = u64::from(rate.max(1));
        Self {
            micro_tokens: rate * MICRO,
            capacity: rate * MICRO,
            rate,
            filled_at: now,
        }
    }

    /// Messages per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Takes one message's token at `now`; `false` when the bucket is empty (the message is
    /// over the rate). A clock that goes backwards adds nothing.
    pub fn take(&mut self, now: Duration) -> bool {
        let elapsed = now.saturating_sub(self.filled_at);
        // rate messages per second = rate micro-tokens per microsecond.
        let earned = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .saturating_mul(self.rate);
        self.micro_tokens = self.micro_tokens.saturating_add(earned).min(self.capacity);
        self.filled_at = self.filled_at.max(now);
        if self.micro_tokens >= MICRO {
            self.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let mut bucket = TokenBucket::new(10, ms(0));
        assert_eq!((0..10).filter(|_| bucket.take(ms(0))).count(), 10);
        assert!(!bucket.take(ms(0)));
        assert!(!bucket.take(ms(99)));
        assert!(bucket.take(ms(100)));
        assert!(!bucket.take(ms(150)));
        // One second of steady traffic at twice the rate: half passes.
        let passed = (0..20).filter(|i| bucket.take(ms(200 + i * 50))).count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn a_long_pause_refills_only_to_the_burst() {
        let mut bucket = TokenBucket::new(5, ms(0));
        for _ in 0..5 {
            assert!(bucket.take(ms(0)));
        }
        let passed = (0..100).filter(|_| bucket.take(ms(3_600_000))).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let mut bucket = TokenBucket::new(1, ms(1000));
        assert!(bucket.take(ms(1000)));
        assert!(!bucket.take(ms(0)));
        assert!(!bucket.take(ms(1999)));
        assert!(bucket.take(ms(2000)));
    }

    #[test]
    fn extreme_rates_and_times_do_not_overflow() {
        let mut bucket = TokenBucket::new(u32::MAX, Duration::ZERO);
        assert!(bucket.take(Duration::MAX));
        let mut bucket = TokenBucket::new(0, Duration::ZERO);
        assert_eq!(bucket.rate(), 1);
        assert!(bucket.take(Duration::ZERO));
        assert!(!bucket.take(Duration::ZERO));
    }
}
