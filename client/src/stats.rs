//! Tunnel counters, shared between the two directions and whoever reports them.
//!
//! Each direction's counters are written by one task only, so they sit on their
//! own cache line: the transmit task bumping its counters never invalidates the
//! line the receive task is bumping. Relaxed ordering is enough, since the
//! counters order nothing; a reader gets a [`StatsSnapshot`] that may be a few
//! packets stale.
//!
//! The round-trip time comes from keepalive probes, timed by the client core
//! ([`crate::core::rtt`]), which stores each new sample here.
//!
//! [`LiveLine`] is what `ringway up --stats SECS` prints: rates over the
//! interval between two snapshots.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What one direction's queue ([`crate::backlog`]) did, written by that direction's task.
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Packets (outbound: reads, each one packet or superpacket) queued.
    pub enqueued: AtomicU64,
    /// Taken from the queue to be sent or written.
    pub dequeued: AtomicU64,
    /// Of those, taken from a sparse flow (one that had sent less than a quantum).
    pub sparse: AtomicU64,
    /// Dropped by CoDel from the head of a flow with a standing queue.
    pub dropped_codel: AtomicU64,
    /// Dropped from the fattest flow because the queue was full.
    pub dropped_overflow: AtomicU64,
    /// ECN-capable packets marked CE instead of dropped.
    pub marked_ce: AtomicU64,
    /// Dropped because the session ended while they waited.
    pub flushed: AtomicU64,
    /// The most items queued at once.
    pub peak_items: AtomicU64,
}

impl QueueCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> QueueSnapshot {
        QueueSnapshot {
            enqueued: self.enqueued.load(Relaxed),
            dequeued: self.dequeued.load(Relaxed),
            sparse: self.sparse.load(Relaxed),
            dropped_codel: self.dropped_codel.load(Relaxed),
            dropped_overflow: self.dropped_overflow.load(Relaxed),
            marked_ce: self.marked_ce.load(Relaxed),
            flushed: self.flushed.load(Relaxed),
            peak_items: self.peak_items.load(Relaxed),
        }
    }
}

/// A queue's counters at one moment (see [`QueueCounters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[allow(missing_docs)] // Each mirrors the counter of the same name in `QueueCounters`.
pub struct QueueSnapshot {
    pub enqueued: u64,
    pub dequeued: u64,
    pub sparse: u64,
    pub dropped_codel: u64,
    pub dropped_overflow: u64,
    pub marked_ce: u64,
    pub flushed: u64,
    pub peak_items: u64,
}

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
    /// Packets read from the inside while there was no session (reconnecting).
    pub dropped_no_session: AtomicU64,
    /// Fresh UDP sockets taken because the local address went away (roaming).
    pub rebinds: AtomicU64,
    /// Reads from the inside (TUN reads) that returned something.
    pub tun_reads: AtomicU64,
    /// Packets those reads held: a superpacket counts as the packets it was cut into.
    pub tun_packets: AtomicU64,
    /// Reads dropped because the `virtio_net_hdr` in front or the superpacket behind it could
    /// not be segmented (`ringway-offload` refused it).
    pub dropped_offload: AtomicU64,
    /// UDP send calls that went out (`send`, or `sendmsg` with `UDP_SEGMENT`).
    pub udp_sends: AtomicU64,
    /// Datagrams those calls carried.
    pub udp_datagrams: AtomicU64,
    /// TCP writes (each one or more whole frames).
    pub tcp_writes: AtomicU64,
    /// Frames those writes carried.
    pub tcp_frames: AtomicU64,
    /// The outbound queue (reads waiting to be sealed and sent).
    pub queue: QueueCounters,
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
    /// Handshake rejects received (unauthenticated hints; see the handshake module).
    pub rejects: AtomicU64,
    /// UDP receive calls that returned datagrams (`recv`, or `recvmmsg` with GRO).
    pub udp_recvs: AtomicU64,
    /// Datagrams those calls returned.
    pub udp_datagrams: AtomicU64,
    /// TCP reads that returned bytes.
    pub tcp_reads: AtomicU64,
    /// Whole frames read off the stream.
    pub tcp_frames: AtomicU64,
    /// Writes to the inside (TUN writes), each one packet or one coalesced superpacket.
    pub tun_writes: AtomicU64,
    /// Packets those writes carried (a superpacket counts its segments).
    pub tun_packets: AtomicU64,
    /// The inbound queue (opened packets waiting to be written).
    pub queue: QueueCounters,
}

/// Both directions' counters; held in an `Arc` by the tunnel halves.
#[derive(Debug, Default)]
pub struct Stats {
    /// Inside to outside.
    pub tx: TxCounters,
    /// Outside to inside.
    pub rx: RxCounters,
    /// The latest round-trip sample in nanoseconds (0: none yet).
    rtt_nanos: AtomicU64,
    /// The smoothed round-trip time in nanoseconds (0: none yet).
    srtt_nanos: AtomicU64,
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
    pub tx_dropped_no_session: u64,
    pub tx_rebinds: u64,
    pub rx_rejects: u64,
    pub tx_dropped_offload: u64,
    /// System calls and the packets they moved, per path, named as the server names
    /// its own (`<path>_<calls>`, `<path>_<packets>`): reads from the TUN...
    pub tun_rx_reads: u64,
    pub tun_rx_packets: u64,
    /// ...UDP sends and the datagrams they carried...
    pub udp_tx_sends: u64,
    pub udp_tx_datagrams: u64,
    /// ...UDP receives...
    pub udp_rx_recvs: u64,
    pub udp_rx_datagrams: u64,
    /// ...TCP writes and reads, in frames...
    pub tcp_tx_writes: u64,
    pub tcp_tx_frames: u64,
    pub tcp_rx_reads: u64,
    pub tcp_rx_frames: u64,
    /// ...and writes to the TUN.
    pub tun_tx_writes: u64,
    pub tun_tx_packets: u64,
    /// The outbound queue (reads waiting to be sent).
    pub tx_queue: QueueSnapshot,
    /// The inbound queue (opened packets waiting to be written).
    pub rx_queue: QueueSnapshot,
    /// The latest round-trip sample, if any probe was answered.
    pub rtt: Option<Duration>,
    /// The smoothed round-trip time (7/8 old + 1/8 new, as TCP does).
    pub srtt: Option<Duration>,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let (t, r) = (&self.tx, &self.rx);
        let nanos = |a: &AtomicU64| match a.load(Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        };
        let (rtt, srtt) = (nanos(&self.rtt_nanos), nanos(&self.srtt_nanos));
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
            tx_dropped_no_session: t.dropped_no_session.load(Relaxed),
            tx_rebinds: t.rebinds.load(Relaxed),
            rx_rejects: r.rejects.load(Relaxed),
            tx_dropped_offload: t.dropped_offload.load(Relaxed),
            tun_rx_reads: t.tun_reads.load(Relaxed),
            tun_rx_packets: t.tun_packets.load(Relaxed),
            udp_tx_sends: t.udp_sends.load(Relaxed),
            udp_tx_datagrams: t.udp_datagrams.load(Relaxed),
            udp_rx_recvs: r.udp_recvs.load(Relaxed),
            udp_rx_datagrams: r.udp_datagrams.load(Relaxed),
            tcp_tx_writes: t.tcp_writes.load(Relaxed),
            tcp_tx_frames: t.tcp_frames.load(Relaxed),
            tcp_rx_reads: r.tcp_reads.load(Relaxed),
            tcp_rx_frames: r.tcp_frames.load(Relaxed),
            tun_tx_writes: r.tun_writes.load(Relaxed),
            tun_tx_packets: r.tun_packets.load(Relaxed),
            tx_queue: t.queue.snapshot(),
            rx_queue: r.queue.snapshot(),
            rtt,
            srtt,
        }
    }

    /// Records the round-trip times after a probe's echo.
    pub(crate) fn record_rtt(&self, latest: Duration, smoothed: Duration) {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.rtt_nanos.store(nanos(latest), Relaxed);
        self.srtt_nanos.store(nanos(smoothed), Relaxed);
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
        self.tx_dropped_not_ipv4
            + self.tx_dropped_too_large
            + self.tx_send_errors
            + self.tx_dropped_no_session
            + self.tx_dropped_offload
    }

    /// Each path's system calls and what they moved, as `name value` pairs in the
    /// server's naming (`tun_rx_reads 10 tun_rx_packets 40 ...`): the exit line's tail,
    /// which the tunnel benchmark turns into packets per call.
    pub fn io_counters(&self) -> [(&'static str, u64); 12] {
        [
            ("tun_rx_reads", self.tun_rx_reads),
            ("tun_rx_packets", self.tun_rx_packets),
            ("udp_tx_sends", self.udp_tx_sends),
            ("udp_tx_datagrams", self.udp_tx_datagrams),
            ("udp_rx_recvs", self.udp_rx_recvs),
            ("udp_rx_datagrams", self.udp_rx_datagrams),
            ("tcp_tx_writes", self.tcp_tx_writes),
            ("tcp_tx_frames", self.tcp_tx_frames),
            ("tcp_rx_reads", self.tcp_rx_reads),
            ("tcp_rx_frames", self.tcp_rx_frames),
            ("tun_tx_writes", self.tun_tx_writes),
            ("tun_tx_packets", self.tun_tx_packets),
        ]
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
            ("while reconnecting", self.tx_dropped_no_session),
            ("not segmentable", self.tx_dropped_offload),
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
        if let Some(srtt) = self.srtt {
            write!(f, "; rtt {}", Millis(srtt))?;
        }
        Ok(())
    }
}

/// A duration as milliseconds with two decimals (`1.25 ms`).
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} ms", self.0.as_secs_f64() * 1e3)
    }
}

/// One line of `--stats`: what happened between two snapshots.
#[derive(Debug, Clone, Copy)]
pub struct LiveLine<'a> {
    /// The earlier snapshot.
    pub prev: &'a StatsSnapshot,
    /// The later snapshot.
    pub cur: &'a StatsSnapshot,
    /// Time between them.
    pub elapsed: Duration,
}

impl LiveLine<'_> {
    /// Mbit/s for `bytes` over the interval (0 for an empty interval).
    fn mbits(&self, bytes: u64) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            bytes as f64 * 8.0 / secs / 1e6
        } else {
            0.0
        }
    }
}

impl fmt::Display for LiveLine<'_> {
    /// `tx 12.34 Mbit/s 1043 pkts | rx 3.21 Mbit/s 800 pkts | drops 0 | rtt 1.21 ms (avg 1.30 ms)`:
    /// payload throughput and packets over the interval, drops of either
    /// direction over the interval, and the latest and smoothed RTT.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, c) = (self.prev, self.cur);
        let d = |a: u64, b: u64| b.saturating_sub(a);
        write!(
            f,
            "tx {:.2} Mbit/s {} pkts | rx {:.2} Mbit/s {} pkts | drops {}",
            self.mbits(d(p.tx_bytes, c.tx_bytes)),
            d(p.tx_packets, c.tx_packets),
            self.mbits(d(p.rx_bytes, c.rx_bytes)),
            d(p.rx_packets, c.rx_packets),
            d(
                p.tx_dropped() + p.rx_dropped(),
                c.tx_dropped() + c.rx_dropped()
            ),
        )?;
        match (c.rtt, c.srtt) {
            (Some(rtt), Some(srtt)) => write!(f, " | rtt {} (avg {})", Millis(rtt), Millis(srtt)),
            _ => f.write_str(" | rtt -"),
        }
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

    #[test]
    fn snapshot_carries_the_rtt() {
        let s = Stats::default();
        assert_eq!(s.snapshot().rtt, None);
        s.record_rtt(Duration::from_millis(3), Duration::from_millis(3));
        let snap = s.snapshot();
        assert_eq!(snap.rtt, Some(Duration::from_millis(3)));
        assert!(snap.to_string().ends_with("; rtt 3.00 ms"), "{snap}");
    }

    #[test]
    fn live_line_shows_rates_over_the_interval() {
        let prev = StatsSnapshot {
            tx_packets: 100,
            tx_bytes: 1_000_000,
            rx_packets: 50,
            rx_bytes: 0,
            rx_dropped_replay: 1,
            ..StatsSnapshot::default()
        };
        let cur = StatsSnapshot {
            tx_packets: 1100,
            // 2.5 MB in 2 s: 10 Mbit/s.
            tx_bytes: 3_500_000,
            rx_packets: 850,
            rx_bytes: 250_000,
            rx_dropped_replay: 3,
            tx_dropped_no_session: 1,
            rtt: Some(Duration::from_micros(1210)),
            srtt: Some(Duration::from_micros(1304)),
            ..StatsSnapshot::default()
        };
        let line = LiveLine {
            prev: &prev,
            cur: &cur,
            elapsed: Duration::from_secs(2),
        }
        .to_string();
        assert_eq!(
            line,
            "tx 10.00 Mbit/s 1000 pkts | rx 1.00 Mbit/s 800 pkts | drops 3 | rtt 1.21 ms (avg 1.30 ms)"
        );
        let idle = LiveLine {
            prev: &prev,
            cur: &prev,
            elapsed: Duration::ZERO,
        }
        .to_string();
        assert_eq!(
            idle,
            "tx 0.00 Mbit/s 0 pkts | rx 0.00 Mbit/s 0 pkts | drops 0 | rtt -"
        );
    }
}
