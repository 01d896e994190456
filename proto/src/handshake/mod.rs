//! The handshake: Noise `IKpsk2` (the pattern family WireGuard uses) via `snow`.
//!
//! The client knows and pins the server's static public key; the server learns
//! the client's static key from message 1 and accepts only keys in its peer list
//! (that check is the server's, after [`server::Responder::read_init`]). An
//! optional pre-shared key is mixed in at the end of message 2; without one the
//! all-zero key is used, as WireGuard does, so both cases share one pattern.
//!
//! The client's payload carries a wall-clock [`Timestamp`] the server requires to
//! grow per peer, so a recorded initiation replayed later is refused. The
//! server's payload carries the [`SessionConfig`](crate::SessionConfig).
//!
//! Each side is a typestate: the client's [`client::ClientHandshake`] exists only
//! between sending message 1 and reading message 2; the server's
//! [`server::PendingInit`] between reading message 1 and deciding.
//!
//! Both sides draw their ephemeral key (and the client its sender index) from
//! the caller's [`Entropy`]: snow is given a resolver whose
//! only random source is that one key, so a seeded test replays a handshake
//! exactly.

pub mod client;
mod keys;
mod payload;
pub mod server;

pub use keys::{
    key_from_base64, key_to_base64, KeyParseError, Keypair, PublicKey, SecretKey, KEY_LEN,
};
pub use payload::{InitPayload, Timestamp};

use crate::random::snow_rng::{OneEphemeral, EPHEMERAL_LEN};
use crate::random::{Entropy, EntropyError};
use crate::wire;

/// The Noise protocol name; both ends must agree on every part of it.
const NOISE_PARAMS: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Binds the handshake to this protocol and version.
const PROLOGUE: &[u8] = b"ringway v1";
/// IKpsk2 mixes the PSK in after message 2's last token.
const PSK_LOCATION: u8 = 2;
/// Used when no PSK is configured.
const ZERO_PSK: [u8; 32] = [0u8; 32];
/// Wire version of both handshake payloads.
pub const PAYLOAD_VERSION: u8 = 1;

/// Why a handshake message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The frame's envelope is malformed: drop it.
    #[error("malformed handshake frame: {0}")]
    Malformed(#[from] wire::Error),
    /// mac1 does not match: the sender does not know our public key.
    #[error("handshake mac does not match")]
    BadMac,
    /// Noise refused the message: wrong keys, wrong PSK or tampering.
    #[error("handshake authentication failed")]
    Decrypt,
    /// The decrypted payload is not one we understand.
    #[error("invalid handshake payload: {0}")]
    BadPayload(&'static str),
    /// The response does not answer our initiation.
    #[error("response is for another handshake")]
    NotForUs,
    /// The caller's random source failed: our side, not the peer's.
    #[error("cannot make a handshake key: {0}")]
    Entropy(#[from] EntropyError),
    /// snow refused how we used it: a bug on our side, not the peer's.
    #[error("internal handshake error: {0}")]
    Internal(String),
}

fn internal(e: snow::Error) -> HandshakeError {
    HandshakeError::Internal(e.to_string())
}

fn params() -> snow::params::NoiseParams {
    NOISE_PARAMS
        .parse()
        .expect("NOISE_PARAMS is a constant valid protocol name")
}

/// An ephemeral private key drawn from the caller's entropy.
fn draw_ephemeral<R: Entropy + ?Sized>(rng: &mut R) -> Result<[u8; EPHEMERAL_LEN], EntropyError> {
    let mut key = [0u8; EPHEMERAL_LEN];
    rng.fill(&mut key)?;
    Ok(key)
}

/// A snow builder whose only randomness is `ephemeral`.
fn builder<'a>(ephemeral: [u8; EPHEMERAL_LEN]) -> snow::Builder<'a> {
    snow::Builder::with_resolver(params(), Box::new(OneEphemeral(ephemeral)))
}

#[cfg(test)]
mod tests;
