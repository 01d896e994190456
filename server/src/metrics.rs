//! Counters for everything the server drops or does, so an operator can see why
//! traffic is missing without turning on debug logs.
//!
//! Plain integers: the data path is one thread, so no atomics are needed.

use std::fmt;

/// What the session layer did with packets and frames, and why it dropped any.
#[derive(Debug, Default, Clone)]
pub struct SessionCounters {
    /// IP packets read from the TUN and sent to a peer.
    pub inside_rx_packets: u64,
    /// Bytes of those packets.
    pub inside_rx_bytes: u64,
    /// Decrypted packets written to the TUN.
    pub inside_tx_packets: u64,
    /// Bytes of those packets.
    pub inside_tx_bytes: u64,
    /// Datagrams received from the network.
    pub outside_rx_frames: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Sessions removed for idleness.
    pub sessions_expired: u64,
    /// Sessions ended by the client.
    pub sessions_disconnected: u64,
    /// TUN packets that were not IPv4 or had no session for their destination.
    pub drop_no_route: u64,
    /// Frames that failed to parse.
    pub drop_malformed: u64,
    /// Transport frames with an unknown session id.
    pub drop_unknown_session: u64,
    /// Transport frames whose tag did not verify.
    pub drop_auth: u64,
    /// Replayed or too-old counters.
    pub drop_replay: u64,
    /// Inner packets whose source was not the session's address.
    pub drop_bad_source: u64,
    /// Initiations failing mac1 or Noise.
    pub drop_handshake_invalid: u64,
    /// Initiations from keys not in the peer list.
    pub drop_unknown_peer: u64,
    /// Initiations whose timestamp was not newer than the last one.
    pub drop_handshake_replay: u64,
    /// Initiations refused for lack of a free inner address.
    pub drop_pool_exhausted: u64,
    /// Packets too large to seal.
    pub drop_oversize: u64,
}

impl SessionCounters {
    /// Sum of all drop counters.
    pub fn drops(&self) -> u64 {
        self.drop_no_route
            + self.drop_malformed
            + self.drop_unknown_session
            + self.drop_auth
            + self.drop_replay
            + self.drop_bad_source
            + self.drop_handshake_invalid
            + self.drop_unknown_peer
            + self.drop_handshake_replay
            + self.drop_pool_exhausted
            + self.drop_oversize
    }
}

impl fmt::Display for SessionCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inside_rx {} pkts/{} B, inside_tx {} pkts/{} B, outside_rx {}, handshakes {}, \
             expired {}, disconnected {}, drops: no_route {} malformed {} unknown_session {} auth {} \
             replay {} bad_source {} hs_invalid {} unknown_peer {} hs_replay {} pool_exhausted {} \
             oversize {}",
            self.inside_rx_packets,
            self.inside_rx_bytes,
            self.inside_tx_packets,
            self.inside_tx_bytes,
            self.outside_rx_frames,
            self.handshakes,
            self.sessions_expired,
            self.sessions_disconnected,
            self.drop_no_route,
            self.drop_malformed,
            self.drop_unknown_session,
            self.drop_auth,
            self.drop_replay,
            self.drop_bad_source,
            self.drop_handshake_invalid,
            self.drop_unknown_peer,
            self.drop_handshake_replay,
            self.drop_pool_exhausted,
            self.drop_oversize,
        )
    }
}

/// What the I/O driver saw: calls and packets per path, kernel errors, TCP connection life
/// cycles.
///
/// Each path counts its system calls (ring operations that completed with data) and the
/// inner packets or frames they moved, as `<path>_<calls>` / `<path>_<packets>`: the ratio
/// is what segmentation offload and batching buy (the tunnel benchmark prints it).
#[derive(Debug, Default, Clone)]
pub struct IoCounters {
    /// TUN reads that returned a packet or superpacket.
    pub tun_rx_reads: u64,
    /// Inner packets those reads carried (a superpacket counts its segments).
    pub tun_rx_packets: u64,
    /// Times the multishot TUN read was armed (once at start; again each time the kernel
    /// ended it). 0: single reads.
    pub tun_rx_multishot_arms: u64,
    /// Reads that were superpackets and were split.
    pub tun_rx_superpackets: u64,
    /// TUN writes that completed.
    pub tun_tx_writes: u64,
    /// Inner packets those writes carried (a coalesced superpacket counts its segments).
    pub tun_tx_packets: u64,
    /// Writes that were coalesced superpackets.
    pub tun_tx_superpackets: u64,
    /// UDP sends that completed (one `sendmsg`, one or many datagrams).
    pub udp_tx_sends: u64,
    /// Datagrams those sends carried.
    pub udp_tx_datagrams: u64,
    /// UDP receives that returned data (one datagram, or many with `UDP_GRO`).
    pub udp_rx_recvs: u64,
    /// Datagrams those receives carried.
    pub udp_rx_datagrams: u64,
    /// Times the multishot UDP receive was armed (once at start; again each time the
    /// kernel ended it, e.g. finding the buffer ring empty). 0: single receives.
    pub udp_rx_multishot_arms: u64,
    /// TCP sends that completed with bytes sent.
    pub tcp_tx_sends: u64,
    /// Frames queued on TCP connections.
    pub tcp_tx_frames: u64,
    /// TCP receives that returned bytes.
    pub tcp_rx_recvs: u64,
    /// Complete frames those receives delivered.
    pub tcp_rx_frames: u64,
    /// Packets dropped because every tx slot was busy.
    pub drop_tx_full: u64,
    /// Frames dropped because a TCP connection's send queue was full.
    pub drop_tcp_queue_full: u64,
    /// UDP datagrams larger than a slot buffer.
    pub drop_truncated: u64,
    /// TUN reads whose virtio_net_hdr or superpacket could not be used (bad header, a GSO
    /// type or packet shape the segmenter refuses): dropped.
    pub drop_offload: u64,
    /// UDP GSO sends the kernel refused (the outgoing device cannot checksum): GSO is then
    /// turned off and segments go out one datagram per send.
    pub gso_refused: u64,
    /// Failed reads, sends and writes reported by the kernel.
    pub io_errors: u64,
    /// TUN reads that completed with EAGAIN (a wakeup with no packet).
    pub eagain: u64,
    /// Completions for a request no longer in flight (a late completion of
    /// an older arming): ignored.
    pub stale_completions: u64,
    /// Completions whose `user_data` we never produced: counted and retired.
    pub unknown_completions: u64,
    /// TCP connections accepted.
    pub tcp_accepted: u64,
    /// TCP connections refused at the connection cap.
    pub tcp_refused: u64,
    /// TCP connections refused because their source address held its share
    /// (`tcp.max_connections_per_source`).
    pub tcp_refused_per_source: u64,
    /// Connections closed for sending bytes that are not Ringway frames.
    pub tcp_closed_garbage: u64,
    /// Connections closed for not completing a handshake in time.
    pub tcp_closed_handshake_timeout: u64,
    /// Connections the peer closed.
    pub tcp_closed_by_peer: u64,
    /// Connections closed after a socket error.
    pub tcp_closed_error: u64,
    /// Connections closed because their session ended.
    pub tcp_closed_session_end: u64,
    /// Connections closed after receiving nothing for the idle timeout.
    pub tcp_closed_idle: u64,
    /// The flow queue in front of the TUN writes (packets from peers), with
    /// `fair_queue` on.
    pub fq_inside: FqCounters,
    /// The flow queue in front of the sends to peers (packets from the TUN), with
    /// `fair_queue` on.
    pub fq_outside: FqCounters,
}

/// What one direction's flow queue did: a copy of its `ringway_fq::Stats`, refreshed by
/// the driver each round. All zero while the queue is off.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FqCounters {
    /// Packets (or superpackets) queued.
    pub enqueued: u64,
    /// Packets that left the queue to be written or sent.
    pub dequeued: u64,
    /// Of those, the ones from a sparse flow (ping, ACKs, a flow's first quantum): the
    /// ones that overtook a bulk backlog.
    pub sparse: u64,
    /// Packets CoDel dropped from the head of a flow with a standing queue.
    pub dropped_codel: u64,
    /// Packets dropped from the fattest flow because the queue was full.
    pub dropped_overflow: u64,
    /// Packets CE-marked instead of dropped.
    pub marked_ce: u64,
    /// Most packets queued at once.
    pub peak: u64,
    /// Most bytes queued at once.
    pub peak_bytes: u64,
}

impl FqCounters {
    /// Takes the queue's current numbers.
    pub fn update(&mut self, s: &ringway_fq::Stats) {
        *self = FqCounters {
            enqueued: s.enqueued,
            dequeued: s.dequeued,
            sparse: s.sparse_dequeues,
            dropped_codel: s.dropped_codel,
            dropped_overflow: s.dropped_overflow,
            marked_ce: s.marked_ce,
            peak: s.peak_items,
            peak_bytes: s.peak_bytes,
        };
    }

    /// Writes the counters as `name value` pairs, each name behind `prefix`.
    fn write(&self, f: &mut fmt::Formatter<'_>, prefix: &str) -> fmt::Result {
        write!(
            f,
            "{prefix}_enqueued {} {prefix}_dequeued {} {prefix}_sparse {} \
             {prefix}_dropped_codel {} {prefix}_dropped_overflow {} {prefix}_marked_ce {} \
             {prefix}_peak {} {prefix}_peak_bytes {}",
            self.enqueued,
            self.dequeued,
            self.sparse,
            self.dropped_codel,
            self.dropped_overflow,
            self.marked_ce,
            self.peak,
            self.peak_bytes,
        )
    }
}

impl fmt::Display for IoCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tun_rx_reads {} tun_rx_packets {} tun_rx_superpackets {} tun_rx_multishot_arms {} \
             tun_tx_writes {} \
             tun_tx_packets {} tun_tx_superpackets {} udp_tx_sends {} udp_tx_datagrams {} \
             udp_rx_recvs {} udp_rx_datagrams {} udp_rx_multishot_arms {} tcp_tx_sends {} tcp_tx_frames {} tcp_rx_recvs {} \
             tcp_rx_frames {}; tx_full {} tcp_queue_full {} truncated {} offload_dropped {} \
             gso_refused {} io_errors {} eagain {} stale {} unknown {}; tcp_accepted {} \
             tcp_refused {} tcp_refused_per_source {} tcp_closed_garbage {} tcp_closed_handshake_timeout {} \
             tcp_closed_by_peer {} tcp_closed_error {} tcp_closed_session_end {} tcp_closed_idle {}",
            self.tun_rx_reads,
            self.tun_rx_packets,
            self.tun_rx_superpackets,
            self.tun_rx_multishot_arms,
            self.tun_tx_writes,
            self.tun_tx_packets,
            self.tun_tx_superpackets,
            self.udp_tx_sends,
            self.udp_tx_datagrams,
            self.udp_rx_recvs,
            self.udp_rx_datagrams,
            self.udp_rx_multishot_arms,
            self.tcp_tx_sends,
            self.tcp_tx_frames,
            self.tcp_rx_recvs,
            self.tcp_rx_frames,
            self.drop_tx_full,
            self.drop_tcp_queue_full,
            self.drop_truncated,
            self.drop_offload,
            self.gso_refused,
            self.io_errors,
            self.eagain,
            self.stale_completions,
            self.unknown_completions,
            self.tcp_accepted,
            self.tcp_refused,
            self.tcp_refused_per_source,
            self.tcp_closed_garbage,
            self.tcp_closed_handshake_timeout,
            self.tcp_closed_by_peer,
            self.tcp_closed_error,
            self.tcp_closed_session_end,
            self.tcp_closed_idle,
        )?;
        f.write_str("; ")?;
        self.fq_inside.write(f, "fq_inside")?;
        f.write_str(" ")?;
        self.fq_outside.write(f, "fq_outside")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_shows_calls_and_packets() {
        let c = IoCounters {
            tun_rx_reads: 2,
            tun_rx_packets: 90,
            udp_tx_sends: 2,
            udp_tx_datagrams: 90,
            ..IoCounters::default()
        };
        let line = c.to_string();
        for pair in [
            "tun_rx_reads 2 tun_rx_packets 90",
            "udp_tx_sends 2 udp_tx_datagrams 90",
            "udp_rx_recvs 0 udp_rx_datagrams 0",
            "tun_tx_writes 0",
            "tcp_tx_sends 0 tcp_tx_frames 0 tcp_rx_recvs 0 tcp_rx_frames 0",
            "fq_inside_enqueued 0 fq_inside_dequeued 0 fq_inside_sparse 0",
            "fq_outside_dropped_codel 0 fq_outside_dropped_overflow 0 fq_outside_marked_ce 0",
        ] {
            assert!(line.contains(pair), "{pair:?} missing from {line}");
        }
    }
}
