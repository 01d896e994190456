//! End-to-end tests of the client's batching data path (issue 8, client half): the real
//! binaries in namespaces, with the client's `--offload auto` (TUN `virtio_net_hdr` with TSO
//! and USO, UDP GSO and GRO) and `--offload off` (one packet per system call), over UDP and
//! TCP. Whatever server the binaries directory holds is the other end, offloading or not: a
//! client with offload must work against both.
//!
//! Each checks that traffic arrives whole (ping sizes around the MTU, fragments included;
//! iperf3 TCP both ways and UDP; 64 MiB with SHA-256 both ways; many small flows at once), and
//! with offload on that the client really batched: more than one packet per TUN read during
//! a bulk upload, from the client's own counters (`ringway status --json`). They assert
//! nothing about speed.

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::netns::Netns;
use ringway_e2e::path::TunnelPath;
use ringway_e2e::process::{self, Process};
use ringway_e2e::{transfer, Testbed, TestbedOptions, Transport, SERVER_TUNNEL_IP};
use serde_json::Value;

/// The client's offload mode in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    Off,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Off => "off",
        }
    }
}

fn options(transport: Transport, mode: Mode) -> TestbedOptions {
    TestbedOptions {
        client_args: vec!["--offload".into(), mode.as_str().into()],
        ..TestbedOptions::new(transport)
    }
}

fn main() -> ExitCode {
    let mut scenarios = Vec::new();
    for mode in [Mode::Auto, Mode::Off] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let name = |what: &str| {
                format!(
                    "client_offload_{}_{}_{what}",
                    mode.as_str(),
                    transport.to_string().to_lowercase()
                )
            };
            scenarios.push(Scenario::testbed(
                name("ping_sizes_around_the_mtu"),
                &["ping"],
                move |t| ping_sizes(t, options(transport, mode)),
            ));
            scenarios.push(Scenario::testbed(
                name("iperf3_tcp_both_ways"),
                &["iperf3"],
                move |t| iperf_tcp_both_ways(t, options(transport, mode), mode),
            ));
            scenarios.push(Scenario::testbed(
                name("transfer_64mib_sha256_both_ways"),
                &[],
                move |t| transfer_both_ways(t, options(transport, mode), 64 << 20),
            ));
        }
        let name = |what: &str| format!("client_offload_{}_udp_{what}", mode.as_str());
        scenarios.push(Scenario::testbed(
            name("iperf3_udp_both_ways"),
            &["iperf3"],
            move |t| iperf_udp_both_ways(t, options(Transport::Udp, mode)),
        ));
        scenarios.push(Scenario::testbed(
            name("many_small_flows_at_once"),
            &[],
            move |t| many_small_flows(t, options(Transport::Udp, mode)),
        ));
    }
    harness::main(scenarios)
}

/// ICMP payload sizes around the tunnel MTU (1420): 1372 and 1392 fit (1392 + 28 = 1420,
/// exactly the MTU), 1400 does not and goes as two fragments, as does 4000; 56 is ping's
/// default. Every echo must come back.
fn ping_sizes(test: &str, opts: TestbedOptions) -> Result<()> {
    const COUNT: u32 = 5;
    let mut bed = common::start(opts)?;
    for size in [56u32, 1372, 1392, 1400, 4000] {
        let res = ping_size(&bed, size, COUNT);
        let (sent, received) = bed.explain(res)?;
        println!("{test}: {size}-byte payload: {received}/{sent} replies");
        ensure!(
            received == sent && sent == COUNT,
            "{size}-byte pings: {received} of {sent} replies (want all {COUNT})"
        );
    }
    Ok(())
}

/// `ping -s size` from the client's inside address; (transmitted, received).
fn ping_size(bed: &Testbed, size: u32, count: u32) -> Result<(u32, u32)> {
    let out = process::run(
        bed.client_ns()
            .command("ping")
            .args(["-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "2"])
            .args(["-s", &size.to_string()])
            .args(["-I", &bed.client_tunnel_ip().to_string()])
            .arg(SERVER_TUNNEL_IP.to_string()),
        Duration::from_secs(30),
    )
    .context("running ping")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // "5 packets transmitted, 5 received, 0% packet loss, time 804ms"
    let line = stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| format!("no ping summary in {stdout:?}"))?;
    let number_before = |word: &str| -> Result<u32> {
        let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let at = words
            .iter()
            .position(|w| *w == word)
            .with_context(|| format!("no {word:?} in {line:?}"))?;
        let n = at
            .checked_sub(1)
            .and_then(|i| words[i].parse().ok())
            .with_context(|| format!("no number before {word:?} in {line:?}"))?;
        Ok(n)
    };
    Ok((number_before("packets")?, number_before("received")?))
}

/// A client counter from `ringway status --json`'s `io` object.
fn io_counter(status: &Value, name: &str) -> Result<u64> {
    status["io"][name]
        .as_u64()
        .with_context(|| format!("no io.{name} in the client's status: {status}"))
}

/// Packets per call on a path, from the client's counters.
fn per_call(status: &Value, calls: &str, packets: &str) -> Result<f64> {
    let (c, p) = (io_counter(status, calls)?, io_counter(status, packets)?);
    ensure!(c > 0, "no {calls} at all: {status}");
    Ok(p as f64 / c as f64)
}

/// iperf3 TCP, 3 s each way; with offload on, the upload must have been read from the TUN as
/// superpackets (more than one packet per read), and with it off, never.
fn iperf_tcp_both_ways(test: &str, opts: TestbedOptions, mode: Mode) -> Result<()> {
    let mut bed = common::start(opts)?;
    let client = bed.primary_client();
    let before = bed.client_status(&client)?;
    let up = bed.iperf3(false, 3)?;
    let after_up = bed.client_status(&client)?;
    let down = bed.iperf3(true, 3)?;
    let after = bed.client_status(&client)?;
    for (what, report) in [("upload", up), ("download", down)] {
        println!(
            "{test}: {what} {:.3} Gbit/s, {} bytes, retransmits {:?}",
            report.gbps(),
            report.bytes,
            report.retransmits
        );
        ensure!(report.bytes > 0, "{what}: nothing arrived");
    }
    let reads = io_counter(&after_up, "tun_rx_reads")? - io_counter(&before, "tun_rx_reads")?;
    let packets = io_counter(&after_up, "tun_rx_packets")? - io_counter(&before, "tun_rx_packets")?;
    ensure!(reads > 0, "the upload read nothing from the TUN");
    let read_ratio = packets as f64 / reads as f64;
    let write_ratio = per_call(&after, "tun_tx_writes", "tun_tx_packets")?;
    println!(
        "{test}: upload {read_ratio:.2} packets per TUN read; {write_ratio:.2} packets per TUN \
         write overall; io {}",
        after["io"]
    );
    match mode {
        Mode::Auto => ensure!(
            read_ratio > 1.5,
            "offload on, yet the upload came out of the TUN at {read_ratio:.2} packets per read"
        ),
        Mode::Off => {
            // At most one packet per read (a read still waiting in the client's queue
            // when the counters were read is not counted in packets yet).
            ensure!(
                read_ratio <= 1.0 && read_ratio > 0.99,
                "offload off, yet {read_ratio:.4} packets per TUN read"
            );
            ensure!(
                write_ratio == 1.0,
                "offload off, yet {write_ratio:.2} packets per TUN write"
            );
        }
    }
    Ok(())
}

/// Sends `bytes` of seeded data each way through the tunnel over TCP and checks SHA-256 on
/// both ends: upload as the testbed does it, download with the roles swapped (the receiver
/// in the client's namespace on its inside address).
fn transfer_both_ways(test: &str, opts: TestbedOptions, bytes: u64) -> Result<()> {
    let mut bed = common::start(opts)?;
    let up = bed.transfer_sha256(bytes)?;
    println!(
        "{test}: upload {} bytes in {:?} ({:.3} Gbit/s)",
        up.bytes,
        up.elapsed,
        up.gbps()
    );
    let res = download_sha256(&bed, bytes, 0xd0_d0);
    let down = bed.explain(res)?;
    println!(
        "{test}: download {} bytes in {:?} ({:.3} Gbit/s)",
        down.bytes,
        down.elapsed,
        down.gbps()
    );
    ensure!(up.bytes == bytes && down.bytes == bytes, "short transfer");
    Ok(())
}

/// A transfer from the server's namespace to the client's inside address.
fn download_sha256(bed: &Testbed, bytes: u64, seed: u64) -> Result<transfer::TransferReport> {
    let reversed = TunnelPath {
        server_ns: bed.client_ns(),
        server_ip: bed.client_tunnel_ip(),
        client_ns: bed.server_ns(),
        client_ip: SERVER_TUNNEL_IP,
    };
    transfer::transfer_sha256(&reversed, bytes, seed, Duration::from_secs(60))
}

/// 24 TCP flows of 1 MiB at once, 12 each way, every one's SHA-256 checked: many flows
/// interleaved in every batch, each kept whole and in order.
fn many_small_flows(test: &str, opts: TestbedOptions) -> Result<()> {
    const FLOWS: u64 = 12;
    const BYTES: u64 = 1 << 20;
    let mut bed = common::start(opts)?;
    let (client_ip, client_ns, server_ns) =
        (bed.client_tunnel_ip(), bed.client_ns(), bed.server_ns());
    let up = TunnelPath {
        server_ns,
        server_ip: SERVER_TUNNEL_IP,
        client_ns,
        client_ip,
    };
    let down = TunnelPath {
        server_ns: client_ns,
        server_ip: client_ip,
        client_ns: server_ns,
        client_ip: SERVER_TUNNEL_IP,
    };
    let started = Instant::now();
    let results: Vec<Result<transfer::TransferReport>> = std::thread::scope(|s| {
        let running: Vec<_> = (0..2 * FLOWS)
            .map(|i| {
                let path = if i % 2 == 0 { up } else { down };
                s.spawn(move || {
                    transfer::transfer_sha256(&path, BYTES, 0xf10_0000 + i, Duration::from_secs(60))
                        .with_context(|| {
                            format!("flow {i} ({})", if i % 2 == 0 { "up" } else { "down" })
                        })
                })
            })
            .collect();
        running
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| bail_thread()))
            .collect()
    });
    let mut failed = Vec::new();
    for r in results {
        if let Err(e) = r {
            failed.push(format!("{e:#}"));
        }
    }
    let res = if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{} of {} flows failed: {}",
            failed.len(),
            2 * FLOWS,
            failed.join("; ")
        ))
    };
    bed.explain(res)?;
    println!(
        "{test}: {} flows of {BYTES} bytes, both ways, in {:?}",
        2 * FLOWS,
        started.elapsed()
    );
    Ok(())
}

fn bail_thread() -> Result<transfer::TransferReport> {
    bail!("transfer thread panicked")
}

/// iperf3 UDP at a moderate rate, 3 s each way, 1300-byte datagrams: the receiver must get
/// most of them (a path that dropped UDP, or mangled it, gets none or fails the run).
fn iperf_udp_both_ways(test: &str, opts: TestbedOptions) -> Result<()> {
    let mut bed = common::start(opts)?;
    for reverse in [false, true] {
        let res = iperf_udp(&bed, reverse);
        let (packets, lost) = bed.explain(res)?;
        let what = if reverse { "download" } else { "upload" };
        println!("{test}: {what}: {packets} datagrams, {lost} lost");
        ensure!(packets > 0, "{what}: no datagrams");
        ensure!(
            lost * 2 < packets,
            "{what}: {lost} of {packets} datagrams lost at 200 Mbit/s"
        );
    }
    Ok(())
}

/// One iperf3 UDP run; (datagrams, lost) as the receiver counted them.
fn iperf_udp(bed: &Testbed, reverse: bool) -> Result<(u64, u64)> {
    const PORT: &str = "5201";
    let server_ip = SERVER_TUNNEL_IP.to_string();
    let log = bed.dir().join(format!("iperf3-udp-{reverse}.log"));
    let mut server = Process::spawn(
        "iperf3 server",
        bed.server_ns()
            .command("iperf3")
            .args(["-s", "-1", "-B", &server_ip, "-p", PORT]),
        &log,
    )?;
    wait_listening(bed.server_ns(), &mut server, PORT)?;
    let mut cmd = bed.client_ns().command("iperf3");
    cmd.args(["-c", &server_ip, "-p", PORT])
        .args(["-B", &bed.client_tunnel_ip().to_string()])
        .args(["-u", "-b", "200M", "-l", "1300", "-t", "3", "-J"]);
    if reverse {
        cmd.arg("-R");
    }
    let out = process::run(&mut cmd, Duration::from_secs(30)).context("running iperf3 -u")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&stdout)
        .with_context(|| format!("iperf3 -u printed {:?}", stdout.trim()))?;
    ensure!(
        out.status.success(),
        "iperf3 -u exited with {}: {}",
        out.status,
        json["error"]
    );
    let sum = &json["end"]["sum"];
    let packets = sum["packets"]
        .as_u64()
        .with_context(|| format!("no end.sum.packets: {sum}"))?;
    let lost = sum["lost_packets"].as_u64().unwrap_or(0);
    Ok((packets, lost))
}

/// Polls `ss` until something listens on `port` (TCP: iperf3's control connection).
fn wait_listening(ns: &Netns, server: &mut Process, port: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let sport = format!(":{port}");
    loop {
        server.ensure_running()?;
        let listening = process::run_ok(
            ns.command("ss").args(["-Hltn", "sport", "=", &sport]),
            Duration::from_secs(5),
        )?;
        if !listening.trim().is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("iperf3 server not listening on {port} after 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
