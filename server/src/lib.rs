//! The Ringway server: one io_uring loop moving packets between a TUN device
//! and remote peers.
//!
//! - [`config`]: the config file and its validation.
//! - [`admin`]: `init` and `add-peer`, which write configs and keys.
//! - [`sessions`]: who may connect and where each packet goes, independent of I/O.
//! - [`pool`]: inner addresses.
//! - [`handshake_state`]: each peer's last handshake timestamp, kept across restarts.
//! - [`uring`]: the io_uring driver (slots, buffers, the event loop), the default.
//! - [`tokio_loop`]: the same data path on tokio's readiness (epoll) I/O, for kernels or
//!   policies without io_uring and to measure what io_uring buys (`--io tokio`).
//! - [`backend`]: which of the two runs (`--io`).
//! - [`signals`]: SIGINT/SIGTERM as a descriptor either loop reads.
//! - [`inside`]: the TUN device; [`outside`]: the UDP socket.
//! - [`metrics`]: drop and traffic counters.
#![cfg_attr(not(target_os = "linux"), allow(unused))]

pub mod admin;
#[cfg(target_os = "linux")]
pub mod backend;
pub mod config;
pub mod handshake_state;
#[cfg(target_os = "linux")]
pub mod inside;
pub mod metrics;
#[cfg(target_os = "linux")]
pub mod outside;
pub mod pool;
pub mod quiet_log;
pub mod sessions;
#[cfg(target_os = "linux")]
pub mod signals;
#[cfg(target_os = "linux")]
pub mod tokio_loop;
#[cfg(target_os = "linux")]
pub mod uring;
