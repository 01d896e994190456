//! The initiator's handshake payload and the wall-clock timestamp in it.
//!
//! ```text
//!  0         1         2                                  14        16
//! +---------+---------+----------------------------------+---------+
//! | version | cipher  | timestamp: secs u64, nanos u32    | reserved|
//! +---------+---------+----------------------------------+---------+
//! ```
//!
//! cipher 0 means "no preference"; the server then uses its own default.

use super::{HandshakeError, PAYLOAD_VERSION};
use crate::crypto::Cipher;
use crate::wire::handshake::INIT_PAYLOAD_LEN;

/// Wall-clock time of an initiation, TAI64N-like: seconds then nanoseconds, both
/// big-endian, so byte order is time order. The caller reads the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub secs: u64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Timestamp {
    /// From a duration since the Unix epoch (`SystemTime::duration_since(UNIX_EPOCH)`).
    pub fn from_unix(d: std::time::Duration) -> Self {
        Timestamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }
}

/// What the client tells the server inside message 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitPayload {
    /// When the client started this handshake.
    pub timestamp: Timestamp,
    /// The AEAD the client would like; `None` leaves it to the server.
    pub cipher: Option<Cipher>,
}

impl InitPayload {
    pub(crate) fn emit(&self) -> [u8; INIT_PAYLOAD_LEN] {
        let mut b = [0u8; INIT_PAYLOAD_LEN];
        b[0] = PAYLOAD_VERSION;
        b[1] = self.cipher.map_or(0, |c| c as u8);
        b[2..10].copy_from_slice(&self.timestamp.secs.to_be_bytes());
        b[10..14].copy_from_slice(&self.timestamp.nanos.to_be_bytes());
        b
    }

    pub(crate) fn parse(b: &[u8]) -> Result<Self, HandshakeError> {
        let b: &[u8; INIT_PAYLOAD_LEN] = b
            .try_into()
            .map_err(|_| HandshakeError::BadPayload("initiation payload length"))?;
        if b[0] != PAYLOAD_VERSION {
            return Err(HandshakeError::BadPayload("unsupported initiation version"));
        }
        if b[14..] != [0, 0] {
            return Err(HandshakeError::BadPayload("reserved bytes set"));
        }
        let cipher = match b[1] {
            0 => None,
            id => Some(Cipher::from_u8(id).ok_or(HandshakeError::BadPayload("unknown cipher"))?),
        };
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&b[2..10]);
        let mut nanos = [0u8; 4];
        nanos.copy_from_slice(&b[10..14]);
        let nanos = u32::from_be_bytes(nanos);
        if nanos >= 1_000_000_000 {
            return Err(HandshakeError::BadPayload("timestamp nanos out of range"));
        }
        Ok(InitPayload {
            timestamp: Timestamp {
                secs: u64::from_be_bytes(secs),
                nanos,
            },
            cipher,
        })
    }
}
