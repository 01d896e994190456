//! Who gets a TCP connection slot, and how long a silent one may keep it.
//!
//! A TCP connection costs a slot (of `tcp.max_connections`), a receive buffer and, until it
//! completes a handshake, nothing has proved its sender is a peer. Two rules keep a few
//! hundred silent connections from locking real clients out:
//! - at most `tcp.max_connections_per_source` connections from one address at once (a NAT
//!   with many clients behind it raises it);
//! - under pressure (three quarters of the slots taken), a connection that has not completed
//!   a handshake within [`PRESSURE_HANDSHAKE_TIMEOUT`] of its accept is closed, instead of
//!   after the full `tcp.handshake_timeout_secs`.
//!
//! Both I/O backends ask this type; it does no I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The handshake deadline for new connections while the table is under pressure: a real
/// client's initiation arrives within a round trip of its connect.
pub const PRESSURE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is taken.
    Full,
    /// Its source address holds its share already.
    PerSource,
}

/// Counts (and logs at debug level) a refused connection.
pub fn count_refusal(
    counters: &mut crate::metrics::IoCounters,
    refused: Refused,
    peer: Option<std::net::SocketAddr>,
) {
    match refused {
        Refused::Full => counters.tcp_refused += 1,
        Refused::PerSource => counters.tcp_refused_per_source += 1,
    }
    tracing::debug!(?peer, ?refused, "TCP connection refused");
}

/// Connection counts per source address and the limits they are held to.
#[derive(Debug)]
pub struct Admission {
    max: u32,
    max_per_source: u32,
    handshake_timeout: Duration,
    per_source: HashMap<IpAddr, u32>,
}

impl Admission {
    /// Nothing admitted yet.
    pub fn new(max: u32, max_per_source: u32, handshake_timeout: Duration) -> Self {
        Admission {
            max,
            max_per_source,
            handshake_timeout,
            per_source: HashMap::new(),
        }
    }

    /// Takes a slot for a connection from `source` (unknown: only the total counts), with
    /// `live` connections open; the caller must [`release`](Self::release) it on close.
    pub fn admit(&mut self, source: Option<IpAddr>, live: usize) -> Result<(), Refused> {
        if live >= self.max as usize {
            return Err(Refused::Full);
        }
        if let Some(ip) = source {
            let n = self.per_source.entry(ip).or_default();
            if *n >= self.max_per_source {
                return Err(Refused::PerSource);
            }
            *n += 1;
        }
        Ok(())
    }

    /// Gives back the slot of a connection from `source`.
    pub fn release(&mut self, source: Option<IpAddr>) {
        let Some(ip) = source else {
            return;
        };
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
    }

    /// Whether a connection accepted at `accepted` that has not completed a handshake is
    /// past its deadline at `now`, with `live` connections open.
    pub fn handshake_overdue(&self, accepted: Instant, now: Instant, live: usize) -> bool {
        let waited = now.saturating_duration_since(accepted);
        waited >= self.handshake_timeout
            || (self.under_pressure(live) && waited >= PRESSURE_HANDSHAKE_TIMEOUT)
    }

    /// Three quarters of the slots or more are taken.
    fn under_pressure(&self, live: usize) -> bool {
        live.saturating_mul(4) >= (self.max as usize).saturating_mul(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, last]))
    }

    #[test]
    fn one_address_cannot_take_more_than_its_share() {
        let mut a = Admission::new(100, 2, Duration::from_secs(10));
        assert_eq!(a.admit(ip(1), 0), Ok(()));
        assert_eq!(a.admit(ip(1), 1), Ok(()));
        assert_eq!(a.admit(ip(1), 2), Err(Refused::PerSource));
        assert_eq!(a.admit(ip(2), 2), Ok(()), "another address still gets in");
        a.release(ip(1));
        assert_eq!(
            a.admit(ip(1), 2),
            Ok(()),
            "a closed connection frees its share"
        );
        assert_eq!(a.admit(ip(3), 100), Err(Refused::Full));
        assert_eq!(
            a.admit(None, 5),
            Ok(()),
            "an unknown source counts only in the total"
        );
        a.release(None);
        for _ in 0..3 {
            a.release(ip(1));
            a.release(ip(2));
        }
        assert!(a.per_source.is_empty(), "{:?}", a.per_source);
    }

    #[test]
    fn silent_connections_get_less_time_under_pressure() {
        let a = Admission::new(100, 100, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert!(!a.handshake_overdue(t0, at(3), 10));
        assert!(a.handshake_overdue(t0, at(10), 10));
        assert!(a.handshake_overdue(t0, at(3), 75), "75 of 100 taken: 2 s");
        assert!(!a.handshake_overdue(t0, at(1), 99));
    }
}
