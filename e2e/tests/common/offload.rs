//! Test bodies for the server's segmentation offload (issue 8), each run with the server's
//! `--offload auto` and `--offload off` over both transports.
//!
//! Every body moves traffic both ways and checks it arrived whole (SHA-256, byte-exact raw
//! packets, ping replies, iperf3 byte counts); then it stops the server and reads its final
//! counters: with `auto`, the download traffic must have come out of the TUN as
//! superpackets (more than one packet per read); with `off`, every read and write must
//! have been exactly one packet.
//!
//! The client here is today's (one packet per system call). When the client's own offload
//! lands, add its combinations: client offload on against a server with `--offload off`, and
//! both on (a `client_args(["--offload", ...])` on [`TestbedOptions`], nothing else changes).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ringway_e2e::counters::ServerCounters;
use ringway_e2e::iperf::{self, UdpSpec};
use ringway_e2e::path::TunnelPath;
use ringway_e2e::process::{self, Process};
use ringway_e2e::transfer::{self, TransferOptions};
use ringway_e2e::{Signal, Testbed, TestbedOptions, Transport};
use socket2::{Domain, Protocol, Socket, Type};

/// The server's offload mode under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--offload auto`: what the kernel has (here: vnet_hdr, TSO, USO, UDP GSO and GRO).
    Auto,
    /// `--offload off`: one packet per system call, as before offload.
    Off,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Auto, Mode::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Off => "off",
        }
    }
}

/// How long a transfer may take (64 MiB at a loaded machine's few hundred Mbit/s).
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);
/// Seconds of each iperf3 run.
const IPERF_SECS: u32 = 3;
/// The tunnel MTU the testbed's server hands out.
const MTU: usize = 1420;
/// NOP, NOP, NOP, end of options: the smallest valid IPv4 options word.
const IP_OPTIONS: [u8; 4] = [1, 1, 1, 0];

/// A testbed whose server runs with `--offload MODE`.
pub fn start(transport: Transport, mode: Mode) -> Result<Testbed> {
    let opts = TestbedOptions::new(transport).server_args(["--offload", mode.as_str()]);
    let bed = super::start(opts)?;
    println!("server offload {}", mode.as_str());
    Ok(bed)
}

/// What the final counters must show about offload. `bulk_down`: the test moved bulk TCP
/// from the server's side, which a TSO TUN hands over as superpackets.
fn check_counters(bed: &mut Testbed, mode: Mode, bulk_down: bool) -> Result<ServerCounters> {
    let stopped = bed.stop_server(Duration::from_secs(5))?;
    ensure!(
        stopped.status.code() == Some(0),
        "server exited {}",
        stopped.status
    );
    let c = bed
        .final_server_counters()
        .context("the server logged no final counters")?;
    let get = |name: &str| c.get(name).unwrap_or(0);
    println!(
        "counters: tun_rx {}/{} (superpackets {}), tun_tx {}/{} (superpackets {}), \
         udp_tx {}/{}, udp_rx {}/{}, tcp_tx {}/{}, tcp_rx {}/{}, offload_dropped {}",
        get("tun_rx_packets"),
        get("tun_rx_reads"),
        get("tun_rx_superpackets"),
        get("tun_tx_packets"),
        get("tun_tx_writes"),
        get("tun_tx_superpackets"),
        get("udp_tx_datagrams"),
        get("udp_tx_sends"),
        get("udp_rx_datagrams"),
        get("udp_rx_recvs"),
        get("tcp_tx_frames"),
        get("tcp_tx_sends"),
        get("tcp_rx_frames"),
        get("tcp_rx_recvs"),
        get("offload_dropped"),
    );
    ensure!(
        get("offload_dropped") == 0,
        "the server dropped TUN reads it could not segment"
    );
    match mode {
        Mode::Off => {
            ensure!(
                get("tun_rx_reads") == get("tun_rx_packets")
                    && get("tun_tx_writes") == get("tun_tx_packets")
                    && get("tun_rx_superpackets") + get("tun_tx_superpackets") == 0,
                "offload off, yet a TUN read or write carried several packets"
            );
            ensure!(
                get("udp_tx_sends") == get("udp_tx_datagrams"),
                "offload off, yet a UDP send carried several datagrams"
            );
        }
        Mode::Auto if bulk_down => {
            let log = bed.server().log_tail(400);
            if !log.contains("vnet_hdr+tso4/6") {
                println!("the kernel gave the TUN no TSO here: nothing to check");
                return Ok(c);
            }
            ensure!(
                get("tun_rx_superpackets") > 0 && get("tun_rx_packets") > get("tun_rx_reads"),
                "offload auto on a TSO TUN, yet no read was a superpacket"
            );
        }
        Mode::Auto => {}
    }
    Ok(c)
}

/// Pings the server with payloads around the MTU: the largest that fits one packet with DF
/// set, one byte more (fragmented by the client's kernel), and a few others.
pub fn ping_sizes(test: &str, transport: Transport, mode: Mode) -> Result<()> {
    let mut bed = start(transport, mode)?;
    let path = bed.tunnel_path(&bed.primary_client())?;
    let fits = MTU - 28;
    for (size, dont_fragment) in [
        (56, true),
        (1000, true),
        (fits - 1, true),
        (fits, true),
        (fits + 1, false),
        (3 * MTU, false),
    ] {
        let mut cmd = path.client_ns.command("ping");
        cmd.args(["-n", "-c", "3", "-i", "0.2", "-W", "2"])
            .args(["-s", &size.to_string()])
            .args(["-M", if dont_fragment { "do" } else { "dont" }])
            .args(["-I", &path.client_ip.to_string()])
            .arg(path.server_ip.to_string());
        let out = process::run(&mut cmd, Duration::from_secs(20))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stats = ringway_e2e::ping::parse(&stdout)
            .with_context(|| format!("ping -s {size}: {}", stdout.trim()))?;
        println!("{test}: ping -s {size}: {stats:?}");
        ensure!(
            stats.received >= 2,
            "ping -s {size}: {} of {} replies",
            stats.received,
            stats.transmitted
        );
    }
    check_counters(&mut bed, mode, false).map(drop)
}

/// iperf3 TCP one way then the other.
pub fn iperf_tcp(test: &str, transport: Transport, mode: Mode) -> Result<()> {
    let mut bed = start(transport, mode)?;
    for reverse in [false, true] {
        let r = bed.iperf3(reverse, IPERF_SECS)?;
        println!(
            "{test}: reverse={reverse} {:.3} Gbit/s, retransmits {:?}",
            r.gbps(),
            r.retransmits
        );
        ensure!(r.bytes > 0, "reverse={reverse}: no data moved");
    }
    check_counters(&mut bed, mode, true).map(drop)
}

/// iperf3 UDP one way then the other, full-size datagrams (equal sizes are what UDP
/// coalescing merges) at a rate the tunnel carries.
pub fn iperf_udp(test: &str, transport: Transport, mode: Mode) -> Result<()> {
    let mut bed = start(transport, mode)?;
    let path = bed.tunnel_path(&bed.primary_client())?;
    for reverse in [false, true] {
        let spec = UdpSpec {
            secs: IPERF_SECS,
            bits_per_second: 100_000_000,
            len: (MTU - 28) as u32,
            reverse,
            socket_buffer: None,
        };
        let r = iperf::run_udp(&path, &spec, bed.dir())?;
        println!("{test}: reverse={reverse} {r:?}");
        ensure!(
            r.bytes > 0 && r.lost * 2 <= r.packets,
            "reverse={reverse}: {} of {} datagrams lost",
            r.lost,
            r.packets
        );
    }
    check_counters(&mut bed, mode, false).map(drop)
}

/// 64 MiB client -> server and 64 MiB server -> client, SHA-256 checked.
pub fn transfer_both_ways(test: &str, transport: Transport, mode: Mode) -> Result<()> {
    let mut bed = start(transport, mode)?;
    let path = bed.tunnel_path(&bed.primary_client())?;
    for (dir, p) in [("up", path), ("down", path.reversed())] {
        let r = transfer::transfer_sha256(&p, 64 << 20, 0x5eed, TRANSFER_DEADLINE)
            .with_context(|| format!("64 MiB {dir}"))?;
        println!(
            "{test}: {dir} {} bytes in {:?} ({:.3} Gbit/s)",
            r.bytes,
            r.elapsed,
            r.gbps()
        );
    }
    check_counters(&mut bed, mode, true).map(drop)
}

/// 48 TCP flows at once, half each way, 128 KiB each, every one SHA-256 checked: many
/// flows in one receive batch, none merged with another.
pub fn many_small_flows(test: &str, transport: Transport, mode: Mode) -> Result<()> {
    const FLOWS: u64 = 48;
    let mut bed = start(transport, mode)?;
    let path = bed.tunnel_path(&bed.primary_client())?;
    let started = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let running: Vec<_> = (0..FLOWS)
            .map(|i| {
                let p = if i % 2 == 0 { path } else { path.reversed() };
                s.spawn(move || {
                    transfer::transfer_sha256(&p, 128 << 10, i, TRANSFER_DEADLINE)
                        .map(drop)
                        .with_context(|| format!("flow {i}"))
                })
            })
            .collect();
        running
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("flow thread panicked")))
            })
            .collect()
    });
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    ensure!(
        failed.is_empty(),
        "{} of {FLOWS} flows failed: {}",
        failed.len(),
        failed.join("; ")
    );
    println!("{test}: {FLOWS} flows in {:?}", started.elapsed());
    check_counters(&mut bed, mode, false).map(drop)
}

/// IPv4 packets carrying options: a TCP transfer each way whose every segment has them
/// (SHA-256 checked), then raw UDP datagrams each way compared byte for byte, header and
/// options included. Offload copies options into every segment it cuts and never merges a
/// packet that has them.
pub fn ipv4_options(test: &str, transport: Transport, mode: Mode) -> Result<()> {
    let mut bed = start(transport, mode)?;
    let path = bed.tunnel_path(&bed.primary_client())?;
    let with_options = TransferOptions {
        ip_options: IP_OPTIONS.to_vec(),
    };
    for (dir, p) in [("up", path), ("down", path.reversed())] {
        let r = transfer::transfer_sha256_with(&p, 8 << 20, 7, TRANSFER_DEADLINE, &with_options)
            .with_context(|| format!("8 MiB {dir} with IPv4 options"))?;
        println!("{test}: {dir} with IPv4 options: {} bytes intact", r.bytes);
        let n = raw_udp_with_options(&p).with_context(|| format!("raw UDP {dir}"))?;
        println!("{test}: {dir}: {n} UDP datagrams with IPv4 options arrived byte for byte");
    }
    check_counters(&mut bed, mode, true).map(drop)
}

/// Port the raw datagrams go to.
const RAW_PORT: u16 = 40404;
/// Datagrams sent per direction.
const RAW_COUNT: u16 = 100;

/// Datagrams in flight at once: a burst, yet small enough that a slow receiver (today's
/// client reads one packet per system call) does not overflow its socket buffer.
const RAW_WINDOW: usize = 10;
/// How long a datagram may take before it is sent again.
const RAW_WAIT: Duration = Duration::from_secs(2);
/// Sends of one datagram before the test gives up on it.
const RAW_TRIES: u32 = 3;

/// Sends [`RAW_COUNT`] equal-sized UDP datagrams with IPv4 options from the client end of
/// `path` to its server end on a raw socket, [`RAW_WINDOW`] at a time, and checks that each
/// arrives exactly as sent; returns how many did (all, or an error). UDP may lose a
/// datagram on a loaded machine: one that does not arrive is sent again (at most
/// [`RAW_TRIES`] times); one that arrives changed fails the test at once.
fn raw_udp_with_options(path: &TunnelPath<'_>) -> Result<usize> {
    let (src, dst) = (path.client_ip, path.server_ip);
    // Sockets stay in the namespace they were made in, whichever thread uses them.
    let rx = path
        .server_ns
        .run_inside(Duration::from_secs(10), move || {
            let s = Socket::new(
                Domain::IPV4,
                Type::from(libc::SOCK_RAW),
                Some(Protocol::UDP),
            )?;
            s.bind(&SocketAddr::from((dst, 0)).into())?;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            Ok(s)
        })?;
    let tx = path
        .client_ns
        .run_inside(Duration::from_secs(10), move || {
            let s = Socket::new(
                Domain::IPV4,
                Type::from(libc::SOCK_RAW),
                Some(Protocol::from(libc::IPPROTO_RAW)),
            )?;
            s.bind(&SocketAddr::from((src, 0)).into())?;
            Ok(s)
        })?;
    let to = SocketAddr::from((dst, 0)).into();
    let sent: Vec<Vec<u8>> = (0..RAW_COUNT)
        .map(|i| udp_with_options(src, dst, 1000 + i))
        .collect();
    let mut seen = vec![false; sent.len()];
    let mut resent = 0;
    let mut buf = vec![0u8; 4096];
    for window in (0..sent.len()).collect::<Vec<_>>().chunks(RAW_WINDOW) {
        for try_no in 1..=RAW_TRIES {
            for &i in window.iter().filter(|&&i| !seen[i]) {
                tx.send_to(&sent[i], &to).context("raw send")?;
                resent += usize::from(try_no > 1);
            }
            let deadline = Instant::now() + RAW_WAIT;
            while window.iter().any(|&i| !seen[i]) && Instant::now() < deadline {
                let n = match (&rx).read(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(e) => return Err(e).context("raw receive"),
                };
                if let Some(i) = match_datagram(&buf[..n], src, &sent)? {
                    seen[i] = true;
                }
            }
            if window.iter().all(|&i| seen[i]) {
                break;
            }
        }
        let missing: Vec<_> = window.iter().filter(|&&i| !seen[i]).collect();
        ensure!(
            missing.is_empty(),
            "datagrams {missing:?} never arrived in {RAW_TRIES} tries"
        );
    }
    if resent > 0 {
        println!("({resent} datagrams lost on the way and sent again)");
    }
    Ok(sent.len())
}

/// Which of `sent` the raw packet `got` is, if it is one of ours; an error if it is ours
/// but changed on the way.
fn match_datagram(got: &[u8], src: Ipv4Addr, sent: &[Vec<u8>]) -> Result<Option<usize>> {
    // The raw socket sees every UDP packet to this address; ours come from `src` to
    // RAW_PORT with one word of options.
    let ours = got.len() >= 28
        && got[0] == 0x46
        && got[12..16] == src.octets()
        && got[26..28] == RAW_PORT.to_be_bytes();
    if !ours {
        return Ok(None);
    }
    let ident = usize::from(u16::from_be_bytes([got[4], got[5]]));
    let Some(i) = ident.checked_sub(1000).filter(|&i| i < sent.len()) else {
        bail!("a datagram with unknown ident {ident}");
    };
    ensure!(
        got == sent[i].as_slice(),
        "datagram {i} changed on the way: sent {:02x?}, got {:02x?}",
        &sent[i][..32],
        &got[..got.len().min(32)]
    );
    Ok(Some(i))
}

/// An IPv4/UDP datagram from `src` to `dst`:[`RAW_PORT`] with [`IP_OPTIONS`], identification
/// `ident`, DF set, a 1 200-byte payload unique to it, both checksums filled.
fn udp_with_options(src: Ipv4Addr, dst: Ipv4Addr, ident: u16) -> Vec<u8> {
    let ihl = 20 + IP_OPTIONS.len();
    let payload: Vec<u8> = (0..1200u32)
        .map(|i| (i as u16 ^ ident.rotate_left(3)) as u8)
        .collect();
    let len = ihl + 8 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x40 | (ihl / 4) as u8;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..ihl].copy_from_slice(&IP_OPTIONS);
    let c = checksum(&[&p[..ihl]]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let udp_len = (8 + payload.len()) as u16;
    p[ihl..ihl + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[ihl + 2..ihl + 4].copy_from_slice(&RAW_PORT.to_be_bytes());
    p[ihl + 4..ihl + 6].copy_from_slice(&udp_len.to_be_bytes());
    p[ihl + 8..].copy_from_slice(&payload);
    let pseudo = [
        &src.octets()[..],
        &dst.octets()[..],
        &[0, 17],
        &udp_len.to_be_bytes()[..],
    ]
    .concat();
    let c = checksum(&[&pseudo, &p[ihl..]]);
    p[ihl + 6..ihl + 8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    p
}

/// The Internet checksum of `chunks` laid end to end (each of even length but the last).
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for chunk in chunks {
        let mut words = chunk.chunks_exact(2);
        for w in &mut words {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [b] = words.remainder() {
            sum += u32::from(*b) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Calls the data path makes that are not `io_uring_enter`: any of them during traffic
/// means a packet took a system call of its own.
const DATA_PATH_SYSCALLS: &[&str] = &[
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "sendmsg",
    "recvmsg",
    "sendto",
    "recvfrom",
    "sendmmsg",
    "recvmmsg",
    "send",
    "recv",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
];
/// Calls allowed in small numbers: the allocator and thread parking.
const HOUSEKEEPING: &[&str] = &["futex", "brk", "mmap", "munmap", "madvise", "mremap"];
/// How many housekeeping calls a few seconds of traffic may make.
const HOUSEKEEPING_LIMIT: u64 = 50;

/// Attaches `strace -f -c` to the server for an iperf3 run each way and returns how often
/// it made each system call meanwhile.
fn server_syscalls_during_traffic(test: &str, opts: TestbedOptions) -> Result<Vec<(String, u64)>> {
    let mut bed = super::start(opts)?;
    let dir = bed.dir().to_path_buf();
    let summary = dir.join("strace-summary.txt");
    let log = dir.join("strace.log");
    let mut strace = Process::spawn(
        "strace",
        Command::new("strace")
            .args(["-f", "-c", "-o"])
            .arg(&summary)
            .args(["-p", &bed.server_pid().to_string()]),
        &log,
    )?;
    wait_for_line(&mut strace, &log, "attached", Duration::from_secs(15))?;
    for reverse in [false, true] {
        let r = bed.iperf3(reverse, IPERF_SECS)?;
        println!(
            "{test}: reverse={reverse} {:.3} Gbit/s under strace",
            r.gbps()
        );
        ensure!(r.bytes > 0, "nothing moved through the tunnel");
    }
    strace.signal(Signal::Int)?;
    let status = strace
        .wait_timeout(Duration::from_secs(15))?
        .context("strace did not exit on SIGINT")?;
    println!("{test}: strace exited {status}");
    let text = std::fs::read_to_string(&summary)
        .with_context(|| format!("reading {}", summary.display()))?;
    println!("{text}");
    parse_strace_summary(&text)
}

/// Checks that the io_uring server's data path made no system call but `io_uring_enter`
/// during traffic each way.
pub fn only_io_uring_enter(test: &str, transport: Transport) -> Result<()> {
    let opts = TestbedOptions::new(transport).server_args(["--io", "uring"]);
    let calls = server_syscalls_during_traffic(test, opts)?;
    let uring = calls
        .iter()
        .find(|(n, _)| n == "io_uring_enter")
        .map(|c| c.1);
    ensure!(
        uring.is_some_and(|n| n > 100),
        "io_uring_enter made {uring:?} calls: the trace did not see the data path"
    );
    for (name, n) in &calls {
        ensure!(
            !DATA_PATH_SYSCALLS.contains(&name.as_str()),
            "the server called {name} {n} times during traffic"
        );
        if name != "io_uring_enter" {
            ensure!(
                HOUSEKEEPING.contains(&name.as_str()) && *n <= HOUSEKEEPING_LIMIT,
                "the server called {name} {n} times during traffic"
            );
        }
    }
    Ok(())
}

/// Checks that the tokio backend carries traffic each way without a single io_uring system
/// call: readiness (`epoll_wait`) and plain reads, writes and socket calls only.
pub fn tokio_makes_no_io_uring_call(test: &str, transport: Transport) -> Result<()> {
    let opts = TestbedOptions::new(transport).server_args(["--io", "tokio"]);
    let calls = server_syscalls_during_traffic(test, opts)?;
    let uring: Vec<_> = calls
        .iter()
        .filter(|(n, _)| n.starts_with("io_uring"))
        .collect();
    ensure!(uring.is_empty(), "the tokio backend called {uring:?}");
    let count = |name: &str| calls.iter().find(|(n, _)| n == name).map_or(0, |c| c.1);
    ensure!(
        count("epoll_wait") + count("epoll_pwait") + count("epoll_pwait2") > 10,
        "no epoll waits: the trace did not see the data path ({calls:?})"
    );
    let io = [
        "read", "write", "writev", "sendmsg", "recvmsg", "recvmmsg", "sendto", "recvfrom",
    ];
    let moved: u64 = io.iter().map(|n| count(n)).sum();
    ensure!(
        moved > 100,
        "only {moved} I/O calls during traffic: {calls:?}"
    );
    Ok(())
}

/// Waits until `log` (the output of `p`) contains `needle`.
fn wait_for_line(p: &mut Process, log: &Path, needle: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        p.ensure_running()?;
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{} did not say {needle:?} within {limit:?}", p.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(syscall, calls)` for every row of an `strace -c` summary.
fn parse_strace_summary(text: &str) -> Result<Vec<(String, u64)>> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"%") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with('-') || fields.last() == Some(&"total") {
            continue;
        }
        // % time, seconds, usecs/call, calls, [errors], syscall
        if fields.len() >= 5 {
            let name = fields[fields.len() - 1].to_string();
            let calls = fields[3]
                .parse()
                .with_context(|| format!("strace row {line:?}"))?;
            rows.push((name, calls));
        }
    }
    ensure!(!rows.is_empty(), "no rows in the strace summary:\n{text}");
    Ok(rows)
}
