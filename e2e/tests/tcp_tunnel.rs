//! End-to-end tests over the TCP transport: real binaries in network namespaces, and a UDP and
//! a TCP client sharing one server.
//!
//! Same prerequisites and rules as `udp_tunnel.rs`: root, `ip`, `ping`, `iperf3` and the
//! release binaries; reported as ignored without them unless `CI` is set; one testbed at a time.

mod common;

use std::process::ExitCode;

use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::{TestbedOptions, Transport};

fn main() -> ExitCode {
    harness::main([
        Scenario::testbed("tcp_ping_through_tunnel", &["ping"], |t| {
            common::ping(t, TestbedOptions::tcp())
        }),
        Scenario::testbed("tcp_iperf3_client_to_server", &["iperf3"], |t| {
            common::iperf(t, TestbedOptions::tcp(), false)
        }),
        Scenario::testbed("tcp_iperf3_server_to_client", &["iperf3"], |t| {
            common::iperf(t, TestbedOptions::tcp(), true)
        }),
        Scenario::testbed("tcp_transfer_64mib_sha256_matches", &[], |t| {
            common::transfer(t, TestbedOptions::tcp(), 64 << 20)
        }),
        Scenario::testbed("tcp_server_exits_within_1s_of_sigterm", &["ping"], |t| {
            common::sigterm_shutdown(t, TestbedOptions::tcp())
        }),
        Scenario::testbed(
            "udp_and_tcp_clients_share_a_server",
            &["ping", "iperf3"],
            |t| common::two_clients(t, Transport::Udp, Transport::Tcp),
        ),
    ])
}
