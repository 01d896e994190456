//! When an established session's timers are due.
//!
//! - a keepalive after a keepalive interval without sending, and a probe at
//!   least every [`SessionOptions::probe_every`] (every keepalive is a probe);
//! - the rekey the server asked for (`rekey_after`, plus jitter so clients of
//!   one server spread out), retried with a doubling pause until it completes;
//! - a re-handshake in place when nothing at all has arrived for a keepalive
//!   interval plus [`QUIET_REHANDSHAKE`]: a live server answers our probes
//!   within a keepalive interval, so silence means it restarted (and forgot
//!   the session) or the path broke, and a restarted server answers the fresh
//!   initiation without waiting out the idle timeout;
//! - the end of the session when nothing arrived for the idle timeout.
//!
//! Everything is computed from instants the core passes in; nothing here
//! keeps time.

use std::time::{Duration, Instant};

use ringway_proto::SessionConfig;

use super::SessionOptions;
use crate::backoff::Backoff;

/// With nothing received for a keepalive interval plus this, re-handshake in
/// place (see the module doc).
pub const QUIET_REHANDSHAKE: Duration = Duration::from_secs(5);

/// The longest pause between a rekey's initiations.
pub const REKEY_RETRY_MAX: Duration = Duration::from_secs(30);

/// The most a scheduled rekey is put off by jitter (and at most a twentieth
/// of the interval).
pub const REKEY_JITTER_MAX: Duration = Duration::from_secs(30);

/// The shortest interval any timer runs at, so a zero in a config cannot spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// What is due at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Due {
    /// Nothing arrived for the idle timeout: the session is over.
    pub expired: bool,
    /// Start (or retry) a rekey, and why.
    pub rekey: Option<&'static str>,
    /// Send a keepalive carrying a probe.
    pub probe: bool,
}

/// The timers of one established session (and of its rekeyed successors).
#[derive(Debug)]
pub(crate) struct Timers {
    keepalive: Duration,
    idle_timeout: Duration,
    probe_every: Duration,
    /// What the options asked for; `probe_every` is this within the keepalive.
    probe_wanted: Option<Duration>,
    rekey_retry: Duration,
    /// When the scheduled rekey is due (`None`: the server asked for none).
    rekey_at: Option<Instant>,
    /// The rekey under way, if any.
    rekey: Option<Retry>,
    /// When the latest probe was asked for.
    pub last_probe: Instant,
    /// When a frame last opened (or an answer arrived, or the session began).
    pub last_received: Instant,
}

/// A rekey under way: when its next initiation is due.
#[derive(Debug)]
struct Retry {
    next_at: Instant,
    pauses: Backoff,
}

impl Timers {
    /// Timers for a session that began at `now` with `config`; `jitter` is
    /// uniform in `[0, 1)` and puts the scheduled rekey off by up to its
    /// maximum.
    pub fn new(config: &SessionConfig, opts: &SessionOptions, now: Instant, jitter: f64) -> Self {
        let mut t = Timers {
            keepalive: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            probe_every: Duration::ZERO,
            probe_wanted: opts.probe_every,
            rekey_retry: opts.rekey_retry.max(MIN_INTERVAL),
            rekey_at: None,
            rekey: None,
            last_probe: now,
            last_received: now,
        };
        t.session_began(config, now, jitter);
        t
    }

    /// A session (the first, or one a rekey made) began at `now`: the timers
    /// follow its config, and no rekey is under way any more.
    pub fn session_began(&mut self, config: &SessionConfig, now: Instant, jitter: f64) {
        self.keepalive = config.keepalive().max(MIN_INTERVAL);
        self.idle_timeout = config.idle_timeout().max(MIN_INTERVAL);
        self.probe_every = self
            .probe_wanted
            .map_or(self.keepalive, |p| p.clamp(MIN_INTERVAL, self.keepalive));
        self.rekey = None;
        self.rekey_at = config.rekey_after().map(|after| {
            let most = (after / 20).min(REKEY_JITTER_MAX);
            now + after + most.mul_f64(jitter.clamp(0.0, 1.0))
        });
        self.last_received = now;
    }

    /// When the next thing is due, given when a frame was last sent.
    pub fn next(&self, last_sent: Instant) -> Instant {
        let mut next = (self.last_probe.max(last_sent) + self.keepalive)
            .min(self.last_probe + self.probe_every)
            .min(self.last_received + self.idle_timeout);
        match &self.rekey {
            Some(r) => next = next.min(r.next_at),
            None => {
                if let Some(at) = self.rekey_at {
                    next = next.min(at);
                }
                next = next.min(self.quiet_at());
            }
        }
        next
    }

    /// What is due at `now`, given when a frame was last sent.
    pub fn due(&self, now: Instant, last_sent: Instant) -> Due {
        if now >= self.last_received + self.idle_timeout {
            return Due {
                expired: true,
                ..Due::default()
            };
        }
        let rekey = match &self.rekey {
            Some(r) => (now >= r.next_at).then_some("retry"),
            None if self.rekey_at.is_some_and(|at| now >= at) => Some("scheduled"),
            None if now >= self.quiet_at() => Some("server quiet"),
            None => None,
        };
        let probe = now >= self.last_probe.max(last_sent) + self.keepalive
            || now >= self.last_probe + self.probe_every;
        Due {
            expired: false,
            rekey,
            probe,
        }
    }

    /// A rekey's initiation (the first or a retry) was made at `now`: the next
    /// is due after a pause that doubles each time.
    pub fn rekey_initiated(&mut self, now: Instant) {
        let retry = self.rekey_retry;
        let r = self.rekey.get_or_insert_with(|| Retry {
            next_at: now,
            pauses: Backoff::doubling(retry, REKEY_RETRY_MAX),
        });
        r.next_at = now + r.pauses.next_delay();
    }

    /// Whether a rekey is under way.
    pub fn rekeying(&self) -> bool {
        self.rekey.is_some()
    }

    /// The idle timeout of the session.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// When silence from the server starts to look like it forgot us.
    fn quiet_at(&self) -> Instant {
        self.last_received + self.keepalive + QUIET_REHANDSHAKE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn config(keepalive_secs: u16, idle_timeout_secs: u16, rekey_after_secs: u16) -> SessionConfig {
        SessionConfig {
            cipher: ringway_proto::Cipher::Aes256Gcm,
            client_addr: Ipv4Addr::new(198, 18, 0, 2),
            prefix_len: 24,
            server_addr: Ipv4Addr::new(198, 18, 0, 1),
            mtu: 1420,
            keepalive_secs,
            idle_timeout_secs,
            rekey_after_secs,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn keepalive_probe_quiet_and_expiry_in_order() {
        let t0 = Instant::now();
        let mut t = Timers::new(&config(10, 60, 0), &SessionOptions::default(), t0, 0.0);
        assert_eq!(t.next(t0), t0 + secs(10));
        assert_eq!(t.due(t0 + secs(9), t0), Due::default());
        assert!(t.due(t0 + secs(10), t0).probe);
        // Busy or not, a probe every keepalive interval.
        assert_eq!(t.next(t0 + secs(8)), t0 + secs(10));
        assert!(t.due(t0 + secs(10), t0 + secs(9)).probe);
        t.last_probe = t0 + secs(10);
        // Sending keeps the next keepalive away; silence from the server
        // calls for a re-handshake at keepalive + 5 s.
        assert_eq!(t.next(t0 + secs(10)), t0 + secs(15));
        let quiet = t.due(t0 + secs(15), t0 + secs(14));
        assert_eq!(quiet.rekey, Some("server quiet"));
        assert!(!quiet.probe);
        assert!(t.due(t0 + secs(60), t0 + secs(59)).expired);
    }

    #[test]
    fn probes_at_least_every_probe_interval_however_busy() {
        let t0 = Instant::now();
        let opts = SessionOptions {
            probe_every: Some(secs(2)),
            ..SessionOptions::default()
        };
        let mut t = Timers::new(&config(25, 180, 0), &opts, t0, 0.0);
        // Busy: sent a moment ago, still a probe every 2 s.
        assert_eq!(t.next(t0 + secs(1)), t0 + secs(2));
        assert!(t.due(t0 + secs(2), t0 + secs(2)).probe);
        t.last_probe = t0 + secs(2);
        assert_eq!(t.next(t0 + secs(2)), t0 + secs(4));
        // Longer than the keepalive means every keepalive.
        let opts = SessionOptions {
            probe_every: Some(secs(100)),
            ..SessionOptions::default()
        };
        let t = Timers::new(&config(25, 180, 0), &opts, t0, 0.0);
        assert_eq!(t.next(t0), t0 + secs(25));
    }

    #[test]
    fn scheduled_rekey_with_jitter_then_doubling_retries() {
        let t0 = Instant::now();
        let opts = SessionOptions {
            rekey_retry: secs(1),
            ..SessionOptions::default()
        };
        // 900 s: jitter up to 30 s (a twentieth would be 45).
        let mut t = Timers::new(&config(25, 180, 900), &opts, t0, 0.5);
        let at = t0 + secs(915);
        t.last_received = at;
        t.last_probe = at;
        assert_eq!(t.due(at - Duration::from_millis(1), at).rekey, None);
        assert_eq!(t.due(at, at).rekey, Some("scheduled"));
        t.rekey_initiated(at);
        assert!(t.rekeying());
        let mut prev = at;
        let just_before = |pause: u64| secs(pause) - Duration::from_millis(1);
        for pause in [1, 2, 4, 8, 16, 30, 30] {
            let (early, due) = (prev + just_before(pause), prev + secs(pause));
            assert_eq!(t.due(early, early).rekey, None, "{pause}");
            assert_eq!(t.due(due, due).rekey, Some("retry"), "{pause}");
            prev += secs(pause);
            t.last_received = prev;
            t.last_probe = prev;
            t.rekey_initiated(prev);
        }
        // Done: the next session's schedule, no retry.
        t.session_began(&config(25, 180, 60), prev, 0.0);
        assert!(!t.rekeying());
        assert_eq!(t.due(prev + secs(60), prev).rekey, Some("scheduled"));
        // Short intervals: jitter at most a twentieth.
        let t = Timers::new(&config(1, 3, 20), &opts, t0, 0.999);
        assert!(t.rekey_at.unwrap() <= t0 + secs(21));
    }
}
