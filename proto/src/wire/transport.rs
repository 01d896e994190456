//! Transport frames: data, keepalive and disconnect, all sealed with the session AEAD.
//!
//! ```text
//!  0       1       2       3       4                               8
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! | type  |   reserved (zero)     |          session id           |
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! |                        counter (u64 BE)                       |
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! |  ciphertext (payload; disconnect: empty; keepalive: empty, or |
//! |  an 8-byte probe id the server echoes, for RTT)               |
//! |                          ...                                  |
//! +---------------------------------------------------------------+
//! |                    AEAD tag (16 bytes)                        |
//! +---------------------------------------------------------------+
//! ```
//!
//! The 16-byte header is the AEAD's associated data, so the type, session id and
//! counter are authenticated though sent in clear. The counter is the AEAD nonce
//! and the replay-window index.

use super::{be_u32, be_u64, check_prefix, Error, FrameType};
use std::ops::Range;

/// Bytes of header in front of the ciphertext; drivers leave this much headroom
/// in front of a packet so sealing needs no copy.
pub const HEADER_LEN: usize = 16;
/// Bytes of AEAD tag after the ciphertext.
pub const TAG_LEN: usize = 16;
/// Header plus tag: what a transport frame adds to its payload.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The largest transport frame: a payload this large still fits the TCP length prefix.
pub const MAX_FRAME_LEN: usize = u16::MAX as usize;
/// The largest payload a transport frame can carry.
pub const MAX_PAYLOAD_LEN: usize = MAX_FRAME_LEN - OVERHEAD;
/// Payload of a keepalive that is a probe (or its echo): the probe id.
pub const PROBE_LEN: usize = 8;

const SESSION_ID: Range<usize> = 4..8;
const COUNTER: Range<usize> = 8..16;

/// A view over a transport frame.
#[derive(Debug, Clone, Copy)]
pub struct TransportFrame<T> {
    buf: T,
    kind: FrameType,
}

impl<T: AsRef<[u8]>> TransportFrame<T> {
    /// Validates type, reserved bytes and length limits.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < OVERHEAD {
            return Err(Error::Truncated);
        }
        if b.len() > MAX_FRAME_LEN {
            return Err(Error::TooLong);
        }
        let kind = super::frame_type(b)?;
        if !kind.is_transport() {
            return Err(Error::InvalidField);
        }
        check_prefix(b, kind)?;
        if !payload_allowed(kind, b.len() - OVERHEAD) {
            // Anything else in a control frame is garbage.
            return Err(Error::TooLong);
        }
        Ok(TransportFrame { buf, kind })
    }

    /// Data, keepalive or disconnect.
    pub fn kind(&self) -> FrameType {
        self.kind
    }

    /// The receiver's session id, chosen by the server at handshake.
    pub fn session_id(&self) -> u32 {
        be_u32(self.buf.as_ref(), SESSION_ID.start)
    }

    /// The sender's per-direction packet counter.
    pub fn counter(&self) -> u64 {
        be_u64(self.buf.as_ref(), COUNTER.start)
    }

    /// Total frame length.
    pub fn len(&self) -> usize {
        self.buf.as_ref().len()
    }

    /// Never true: a checked frame holds at least a header and a tag.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The frame's bytes.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

/// Whether a frame of `kind` may carry `payload_len` bytes of payload: a data
/// frame up to [`MAX_PAYLOAD_LEN`], a keepalive none or a probe id
/// ([`PROBE_LEN`]), a disconnect none, and no other kind is a transport frame.
/// Parsing and sealing both ask this one rule.
pub fn payload_allowed(kind: FrameType, payload_len: usize) -> bool {
    match kind {
        FrameType::Data => payload_len <= MAX_PAYLOAD_LEN,
        FrameType::Keepalive => payload_len == 0 || payload_len == PROBE_LEN,
        FrameType::Disconnect => payload_len == 0,
        FrameType::HandshakeInit | FrameType::HandshakeResp | FrameType::HandshakeReject => false,
    }
}

/// Writes a transport header into the first [`HEADER_LEN`] bytes of `buf`.
///
/// Returns `Err(Truncated)` if `buf` is shorter than a header.
pub fn emit_header(
    buf: &mut [u8],
    kind: FrameType,
    session_id: u32,
    counter: u64,
) -> Result<(), Error> {
    let h = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
    h[0] = kind as u8;
    h[1..4].fill(0);
    h[SESSION_ID].copy_from_slice(&session_id.to_be_bytes());
    h[COUNTER].copy_from_slice(&counter.to_be_bytes());
    Ok(())
}

/// Reads the session id of a frame that looks like a transport frame, for
/// demultiplexing before the full check; `None` if it cannot be one.
pub fn peek_session_id(frame: &[u8]) -> Option<u32> {
    if frame.len() < OVERHEAD || !super::frame_type(frame).ok()?.is_transport() {
        return None;
    }
    Some(be_u32(frame, SESSION_ID.start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut buf = [0u8; OVERHEAD + 5];
        emit_header(&mut buf, FrameType::Data, 0xdead_beef, 42).unwrap();
        let f = TransportFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.kind(), FrameType::Data);
        assert_eq!(f.session_id(), 0xdead_beef);
        assert_eq!(f.counter(), 42);
        assert_eq!(peek_session_id(&buf), Some(0xdead_beef));
    }

    #[test]
    fn keepalive_is_empty_or_a_probe_and_disconnect_empty() {
        let mut buf = [0u8; OVERHEAD + PROBE_LEN];
        emit_header(&mut buf, FrameType::Keepalive, 1, 1).unwrap();
        assert!(TransportFrame::new_checked(&buf[..]).is_ok());
        assert!(TransportFrame::new_checked(&buf[..OVERHEAD]).is_ok());
        assert_eq!(
            TransportFrame::new_checked(&buf[..OVERHEAD + 1]).unwrap_err(),
            Error::TooLong
        );
        emit_header(&mut buf, FrameType::Disconnect, 1, 1).unwrap();
        assert_eq!(
            TransportFrame::new_checked(&buf[..]).unwrap_err(),
            Error::TooLong
        );
    }

    #[test]
    fn rejects_short_long_and_handshake_types() {
        assert_eq!(
            TransportFrame::new_checked(&[3u8; OVERHEAD - 1][..]).unwrap_err(),
            Error::Truncated
        );
        let big = vec![0u8; MAX_FRAME_LEN + 1];
        assert_eq!(
            TransportFrame::new_checked(&big[..]).unwrap_err(),
            Error::TooLong
        );
        let mut hs = [0u8; OVERHEAD];
        hs[0] = FrameType::HandshakeInit as u8;
        assert_eq!(
            TransportFrame::new_checked(&hs[..]).unwrap_err(),
            Error::InvalidField
        );
        assert_eq!(peek_session_id(&hs), None);
    }

    #[test]
    fn emit_header_needs_room() {
        let mut buf = [0u8; HEADER_LEN - 1];
        assert_eq!(
            emit_header(&mut buf, FrameType::Data, 1, 1),
            Err(Error::Truncated)
        );
    }
}
