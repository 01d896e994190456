//! End-to-end tests over the UDP transport: real binaries in network namespaces.
//!
//! They need root, `ip`, `ping` and `iperf3`, and the release binaries
//! (`cargo build --release --bins`). Without root or tools the harness reports them as ignored,
//! with the reason, unless `CI` is set, which makes that a failure. They run one at a time,
//! since throughput tests sharing two cores would measure each other.

mod common;

use std::process::ExitCode;

use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::{TestbedOptions, Transport};

fn main() -> ExitCode {
    harness::main([
        Scenario::testbed("udp_ping_through_tunnel", &["ping"], |t| {
            common::ping(t, TestbedOptions::udp())
        }),
        Scenario::testbed("udp_iperf3_client_to_server", &["iperf3"], |t| {
            common::iperf(t, TestbedOptions::udp(), false)
        }),
        Scenario::testbed("udp_iperf3_server_to_client", &["iperf3"], |t| {
            common::iperf(t, TestbedOptions::udp(), true)
        }),
        Scenario::testbed("udp_transfer_64mib_sha256_matches", &[], |t| {
            common::transfer(t, TestbedOptions::udp(), 64 << 20)
        }),
        Scenario::testbed("udp_server_exits_within_1s_of_sigterm", &["ping"], |t| {
            common::sigterm_shutdown(t, TestbedOptions::udp())
        }),
        Scenario::testbed("server_exits_when_its_tun_is_deleted", &["ping"], |t| {
            common::server_exits_when_its_tun_is_deleted(t, TestbedOptions::udp())
        }),
        Scenario::testbed("two_udp_clients_share_a_server", &["ping", "iperf3"], |t| {
            common::two_clients(t, Transport::Udp, Transport::Udp)
        }),
    ])
}
