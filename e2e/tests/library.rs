//! The client library without a TUN: a [`Tunnel`] driven from this test process, with the
//! in-memory inside standing in for the host's IP stack, against the real server.
//!
//! A thread enters the client namespace, starts a tokio runtime there (so the tunnel's socket
//! belongs to that namespace), connects with an extra peer's config and sends 10 000 ICMP echo
//! requests from its assigned address to the server's inside address. The kernel in the server
//! namespace answers each one, so every packet crosses the tunnel once each way. Sends are paced
//! in batches that wait for their replies, so nothing is lost to a full queue, and every request
//! must come back exactly once, with its payload intact.
//!
//! Needs root and the release server binary, like the other e2e tests; no TUN, no `ping`.

mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ringway_client::inside::memory::{memory, MemoryHost};
use ringway_client::{driver, ClientConfig, ConnectOptions, StatsSnapshot, Tunnel};
use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::icmp;
use ringway_e2e::{TestbedOptions, Transport, SERVER_TUNNEL_IP};
use tokio::sync::oneshot;

/// Echo requests sent, and replies that must come back.
const PACKETS: usize = 10_000;
/// Requests in flight at most; the next batch goes once this one is answered.
const BATCH: usize = 100;
/// How long a batch's replies may take (they normally take milliseconds; a healthy run never
/// waits this long, so the bound costs nothing and spares a loaded machine).
const BATCH_WAIT: Duration = Duration::from_secs(10);
/// The whole exchange, connect included.
const WORK_LIMIT: Duration = Duration::from_secs(120);
/// The ICMP identifier of our requests.
const ECHO_ID: u16 = 0x5257;

fn main() -> ExitCode {
    harness::main([
        Scenario::testbed(
            "udp_library_tunnel_moves_10000_packets_each_way",
            &[],
            |t| library_exchange(t, Transport::Udp),
        ),
        Scenario::testbed(
            "tcp_library_tunnel_moves_10000_packets_each_way",
            &[],
            |t| library_exchange(t, Transport::Tcp),
        ),
    ])
}

/// What one exchange counted.
#[derive(Debug)]
struct Report {
    replies: usize,
    elapsed: Duration,
    stats: StatsSnapshot,
    /// Packets from the tunnel that were not one of our echo replies.
    strays: usize,
}

fn library_exchange(test: &str, transport: Transport) -> Result<()> {
    let started = Instant::now();
    let mut bed = common::start_without_client(TestbedOptions::new(transport))?;
    let config = ClientConfig::load(bed.take_peer_config()?)?;
    let res = bed
        .client_ns()
        .run_inside(WORK_LIMIT + Duration::from_secs(10), move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a tokio runtime")?;
            runtime.block_on(async {
                tokio::time::timeout(WORK_LIMIT, exchange(config, transport))
                    .await
                    .map_err(|_| anyhow::anyhow!("the exchange took over {WORK_LIMIT:?}"))?
            })
        });
    let report = bed.explain(res)?;
    let s = &report.stats;
    println!(
        "{test}: {} requests, {} replies in {:?} ({:.0} round trips/s); tunnel counted tx {} \
         rx {} packets, {} rx drops, {} strays; done in {:?}",
        PACKETS,
        report.replies,
        report.elapsed,
        PACKETS as f64 / report.elapsed.as_secs_f64(),
        s.tx_packets,
        s.rx_packets,
        s.rx_dropped(),
        report.strays,
        started.elapsed()
    );
    ensure!(
        s.tx_packets == PACKETS as u64,
        "the tunnel sent {} data packets, want {PACKETS}",
        s.tx_packets
    );
    ensure!(
        s.rx_packets >= PACKETS as u64,
        "the tunnel received {} data packets, want at least {PACKETS}",
        s.rx_packets
    );
    // The server is still fine after the session left.
    bed.server().ensure_running()
}

/// Connects, runs the driver with an in-memory inside, and plays the host: sends the requests
/// in batches and checks every reply.
async fn exchange(config: ClientConfig, transport: Transport) -> Result<Report> {
    let opts = ConnectOptions {
        transport: match transport {
            Transport::Udp => ringway_client::TransportChoice::Udp,
            Transport::Tcp => ringway_client::TransportChoice::Tcp,
        },
        deadline: Duration::from_secs(10),
        ..ConnectOptions::default()
    };
    let tunnel = Tunnel::connect_with(&config, &opts)
        .await
        .context("connecting the library tunnel")?;
    let session = *tunnel.session_config();
    ensure!(
        session.server_addr == SERVER_TUNNEL_IP,
        "the server's inside address is {}, want {SERVER_TUNNEL_IP}",
        session.server_addr
    );
    let stats = Arc::clone(tunnel.stats());
    // The host end lives until the driver has stopped: dropping it closes the inside, which
    // the driver would report as a failed read.
    let (inside, mut host) = memory(2 * BATCH);
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let host_side = async {
        let res = play_host(&mut host, session.client_addr).await;
        // Whatever happened, stop the driver so that the join below ends.
        let _ = stop.send(());
        res
    };
    let (driven, played) = tokio::join!(driver::run(tunnel, inside, shutdown), host_side);
    let (replies, strays, elapsed) = played?;
    driven.context("the driver failed")?;
    Ok(Report {
        replies,
        elapsed,
        stats: stats.snapshot(),
        strays,
    })
}

/// Sends [`PACKETS`] echo requests from `me` to the server in batches of [`BATCH`], waiting
/// for each batch's replies; returns (replies, strays, time taken). Fails on a duplicate or a
/// damaged reply, and if any reply is missing at the end.
async fn play_host(
    host: &mut MemoryHost,
    me: std::net::Ipv4Addr,
) -> Result<(usize, usize, Duration)> {
    let start = Instant::now();
    let mut seen = vec![false; PACKETS];
    let (mut replies, mut strays) = (0usize, 0usize);
    for first in (0..PACKETS).step_by(BATCH) {
        let end = (first + BATCH).min(PACKETS);
        for seq in first..end {
            let packet =
                icmp::echo_request(me, SERVER_TUNNEL_IP, ECHO_ID, seq16(seq), &payload(seq));
            host.to_tunnel
                .send(packet)
                .await
                .context("the driver stopped reading the inside")?;
        }
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while seen[first..end].iter().any(|s| !s) {
            let packet = match tokio::time::timeout_at(deadline, host.from_tunnel.recv()).await {
                Ok(Some(packet)) => packet,
                Ok(None) => bail!("the driver closed the inside after {replies} replies"),
                Err(_) => {
                    let missing = seen[first..end].iter().filter(|s| !**s).count();
                    ensure!(
                        missing < end - first,
                        "no reply at all to requests {first}..{end} within {BATCH_WAIT:?} \
                         ({replies} replies before)"
                    );
                    // Counted as missing at the end; a late reply still counts.
                    break;
                }
            };
            let reply = match icmp::parse_echo_reply(&packet) {
                Ok(r) if r.id == ECHO_ID && r.src == SERVER_TUNNEL_IP && r.dst == me => r,
                _ => {
                    strays += 1;
                    continue;
                }
            };
            let seq = usize::from(reply.seq);
            ensure!(seq < PACKETS, "reply to a request never sent: seq {seq}");
            ensure!(
                reply.payload == payload(seq),
                "reply {seq} came back with a different payload"
            );
            ensure!(!seen[seq], "reply {seq} came back twice");
            seen[seq] = true;
            replies += 1;
        }
    }
    let missing: Vec<usize> = (0..PACKETS).filter(|s| !seen[*s]).collect();
    ensure!(
        missing.is_empty(),
        "{} of {PACKETS} replies missing (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    Ok((replies, strays, start.elapsed()))
}

/// A payload that differs per request in length and content, so a reply matched to the wrong
/// request, truncated or corrupted shows.
fn payload(seq: usize) -> Vec<u8> {
    let len = 16 + seq % 1000;
    (0..len)
        .map(|i| (seq.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
        .collect()
}

/// The ICMP sequence number of request `seq` (all fit: [`PACKETS`] is below 65 536).
fn seq16(seq: usize) -> u16 {
    u16::try_from(seq).expect("PACKETS fits in an ICMP sequence number")
}
