//! Tunnel counters, shared between the two directions and whoever reports them.
//!
//! Each direction's counters are written by one task only, so they sit on their
//! own cache line: the transmit task bumping its counters never invalidates the
//! line the receive task is bumping. Relaxed ordering is enough, since the
//! counters order nothing; a reader gets a [`StatsSnapshot`] that may be a few
//! packets stale.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters written by the sending side (inside to outside).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct TxCounters {
    /// Data frames sent.
    pub packets: AtomicU64,
    /// Payload bytes in those frames (IP packet sizes, without our overhead).
    pub bytes: AtomicU64,
    /// Keepalives sent.
    pub keepalives: AtomicU64,
    /// Packets read from the inside that were not IPv4, so never sent.
    pub dropped_not_ipv4: AtomicU64,
    /// Packets too large for a frame, so never sent.
    pub dropped_too_large: AtomicU64,
    /// Frames the socket refused for a transient reason (no route, buffer full,
    /// an ICMP error from the last send); the peer's retransmission covers them.
    pub send_errors: AtomicU64,
}

/// Counters written by the receiving side (outside to inside).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct RxCounters {
    /// Data frames accepted.
    pub packets: AtomicU64,
    /// Payload bytes in those frames.
    pub bytes: AtomicU64,
    /// Keepalives accepted.
    pub keepalives: AtomicU64,
    /// Frames that were not well-formed transport frames (including stray handshakes).
    pub dropped_malformed: AtomicU64,
    /// Frames carrying another session's id.
    pub dropped_wrong_session: AtomicU64,
    /// Frames whose counter was replayed or too old.
    pub dropped_replay: AtomicU64,
    /// Frames whose tag did not verify: forged or corrupted.
    pub dropped_auth: AtomicU64,
    /// Data frames that opened but held no IPv4 packet addressed to us.
    pub dropped_not_for_us: AtomicU64,
    /// Packets the inside refused (a TUN that is down); the sender's
    /// retransmission, if any, covers them.
    pub inside_write_errors: AtomicU64,
    /// Transient receive errors (an ICMP error reported on the socket).
    pub recv_errors: AtomicU64,
}

/// Both directions' counters; held in an `Arc` by the tunnel halves.
#[derive(Debug, Default)]
pub struct Stats {
    /// Inside to outside.
    pub tx: TxCounters,
    /// Outside to inside.
    pub rx: RxCounters,
}

/// Adds `n` to a counter.
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// Adds one to a counter.
pub(crate) fn inc(c: &AtomicU64) {
    bump(c, 1);
}

/// The counters at one moment, as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Each field mirrors the counter of the same name.
pub struct StatsSnapshot {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_keepalives: u64,
    pub tx_dropped_not_ipv4: u64,
    pub tx_dropped_too_large: u64,
    pub tx_send_errors: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_keepalives: u64,
    pub rx_dropped_malformed: u64,
    pub rx_dropped_wrong_session: u64,
    pub rx_dropped_replay: u64,
    pub rx_dropped_auth: u64,
    pub rx_dropped_not_for_us: u64,
    pub rx_inside_write_errors: u64,
    pub rx_recv_errors: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let (t, r) = (&self.tx, &self.rx);
        StatsSnapshot {
            tx_packets: t.packets.load(Relaxed),
            tx_bytes: t.bytes.load(Relaxed),
            tx_keepalives: t.keepalives.load(Relaxed),
            tx_dropped_not_ipv4: t.dropped_not_ipv4.load(Relaxed),
            tx_dropped_too_large: t.dropped_too_large.load(Relaxed),
            tx_send_errors: t.send_errors.load(Relaxed),
            rx_packets: r.packets.load(Relaxed),
            rx_bytes: r.bytes.load(Relaxed),
            rx_keepalives: r.keepalives.load(Relaxed),
            rx_dropped_malformed: r.dropped_malformed.load(Relaxed),
            rx_dropped_wrong_session: r.dropped_wrong_session.load(Relaxed),
            rx_dropped_replay: r.dropped_replay.load(Relaxed),
            rx_dropped_auth: r.dropped_auth.load(Relaxed),
            rx_dropped_not_for_us: r.dropped_not_for_us.load(Relaxed),
            rx_inside_write_errors: r.inside_write_errors.load(Relaxed),
            rx_recv_errors: r.recv_errors.load(Relaxed),
        }
    }
}

impl StatsSnapshot {
    /// Frames received and dropped for any reason.
    pub fn rx_dropped(&self) -> u64 {
        self.rx_dropped_malformed
            + self.rx_dropped_wrong_session
            + self.rx_dropped_replay
            + self.rx_dropped_auth
            + self.rx_dropped_not_for_us
            + self.rx_inside_write_errors
    }

    /// Packets read from the inside and not sent.
    pub fn tx_dropped(&self) -> u64 {
        self.tx_dropped_not_ipv4 + self.tx_dropped_too_large + self.tx_send_errors
    }
}

impl fmt::Display for StatsSnapshot {
    /// One log line: totals first, then the drop reasons that are non-zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} packets ({} bytes, {} keepalives), received {} packets ({} bytes, {} keepalives)",
            self.tx_packets,
            self.tx_bytes,
            self.tx_keepalives,
            self.rx_packets,
            self.rx_bytes,
            self.rx_keepalives
        )?;
        let reasons = [
            ("not IPv4 (outbound)", self.tx_dropped_not_ipv4),
            ("too large", self.tx_dropped_too_large),
            ("send errors", self.tx_send_errors),
            ("malformed", self.rx_dropped_malformed),
            ("wrong session", self.rx_dropped_wrong_session),
            ("replayed", self.rx_dropped_replay),
            ("failed authentication", self.rx_dropped_auth),
            ("not for our address", self.rx_dropped_not_for_us),
            ("refused by the TUN", self.rx_inside_write_errors),
            ("receive errors", self.rx_recv_errors),
        ];
        let mut first = true;
        for (what, n) in reasons.into_iter().filter(|&(_, n)| n > 0) {
            f.write_str(if first { "; dropped: " } else { ", " })?;
            write!(f, "{n} {what}")?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_do_not_share_a_cache_line() {
        assert!(std::mem::align_of::<TxCounters>() >= 64);
        let s = Stats::default();
        let tx = &s.tx as *const _ as usize;
        let rx = &s.rx as *const _ as usize;
        assert!(tx.abs_diff(rx) >= 64);
    }

    #[test]
    fn snapshot_and_display() {
        let s = Stats::default();
        bump(&s.tx.bytes, 100);
        inc(&s.tx.packets);
        inc(&s.rx.dropped_replay);
        let snap = s.snapshot();
        assert_eq!(snap.tx_packets, 1);
        assert_eq!(snap.tx_bytes, 100);
        assert_eq!(snap.rx_dropped(), 1);
        let line = snap.to_string();
        assert!(line.starts_with("sent 1 packets (100 bytes"), "{line}");
        assert!(line.ends_with("; dropped: 1 replayed"), "{line}");
    }
}
