//! End-to-end tests of the server's segmentation offload (issue 8): real binaries in network
//! namespaces, the server with `--offload auto` and with `--offload off`, over both
//! transports. Each scenario moves its traffic both ways and checks it arrived whole, then
//! reads the server's final counters to check that offload was (or was not) used.
//!
//! Prerequisites as `udp_tunnel.rs` (root, `ip`, `ping`, `iperf3`, the release binaries),
//! plus `strace` for the system-call checks. The client is today's, without offload of its
//! own: see `common/offload.rs` for the combinations to add when it has one.

mod common;

use std::process::ExitCode;

use common::offload::{self, Mode};
use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::Transport;

type Body = fn(&str, Transport, Mode) -> anyhow::Result<()>;

fn main() -> ExitCode {
    let bodies: [(&str, &'static [&'static str], Body); 6] = [
        ("ping_sizes_around_the_mtu", &["ping"], offload::ping_sizes),
        ("iperf3_tcp_both_ways", &["iperf3"], offload::iperf_tcp),
        ("iperf3_udp_both_ways", &["iperf3"], offload::iperf_udp),
        (
            "transfer_64mib_sha256_both_ways",
            &[],
            offload::transfer_both_ways,
        ),
        ("many_small_flows", &[], offload::many_small_flows),
        ("ipv4_options_arrive_intact", &[], offload::ipv4_options),
    ];
    let mut scenarios = Vec::new();
    for transport in Transport::ALL {
        for mode in Mode::ALL {
            for (what, tools, body) in bodies {
                let name = format!("{transport}_offload_{}_{what}", mode.as_str());
                scenarios.push(Scenario::testbed(name, tools, move |t| {
                    body(t, transport, mode)
                }));
            }
        }
        scenarios.push(Scenario::testbed(
            format!("{transport}_server_data_path_is_only_io_uring_enter"),
            &["iperf3", "strace"],
            move |t| offload::only_io_uring_enter(t, transport),
        ));
    }
    harness::main(scenarios)
}
