//! Per-flow CoDel state (RFC 8289) and its two pure decisions: is this head item's
//! sojourn a standing queue, and when is the next drop due.
//!
//! The dequeue-side state machine that uses them lives in [`queue`](crate::queue), where
//! it can pop the next item of the same flow after a drop.

use std::time::{Duration, Instant};

/// CoDel's per-flow variables, as in Linux's `struct codel_vars`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CodelVars {
    /// Drops (or marks) since entering the dropping state; sets the drop rate.
    pub count: u32,
    /// `count` when the last dropping state began: if the queue comes back soon, the
    /// next dropping state resumes near the rate that controlled it last time.
    pub lastcount: u32,
    /// In the dropping state: drops are scheduled at `drop_next`.
    pub dropping: bool,
    /// When the next drop is due (meaningful once a dropping state has begun).
    pub drop_next: Option<Instant>,
    /// When the sojourn time first went above target in this episode, plus one interval:
    /// the earliest moment dropping may begin. `None` while below target.
    pub first_above: Option<Instant>,
}

/// What `should_drop` needs to know about the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CodelParams {
    pub target: Duration,
    pub interval: Duration,
    pub mtu: u64,
}

impl CodelVars {
    /// Whether the item just taken from the head (queued since `since`) shows a standing
    /// queue that has persisted for an interval. `remaining` is the bytes still queued
    /// behind it. Updates `first_above` as RFC 8289's `dodequeue` does.
    pub fn should_drop(
        &mut self,
        p: &CodelParams,
        since: Instant,
        remaining: u64,
        now: Instant,
    ) -> bool {
        let sojourn = now.saturating_duration_since(since);
        if sojourn < p.target || remaining <= p.mtu {
            // Below target (or nothing worth dropping for): stay below for an interval
            // before dropping again.
            self.first_above = None;
            return false;
        }
        match self.first_above {
            None => {
                self.first_above = Some(after(now, p.interval));
                false
            }
            Some(t) => now > t,
        }
    }

    /// The queue ran empty: the episode is over.
    pub fn on_empty(&mut self) {
        self.first_above = None;
        self.dropping = false;
    }
}

/// RFC 8289's control law: the next drop `interval / sqrt(count)` after `t`, so the drop
/// rate grows with the square root of the drops so far (a TCP's rate goes as
/// 1/sqrt(drop rate), so this ramps the signal linearly in the sender's terms).
///
/// Integer arithmetic, deterministic and within a nanosecond: `sqrt(count << 64)` is
/// `sqrt(count)` in 32.32 fixed point (and an interval of at most an hour, shifted by 32,
/// stays far inside a `u128`).
pub(crate) fn control_law(t: Instant, interval: Duration, count: u32) -> Instant {
    let root = (u128::from(count.max(1)) << 64).isqrt(); // sqrt(count) * 2^32
    let ns = (interval.as_nanos() << 32) / root;
    after(
        t,
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)),
    )
}

/// `t + d`, or `t` in the (unreachable with validated configs) case the sum overflows.
pub(crate) fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_law_divides_the_interval_by_the_square_root_of_count() {
        let t = Instant::now();
        let i = Duration::from_millis(100);
        assert_eq!(control_law(t, i, 1) - t, i);
        assert_eq!(control_law(t, i, 4) - t, Duration::from_millis(50));
        assert_eq!(control_law(t, i, 100) - t, Duration::from_millis(10));
        // 100 ms / sqrt(2) = 70.710678 ms
        let d = control_law(t, i, 2) - t;
        assert!(d.as_nanos().abs_diff(70_710_678) <= 2, "{d:?}");
        // count 0 never happens, but must not divide by zero.
        assert_eq!(control_law(t, i, 0) - t, i);
        assert!(control_law(t, i, u32::MAX) > t);
    }

    #[test]
    fn should_drop_only_after_an_interval_above_target() {
        let p = CodelParams {
            target: Duration::from_millis(5),
            interval: Duration::from_millis(100),
            mtu: 1500,
        };
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut v = CodelVars::default();
        // Below target: never.
        assert!(!v.should_drop(&p, ms(0), 10_000, ms(4)));
        // Above target: starts the clock, then waits an interval.
        assert!(!v.should_drop(&p, ms(0), 10_000, ms(10)));
        assert_eq!(v.first_above, Some(ms(110)));
        assert!(!v.should_drop(&p, ms(0), 10_000, ms(110)));
        assert!(v.should_drop(&p, ms(0), 10_000, ms(111)));
        // A lone packet is not a standing queue, however old.
        assert!(!v.should_drop(&p, ms(0), 1500, ms(500)));
        assert_eq!(v.first_above, None);
    }
}
