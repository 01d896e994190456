//! Log lines about unauthenticated input, at most one per reason per interval.
//!
//! Anyone can send initiations from a key not in the peer list, or replay a captured one:
//! a line per packet lets a flood fill the disk (82 771 lines in 8 s, measured). The first
//! event of a quiet period is logged at once, so an operator sees it; until the interval has
//! passed the rest are only counted, and the next line (or the timers' [`Quiet::summary`])
//! says how many were held back. The counters have every one.

use std::time::{Duration, Instant};

/// How long after a line the next one about the same reason waits.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// One reason's budget.
#[derive(Debug, Default, Clone)]
pub struct Quiet {
    /// When the last line was allowed.
    last: Option<Instant>,
    /// Events since that were not logged.
    held: u64,
}

impl Quiet {
    /// Whether an event at `now` may be logged; if so, how many were held back before it.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < INTERVAL)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }

    /// Events held back, once the interval after the last line is over (for a summary line
    /// when a flood stops); resets the count.
    pub fn summary(&mut self, now: Instant) -> Option<u64> {
        let over = self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) >= INTERVAL);
        if over && self.held > 0 {
            self.last = Some(now);
            return Some(std::mem::take(&mut self.held));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_one_line_per_interval_and_a_count_of_the_rest() {
        let t0 = Instant::now();
        let mut q = Quiet::default();
        assert_eq!(q.allow(t0), Some(0), "the first event is logged");
        for i in 1..1000u32 {
            assert_eq!(q.allow(t0 + Duration::from_millis(u64::from(i))), None);
        }
        assert_eq!(q.summary(t0 + Duration::from_secs(5)), None, "too early");
        assert_eq!(
            q.allow(t0 + INTERVAL),
            Some(999),
            "the next line counts the rest"
        );
        assert_eq!(q.allow(t0 + INTERVAL + Duration::from_secs(1)), None);
        assert_eq!(
            q.summary(t0 + 2 * INTERVAL),
            Some(1),
            "a stopped flood is summarised"
        );
        assert_eq!(q.summary(t0 + 4 * INTERVAL), None, "once");
    }
}
