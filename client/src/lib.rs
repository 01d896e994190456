//! The Ringway client: drives `ringway-proto` over tokio.
//!
//! Two halves, as in the server: a sans-IO protocol core and the drivers
//! that move its bytes and its time.
//!
//! - [`core`]: every protocol decision of the client (the handshake and its
//!   verdict, keepalives and RTT probes, rekeys, the quiet re-handshake, idle
//!   expiry, which frames open and which packets pass), in a [`Core`] with
//!   `handle_*`/`poll_*` methods and no tokio, no sockets and no clock. Its
//!   tests run it against the server's real session layer in memory.
//! - [`config`]: the client config file that `ringway-server add-peer` writes.
//! - [`outside`]: the network side. [`outside::Tunnel::connect_with`] runs a
//!   core's handshake over UDP or TCP (or UDP, then TCP) and
//!   [`split`](outside::Tunnel::split)s into a sender and a receiver that
//!   share the core and seal and open in place, whatever the transport.
//! - [`inside`]: the packet side, a trait pair with the TUN device and an
//!   in-memory channel as implementations.
//! - [`driver`]: one task per direction between inside and outside, running
//!   the core's timers; sessions come and go under it.
//! - [`supervisor`]: keeps a tunnel up, reconnecting with [`backoff`] when
//!   the session is lost.
//! - [`platform`]: creating and configuring the TUN device and routes (Linux;
//!   other systems get a clear "unsupported platform" error).
//! - [`routes`]: which routes `ringway up` adds, and removing them all again.
//! - [`stats`]: counters and round-trip times, shared by the core, the tasks
//!   and whoever reports them; [`status`]: the client's state for `ringway status`.
//! - [`ip`]: the two IPv4 header fields the core filters on.
//!
//! Nothing but [`inside::tun`] and [`platform`] needs root, so tests and
//! benchmarks can run many tunnels in one process against a loopback server.
//!
//! # Using the library without a TUN
//!
//! Connect, then let the [`driver`] move packets between the tunnel and an
//! in-memory inside; the test plays the host's IP stack on the other end:
//!
//! ```no_run
//! use ringway_client::inside::memory::memory;
//! use ringway_client::{driver, ClientConfig, ConnectOptions, TransportChoice, Tunnel};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::load("client.toml")?;
//! let opts = ConnectOptions { transport: TransportChoice::Udp, ..ConnectOptions::default() };
//! let tunnel = Tunnel::connect_with(&config, &opts).await?;
//! let our_addr = tunnel.session_config().client_addr;
//! let stats = std::sync::Arc::clone(tunnel.stats());
//!
//! // Up to 1024 packets queued each way.
//! let (inside, mut host) = memory(1024);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let forwarding = tokio::spawn(driver::run(tunnel, inside, async {
//!     let _ = stopped.await;
//! }));
//!
//! // An IPv4 packet from `our_addr` into the tunnel...
//! # let packet: Vec<u8> = vec![0x45; 20];
//! # let _ = our_addr;
//! host.to_tunnel.send(packet).await?;
//! // ...and whatever the server sends to `our_addr`, out of it.
//! if let Some(reply) = host.from_tunnel.recv().await {
//!     println!("{} bytes back", reply.len());
//! }
//!
//! stop.send(()).ok(); // the driver tells the server goodbye
//! forwarding.await??;
//! println!("{}", stats.snapshot());
//! # Ok(())
//! # }
//! ```
//!
//! Only IPv4 packets are sent, and only packets addressed to the session's
//! `client_addr` come out. For a tunnel that survives the server going away,
//! use a [`Supervisor`] instead of [`driver::run`]. Sending and receiving
//! directly on the halves of [`Tunnel::split`] works too (see
//! [`TunnelSender::send_packet`] for the buffer layout).

pub mod backlog;
pub mod backoff;
pub mod config;
pub mod core;
pub mod driver;
pub mod inside;
pub mod ip;
pub mod outside;
pub mod platform;
pub mod routes;
pub mod stats;
pub mod status;
pub mod supervisor;

pub use config::{ClientConfig, ConfigError};
pub use core::{Core, CoreConfig, SessionOptions};
pub use driver::{Driver, DriverError, DriverEvent};
pub use outside::{
    ConnectError, ConnectOptions, Received, RecvError, SendError, Transport, TransportChoice,
    Tunnel, TunnelReceiver, TunnelSender,
};
pub use stats::{Stats, StatsSnapshot};
pub use status::{LiveStatus, StatusReport};
pub use supervisor::{Notice, Supervisor, SupervisorOptions};

/// The current time, from tokio's clock.
///
/// Every `now` handed to the protocol comes from here, so a test that pauses
/// tokio's clock moves the protocol's timers (`last_sent`, `last_received`)
/// in step with the driver's sleeps. Outside a paused runtime it is just
/// `Instant::now()`.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
