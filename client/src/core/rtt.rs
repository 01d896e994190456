//! Round-trip times from probe echoes.
//!
//! Every keepalive the client sends carries a probe id; the server echoes the
//! id in a keepalive of its own. [`Rtt`] remembers when recent probes left
//! and turns each echo into a sample, kept as the latest and as a smoothed
//! value (7/8 old + 1/8 new, as TCP does).

use std::time::{Duration, Instant};

/// How many probes may be in flight at once; an older one's echo is ignored.
pub const PROBES_IN_FLIGHT: usize = 8;

/// Probes in flight and the samples their echoes gave.
#[derive(Debug, Default)]
pub struct Rtt {
    next_id: u64,
    /// `(id, sent at)` of recent probes, oldest overwritten first.
    in_flight: [Option<(u64, Instant)>; PROBES_IN_FLIGHT],
    latest: Option<Duration>,
    smoothed: Option<Duration>,
    samples: u64,
}

impl Rtt {
    /// A fresh probe id, remembered as sent at `now`.
    pub fn start_probe(&mut self, now: Instant) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.in_flight[(id as usize) % PROBES_IN_FLIGHT] = Some((id, now));
        id
    }

    /// Records the echo of probe `id` arriving at `now`; the sample, or
    /// `None` for an id we did not send (or long since overwritten) or a
    /// repeated echo.
    pub fn on_echo(&mut self, id: u64, now: Instant) -> Option<Duration> {
        let slot = &mut self.in_flight[(id as usize) % PROBES_IN_FLIGHT];
        let (sent_id, sent_at) = (*slot)?;
        if sent_id != id {
            return None;
        }
        *slot = None;
        let sample = now.saturating_duration_since(sent_at);
        self.latest = Some(sample);
        self.smoothed = Some(match self.smoothed {
            None => sample,
            Some(s) => (s * 7 + sample) / 8,
        });
        self.samples += 1;
        Some(sample)
    }

    /// The latest sample.
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// The smoothed round-trip time.
    pub fn smoothed(&self) -> Option<Duration> {
        self.smoothed
    }

    /// How many echoes were matched.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_from_probe_echoes() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut rtt = Rtt::default();
        assert_eq!((rtt.latest(), rtt.smoothed()), (None, None));
        let a = rtt.start_probe(t0);
        let b = rtt.start_probe(t0 + ms(10));
        assert_ne!(a, b);
        // Out of order is fine; each echo is timed against its own probe.
        assert_eq!(rtt.on_echo(b, t0 + ms(30)), Some(ms(20)));
        assert_eq!(rtt.on_echo(a, t0 + ms(40)), Some(ms(40)));
        assert_eq!(rtt.latest(), Some(ms(40)));
        // 7/8 of 20 plus 1/8 of 40.
        assert_eq!(rtt.smoothed(), Some(ms(20) * 7 / 8 + ms(40) / 8));
        // A repeated echo, an id never sent, and one overwritten by newer probes.
        assert_eq!(rtt.on_echo(a, t0 + ms(50)), None);
        assert_eq!(rtt.on_echo(12345, t0 + ms(50)), None);
        let old = rtt.start_probe(t0);
        for _ in 0..PROBES_IN_FLIGHT {
            rtt.start_probe(t0);
        }
        assert_eq!(rtt.on_echo(old, t0 + ms(50)), None);
        assert_eq!(rtt.samples(), 2);
    }
}
