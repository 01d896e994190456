//! The session config the server hands the client inside handshake message 2.
//!
//! ```text
//!  0        1        2                 6        7                11
//! +--------+--------+-----------------+--------+-----------------+
//! |version | cipher | client addr v4  | prefix | server addr v4  |
//! +--------+--------+-----------------+--------+-----------------+
//! 11       13          15                17             19         20
//! +--------+-----------+-----------------+--------------+----------+
//! |  mtu   | keepalive | idle timeout    | rekey after  | reserved |
//! | u16 BE | secs u16  | secs u16        | secs u16     | (zero)   |
//! +--------+-----------+-----------------+--------------+----------+
//! ```
//!
//! "Rekey after" is how the server asks for fresh keys: the client starts a new
//! handshake once its session is that old (0 = never).

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::crypto::Cipher;
use crate::handshake::{HandshakeError, PAYLOAD_VERSION};
use crate::wire::handshake::RESP_PAYLOAD_LEN;

/// Everything a client needs to bring its side of the tunnel up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// The AEAD for transport frames.
    pub cipher: Cipher,
    /// The client's inner (tunnel) address.
    pub client_addr: Ipv4Addr,
    /// Prefix length of the tunnel subnet; the client routes that subnet into its TUN.
    pub prefix_len: u8,
    /// The server's inner address (the first host of the pool).
    pub server_addr: Ipv4Addr,
    /// MTU for the client's TUN.
    pub mtu: u16,
    /// Send a keepalive after this many idle seconds.
    pub keepalive_secs: u16,
    /// Consider the session dead after this many seconds without a frame.
    pub idle_timeout_secs: u16,
    /// Re-handshake once the session is this many seconds old; 0 = never.
    pub rekey_after_secs: u16,
}

impl SessionConfig {
    /// Keepalive interval.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(u64::from(self.keepalive_secs))
    }

    /// Idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.idle_timeout_secs))
    }

    /// When the client should re-handshake, if the server asks it to.
    pub fn rekey_after(&self) -> Option<Duration> {
        (self.rekey_after_secs > 0).then(|| Duration::from_secs(u64::from(self.rekey_after_secs)))
    }

    pub(crate) fn emit(&self) -> [u8; RESP_PAYLOAD_LEN] {
        let mut b = [0u8; RESP_PAYLOAD_LEN];
        b[0] = PAYLOAD_VERSION;
        b[1] = self.cipher as u8;
        b[2..6].copy_from_slice(&self.client_addr.octets());
        b[6] = self.prefix_len;
        b[7..11].copy_from_slice(&self.server_addr.octets());
        b[11..13].copy_from_slice(&self.mtu.to_be_bytes());
        b[13..15].copy_from_slice(&self.keepalive_secs.to_be_bytes());
        b[15..17].copy_from_slice(&self.idle_timeout_secs.to_be_bytes());
        b[17..19].copy_from_slice(&self.rekey_after_secs.to_be_bytes());
        b
    }

    pub(crate) fn parse(b: &[u8]) -> Result<Self, HandshakeError> {
        let bad = HandshakeError::BadPayload;
        let b: &[u8; RESP_PAYLOAD_LEN] = b.try_into().map_err(|_| bad("config length"))?;
        if b[0] != PAYLOAD_VERSION {
            return Err(bad("unsupported config version"));
        }
        if b[19] != 0 {
            return Err(bad("reserved bytes set"));
        }
        let cipher = Cipher::from_u8(b[1]).ok_or(bad("unknown cipher"))?;
        let addr = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        let u16_at = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        let cfg = SessionConfig {
            cipher,
            client_addr: addr(2),
            prefix_len: b[6],
            server_addr: addr(7),
            mtu: u16_at(11),
            keepalive_secs: u16_at(13),
            idle_timeout_secs: u16_at(15),
            rekey_after_secs: u16_at(17),
        };
        if cfg.prefix_len == 0 || cfg.prefix_len > 32 {
            return Err(bad("prefix length out of range"));
        }
        if cfg.mtu < 576 {
            return Err(bad("mtu below the IPv4 minimum"));
        }
        if cfg.keepalive_secs == 0 || cfg.idle_timeout_secs <= cfg.keepalive_secs {
            return Err(bad("idle timeout must exceed a non-zero keepalive"));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> SessionConfig {
        SessionConfig {
            cipher: Cipher::ChaCha20Poly1305,
            client_addr: Ipv4Addr::new(198, 18, 0, 2),
            prefix_len: 24,
            server_addr: Ipv4Addr::new(198, 18, 0, 1),
            mtu: 1420,
            keepalive_secs: 25,
            idle_timeout_secs: 180,
            rekey_after_secs: 900,
        }
    }

    #[test]
    fn round_trip() {
        let c = sample();
        assert_eq!(SessionConfig::parse(&c.emit()), Ok(c));
    }

    /// A frozen vector: changing the layout is a protocol version bump.
    #[test]
    fn frozen_encoding() {
        assert_eq!(
            sample().emit(),
            [1, 2, 198, 18, 0, 2, 24, 198, 18, 0, 1, 0x05, 0x8c, 0, 25, 0, 180, 0x03, 0x84, 0]
        );
    }

    #[test]
    fn rejects_nonsense() {
        let mut b = sample().emit();
        b[6] = 33;
        assert!(SessionConfig::parse(&b).is_err());
        let mut b = sample().emit();
        b[19] = 1;
        assert!(SessionConfig::parse(&b).is_err());
        let mut b = sample().emit();
        b[0] = 9;
        assert!(SessionConfig::parse(&b).is_err());
        assert!(SessionConfig::parse(&[]).is_err());
    }
}
