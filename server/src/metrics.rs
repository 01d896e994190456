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

/// What the I/O driver saw: sends, kernel errors, TCP connection life cycles.
#[derive(Debug, Default, Clone)]
pub struct IoCounters {
    /// UDP datagrams sent.
    pub udp_tx_frames: u64,
    /// Frames sent on TCP connections.
    pub tcp_tx_frames: u64,
    /// Packets dropped because every tx slot was busy.
    pub drop_tx_full: u64,
    /// Frames dropped because a TCP connection's send queue was full.
    pub drop_tcp_queue_full: u64,
    /// UDP datagrams larger than a slot buffer.
    pub drop_truncated: u64,
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
}

impl fmt::Display for IoCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "udp_tx {} tcp_tx {} tx_full {} tcp_queue_full {} truncated {} io_errors {} eagain {} \
             stale {} unknown {}; tcp_accepted {} tcp_refused {} tcp_closed_garbage {} tcp_closed_handshake_timeout {} \
             tcp_closed_by_peer {} tcp_closed_error {} tcp_closed_session_end {} tcp_closed_idle {}",
            self.udp_tx_frames,
            self.tcp_tx_frames,
            self.drop_tx_full,
            self.drop_tcp_queue_full,
            self.drop_truncated,
            self.io_errors,
            self.eagain,
            self.stale_completions,
            self.unknown_completions,
            self.tcp_accepted,
            self.tcp_refused,
            self.tcp_closed_garbage,
            self.tcp_closed_handshake_timeout,
            self.tcp_closed_by_peer,
            self.tcp_closed_error,
            self.tcp_closed_session_end,
            self.tcp_closed_idle,
        )
    }
}
