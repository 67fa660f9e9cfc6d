//! The per-connection command budget: a token bucket.

use std::time::Instant;

pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Commands refused in a row; a client that keeps flooding is disconnected.
    strikes: u32,
}

/// The verdict on one command.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this command with an error frame.
    Refuse,
    /// The client ignored a whole burst of refusals: close the connection.
    Disconnect,
}

impl TokenBucket {
    pub fn new(per_sec: u32, burst: u32) -> Self {
        let burst = burst.max(1) as f64;
        TokenBucket {
            rate: per_sec as f64,
            burst,
            tokens: burst,
            last: Instant::now(),
            strikes: 0,
        }
    }

    pub fn check(&mut self) -> Verdict {
        self.check_at(Instant::now())
    }

    fn check_at(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            Verdict::Allow
        } else {
            self.strikes += 1;
            if self.strikes as f64 > self.burst {
                Verdict::Disconnect
            } else {
                Verdict::Refuse
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3);
        for _ in 0..3 {
            assert_eq!(bucket.check_at(start), Verdict::Allow);
        }
        assert_eq!(bucket.check_at(start), Verdict::Refuse);
        assert_eq!(
            bucket.check_at(start + Duration::from_millis(100)),
            Verdict::Allow
        );
    }

    #[test]
    fn a_flood_past_a_burst_of_refusals_disconnects() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1, 2);
        let verdicts: Vec<_> = (0..5).map(|_| bucket.check_at(start)).collect();
        assert_eq!(
            verdicts,
            vec![
                Verdict::Allow,
                Verdict::Allow,
                Verdict::Refuse,
                Verdict::Refuse,
                Verdict::Disconnect
            ]
        );
    }
}
