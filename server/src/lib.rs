//! The Ringway server: one io_uring loop moving packets between a TUN device
//! and remote peers.
//!
//! - [`config`]: the config file and its validation.
//! - [`admin`]: `init` and `add-peer`, which write configs and keys.
//! - [`sessions`]: who may connect and where each packet goes, independent of I/O.
//! - [`pool`]: inner addresses.
//! - [`uring`]: the io_uring driver (slots, buffers, the event loop).
//! - [`inside`]: the TUN device; [`outside`]: the UDP socket.
//! - [`metrics`]: drop and traffic counters.
#![cfg_attr(not(target_os = "linux"), allow(unused))]

pub mod admin;
pub mod config;
#[cfg(target_os = "linux")]
pub mod inside;
pub mod metrics;
#[cfg(target_os = "linux")]
pub mod outside;
pub mod pool;
pub mod sessions;
#[cfg(target_os = "linux")]
pub mod uring;
