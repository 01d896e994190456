//! End-to-end tests over the TCP transport: real binaries in network namespaces, and a UDP and
//! a TCP client sharing one server.
//!
//! Same prerequisites and rules as `udp_tunnel.rs`: root, `ip`, `ping`, `iperf3` and the
//! release binaries; SKIPPED without them unless `CI` is set; one testbed at a time.

mod common;

use anyhow::Result;
use ringway_e2e::{TestbedOptions, Transport};

#[test]
fn tcp_ping_through_tunnel() -> Result<()> {
    common::ping("tcp_ping_through_tunnel", TestbedOptions::tcp())
}

#[test]
fn tcp_iperf3_client_to_server() -> Result<()> {
    common::iperf("tcp_iperf3_client_to_server", TestbedOptions::tcp(), false)
}

#[test]
fn tcp_iperf3_server_to_client() -> Result<()> {
    common::iperf("tcp_iperf3_server_to_client", TestbedOptions::tcp(), true)
}

#[test]
fn tcp_transfer_64mib_sha256_matches() -> Result<()> {
    common::transfer(
        "tcp_transfer_64mib_sha256_matches",
        TestbedOptions::tcp(),
        64 << 20,
    )
}

#[test]
fn tcp_server_exits_within_1s_of_sigterm() -> Result<()> {
    common::sigterm_shutdown(
        "tcp_server_exits_within_1s_of_sigterm",
        TestbedOptions::tcp(),
    )
}

#[test]
fn udp_and_tcp_clients_share_a_server() -> Result<()> {
    common::two_clients(
        "udp_and_tcp_clients_share_a_server",
        Transport::Udp,
        Transport::Tcp,
    )
}
