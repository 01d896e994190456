//! Test bodies shared by every transport's test file.
//!
//! Each scenario takes [`TestbedOptions`], so a TCP variant of a UDP test is one line:
//! `Scenario::testbed("tcp_transfer", &[], |t| common::transfer(t, TestbedOptions::tcp(), 64 << 20))`.
//! The harness ([`ringway_e2e::harness`]) checks the prerequisites (reporting the test as
//! ignored, or failing under `CI`) and holds the process-wide serial lock; each scenario builds
//! its own testbed, which is torn down when it returns or panics.

// Every test binary includes this module but not every binary uses every scenario.
#![allow(dead_code)]

pub mod bad_peers;
pub mod offload;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ringway_e2e::{Testbed, TestbedOptions, Transport, CLIENT_TUNNEL_IP};

/// The contract: the server exits within this long after SIGTERM.
pub const SERVER_SHUTDOWN_LIMIT: Duration = Duration::from_secs(1);
/// How long the client may take to exit on SIGTERM: its own 1 s grace for the outbound task
/// to say goodbye, removing its routes and TUN, and slack for a loaded machine (the client
/// has no exit-time contract; the server's is [`SERVER_SHUTDOWN_LIMIT`]).
pub const CLIENT_SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Seconds of each iperf3 run in multi-client scenarios (short: every test builds a testbed).
pub const SHORT_IPERF_SECS: u32 = 2;
/// Bytes of each transfer in multi-client and bad-peer scenarios.
pub const SHORT_TRANSFER_BYTES: u64 = 16 << 20;

pub fn start(opts: TestbedOptions) -> Result<Testbed> {
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

/// Starts a testbed with only the server running (see [`TestbedOptions::without_client`]).
pub fn start_without_client(opts: TestbedOptions) -> Result<Testbed> {
    let transport = opts.transport;
    let bed = Testbed::start(opts.without_client())
        .with_context(|| format!("starting {transport} testbed without a client"))?;
    println!(
        "{transport} testbed up without a client: {} / {}",
        bed.server_ns().name(),
        bed.client_ns().name(),
    );
    Ok(bed)
}

/// Deletes the server's TUN under it: the server must say so in its log and exit non-zero
/// within a few seconds, not spin on a device that is gone.
pub fn server_exits_when_its_tun_is_deleted(test: &str, opts: TestbedOptions) -> Result<()> {
    let mut bed = start(opts)?;
    bed.ping(2)?;
    let links = bed
        .server_ns()
        .ip(&["-br", "link", "show", "type", "tun"])?;
    let tun = links
        .split_whitespace()
        .next()
        .context("no TUN in the server's namespace")?
        .to_owned();
    bed.server_ns().ip(&["link", "del", &tun])?;
    let status = bed
        .server()
        .wait_timeout(Duration::from_secs(5))?
        .context("the server kept running for 5 s after its TUN was deleted")?;
    let log = bed.server().log_tail(5);
    println!("{test}: server exited {status} after {tun} was deleted:\n{log}");
    ensure!(
        !status.success(),
        "the server exited successfully without its TUN"
    );
    ensure!(
        log.contains("TUN device"),
        "the server's last lines do not name the TUN:\n{log}"
    );
    Ok(())
}

/// Pings the server's tunnel address from the client.
pub fn ping(test: &str, opts: TestbedOptions) -> Result<()> {
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

/// Two clients of one server at the same time, the first over `first` and another over
/// `second` (its own peer, TUN `ringway1` and inside address, in the same namespace). Each
/// pings and runs a short iperf3 through its own TUN, then both move 16 MiB at the same time.
pub fn two_clients(test: &str, first: Transport, second: Transport) -> Result<()> {
    let mut bed = start(TestbedOptions::new(first).extra_peers(1))?;
    let one = bed.primary_client();
    let two = bed.add_client(second, "ringway1")?;
    println!(
        "{test}: client 0 {first} at {}, client 1 {second} at {}",
        one.tunnel_ip(),
        two.tunnel_ip()
    );
    ensure!(
        one.tunnel_ip() != two.tunnel_ip(),
        "both clients got {}",
        one.tunnel_ip()
    );
    for (c, other) in [(&one, &two), (&two, &one)] {
        let before = [bed.tun_counters(c)?, bed.tun_counters(other)?];
        let stats = bed.ping_from(c, 5)?;
        println!(
            "{test}: client {} ({}) ping {stats:?}",
            c.index(),
            c.transport()
        );
        let report = bed.iperf3_from(c, false, SHORT_IPERF_SECS)?;
        println!(
            "{test}: client {} ({}) iperf3 {:.3} Gbit/s",
            c.index(),
            c.transport(),
            report.gbps()
        );
        ensure!(report.bytes > 0, "client {} moved no data", c.index());
        // The traffic went through this client's TUN, not the other's.
        let own = bed.tun_counters(c)?.since(&before[0]);
        let stray = bed.tun_counters(other)?.since(&before[1]);
        println!(
            "{test}: {} sent {} bytes, {} sent {} bytes meanwhile",
            c.tun_name(),
            own.tx_bytes,
            other.tun_name(),
            stray.tx_bytes
        );
        ensure!(
            own.tx_bytes >= report.bytes && stray.tx_bytes < report.bytes / 100,
            "client {}'s traffic ({} bytes by iperf3) did not take its own TUN: {} sent {own:?}, \
             {} sent {stray:?}",
            c.index(),
            report.bytes,
            c.tun_name(),
            other.tun_name()
        );
    }
    let reports = bed.transfer_sha256_concurrently(&[one, two], SHORT_TRANSFER_BYTES)?;
    for (i, r) in reports.iter().enumerate() {
        println!(
            "{test}: client {i} transfer {} bytes in {:?} ({:.3} Gbit/s) while the other ran",
            r.bytes,
            r.elapsed,
            r.gbps()
        );
    }
    // Both were still connected at the end, not one of them replaced by the other.
    bed.ensure_running()
}
