//! Zero-copy views over Ringway frames.
//!
//! Every frame starts with a one-byte type and three reserved bytes that must be
//! zero (so a later protocol version can use them and old peers reject, rather
//! than misread, its frames). Each view is a typed wrapper over any
//! `T: AsRef<[u8]>`, built with `new_checked`, which validates the length once;
//! after that the field accessors cannot panic.
//!
//! Over UDP each datagram carries exactly one frame. Over TCP frames are
//! length-prefixed ([`stream`]).

pub mod handshake;
pub mod stream;
pub mod transport;

pub use handshake::{InitFrame, RejectFrame, RejectReason, RespFrame};
pub use stream::{FrameAssembler, STREAM_PREFIX_LEN};
pub use transport::TransportFrame;

/// Why a frame was rejected before any cryptography looked at it.
///
/// Always the remote side's fault (or the network's): drop the frame and count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than its type requires.
    #[error("frame truncated")]
    Truncated,
    /// Longer than its type allows (trailing bytes, or over the size limit).
    #[error("frame too long")]
    TooLong,
    /// The type byte names no frame we know.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A reserved byte was not zero.
    #[error("reserved bits set")]
    Reserved,
    /// A field holds a value its type does not allow.
    #[error("invalid field value")]
    InvalidField,
}

/// The frame kinds, as carried in the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Client to server: first handshake message.
    HandshakeInit = 1,
    /// Server to client: second handshake message carrying the session config.
    HandshakeResp = 2,
    /// An encrypted IP packet.
    Data = 3,
    /// An encrypted empty frame proving liveness.
    Keepalive = 4,
    /// An encrypted empty frame ending the session.
    Disconnect = 5,
    /// Server to client: why an initiation was refused (unauthenticated hint).
    HandshakeReject = 6,
}

impl FrameType {
    /// Parses a type byte.
    pub fn from_u8(b: u8) -> Result<Self, Error> {
        Ok(match b {
            1 => FrameType::HandshakeInit,
            2 => FrameType::HandshakeResp,
            3 => FrameType::Data,
            4 => FrameType::Keepalive,
            5 => FrameType::Disconnect,
            6 => FrameType::HandshakeReject,
            other => return Err(Error::UnknownType(other)),
        })
    }

    /// Whether this type uses the transport header and the session's AEAD.
    pub fn is_transport(self) -> bool {
        matches!(
            self,
            FrameType::Data | FrameType::Keepalive | FrameType::Disconnect
        )
    }
}

/// Reads the type of a frame without validating the rest of it, so a driver can
/// dispatch (handshake vs. transport) before choosing a view.
pub fn frame_type(frame: &[u8]) -> Result<FrameType, Error> {
    let b = *frame.first().ok_or(Error::Truncated)?;
    FrameType::from_u8(b)
}

/// Checks the four-byte common prefix: type as expected, reserved bytes zero.
fn check_prefix(frame: &[u8], expected: FrameType) -> Result<(), Error> {
    let prefix = frame.get(..4).ok_or(Error::Truncated)?;
    if FrameType::from_u8(prefix[0])? != expected {
        return Err(Error::InvalidField);
    }
    if prefix[1..4] != [0, 0, 0] {
        return Err(Error::Reserved);
    }
    Ok(())
}

/// Reads a big-endian u32 at `at`; callers have checked the length.
fn be_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Reads a big-endian u64 at `at`; callers have checked the length.
fn be_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_type_round_trips() {
        for t in [
            FrameType::HandshakeInit,
            FrameType::HandshakeResp,
            FrameType::Data,
            FrameType::Keepalive,
            FrameType::Disconnect,
            FrameType::HandshakeReject,
        ] {
            assert_eq!(FrameType::from_u8(t as u8), Ok(t));
        }
        assert_eq!(FrameType::from_u8(0), Err(Error::UnknownType(0)));
        assert_eq!(frame_type(&[]), Err(Error::Truncated));
    }

    #[test]
    fn prefix_rejects_reserved_bits() {
        assert_eq!(check_prefix(&[3, 0, 0, 0], FrameType::Data), Ok(()));
        assert_eq!(
            check_prefix(&[3, 0, 1, 0], FrameType::Data),
            Err(Error::Reserved)
        );
        assert_eq!(
            check_prefix(&[4, 0, 0, 0], FrameType::Data),
            Err(Error::InvalidField)
        );
        assert_eq!(
            check_prefix(&[3, 0], FrameType::Data),
            Err(Error::Truncated)
        );
    }
}
