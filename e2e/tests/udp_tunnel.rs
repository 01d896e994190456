//! End-to-end tests over the UDP transport: real binaries in network namespaces.
//!
//! They need root, `ip`, `ping` and `iperf3`, and the release binaries
//! (`cargo build --release --bins`). Without root or tools they print SKIPPED and pass, unless
//! `CI` is set. They run one at a time (see `common`), since throughput tests sharing two cores
//! would measure each other.

mod common;

use anyhow::Result;
use ringway_e2e::{TestbedOptions, Transport};

#[test]
fn udp_ping_through_tunnel() -> Result<()> {
    common::ping("udp_ping_through_tunnel", TestbedOptions::udp())
}

#[test]
fn udp_iperf3_client_to_server() -> Result<()> {
    common::iperf("udp_iperf3_client_to_server", TestbedOptions::udp(), false)
}

#[test]
fn udp_iperf3_server_to_client() -> Result<()> {
    common::iperf("udp_iperf3_server_to_client", TestbedOptions::udp(), true)
}

#[test]
fn udp_transfer_64mib_sha256_matches() -> Result<()> {
    common::transfer(
        "udp_transfer_64mib_sha256_matches",
        TestbedOptions::udp(),
        64 << 20,
    )
}

#[test]
fn udp_server_exits_within_1s_of_sigterm() -> Result<()> {
    common::sigterm_shutdown(
        "udp_server_exits_within_1s_of_sigterm",
        TestbedOptions::udp(),
    )
}

#[test]
fn two_udp_clients_share_a_server() -> Result<()> {
    common::two_clients(
        "two_udp_clients_share_a_server",
        Transport::Udp,
        Transport::Udp,
    )
}
