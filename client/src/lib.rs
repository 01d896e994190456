//! The Ringway client: drives `ringway-proto` over tokio.
//!
//! The protocol crate does the thinking (handshake, sealing, replay window,
//! timers) and never touches a socket or a clock; this crate owns the I/O:
//!
//! - [`config`]: the client config file that `ringway-server add-peer` writes.
//! - [`outside`]: the network side. [`outside::Tunnel::connect_with`]
//!   handshakes over UDP or TCP (or UDP, then TCP) and
//!   [`split`](outside::Tunnel::split)s into a sender and a receiver that seal
//!   and open in place, whatever the transport.
//! - [`inside`]: the packet side, a trait pair with the TUN device and an
//!   in-memory channel as implementations.
//! - [`driver`]: one task per direction between inside and outside, with the
//!   keepalive and idle timers.
//! - [`platform`]: creating and configuring the TUN device (Linux; other
//!   systems get a clear "unsupported platform" error).
//! - [`stats`]: counters, shared by the tasks and whoever reports them.
//! - [`ip`]: the two IPv4 header fields the driver filters on.
//!
//! Nothing but [`inside::tun`] and [`platform`] needs root, so tests and
//! benchmarks can run many tunnels in one process against a loopback server.

pub mod config;
pub mod driver;
pub mod inside;
pub mod ip;
pub mod outside;
pub mod platform;
pub mod stats;

pub use config::{ClientConfig, ConfigError};
pub use driver::DriverError;
pub use outside::{
    ConnectError, ConnectOptions, Event, RecvError, SendError, Transport, Tunnel, TunnelReceiver,
    TunnelSender,
};
pub use stats::{Stats, StatsSnapshot};

/// The current time, from tokio's clock.
///
/// Every `now` handed to the protocol comes from here, so a test that pauses
/// tokio's clock moves the protocol's timers (`last_sent`, `last_received`)
/// in step with the driver's sleeps. Outside a paused runtime it is just
/// `Instant::now()`.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
