//! What is measured through a running system, and how each measurement becomes metrics.
//!
//! A test is named on the command line (`iperf-tcp-4-reverse`, `ping-idle`, `udp-pps-64`) and
//! yields named metrics (`gbps`, `cpu_server_s_per_gb`, `rtt_p99_ms`, `pps`); the report shows
//! whichever metrics a test's runs produced, so a new test or metric needs no change to the
//! tables.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringway_e2e::cpu::CpuTime;
use ringway_e2e::iperf::{self, IperfReport, IperfSpec, UdpReport, UdpSpec};
use ringway_e2e::netdev::NetDev;
use ringway_e2e::path::TunnelPath;
use ringway_e2e::ping::{self, PingSample};
use ringway_e2e::snmp::Snmp;

use super::rate::{Outcome, RateSearch, SearchConfig, Stop};
use super::system::{Running, TunnelProcess};

/// Metric name to value, for one run.
pub type Metrics = BTreeMap<String, f64>;

/// Interval between echo requests when sampling RTT (20 a second: enough samples for a p99).
pub const PING_INTERVAL: Duration = Duration::from_millis(50);
/// How much longer the bulk flow of a ping-under-load test runs than the ping, so that every
/// echo request meets the load (the flow needs a moment to start, see [`LOAD_SEGMENTS`]).
const LOAD_TAIL_SECS: u32 = 3;
/// TCP segments the bulk sender must have sent before pinging starts: the flow is up.
const LOAD_SEGMENTS: i64 = 1000;
/// Bound for the bulk flow to get going (it normally takes well under a second).
const LOAD_START_LIMIT: Duration = Duration::from_secs(15);
/// Seconds of each step of a packet rate search.
const PPS_STEP_SECS: u32 = 1;
/// IPv4 and UDP headers: an IP packet of `size` bytes carries `size - 28` of iperf3 payload.
const IP_UDP_HEADERS: u32 = 28;
/// Socket buffers of iperf3 in a rate test (`-w`; the kernel doubles it, up to
/// `net.core.rmem_max`): the receiving iperf3 waits for a CPU now and then on two shared
/// cores, and a default 208 KiB buffer would drop that burst itself, charging the loss to the
/// tunnel.
const PPS_SOCKET_BUFFER: u32 = 2 << 20;
/// Packet sizes a rate test accepts: iperf3 needs 16 bytes of payload, and nothing may be
/// fragmented at the tunnels' MTU of 1420.
const PPS_SIZES: std::ops::RangeInclusive<u32> = 44..=1420;

/// The tests a run makes unless `--tests` says otherwise, in order.
pub const DEFAULT_TESTS: &[&str] = &[
    "iperf-tcp-1",
    "iperf-tcp-1-reverse",
    "ping-idle",
    "ping-under-load",
    "udp-pps-1400",
    "udp-pps-64",
];

/// What `--tests all` runs: the default tests and the 4-stream ones.
pub const ALL_TESTS: &[&str] = &[
    "iperf-tcp-1",
    "iperf-tcp-1-reverse",
    "iperf-tcp-4",
    "iperf-tcp-4-reverse",
    "ping-idle",
    "ping-under-load",
    "udp-pps-1400",
    "udp-pps-64",
];

/// One kind of measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// iperf3 TCP with `streams` parallel streams, client to server (`reverse`: server to
    /// client), with CPU per GB of the tunnel's processes.
    Iperf {
        /// Parallel streams.
        streams: u32,
        /// Server sends.
        reverse: bool,
    },
    /// Ping through the idle tunnel.
    PingIdle,
    /// Ping beside a bulk iperf3 TCP flow of `streams` streams (`reverse`: a download).
    PingUnderLoad {
        /// Parallel streams of the bulk flow.
        streams: u32,
        /// The bulk flow goes server to client.
        reverse: bool,
    },
    /// The highest rate of UDP packets of `size` bytes (IP packet, headers included) carried
    /// client to server with less than 1 % loss, found by a [`RateSearch`] of iperf3 steps.
    UdpPps {
        /// IP packet size in bytes.
        size: u32,
    },
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rev = |r: bool| if r { "-reverse" } else { "" };
        match *self {
            Self::Iperf { streams, reverse } => write!(f, "iperf-tcp-{streams}{}", rev(reverse)),
            Self::PingIdle => f.write_str("ping-idle"),
            Self::PingUnderLoad {
                streams: 1,
                reverse: false,
            } => f.write_str("ping-under-load"),
            Self::PingUnderLoad { streams, reverse } => {
                write!(f, "ping-under-tcp-{streams}{}", rev(reverse))
            }
            Self::UdpPps { size } => write!(f, "udp-pps-{size}"),
        }
    }
}

impl FromStr for Test {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let streams_and_direction = |rest: &str| -> Result<(u32, bool)> {
            let (n, reverse) = match rest.strip_suffix("-reverse") {
                Some(n) => (n, true),
                None => (rest, false),
            };
            let streams: u32 = n
                .parse()
                .with_context(|| format!("{n:?} is not a stream count"))?;
            if !(1..=128).contains(&streams) {
                bail!("{streams} streams: use 1 to 128");
            }
            Ok((streams, reverse))
        };
        let test = if s == "ping-idle" {
            Self::PingIdle
        } else if s == "ping-under-load" {
            Self::PingUnderLoad {
                streams: 1,
                reverse: false,
            }
        } else if let Some(rest) = s.strip_prefix("iperf-tcp-") {
            let (streams, reverse) = streams_and_direction(rest)?;
            Self::Iperf { streams, reverse }
        } else if let Some(rest) = s.strip_prefix("ping-under-tcp-") {
            let (streams, reverse) = streams_and_direction(rest)?;
            Self::PingUnderLoad { streams, reverse }
        } else if let Some(n) = s.strip_prefix("udp-pps-") {
            let size: u32 = n
                .parse()
                .with_context(|| format!("{n:?} is not a packet size"))?;
            if !PPS_SIZES.contains(&size) {
                bail!(
                    "{size}-byte packets: use {} to {} (IP packet size)",
                    PPS_SIZES.start(),
                    PPS_SIZES.end()
                );
            }
            Self::UdpPps { size }
        } else {
            bail!(
                "unknown test {s:?}; known: all, iperf-tcp-N[-reverse], ping-idle, \
                 ping-under-load, ping-under-tcp-N[-reverse], udp-pps-SIZE"
            );
        };
        Ok(test)
    }
}

impl Test {
    /// One line saying what it measures, for table headings.
    pub fn describe(&self) -> String {
        let way = |reverse: bool| {
            if reverse {
                "server → client (download)"
            } else {
                "client → server (upload)"
            }
        };
        let streams = |n: u32| {
            if n == 1 {
                "1 stream".to_owned()
            } else {
                format!("{n} streams")
            }
        };
        match *self {
            Self::Iperf {
                streams: n,
                reverse,
            } => {
                format!("iperf3 TCP {}, {}", way(reverse), streams(n))
            }
            Self::PingIdle => "ping RTT through the idle tunnel".to_owned(),
            Self::PingUnderLoad {
                streams: n,
                reverse,
            } => format!(
                "ping RTT beside bulk iperf3 TCP {}, {}",
                way(reverse),
                streams(n)
            ),
            Self::UdpPps { size } => format!(
                "highest UDP packet rate with < 1 % loss, {}, {size}-byte IP packets \
                 (iperf3 -l {}), {PPS_STEP_SECS} s steps",
                way(false),
                size - IP_UDP_HEADERS
            ),
        }
    }

    /// Roughly how long one run takes with `secs` of traffic, start and stop of the system
    /// not included: for the estimate printed at start.
    pub fn estimate_secs(&self, secs: u32) -> f64 {
        let secs = f64::from(secs.max(1));
        // Measured on the 2-core VM: iperf3 and ping start in about 0.1 s; a rate step is
        // iperf3's second plus its start. Most searches use all their steps.
        match *self {
            Self::Iperf { .. } => secs + 0.1,
            Self::PingIdle => secs + 0.1,
            Self::PingUnderLoad { .. } => secs + f64::from(LOAD_TAIL_SECS) + 0.3,
            Self::UdpPps { .. } => {
                f64::from(SearchConfig::default().max_steps) * (f64::from(PPS_STEP_SECS) + 0.1)
            }
        }
    }

    /// Whether its table shows the server's packets per system call.
    pub fn shows_ratios(&self) -> bool {
        matches!(self, Self::Iperf { .. })
    }

    /// Runs it for about `secs` seconds through `running`; iperf3 server logs go to `log_dir`.
    pub fn run(&self, running: &dyn Running, secs: u32, log_dir: &Path) -> Result<Metrics> {
        match *self {
            Self::Iperf { streams, reverse } => {
                let spec = IperfSpec {
                    secs,
                    streams,
                    reverse,
                };
                iperf_with_cpu(running, &spec, log_dir)
            }
            Self::PingIdle => {
                let sample = ping::sample(&running.path(), ping_count(secs), PING_INTERVAL)?;
                Ok(ping_metrics(&sample))
            }
            Self::PingUnderLoad { streams, reverse } => {
                ping_under_load(running, secs, streams, reverse, log_dir)
            }
            Self::UdpPps { size } => udp_pps(running, size, log_dir),
        }
    }
}

/// Echo requests for `secs` seconds at [`PING_INTERVAL`].
fn ping_count(secs: u32) -> u32 {
    let per_sec = (1.0 / PING_INTERVAL.as_secs_f64()).round() as u32;
    secs.max(1) * per_sec
}

/// Reads the CPU time of every tunnel process.
fn cpu_times(processes: &[TunnelProcess]) -> Result<Vec<CpuTime>> {
    processes
        .iter()
        .map(|p| CpuTime::of(p.pid).with_context(|| format!("CPU time of the {}", p.role)))
        .collect()
}

/// An iperf3 run with the tunnel processes' CPU read just before and just after it.
fn iperf_with_cpu(running: &dyn Running, spec: &IperfSpec, log_dir: &Path) -> Result<Metrics> {
    let processes = running.processes();
    let before = cpu_times(&processes)?;
    let report = iperf::run_spec(&running.path(), spec, log_dir)?;
    let after = cpu_times(&processes)?;
    let used: Vec<(&str, f64)> = processes
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(p, (b, a))| (p.role, a.since(b).total().as_secs_f64()))
        .collect();
    Ok(iperf_metrics(&report, &used))
}

/// Throughput, retransmits and CPU-seconds per GB moved, given the CPU seconds each tunnel
/// process used during the run.
fn iperf_metrics(report: &IperfReport, cpu_used: &[(&str, f64)]) -> Metrics {
    let mut m = Metrics::new();
    m.insert("gbps".into(), report.gbps());
    if let Some(r) = report.retransmits {
        m.insert("retransmits".into(), r as f64);
    }
    let gb = report.bytes as f64 / 1e9;
    if gb <= 0.0 {
        return m;
    }
    for (role, secs) in cpu_used {
        m.insert(format!("cpu_{role}_s_per_gb"), secs / gb);
    }
    if !cpu_used.is_empty() {
        let total: f64 = cpu_used.iter().map(|(_, s)| s).sum();
        m.insert("cpu_tunnel_s_per_gb".into(), total / gb);
    }
    if let (Some(c), Some(s)) = (report.cpu_client_pct, report.cpu_server_pct) {
        m.insert(
            "cpu_iperf3_s_per_gb".into(),
            (c + s) / 100.0 * report.seconds / gb,
        );
    }
    m
}

fn ping_metrics(sample: &PingSample) -> Metrics {
    let mut m = Metrics::new();
    if let Some(v) = sample.percentile_ms(50.0) {
        m.insert("rtt_p50_ms".into(), v);
    }
    if let Some(v) = sample.percentile_ms(99.0) {
        m.insert("rtt_p99_ms".into(), v);
    }
    if let Some(v) = sample.mean_ms() {
        m.insert("rtt_avg_ms".into(), v);
    }
    m.insert("loss_pct".into(), sample.loss_pct());
    m
}

/// Starts the bulk flow, waits until its sender has put [`LOAD_SEGMENTS`] on the wire, pings
/// for `secs`, then collects the flow's result.
fn ping_under_load(
    running: &dyn Running,
    secs: u32,
    streams: u32,
    reverse: bool,
    log_dir: &Path,
) -> Result<Metrics> {
    let path = running.path();
    let sender = if reverse {
        path.server_ns
    } else {
        path.client_ns
    };
    let spec = IperfSpec {
        secs: secs + LOAD_TAIL_SECS,
        streams,
        reverse,
    };
    let before = Snmp::read(sender)?;
    let queues = Queues::read(&path)?;
    let (sample, bulk) = std::thread::scope(|s| {
        let bulk = s.spawn(move || iperf::run_spec(&path, &spec, log_dir));
        let deadline = Instant::now() + LOAD_START_LIMIT;
        let loaded = loop {
            if bulk.is_finished() {
                break Err(anyhow::anyhow!("the bulk flow ended before pinging began"));
            }
            match Snmp::read(sender) {
                Ok(now) if now.delta(&before, "Tcp.OutSegs") >= LOAD_SEGMENTS => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            if Instant::now() >= deadline {
                break Err(anyhow::anyhow!(
                    "the bulk flow sent fewer than {LOAD_SEGMENTS} segments in {LOAD_START_LIMIT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let sample = loaded.and_then(|()| ping::sample(&path, ping_count(secs), PING_INTERVAL));
        let bulk = bulk
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the bulk flow's thread panicked")));
        (sample, bulk)
    });
    let bulk = bulk.context("the bulk flow")?;
    let mut m = ping_metrics(&sample?);
    m.insert("bulk_gbps".into(), bulk.gbps());
    if let Some(r) = bulk.retransmits {
        m.insert("bulk_retransmits".into(), r as f64);
    }
    Queues::read(&path)?.since(&queues, reverse, &mut m);
    Ok(m)
}

/// Searches for the highest rate of `size`-byte packets the path carries with less than 1 %
/// loss, one iperf3 UDP step of [`PPS_STEP_SECS`] per rate the search asks for.
fn udp_pps(running: &dyn Running, size: u32, log_dir: &Path) -> Result<Metrics> {
    let path = running.path();
    let len = size - IP_UDP_HEADERS;
    let mut search = RateSearch::new(SearchConfig::default());
    while let Some(pps) = search.poll_rate() {
        let spec = UdpSpec {
            secs: PPS_STEP_SECS,
            bits_per_second: pps * u64::from(len) * 8,
            len,
            reverse: false,
            socket_buffer: Some(PPS_SOCKET_BUFFER),
        };
        let report = iperf::run_udp(&path, &spec, log_dir)
            .with_context(|| format!("iperf3 UDP at {pps} packets/s"))?;
        search.handle_outcome(step_outcome(pps, &report, len)?);
    }
    let Some(best) = search.best() else {
        bail!(
            "no rate down to {} packets/s kept loss under 1 % ({:?})",
            SearchConfig::default().min_pps,
            search.stop()
        );
    };
    let sender_limited = search.stop() == Some(Stop::SenderLimited);
    Ok(pps_metrics(best, size, search.steps(), sender_limited))
}

/// What one step of `len`-byte datagrams offered at `offered` packets/s measured.
fn step_outcome(offered: u64, r: &UdpReport, len: u32) -> Result<Outcome> {
    anyhow::ensure!(
        r.seconds > 0.0 && r.packets > 0,
        "iperf3 reported no datagrams or no duration: {r:?}"
    );
    let received = r.bytes as f64 / f64::from(len);
    Ok(Outcome {
        offered_pps: offered,
        sent_pps: r.packets as f64 / r.seconds,
        received_pps: received / r.seconds,
        loss_pct: 100.0 * r.lost as f64 / r.packets as f64,
    })
}

/// The best step's figures; `sender_limited`: the search ended because iperf3 could not send
/// faster (the figure is iperf3's limit, not the path's).
fn pps_metrics(best: &Outcome, size: u32, steps: u32, sender_limited: bool) -> Metrics {
    let mut m = Metrics::new();
    m.insert("pps".into(), best.received_pps);
    m.insert(
        "pps_gbps".into(),
        best.received_pps * f64::from(size) * 8.0 / 1e9,
    );
    m.insert("pps_loss_pct".into(), best.loss_pct);
    m.insert("pps_steps".into(), f64::from(steps));
    m.insert(
        "pps_sender_limited".into(),
        if sender_limited { 1.0 } else { 0.0 },
    );
    m
}

/// The counters that say where a run's packets were lost: each namespace's TCP senders,
/// UDP receive buffers and TUN transmit queues.
struct Queues {
    server: (Snmp, NetDev),
    client: (Snmp, NetDev),
}

impl Queues {
    fn read(path: &TunnelPath<'_>) -> Result<Self> {
        Ok(Self {
            server: (Snmp::read(path.server_ns)?, NetDev::read(path.server_ns)?),
            client: (Snmp::read(path.client_ns)?, NetDev::read(path.client_ns)?),
        })
    }

    /// Adds what grew since `earlier`: the bulk sender's retransmits as a share of its
    /// segments (`reverse`: the server's namespace sends), and drops per queue and side.
    fn since(&self, earlier: &Self, reverse: bool, m: &mut Metrics) {
        let sender = if reverse { &self.server } else { &self.client };
        let sender_before = if reverse {
            &earlier.server
        } else {
            &earlier.client
        };
        let out = sender.0.delta(&sender_before.0, "Tcp.OutSegs");
        let retrans = sender.0.delta(&sender_before.0, "Tcp.RetransSegs");
        if out > 0 {
            m.insert(
                "bulk_retrans_pct".into(),
                100.0 * retrans as f64 / out as f64,
            );
        }
        for (side, now, then) in [
            ("server", &self.server, &earlier.server),
            ("client", &self.client, &earlier.client),
        ] {
            let tun = now.1.tx_drops().saturating_sub(then.1.tx_drops());
            m.insert(format!("drops_tun_{side}"), tun as f64);
            let rcvbuf = now.0.delta(&then.0, "Udp.RcvbufErrors");
            m.insert(format!("drops_rcvbuf_{side}"), rcvbuf as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ALL_TESTS.iter().copied().chain([
            "iperf-tcp-8",
            "ping-under-tcp-4-reverse",
            "ping-under-tcp-4",
            "udp-pps-44",
            "udp-pps-1420",
        ]) {
            let t: Test = name.parse().unwrap();
            assert_eq!(t.to_string(), name);
            assert!(!t.describe().is_empty());
        }
        assert_eq!(
            "ping-under-tcp-1".parse::<Test>().unwrap().to_string(),
            "ping-under-load"
        );
        for bad in [
            "iperf-tcp-0",
            "iperf-tcp-x",
            "iperf-udp-1",
            "ping",
            "iperf-tcp-1-up",
            "udp-pps-43",
            "udp-pps-1421",
            "udp-pps-",
        ] {
            assert!(bad.parse::<Test>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_is_charged_per_gb() {
        let report = IperfReport {
            reverse: false,
            bits_per_second: 4e9,
            bytes: 2_000_000_000,
            retransmits: Some(3),
            seconds: 4.0,
            cpu_client_pct: Some(50.0),
            cpu_server_pct: Some(25.0),
        };
        let m = iperf_metrics(&report, &[("server", 3.0), ("client", 5.0)]);
        assert_eq!(m["gbps"], 4.0);
        assert_eq!(m["retransmits"], 3.0);
        assert_eq!(m["cpu_server_s_per_gb"], 1.5);
        assert_eq!(m["cpu_client_s_per_gb"], 2.5);
        assert_eq!(m["cpu_tunnel_s_per_gb"], 4.0);
        // (0.50 + 0.25) * 4 s over 2 GB.
        assert_eq!(m["cpu_iperf3_s_per_gb"], 1.5);
        // No tunnel processes (raw veth): no tunnel CPU figures.
        let bare = iperf_metrics(&report, &[]);
        assert!(!bare.contains_key("cpu_tunnel_s_per_gb"));
        assert_eq!(ping_count(3), 60);
    }

    #[test]
    fn rate_steps_count_what_the_receiver_got() {
        // 1372-byte payloads (1400-byte packets): 20 000 sent in 2 s, 200 lost.
        let report = UdpReport {
            bytes: 19_800 * 1372,
            packets: 20_000,
            lost: 200,
            seconds: 2.0,
        };
        let o = step_outcome(10_000, &report, 1372).unwrap();
        assert_eq!(o.sent_pps, 10_000.0);
        assert_eq!(o.received_pps, 9_900.0);
        assert_eq!(o.loss_pct, 1.0);
        let m = pps_metrics(&o, 1400, 4, true);
        assert_eq!(m["pps_sender_limited"], 1.0);
        assert_eq!(m["pps"], 9_900.0);
        assert!((m["pps_gbps"] - 9_900.0 * 1400.0 * 8.0 / 1e9).abs() < 1e-12);
        assert_eq!(m["pps_steps"], 4.0);
        let empty = UdpReport {
            seconds: 0.0,
            ..report
        };
        assert!(step_outcome(10_000, &empty, 1372).is_err());
        let t: Test = "udp-pps-64".parse().unwrap();
        assert!(t.describe().contains("iperf3 -l 36"), "{}", t.describe());
        assert!(!t.shows_ratios());
        assert!(t.estimate_secs(3) > 0.0);
    }
}
