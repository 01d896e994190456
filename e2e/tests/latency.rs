//! End-to-end tests of latency under load (issue 9): the real binaries in namespaces, a bulk
//! iperf3 TCP flow through the tunnel and, beside it, something that must not suffer for it.
//!
//! - A ping beside an upload and beside a download: every echo comes back while the bulk
//!   flow runs, and the client's own counters show the queues at work: the ping and the
//!   bulk flow's ACKs left the queue as sparse flows, ahead of bulk data. The RTTs are
//!   printed, not asserted: a timing bound on this shared two-core machine would either
//!   flake or be too loose to mean anything; `scripts/bench` measures them, on and off,
//!   side by side.
//! - A 64 MiB transfer beside a bulk flow in the same direction arrives intact (SHA-256 on
//!   both ends): the queue drops or marks from the head of the fattest flow only, and TCP
//!   recovers whatever it drops.
//!
//! Both with the fair queue on (the default) over UDP and TCP; the transfer also with it off,
//! so a difference would show which side broke it.

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::iperf::{self, IperfSpec};
use ringway_e2e::ping;
use ringway_e2e::snmp::Snmp;
use ringway_e2e::{transfer, Testbed, TestbedOptions, Transport};
use serde_json::Value;

/// Echo requests sent beside the bulk flow, one every [`PING_INTERVAL`].
const PINGS: u32 = 60;
const PING_INTERVAL: Duration = Duration::from_millis(50);
/// Echoes that may go missing out of [`PINGS`] (none should; one is noise on a busy CI host).
const MAX_LOST: u32 = 1;
/// The bulk flow runs this much longer than the pings (it needs a moment to start).
const BULK_SECS: u32 = 6;
/// TCP segments the bulk sender must have sent before pinging starts.
const LOAD_SEGMENTS: i64 = 1000;
const LOAD_START_LIMIT: Duration = Duration::from_secs(15);
/// Bytes of the transfer beside the bulk flow.
const TRANSFER_BYTES: u64 = 64 << 20;

fn with_queue(transport: Transport, on: bool) -> TestbedOptions {
    let mut opts = TestbedOptions::new(transport);
    if !on {
        opts = opts.client_args(["--fair-queue", "off"]);
    }
    opts
}

fn main() -> ExitCode {
    let mut scenarios = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let t = transport.to_string().to_lowercase();
        for reverse in [false, true] {
            let way = if reverse { "download" } else { "upload" };
            scenarios.push(Scenario::testbed(
                format!("latency_{t}_ping_beside_bulk_{way}"),
                &["iperf3", "ping"],
                move |name| ping_beside_bulk(name, with_queue(transport, true), reverse),
            ));
        }
        scenarios.push(Scenario::testbed(
            format!("latency_{t}_transfer_64mib_beside_bulk_upload"),
            &["iperf3"],
            move |name| transfer_beside_bulk(name, with_queue(transport, true)),
        ));
    }
    scenarios.push(Scenario::testbed(
        "latency_udp_transfer_64mib_beside_bulk_upload_queue_off",
        &["iperf3"],
        |name| transfer_beside_bulk(name, with_queue(Transport::Udp, false)),
    ));
    harness::main(scenarios)
}

/// A client queue counter (`queue_out` or `queue_in`) from `ringway status --json`.
fn queue_counter(status: &Value, queue: &str, name: &str) -> Result<u64> {
    status[queue][name]
        .as_u64()
        .with_context(|| format!("no {queue}.{name} in the client's status: {status}"))
}

/// Runs `during` while a bulk iperf3 TCP flow (`reverse`: a download) runs through the first
/// client, once the flow is up; returns what `during` returned and the flow's report.
fn beside_bulk<T: Send>(
    bed: &Testbed,
    reverse: bool,
    during: impl FnOnce() -> Result<T> + Send,
) -> Result<(T, iperf::IperfReport)> {
    let path = bed.tunnel_path(&bed.primary_client())?;
    let sender = if reverse {
        path.server_ns
    } else {
        path.client_ns
    };
    let spec = IperfSpec {
        secs: BULK_SECS + 4,
        streams: 1,
        reverse,
    };
    let before = Snmp::read(sender)?;
    let log_dir = bed.dir().to_owned();
    std::thread::scope(|s| {
        let bulk = s.spawn(move || iperf::run_spec(&path, &spec, &log_dir));
        let deadline = Instant::now() + LOAD_START_LIMIT;
        let result = loop {
            if bulk.is_finished() {
                break Err(anyhow::anyhow!("the bulk flow ended before the test began"));
            }
            if Snmp::read(sender)?.delta(&before, "Tcp.OutSegs") >= LOAD_SEGMENTS {
                break during();
            }
            if Instant::now() >= deadline {
                break Err(anyhow::anyhow!(
                    "the bulk flow sent fewer than {LOAD_SEGMENTS} segments in {LOAD_START_LIMIT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let bulk = bulk
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the bulk flow's thread panicked")))
            .context("the bulk flow")?;
        Ok((result?, bulk))
    })
}

fn ping_beside_bulk(test: &str, opts: TestbedOptions, reverse: bool) -> Result<()> {
    let mut bed = common::start(opts)?;
    let client = bed.primary_client();
    let before = bed.client_status(&client)?;
    let res = bed
        .tunnel_path(&client)
        .and_then(|path| beside_bulk(&bed, reverse, || ping::sample(&path, PINGS, PING_INTERVAL)));
    let (sample, bulk) = bed.explain(res)?;
    let after = bed.client_status(&client)?;
    let p50 = sample.percentile_ms(50.0).unwrap_or(f64::NAN);
    let p90 = sample.percentile_ms(90.0).unwrap_or(f64::NAN);
    let p99 = sample.percentile_ms(99.0).unwrap_or(f64::NAN);
    println!(
        "{test}: ping p50 {p50:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms, {} of {} lost; bulk \
         {:.3} Gbit/s, {:?} retransmits; queues out {} in {}",
        sample.transmitted - sample.received,
        sample.transmitted,
        bulk.gbps(),
        bulk.retransmits,
        after["queue_out"],
        after["queue_in"],
    );
    ensure!(bulk.bytes > 0, "the bulk flow moved nothing");
    ensure!(
        sample.transmitted - sample.received <= MAX_LOST,
        "{} of {} echoes lost beside the bulk flow",
        sample.transmitted - sample.received,
        sample.transmitted
    );
    // The queue on the bulk flow's way in the client: outbound for an upload (the TUN's
    // reads), inbound for a download (the socket's packets). Pings and the other
    // direction's ACKs are sparse there.
    let queue = if reverse { "queue_in" } else { "queue_out" };
    let delta = |name| -> Result<u64> {
        Ok(queue_counter(&after, queue, name)? - queue_counter(&before, queue, name)?)
    };
    let (dequeued, sparse) = (delta("dequeued")?, delta("sparse")?);
    ensure!(
        dequeued > 0,
        "the client's {queue} carried nothing during the bulk flow"
    );
    ensure!(
        sparse > 0,
        "nothing left the client's {queue} as a sparse flow, pings included"
    );
    Ok(())
}

fn transfer_beside_bulk(test: &str, opts: TestbedOptions) -> Result<()> {
    let mut bed = common::start(opts)?;
    let res = bed.tunnel_path(&bed.primary_client()).and_then(|path| {
        beside_bulk(&bed, false, || {
            transfer::transfer_sha256(&path, TRANSFER_BYTES, 0x1a7e, Duration::from_secs(60))
        })
    });
    let (report, bulk) = bed.explain(res)?;
    println!(
        "{test}: {} bytes in {:?} ({:.3} Gbit/s) beside a bulk flow of {:.3} Gbit/s",
        report.bytes,
        report.elapsed,
        report.gbps(),
        bulk.gbps()
    );
    ensure!(
        report.bytes == TRANSFER_BYTES,
        "short transfer: {} of {TRANSFER_BYTES} bytes",
        report.bytes
    );
    Ok(())
}
