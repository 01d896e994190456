//! Every doubling pause in the client: between reconnect attempts (with
//! jitter), between TCP connects while handshaking, between a rekey's
//! initiations (without); and the small random source behind the jitter.
//!
//! The pause before attempt *n* is `initial · 2ⁿ`, capped at `max`, then
//! scaled by a random factor in `[1 - jitter, 1 + jitter]`, so many clients
//! that lost the same server do not come back in lockstep. With the defaults
//! (200 ms doubling to 15 s, ±20 %) the pauses run 0.2, 0.4, 0.8, … 12.8, 15,
//! 15, … seconds, each give or take a fifth.
//!
//! The randomness only spreads timers out, so it need not be cryptographic:
//! an xorshift generator the caller seeds (from the system's random source in
//! the supervisor, by hand in tests); this module reads no entropy or clock.

use std::time::Duration;

/// The shape of the backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The first pause.
    pub initial: Duration,
    /// The largest pause before jitter.
    pub max: Duration,
    /// How far each pause may stray, as a fraction of it (0.2 = ±20 %); at most 1.
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(15),
            jitter: 0.2,
        }
    }
}

/// Successive pauses for one run of failures; start a new one after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// The next pause before jitter.
    next: Duration,
    rng: Rng,
}

impl Backoff {
    /// Pauses from `initial` doubling up to `max`, without jitter (so without
    /// randomness): for timers of one client that nothing else is in step with.
    pub fn doubling(initial: Duration, max: Duration) -> Self {
        let policy = BackoffPolicy {
            initial,
            max,
            jitter: 0.0,
        };
        Self::with_rng(policy, Rng::seeded(1))
    }

    /// Backoff with jitter from `rng`.
    pub fn with_rng(policy: BackoffPolicy, rng: Rng) -> Self {
        let policy = BackoffPolicy {
            jitter: policy.jitter.clamp(0.0, 1.0),
            ..policy
        };
        Backoff {
            next: policy.initial.min(policy.max),
            policy,
            rng,
        }
    }

    /// The pause before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = base.saturating_mul(2).min(self.policy.max);
        self.rng.jitter(base, self.policy.jitter)
    }

    /// Starts over from the first pause.
    pub fn reset(&mut self) {
        self.next = self.policy.initial.min(self.policy.max);
    }
}

/// A small non-cryptographic random source (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded by hand; any seed works (zero is mapped to a fixed non-zero one).
    pub fn seeded(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // The top 53 bits: exactly representable.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `d` scaled by a factor uniform in `[1 - fraction, 1 + fraction]`.
    pub fn jitter(&mut self, d: Duration, fraction: f64) -> Duration {
        let factor = 1.0 + fraction * (2.0 * self.unit() - 1.0);
        d.mul_f64(factor.max(0.0))
    }

    /// Uniform in `[0, d]`.
    pub fn up_to(&mut self, d: Duration) -> Duration {
        d.mul_f64(self.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_up_to_the_cap_without_jitter() {
        let policy = BackoffPolicy {
            jitter: 0.0,
            ..BackoffPolicy::default()
        };
        let mut b = Backoff::with_rng(policy, Rng::seeded(1));
        let got: Vec<u64> = (0..10).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            got,
            [200, 400, 800, 1600, 3200, 6400, 12800, 15000, 15000, 15000]
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(200));
    }

    #[test]
    fn doubling_has_no_jitter() {
        let mut b = Backoff::doubling(ms(100), ms(350));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [100, 200, 350, 350, 350]);
        let mut zero = Backoff::doubling(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.next_delay(), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_spreads() {
        let mut b = Backoff::with_rng(BackoffPolicy::default(), Rng::seeded(7));
        let mut base = ms(200);
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{d:?} for {base:?}"
            );
            base = (base * 2).min(Duration::from_secs(15));
        }
        // Never above the cap plus its jitter, however long it runs.
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(18));
        }
        // Many draws at the cap cover most of the ±20 % range.
        let draws: Vec<Duration> = (0..1000).map(|_| b.next_delay()).collect();
        let (lo, hi) = (draws.iter().min().unwrap(), draws.iter().max().unwrap());
        assert!(*lo < Duration::from_millis(12_500), "{lo:?}");
        assert!(*hi > Duration::from_millis(17_500), "{hi:?}");
    }

    #[test]
    fn different_seeds_differ() {
        let mut a = Backoff::with_rng(BackoffPolicy::default(), Rng::seeded(1));
        let mut b = Backoff::with_rng(BackoffPolicy::default(), Rng::seeded(2));
        let a: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let b: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn odd_policies_are_tamed() {
        // Initial above the cap starts at the cap; jitter over 1 is clamped.
        let policy = BackoffPolicy {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(10),
            jitter: 5.0,
        };
        let mut b = Backoff::with_rng(policy, Rng::seeded(3));
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(20));
        }
        let mut zero = Backoff::with_rng(
            BackoffPolicy {
                initial: Duration::ZERO,
                max: Duration::ZERO,
                jitter: 0.2,
            },
            Rng::seeded(3),
        );
        assert_eq!(zero.next_delay(), Duration::ZERO);
    }

    #[test]
    fn unit_is_in_range() {
        let mut r = Rng::seeded(0);
        for _ in 0..10_000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
        let d = r.up_to(ms(100));
        assert!(d <= ms(100));
    }
}
