//! EC2's per-action token buckets (`aws-and-peers.md` §3.1): each request takes a token; an empty
//! bucket answers `RequestLimitExceeded`; tokens refill at a fixed rate up to the capacity.

use ipam::Time;

/// One token bucket in virtual time.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    refill_per_sec: f64,
    tokens: f64,
    last: Time,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: f64, refill_per_sec: f64) -> TokenBucket {
        TokenBucket { capacity, refill_per_sec, tokens: capacity, last: Time::ZERO }
    }

    fn refill(&mut self, now: Time) {
        if now > self.last {
            let secs = now.since(self.last).as_secs_f64();
            self.tokens = (self.tokens + secs * self.refill_per_sec).min(self.capacity);
            self.last = now;
        }
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub fn take(&mut self, now: Time) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Tokens available at `now`.
    pub fn available(&mut self, now: Time) -> f64 {
        self.refill(now);
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let mut b = TokenBucket::new(100.0, 5.0);
        let t0 = Time::from_secs(10);
        assert!((0..100).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        assert!(!b.take(Time::from_millis(10_150)), "0.75 tokens after 150 ms");
        assert!(b.take(Time::from_millis(10_200)), "1 token after 200 ms at 5/s");
        assert!(b.available(Time::from_secs(1000)) <= 100.0);
    }
}
