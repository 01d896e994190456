//! Handshake frames: the two messages of Noise IKpsk2 with Ringway's envelope.
//!
//! Initiation (client to server), 152 bytes:
//!
//! ```text
//!  0       1       2       3       4                               8
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! | type=1|   reserved (zero)     |  sender index (client-chosen) |
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! |  Noise message 1 (112 bytes): e, encrypted s, encrypted       |
//! |  payload (version, cipher preference, timestamp)              |
//! +---------------------------------------------------------------+
//! |  mac1 (32 bytes): HMAC keyed by the server public key          |
//! +---------------------------------------------------------------+
//! ```
//!
//! mac1 lets the server drop initiations from anyone who does not know its public
//! key with one HMAC, before it spends two Diffie-Hellman operations on them.
//!
//! Response (server to client), 80 bytes:
//!
//! ```text
//!  0       1       2       3       4                               8
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! | type=2|   reserved (zero)     |  receiver index (echoed)      |
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! |  session id (server-chosen)   |                               |
//! +-------+-------+-------+-------+                               |
//! |  Noise message 2 (68 bytes): e, encrypted session config      |
//! +---------------------------------------------------------------+
//! ```
//!
//! The receiver index lets a client ignore stray responses without touching
//! its handshake state; the session id is what every later transport frame
//! in both directions carries.
//!
//! Reject (server to client), 12 bytes:
//!
//! ```text
//!  0       1       2       3       4                               8
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! | type=6|   reserved (zero)     |  receiver index (echoed)      |
//! +-------+-------+-------+-------+-------+-------+-------+-------+
//! | reason|   reserved (zero)     |
//! +-------+-------+-------+-------+
//! ```
//!
//! A reject is not authenticated (the server cannot prove anything to a client
//! that has its key wrong), so clients treat it as a hint that explains a
//! failure, never as a reason to stop early: a genuine response still wins. It
//! is smaller than the initiation that caused it, so it cannot amplify.

use super::{be_u32, check_prefix, Error, FrameType};
use std::ops::Range;

/// Length of the initiator's encrypted payload, in clear.
pub const INIT_PAYLOAD_LEN: usize = 16;
/// Length of the responder's encrypted payload (the session config), in clear.
pub const RESP_PAYLOAD_LEN: usize = 20;
/// Noise message 1: e (32) + s (32 + tag) + payload (+ tag).
pub const INIT_NOISE_LEN: usize = 32 + 32 + 16 + INIT_PAYLOAD_LEN + 16;
/// Noise message 2: e (32) + payload (+ tag).
pub const RESP_NOISE_LEN: usize = 32 + RESP_PAYLOAD_LEN + 16;
/// Length of the keyed MAC that ends an initiation.
pub const MAC_LEN: usize = 32;
/// Total initiation frame length.
pub const INIT_LEN: usize = 8 + INIT_NOISE_LEN + MAC_LEN;
/// Total response frame length.
pub const RESP_LEN: usize = 12 + RESP_NOISE_LEN;

/// Total reject frame length.
pub const REJECT_LEN: usize = 12;

const SENDER_INDEX: usize = 4;
const INIT_NOISE: Range<usize> = 8..8 + INIT_NOISE_LEN;
const RECEIVER_INDEX: usize = 4;
const SESSION_ID: usize = 8;
const RESP_NOISE: Range<usize> = 12..RESP_LEN;

/// A view over a handshake initiation.
#[derive(Debug, Clone, Copy)]
pub struct InitFrame<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> InitFrame<T> {
    /// Validates type, reserved bytes and the exact length.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        check_prefix(b, FrameType::HandshakeInit)?;
        match b.len() {
            INIT_LEN => Ok(InitFrame { buf }),
            n if n < INIT_LEN => Err(Error::Truncated),
            _ => Err(Error::TooLong),
        }
    }

    /// The index the client will recognise the response by.
    pub fn sender_index(&self) -> u32 {
        be_u32(self.buf.as_ref(), SENDER_INDEX)
    }

    /// Noise message 1.
    pub fn noise(&self) -> &[u8] {
        &self.buf.as_ref()[INIT_NOISE]
    }

    /// Everything mac1 covers.
    pub fn mac_input(&self) -> &[u8] {
        &self.buf.as_ref()[..INIT_LEN - MAC_LEN]
    }

    /// The trailing mac1.
    pub fn mac(&self) -> &[u8] {
        &self.buf.as_ref()[INIT_LEN - MAC_LEN..]
    }
}

/// Writes the envelope of an initiation around a Noise message already placed
/// at [`init_noise_mut`]; mac1 is filled in by the caller.
pub fn emit_init_header(buf: &mut [u8; INIT_LEN], sender_index: u32) {
    buf[0] = FrameType::HandshakeInit as u8;
    buf[1..4].fill(0);
    buf[SENDER_INDEX..SENDER_INDEX + 4].copy_from_slice(&sender_index.to_be_bytes());
}

/// Where Noise message 1 goes in an initiation buffer.
pub fn init_noise_mut(buf: &mut [u8; INIT_LEN]) -> &mut [u8] {
    &mut buf[INIT_NOISE]
}

/// Where mac1 goes in an initiation buffer.
pub fn init_mac_mut(buf: &mut [u8; INIT_LEN]) -> &mut [u8] {
    &mut buf[INIT_LEN - MAC_LEN..]
}

/// A view over a handshake response.
#[derive(Debug, Clone, Copy)]
pub struct RespFrame<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> RespFrame<T> {
    /// Validates type, reserved bytes and the exact length.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        check_prefix(b, FrameType::HandshakeResp)?;
        match b.len() {
            RESP_LEN => Ok(RespFrame { buf }),
            n if n < RESP_LEN => Err(Error::Truncated),
            _ => Err(Error::TooLong),
        }
    }

    /// The client's sender index, echoed.
    pub fn receiver_index(&self) -> u32 {
        be_u32(self.buf.as_ref(), RECEIVER_INDEX)
    }

    /// The session id the server chose.
    pub fn session_id(&self) -> u32 {
        be_u32(self.buf.as_ref(), SESSION_ID)
    }

    /// Noise message 2.
    pub fn noise(&self) -> &[u8] {
        &self.buf.as_ref()[RESP_NOISE]
    }
}

/// Writes a response's envelope; the Noise message goes at [`resp_noise_mut`].
pub fn emit_resp_header(buf: &mut [u8; RESP_LEN], receiver_index: u32, session_id: u32) {
    buf[0] = FrameType::HandshakeResp as u8;
    buf[1..4].fill(0);
    buf[RECEIVER_INDEX..RECEIVER_INDEX + 4].copy_from_slice(&receiver_index.to_be_bytes());
    buf[SESSION_ID..SESSION_ID + 4].copy_from_slice(&session_id.to_be_bytes());
}

/// Where Noise message 2 goes in a response buffer.
pub fn resp_noise_mut(buf: &mut [u8; RESP_LEN]) -> &mut [u8] {
    &mut buf[RESP_NOISE]
}

/// Why the server refused an initiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RejectReason {
    /// mac1 did not verify: the client's copy of the server public key is wrong.
    UnknownServerKey = 1,
    /// The client's static key is not in the server's peer list.
    NotAuthorised = 2,
}

impl RejectReason {
    fn from_u8(b: u8) -> Result<Self, Error> {
        match b {
            1 => Ok(RejectReason::UnknownServerKey),
            2 => Ok(RejectReason::NotAuthorised),
            _ => Err(Error::InvalidField),
        }
    }
}

/// A view over a reject.
#[derive(Debug, Clone, Copy)]
pub struct RejectFrame<T> {
    buf: T,
    reason: RejectReason,
}

impl<T: AsRef<[u8]>> RejectFrame<T> {
    /// Validates type, reserved bytes, length and reason.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        check_prefix(b, FrameType::HandshakeReject)?;
        match b.len() {
            REJECT_LEN => {}
            n if n < REJECT_LEN => return Err(Error::Truncated),
            _ => return Err(Error::TooLong),
        }
        if b[9..12] != [0, 0, 0] {
            return Err(Error::Reserved);
        }
        let reason = RejectReason::from_u8(b[8])?;
        Ok(RejectFrame { buf, reason })
    }

    /// The client's sender index, echoed.
    pub fn receiver_index(&self) -> u32 {
        be_u32(self.buf.as_ref(), RECEIVER_INDEX)
    }

    /// Why the initiation was refused.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }
}

/// Writes a reject answering the initiation from `receiver_index`.
pub fn emit_reject(receiver_index: u32, reason: RejectReason) -> [u8; REJECT_LEN] {
    let mut b = [0u8; REJECT_LEN];
    b[0] = FrameType::HandshakeReject as u8;
    b[RECEIVER_INDEX..RECEIVER_INDEX + 4].copy_from_slice(&receiver_index.to_be_bytes());
    b[8] = reason as u8;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_envelope_round_trip() {
        let mut buf = [0u8; INIT_LEN];
        emit_init_header(&mut buf, 0x0102_0304);
        init_noise_mut(&mut buf).fill(0xaa);
        init_mac_mut(&mut buf).fill(0xbb);
        let f = InitFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.sender_index(), 0x0102_0304);
        assert!(f.noise().iter().all(|&b| b == 0xaa));
        assert_eq!(f.noise().len(), INIT_NOISE_LEN);
        assert!(f.mac().iter().all(|&b| b == 0xbb));
        assert_eq!(f.mac_input().len() + MAC_LEN, INIT_LEN);
    }

    #[test]
    fn resp_envelope_round_trip() {
        let mut buf = [0u8; RESP_LEN];
        emit_resp_header(&mut buf, 7, 9);
        let f = RespFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.receiver_index(), 7);
        assert_eq!(f.session_id(), 9);
        assert_eq!(f.noise().len(), RESP_NOISE_LEN);
    }

    #[test]
    fn reject_round_trip_and_checks() {
        let b = emit_reject(0xabcd, RejectReason::NotAuthorised);
        assert_eq!(b, [6, 0, 0, 0, 0, 0, 0xab, 0xcd, 2, 0, 0, 0]);
        let f = RejectFrame::new_checked(&b[..]).unwrap();
        assert_eq!(f.receiver_index(), 0xabcd);
        assert_eq!(f.reason(), RejectReason::NotAuthorised);
        let mut bad = b;
        bad[8] = 9;
        assert_eq!(
            RejectFrame::new_checked(&bad[..]).unwrap_err(),
            Error::InvalidField
        );
        let mut bad = b;
        bad[10] = 1;
        assert_eq!(
            RejectFrame::new_checked(&bad[..]).unwrap_err(),
            Error::Reserved
        );
        assert_eq!(
            RejectFrame::new_checked(&b[..11]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn exact_lengths_only() {
        let mut buf = [0u8; INIT_LEN + 1];
        buf[0] = FrameType::HandshakeInit as u8;
        assert_eq!(
            InitFrame::new_checked(&buf[..]).unwrap_err(),
            Error::TooLong
        );
        assert_eq!(
            InitFrame::new_checked(&buf[..INIT_LEN - 1]).unwrap_err(),
            Error::Truncated
        );
        let mut r = [0u8; RESP_LEN - 1];
        r[0] = FrameType::HandshakeResp as u8;
        assert_eq!(
            RespFrame::new_checked(&r[..]).unwrap_err(),
            Error::Truncated
        );
    }
}
