//! Why a TCP connection was closed: one name per reason and its counter, for both backends.

use crate::metrics::IoCounters;

/// Why a connection was closed, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// It sent bytes that are not Ringway frames.
    Garbage,
    /// No handshake completed in time.
    HandshakeTimeout,
    /// The peer closed it.
    ByPeer,
    /// A socket error.
    Error,
    /// Its session ended.
    SessionEnd,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// The server is stopping (not counted).
    Shutdown,
}

impl CloseReason {
    /// Counts a close for this reason.
    pub fn count(self, counters: &mut IoCounters) {
        let counter = match self {
            CloseReason::Garbage => &mut counters.tcp_closed_garbage,
            CloseReason::HandshakeTimeout => &mut counters.tcp_closed_handshake_timeout,
            CloseReason::ByPeer => &mut counters.tcp_closed_by_peer,
            CloseReason::Error => &mut counters.tcp_closed_error,
            CloseReason::SessionEnd => &mut counters.tcp_closed_session_end,
            CloseReason::Idle => &mut counters.tcp_closed_idle,
            CloseReason::Shutdown => return,
        };
        *counter += 1;
    }
}
