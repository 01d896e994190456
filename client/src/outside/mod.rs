//! The outside: the network path to the server.
//!
//! [`udp`] carries one frame per datagram and is what `ringway up` uses today. A
//! TCP transport (for networks that block UDP) would sit next to it and reuse
//! [`handshake`] and the types here; only the framing and retransmission differ.

pub mod handshake;
pub mod udp;

use std::io;
use std::ops::Range;

use ringway_proto::session::SealError;

pub use handshake::ConnectError;
pub use udp::{ConnectOptions, Tunnel, TunnelReceiver, TunnelSender};

/// What a frame from the server turned out to be, once it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A data frame: the IP packet is at this range of the receive buffer.
    Packet(Range<usize>),
    /// The server is alive and has nothing to send.
    Keepalive,
    /// The server ended the session.
    Disconnected,
}

/// Why a frame could not be sent.
///
/// Transient socket errors never get here: the sender counts and drops them, as
/// a router drops a packet it has no route for.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The session refused to seal: an oversized packet, a buffer without room
    /// for header and tag, or a used-up counter.
    #[error("cannot seal frame: {0}")]
    Seal(#[from] SealError),
    /// The socket failed in a way that will not pass.
    #[error("cannot send to the server: {0}")]
    Io(#[from] io::Error),
}

impl SendError {
    /// Whether the tunnel cannot go on: everything but a single oversized packet.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, SendError::Seal(SealError::PayloadTooLarge))
    }
}

/// Socket errors that say something about one datagram or the path right now,
/// not about the socket: the next datagram may well go through.
///
/// A connected UDP socket reports an ICMP error from an earlier send as
/// `ConnectionRefused` on a later call; routes and addresses come and go while
/// a laptop changes networks; `ENOBUFS` is a full queue.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | NetworkUnreachable
            | HostUnreachable
            | NetworkDown
            | AddrNotAvailable
            | PermissionDenied
            | WouldBlock
            | Interrupted
    ) || is_no_buffer_space(e)
}

#[cfg(target_os = "linux")]
fn is_no_buffer_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

#[cfg(not(target_os = "linux"))]
fn is_no_buffer_space(_: &io::Error) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        assert!(is_transient(&io::ErrorKind::ConnectionRefused.into()));
        assert!(is_transient(&io::ErrorKind::NetworkUnreachable.into()));
        assert!(!is_transient(&io::ErrorKind::InvalidInput.into()));
        #[cfg(target_os = "linux")]
        assert!(is_transient(&io::Error::from_raw_os_error(libc::ENOBUFS)));
    }

    #[test]
    fn only_oversized_packets_are_survivable() {
        assert!(!SendError::Seal(SealError::PayloadTooLarge).is_fatal());
        assert!(SendError::Seal(SealError::CounterExhausted).is_fatal());
        assert!(SendError::Io(io::ErrorKind::InvalidInput.into()).is_fatal());
    }
}
