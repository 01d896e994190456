//! Test bodies shared by every transport's test file.
//!
//! Each scenario takes [`TestbedOptions`], so a TCP variant of a UDP test is one line:
//! `common::transfer("tcp_transfer", TestbedOptions::tcp(), 64 << 20)`. Each one checks the
//! prerequisites (skipping, or failing under `CI`), takes the process-wide serial lock and
//! builds its own testbed, which is torn down when the scenario returns or panics.

// Every test binary includes this module but not every binary uses every scenario.
#![allow(dead_code)]

use std::sync::MutexGuard;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ringway_e2e::{prereq, Testbed, TestbedOptions, CLIENT_TUNNEL_IP};

/// The contract: the server exits within this long after SIGTERM.
pub const SERVER_SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);
/// How long the client may take to exit on SIGTERM once the server is gone.
pub const CLIENT_SHUTDOWN_LIMIT: Duration = Duration::from_secs(3);

/// `None` if the test should be skipped; otherwise the serial lock to hold for its duration.
fn prepare(test: &str, tools: &[&str]) -> Option<MutexGuard<'static, ()>> {
    prereq::can_run(test, tools).then(prereq::serial)
}

fn start(opts: TestbedOptions) -> Result<Testbed> {
    let transport = opts.transport;
    let bed = Testbed::start(opts).with_context(|| format!("starting {transport} testbed"))?;
    println!(
        "{transport} testbed up: {} / {}, client got {}",
        bed.server_ns().name(),
        bed.client_ns().name(),
        bed.client_tunnel_ip()
    );
    Ok(bed)
}

/// Pings the server's tunnel address from the client.
pub fn ping(test: &str, opts: TestbedOptions) -> Result<()> {
    let Some(_serial) = prepare(test, &["ping"]) else {
        return Ok(());
    };
    let mut bed = start(opts)?;
    ensure!(
        bed.client_tunnel_ip() == CLIENT_TUNNEL_IP,
        "first peer got {}, expected {CLIENT_TUNNEL_IP}",
        bed.client_tunnel_ip()
    );
    let stats = bed.ping(5)?;
    println!("{test}: {stats:?}");
    ensure!(stats.received > 0, "no replies: {stats:?}");
    Ok(())
}

/// A short iperf3 TCP run; `reverse` makes the server send.
pub fn iperf(test: &str, opts: TestbedOptions, reverse: bool) -> Result<()> {
    let Some(_serial) = prepare(test, &["iperf3"]) else {
        return Ok(());
    };
    let mut bed = start(opts)?;
    let report = bed.iperf3(reverse, 3)?;
    println!(
        "{test}: {:.3} Gbit/s, {} bytes, retransmits {:?}",
        report.gbps(),
        report.bytes,
        report.retransmits
    );
    ensure!(
        report.bits_per_second > 0.0 && report.bytes > 0,
        "no data moved: {report:?}"
    );
    Ok(())
}

/// Moves `bytes` through the tunnel over TCP and compares SHA-256 on both ends.
pub fn transfer(test: &str, opts: TestbedOptions, bytes: u64) -> Result<()> {
    let Some(_serial) = prepare(test, &[]) else {
        return Ok(());
    };
    let mut bed = start(opts)?;
    let report = bed.transfer_sha256(bytes)?;
    println!(
        "{test}: {} bytes in {:?} ({:.3} Gbit/s), sha256 {}",
        report.bytes,
        report.elapsed,
        report.gbps(),
        report.sha256
    );
    ensure!(
        report.bytes == bytes,
        "moved {} of {bytes} bytes",
        report.bytes
    );
    Ok(())
}

/// The server exits 0 within [`SERVER_SHUTDOWN_LIMIT`] of SIGTERM; the client then still
/// exits on SIGTERM (or has already noticed and exited).
pub fn sigterm_shutdown(test: &str, opts: TestbedOptions) -> Result<()> {
    let Some(_serial) = prepare(test, &["ping"]) else {
        return Ok(());
    };
    let mut bed = start(opts)?;
    // Shut down a server that has live traffic, not an idle one.
    bed.ping(3)?;
    let server = bed.stop_server(Duration::from_secs(5))?;
    println!(
        "{test}: server exited {} after {:?}",
        server.status, server.elapsed
    );
    ensure!(
        server.status.code() == Some(0),
        "server exited with {} after SIGTERM, want status 0; log:\n{}",
        server.status,
        bed.server().log_tail(30)
    );
    ensure!(
        server.elapsed <= SERVER_SHUTDOWN_LIMIT,
        "server took {:?} to exit after SIGTERM, limit {SERVER_SHUTDOWN_LIMIT:?}",
        server.elapsed
    );

    let noticed = bed.client().wait_timeout(Duration::from_millis(500))?;
    match noticed {
        Some(status) => println!("{test}: client exited on its own ({status})"),
        None => {
            let client = bed.stop_client(CLIENT_SHUTDOWN_LIMIT)?;
            println!(
                "{test}: client exited {} {:?} after SIGTERM",
                client.status, client.elapsed
            );
        }
    }
    Ok(())
}
