//! The search for the highest packet rate a path carries with less than 1 % loss.
//!
//! Sans-IO, like the protocol crate: [`RateSearch::poll_rate`] says which rate to offer next,
//! the caller runs one short iperf3 UDP step at it and hands back what happened with
//! [`RateSearch::handle_outcome`], until `poll_rate` returns `None`. The search doubles the
//! offered rate while steps pass, then bisects between the highest passing rate and the
//! lowest failing one (halving from the start if even that fails), within a fixed number of
//! steps. It also stops when the sender cannot offer more (iperf3 fell short of the rate and
//! nothing was lost: the tunnel keeps up with whatever one sender can send) or the bracket is
//! narrow enough. The answer is the highest *received* rate of any passing step.
//!
//! On two shared cores a one-second step now and then loses a little to a neighbour's burst
//! of work, and a failure caps everything the search tries after it. So the first failure
//! with a small loss (under [`SearchConfig::confirm_below_pct`]) is repeated once at the same
//! rate before it counts; a clear overload (more loss) counts at once.

/// How a search runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchConfig {
    /// The first rate offered, packets per second.
    pub start_pps: u64,
    /// Never offer more than this.
    pub max_pps: u64,
    /// Give up below this (nothing passes).
    pub min_pps: u64,
    /// At most this many steps.
    pub max_steps: u32,
    /// A step passes with less loss than this, in percent.
    pub loss_limit_pct: f64,
    /// Stop once the failing rate is within this fraction above the passing one.
    pub precision: f64,
    /// A sender that reached less than this fraction of the offered rate is at its limit.
    pub sender_floor: f64,
    /// The first failure with less loss than this, in percent, is repeated before it counts.
    pub confirm_below_pct: f64,
}

impl Default for SearchConfig {
    /// Up to 6 one-second steps from 25 kpps: on this class of machine the tunnels carry
    /// 25–400 kpps, bracketed within 4 doublings and narrowed by the remaining bisections.
    fn default() -> Self {
        Self {
            start_pps: 25_000,
            max_pps: 4_000_000,
            min_pps: 500,
            max_steps: 6,
            loss_limit_pct: 1.0,
            precision: 0.1,
            sender_floor: 0.9,
            confirm_below_pct: 10.0,
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// The rate offered.
    pub offered_pps: u64,
    /// The rate the sender reached.
    pub sent_pps: f64,
    /// The rate the receiver got.
    pub received_pps: f64,
    /// Datagrams lost, percent of those sent.
    pub loss_pct: f64,
}

/// Why a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The bracket between passing and failing rates is within the precision.
    Converged,
    /// The step budget is spent.
    StepLimit,
    /// The sender could not offer more and nothing was lost.
    SenderLimited,
    /// The largest rate allowed passed.
    MaxRate,
    /// Nothing passed down to the minimum rate.
    NothingPassed,
}

/// The search's state.
#[derive(Debug, Clone)]
pub struct RateSearch {
    config: SearchConfig,
    next: Option<u64>,
    /// The highest offered rate that passed.
    passed: Option<u64>,
    /// The lowest offered rate that failed.
    failed: Option<u64>,
    best: Option<Outcome>,
    steps: u32,
    stop: Option<Stop>,
    /// The last step failed slightly for the first time and is being repeated.
    confirming: bool,
}

impl RateSearch {
    /// A search that first offers `config.start_pps`.
    pub fn new(config: SearchConfig) -> Self {
        Self {
            next: Some(config.start_pps.clamp(1, config.max_pps)),
            config,
            passed: None,
            failed: None,
            best: None,
            steps: 0,
            stop: None,
            confirming: false,
        }
    }

    /// The rate to offer next, or `None` when the search is over.
    pub fn poll_rate(&self) -> Option<u64> {
        self.next
    }

    /// Takes the outcome of the step at the last polled rate.
    pub fn handle_outcome(&mut self, o: Outcome) {
        self.steps += 1;
        let passed = o.loss_pct < self.config.loss_limit_pct;
        let first_slight_failure = !passed
            && self.failed.is_none()
            && !self.confirming
            && o.loss_pct < self.config.confirm_below_pct;
        self.confirming = first_slight_failure;
        if first_slight_failure {
            self.next = (self.steps < self.config.max_steps).then_some(o.offered_pps);
            self.stop = self.next.is_none().then_some(Stop::StepLimit);
            return;
        }
        if passed {
            self.passed = Some(self.passed.map_or(o.offered_pps, |p| p.max(o.offered_pps)));
            if self.best.is_none_or(|b| o.received_pps > b.received_pps) {
                self.best = Some(o);
            }
        } else {
            self.failed = Some(self.failed.map_or(o.offered_pps, |f| f.min(o.offered_pps)));
        }
        let sender_short = o.sent_pps < self.config.sender_floor * o.offered_pps as f64;
        let (next, stop) = match (self.passed, self.failed) {
            _ if passed && sender_short => (None, Some(Stop::SenderLimited)),
            (_, None) if o.offered_pps >= self.config.max_pps => (None, Some(Stop::MaxRate)),
            (_, None) => (
                Some(o.offered_pps.saturating_mul(2).min(self.config.max_pps)),
                None,
            ),
            (None, Some(failed)) if failed / 2 < self.config.min_pps => {
                (None, Some(Stop::NothingPassed))
            }
            (None, Some(failed)) => (Some(failed / 2), None),
            (Some(lo), Some(hi)) if hi as f64 <= lo as f64 * (1.0 + self.config.precision) => {
                (None, Some(Stop::Converged))
            }
            (Some(lo), Some(hi)) => (Some(lo + (hi - lo) / 2), None),
        };
        self.next = next;
        self.stop = stop;
        if self.next.is_some() && self.steps >= self.config.max_steps {
            self.next = None;
            self.stop = Some(Stop::StepLimit);
        }
    }

    /// The passing step with the highest received rate so far.
    pub fn best(&self) -> Option<&Outcome> {
        self.best.as_ref()
    }

    /// Steps taken.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// Why it ended, once it has.
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path that carries up to `capacity` pps without loss and loses the excess, behind a
    /// sender that can send at most `sender` pps.
    fn run(config: SearchConfig, capacity: f64, sender: f64) -> (RateSearch, Vec<u64>) {
        let mut search = RateSearch::new(config);
        let mut offered = Vec::new();
        while let Some(rate) = search.poll_rate() {
            offered.push(rate);
            let sent = (rate as f64).min(sender);
            let received = sent.min(capacity);
            search.handle_outcome(Outcome {
                offered_pps: rate,
                sent_pps: sent,
                received_pps: received,
                loss_pct: 100.0 * (sent - received) / sent,
            });
            assert!(offered.len() <= config.max_steps as usize, "{offered:?}");
        }
        (search, offered)
    }

    #[test]
    fn doubles_then_bisects() {
        let (s, offered) = run(SearchConfig::default(), 130_000.0, 1e9);
        assert_eq!(
            offered,
            [25_000, 50_000, 100_000, 200_000, 150_000, 125_000]
        );
        assert_eq!(s.best().unwrap().received_pps, 125_000.0);
        assert_eq!(s.stop(), Some(Stop::StepLimit));
        assert_eq!(s.steps(), 6);
    }

    #[test]
    fn stops_when_the_bracket_is_narrow() {
        let config = SearchConfig {
            max_steps: 20,
            ..SearchConfig::default()
        };
        let (s, offered) = run(config, 130_000.0, 1e9);
        assert_eq!(s.stop(), Some(Stop::Converged));
        let best = s.best().unwrap().received_pps;
        assert!(
            (117_000.0..=130_000.0).contains(&best),
            "{best} {offered:?}"
        );
    }

    #[test]
    fn halves_when_the_start_already_fails() {
        let (s, offered) = run(SearchConfig::default(), 9_000.0, 1e9);
        assert_eq!(offered[..3], [25_000, 12_500, 6_250]);
        let best = s.best().unwrap();
        assert!(best.received_pps >= 6_250.0 && best.received_pps <= 9_000.0);
    }

    #[test]
    fn a_saturated_sender_ends_the_search() {
        let (s, offered) = run(SearchConfig::default(), 1e9, 70_000.0);
        assert_eq!(offered, [25_000, 50_000, 100_000]);
        assert_eq!(s.stop(), Some(Stop::SenderLimited));
        assert_eq!(s.best().unwrap().received_pps, 70_000.0);
    }

    #[test]
    fn gives_up_when_nothing_passes_and_caps_the_rate() {
        let (s, _) = run(SearchConfig::default(), 0.0, 1e9);
        assert_eq!(s.stop(), Some(Stop::NothingPassed));
        assert!(s.best().is_none());
        let capped = SearchConfig {
            max_pps: 60_000,
            ..SearchConfig::default()
        };
        let (s, offered) = run(capped, 1e9, 1e9);
        assert_eq!(offered, [25_000, 50_000, 60_000]);
        assert_eq!(s.stop(), Some(Stop::MaxRate));
    }

    fn step(offered_pps: u64, loss_pct: f64) -> Outcome {
        Outcome {
            offered_pps,
            sent_pps: offered_pps as f64,
            received_pps: offered_pps as f64 * (1.0 - loss_pct / 100.0),
            loss_pct,
        }
    }

    #[test]
    fn loss_at_the_limit_fails_once_confirmed() {
        let mut s = RateSearch::new(SearchConfig::default());
        s.handle_outcome(step(25_000, 1.0));
        // A slight first failure is repeated at the same rate...
        assert_eq!(s.poll_rate(), Some(25_000));
        s.handle_outcome(step(25_000, 1.0));
        // ...and counts when it happens again.
        assert!(s.best().is_none());
        assert_eq!(s.poll_rate(), Some(12_500));
    }

    #[test]
    fn a_transient_failure_does_not_cap_the_search() {
        let mut s = RateSearch::new(SearchConfig::default());
        s.handle_outcome(step(25_000, 0.0));
        s.handle_outcome(step(50_000, 3.0));
        assert_eq!(s.poll_rate(), Some(50_000));
        s.handle_outcome(step(50_000, 0.0));
        assert_eq!(s.poll_rate(), Some(100_000));
        // A later slight failure counts at once: the first one was used up.
        s.handle_outcome(step(100_000, 40.0));
        s.handle_outcome(step(75_000, 2.0));
        assert_eq!(s.poll_rate(), Some(62_500));
        assert_eq!(s.best().unwrap().offered_pps, 50_000);
        // The repeat counts against the step budget.
        s.handle_outcome(step(62_500, 0.0));
        assert_eq!(s.poll_rate(), None);
        assert_eq!(s.stop(), Some(Stop::StepLimit));
        assert_eq!(s.steps(), 6);
    }
}
