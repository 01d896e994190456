//! The Ringway wire protocol, as a sans-IO library.
//!
//! This crate turns bytes into events and events into bytes. It never opens a
//! socket, reads a clock or an entropy source, or spawns a task: drivers (the
//! io_uring server, the tokio client, tests) pass in the bytes they received,
//! the `Instant` they received them at and a random source, and send the
//! bytes this crate hands back. That keeps every state machine here
//! deterministic and testable without a network.
//!
//! Layout:
//! - [`wire`]: zero-copy views over frames (handshake, transport, TCP stream framing).
//! - [`handshake`]: the Noise IKpsk2 key exchange as typestates for each side.
//! - [`crypto`]: the per-packet AEAD, keyed from the handshake.
//! - [`replay`]: the sliding window that rejects replayed counters.
//! - [`session`]: an established session (seal/open in place, keepalive timers).
//! - [`cow`]: [`CowBytes`], the send-path buffer that is owned only when it must be.
//! - [`random`]: [`Entropy`], the caller's random source (this crate reads none).
#![forbid(unsafe_code)]

pub mod config;
pub mod cow;
pub mod crypto;
pub mod handshake;
pub mod random;
pub mod replay;
pub mod session;
pub mod wire;

pub use config::SessionConfig;
pub use cow::CowBytes;
pub use crypto::Cipher;
pub use handshake::{Keypair, PublicKey, SecretKey, Timestamp};
pub use random::{Entropy, EntropyError};
pub use session::{Opened, Opener, Sealer, Session};
