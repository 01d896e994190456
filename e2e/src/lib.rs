//! End-to-end testbed for Ringway: the real `ringway-server` and `ringway` binaries in two
//! network namespaces joined by a veth pair, measured with ping, iperf3 and a SHA-256-checked
//! bulk transfer.
//!
//! Unit and property tests in the other crates prove protocol logic with simulated time; this
//! crate proves the drivers (io_uring, tokio, TUN, sockets) carry real traffic. It is built for
//! being run often and in parallel without harming the host: traffic stays inside namespaces it
//! creates, every wait and load is bounded in time, and every resource (namespace, process,
//! temporary directory) is a guard that cleans up on drop, also when a test panics.
//!
//! Typical use in a test:
//!
//! ```no_run
//! // tests/ping.rs, with `harness = false` for it in Cargo.toml
//! use ringway_e2e::harness::{self, Scenario};
//! use ringway_e2e::{Testbed, TestbedOptions};
//!
//! fn main() -> std::process::ExitCode {
//!     harness::main([Scenario::testbed("udp_ping", &["ping"], |test| {
//!         let mut bed = Testbed::start(TestbedOptions::udp())?;
//!         let stats = bed.ping(3)?;
//!         println!("{test}: avg rtt {} ms", stats.avg_rtt_ms);
//!         Ok(())
//!     })])
//! }
//! ```
//!
//! [`harness`] reports a scenario this machine cannot run (no root, a missing tool) as
//! ignored, with the reason, and runs testbed scenarios one at a time.
//!
//! More clients can share the server: provision their peers up front with
//! [`TestbedOptions::extra_peers`], start each with [`Testbed::add_client`] (its own transport
//! and TUN), and measure through it with the `*_from` methods and the [`ClientHandle`] it
//! returns. [`rawtcp`] plays misbehaving peers against the server's TCP port.
//!
//! For the client's own behaviour, start the testbed
//! [without a client](TestbedOptions::without_client) and add one with [`ClientOptions`]
//! (its own flags, no testbed routing), compare the namespace before and after with
//! [`NetState`], restart the server under a running client with [`Testbed::restart_server`]
//! while a [`PingStream`] watches, or run the client binary one-shot under a wrapper with
//! [`Testbed::client_command`]. [`icmp`] builds echo requests for tests that drive the client
//! library's in-memory inside instead of a TUN.

pub mod binaries;
pub mod counters;
pub mod cpu;
pub mod harness;
pub mod icmp;
pub mod interrupt;
pub mod iperf;
pub mod netdev;
pub mod netns;
pub mod netstate;
pub mod path;
pub mod ping;
pub mod prereq;
pub mod process;
pub mod rawtcp;
pub mod snmp;
mod sys;
pub mod tempdir;
pub mod testbed;
pub mod transfer;

pub use iperf::IperfReport;
pub use netstate::NetState;
pub use ping::{PingStats, PingStream};
pub use process::{Process, Signal, Termination};
pub use tempdir::TempDir;
pub use testbed::{
    ClientHandle, ClientOptions, Testbed, TestbedOptions, Transport, TunCounters, CLIENT_TUNNEL_IP,
    SERVER_TUNNEL_IP,
};
pub use transfer::TransferReport;
