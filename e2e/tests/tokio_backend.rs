//! End-to-end tests of the server's tokio backend (`--io tokio`, issue 10): what only it
//! has (the system-call check that it carries traffic without an io_uring call, `--io auto`
//! falling back to it where io_uring is refused), and a few core scenarios so that a plain
//! `cargo test` exercises it too.
//!
//! The end-to-end suite runs against it as well: `scripts/test` runs the server-facing files
//! again with `RINGWAY_E2E_SERVER_IO=tokio` ([`SERVER_IO_ENV`]), which gives every testbed's server
//! `--io tokio` unless the test names a backend. This binary sets that variable for itself
//! before any test starts. Prerequisites as `udp_tunnel.rs`, plus `strace`.

mod common;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::offload::{self, Mode};
use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::testbed::SERVER_IO_ENV;
use ringway_e2e::{TestbedOptions, Transport};

fn main() -> ExitCode {
    // Before the harness starts a thread: every testbed here gets `--io tokio`.
    std::env::set_var(SERVER_IO_ENV, "tokio");
    let mut scenarios = Vec::new();
    for transport in Transport::ALL {
        let opts = move || TestbedOptions::new(transport);
        scenarios.extend([
            Scenario::testbed(format!("tokio_{transport}_ping"), &["ping"], move |t| {
                common::ping(t, opts())
            }),
            Scenario::testbed(
                format!("tokio_{transport}_transfer_64mib_sha256_both_ways"),
                &[],
                move |t| offload::transfer_both_ways(t, transport, Mode::Auto),
            ),
            Scenario::testbed(
                format!("tokio_{transport}_server_exits_within_1s_of_sigterm"),
                &["ping"],
                move |t| common::sigterm_shutdown(t, opts()),
            ),
            Scenario::testbed(
                format!("tokio_{transport}_data_path_makes_no_io_uring_call"),
                &["iperf3", "strace"],
                move |t| offload::tokio_makes_no_io_uring_call(t, transport),
            ),
        ]);
    }
    scenarios.extend([
        Scenario::testbed(
            "tokio_udp_and_tcp_clients_share_a_server",
            &["ping", "iperf3"],
            |t| common::two_clients(t, Transport::Udp, Transport::Tcp),
        ),
        Scenario::testbed(
            "auto_falls_back_to_tokio_where_io_uring_is_disabled",
            &["ping"],
            auto_falls_back,
        ),
    ]);
    harness::main(scenarios)
}

/// `kernel.io_uring_disabled`: 2 refuses io_uring to every process (Linux 6.6+).
const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";

/// Puts the sysctl back as it was, also if the test fails or panics.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(IO_URING_DISABLED, &self.0) {
            eprintln!(
                "could not restore {IO_URING_DISABLED} to {}: {e}",
                self.0.trim()
            );
        }
    }
}

/// With io_uring refused to the whole machine for a moment, `--io auto` logs one warning,
/// runs the tokio backend, and carries traffic. The sysctl is global (not per namespace), so
/// it is held only while the server starts, and restored by a guard. Skipped, with the reason
/// printed, on kernels without the sysctl.
fn auto_falls_back(test: &str) -> Result<()> {
    let Ok(before) = std::fs::read_to_string(IO_URING_DISABLED) else {
        println!("{test}: {IO_URING_DISABLED} missing (kernel before 6.6): nothing to check");
        return Ok(());
    };
    let restore = Restore(before);
    std::fs::write(IO_URING_DISABLED, "2").context("disabling io_uring")?;
    let started = common::start(TestbedOptions::udp().server_args(["--io", "auto"]));
    drop(restore);
    let mut bed = started?;
    let log = std::fs::read_to_string(bed.dir().join("server.log")).context("server log")?;
    let warnings: Vec<_> = log
        .lines()
        .filter(|l| l.contains("running the tokio backend instead"))
        .collect();
    ensure!(warnings.len() == 1, "expected one fallback warning:\n{log}");
    ensure!(
        log.contains("io=\"tokio\"") || log.contains("io=tokio"),
        "the start-up line does not say tokio:\n{log}"
    );
    let stats = bed.ping(3)?;
    println!("{test}: {stats:?}");
    ensure!(
        stats.received > 0,
        "no replies through the fallback: {stats:?}"
    );
    let stopped = bed.stop_server(Duration::from_secs(5))?;
    ensure!(stopped.status.success(), "server exited {}", stopped.status);
    Ok(())
}
