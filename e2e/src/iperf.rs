//! iperf3 TCP (and UDP) throughput through the tunnel.
//!
//! A real TCP stack on both ends exercises what users feel (congestion control over the tunnel,
//! MTU, reordering); iperf3's JSON report gives goodput measured at the receiver, the
//! sender's retransmit count and the CPU both iperf3 processes used. [`run`] is the tests'
//! one-stream run; [`run_spec`] takes an [`IperfSpec`] (parallel streams), for benchmarks.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::netns::Netns;
use crate::path::TunnelPath;
use crate::process::{self, Process};

/// iperf3's default control/data port; each testbed has its own namespaces, so no clash.
const PORT: u16 = 5201;
/// How long to wait for the one-shot server to start listening (it normally takes
/// milliseconds; the bound is for a loaded machine).
const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Client attempts when the server is not accepting yet.
const ATTEMPTS: u32 = 4;

/// Which iperf3 TCP run to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IperfSpec {
    /// Seconds of traffic (`-t`, at least 1).
    pub secs: u32,
    /// Parallel TCP streams (`-P`, at least 1).
    pub streams: u32,
    /// Data flows server -> client (`-R`).
    pub reverse: bool,
}

/// One iperf3 run's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IperfReport {
    /// Whether data flowed server -> client (`-R`).
    pub reverse: bool,
    /// Goodput at the receiver, bits per second.
    pub bits_per_second: f64,
    /// Bytes received.
    pub bytes: u64,
    /// TCP retransmits on the sender, when iperf3 reports them.
    pub retransmits: Option<u64>,
    /// The receiver's measured duration, in seconds.
    pub seconds: f64,
    /// CPU the iperf3 client used, in percent of the duration (user + system), if reported.
    pub cpu_client_pct: Option<f64>,
    /// CPU the iperf3 server used, in percent of the duration, if reported.
    pub cpu_server_pct: Option<f64>,
}

impl IperfReport {
    /// Goodput in gigabits per second.
    pub fn gbps(&self) -> f64 {
        self.bits_per_second / 1e9
    }
}

/// Runs a `secs`-second iperf3 TCP test along `path`: a one-shot server bound to the server's
/// inside address, and a client bound to the client's; `reverse` makes the server send.
///
/// `log_dir` receives the server's output. Everything is bounded: the client is killed after
/// `secs` + 20 s, and the server guard is dropped (SIGTERM/SIGKILL by PID) on return. Runs
/// must not overlap within one server namespace, since they share the port.
pub fn run(path: &TunnelPath<'_>, reverse: bool, secs: u32, log_dir: &Path) -> Result<IperfReport> {
    let spec = IperfSpec {
        secs,
        streams: 1,
        reverse,
    };
    run_spec(path, &spec, log_dir)
}

/// Like [`run`], with `spec.streams` parallel streams; bounded the same way.
pub fn run_spec(path: &TunnelPath<'_>, spec: &IperfSpec, log_dir: &Path) -> Result<IperfReport> {
    let streams = spec.streams.max(1).to_string();
    let extra: &[&str] = if spec.streams > 1 {
        &["-P", &streams]
    } else {
        &[]
    };
    run_json(path, spec.reverse, spec.secs, extra, log_dir, parse)
}

/// An iperf3 UDP run: datagrams of `len` payload bytes at `bits_per_second` of payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpSpec {
    /// Seconds of traffic (`-t`, at least 1).
    pub secs: u32,
    /// Offered rate of UDP payload in bits per second (`-b`; bits, not Mbit, so that small
    /// datagrams can be offered at any packet rate).
    pub bits_per_second: u64,
    /// Datagram payload bytes (`-l`).
    pub len: u32,
    /// Data flows server -> client (`-R`).
    pub reverse: bool,
    /// Socket buffer size for both ends' data sockets (`-w`, bytes), if not the default: a
    /// large one keeps a receiver that waits for a CPU from dropping a burst itself.
    pub socket_buffer: Option<u32>,
}

/// One iperf3 UDP run's result, as the receiver counted it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UdpReport {
    /// Bytes the receiver got.
    pub bytes: u64,
    /// Datagrams sent.
    pub packets: u64,
    /// Datagrams the receiver missed.
    pub lost: u64,
    /// The receiver's measured duration, in seconds (0 if not reported).
    pub seconds: f64,
}

/// Runs an iperf3 UDP test along `path` as [`run`] runs a TCP one (bounded the same way).
pub fn run_udp(path: &TunnelPath<'_>, spec: &UdpSpec, log_dir: &Path) -> Result<UdpReport> {
    let (rate, len) = (spec.bits_per_second.to_string(), spec.len.to_string());
    let buffer = spec.socket_buffer.map(|b| b.to_string());
    let mut extra = vec!["-u", "-b", &rate, "-l", &len];
    if let Some(b) = &buffer {
        extra.extend(["-w", b]);
    }
    run_json(path, spec.reverse, spec.secs, &extra, log_dir, |json, _| {
        parse_udp(json)
    })
}

/// Extracts what the receiver of an iperf3 UDP run counted from its `-J` output.
pub fn parse_udp(json: &str) -> Result<UdpReport> {
    let v: Value = serde_json::from_str(json).context("iperf3 output is not JSON")?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3 error: {err}");
    }
    // iperf3 3.10+ reports the receiver's side apart; older ones fold it into `sum`.
    let sum = v
        .pointer("/end/sum_received")
        .or_else(|| v.pointer("/end/sum"))
        .context("iperf3 JSON lacks end.sum")?;
    let field = |name: &str| sum.get(name).and_then(Value::as_u64);
    let packets = v
        .pointer("/end/sum/packets")
        .and_then(Value::as_u64)
        .or_else(|| field("packets"))
        .context("iperf3 JSON lacks end.sum.packets")?;
    Ok(UdpReport {
        bytes: field("bytes").unwrap_or(0),
        packets,
        lost: v
            .pointer("/end/sum/lost_packets")
            .and_then(Value::as_u64)
            .or_else(|| field("lost_packets"))
            .unwrap_or(0),
        seconds: sum.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
    })
}

/// Starts a one-shot iperf3 server on the server end of `path`, runs a client with `extra`
/// arguments on the client end, and parses its JSON with `parse_json`.
fn run_json<T>(
    path: &TunnelPath<'_>,
    reverse: bool,
    secs: u32,
    extra: &[&str],
    log_dir: &Path,
    parse_json: impl Fn(&str, bool) -> Result<T>,
) -> Result<T> {
    let TunnelPath {
        server_ns,
        server_ip,
        client_ns,
        client_ip,
    } = *path;
    let secs = secs.max(1);
    let log = log_dir.join(format!(
        "iperf3-server-{client_ip}-{}.log",
        if reverse { "r" } else { "f" }
    ));
    let mut server = Process::spawn(
        "iperf3 server",
        server_ns
            .command("iperf3")
            .args(["-s", "-1", "-B", &server_ip.to_string()])
            .args(["-p", &PORT.to_string()]),
        &log,
    )?;
    wait_listening(server_ns, &mut server)?;

    let limit = Duration::from_secs(u64::from(secs) + 20);
    let mut attempt = 1;
    loop {
        let mut cmd = client_ns.command("iperf3");
        cmd.args(["-c", &server_ip.to_string(), "-p", &PORT.to_string()])
            .args(["-B", &client_ip.to_string()])
            .args(["-t", &secs.to_string(), "-J"])
            .args(extra);
        if reverse {
            cmd.arg("-R");
        }
        let out = process::run(&mut cmd, limit).context("running iperf3 client")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match parse_json(&stdout, reverse) {
            Ok(report) if out.status.success() => return Ok(report),
            Ok(_) => bail!("iperf3 client exited with {} despite a report", out.status),
            // The listener check makes this rare, but a refused connect is harmless to retry:
            // the one-shot server is still waiting for its single client.
            Err(e) if attempt < ATTEMPTS && is_connect_error(&stdout) => {
                eprintln!("ringway-e2e: iperf3 attempt {attempt} failed ({e:#}); retrying");
                attempt += 1;
                server.ensure_running()?;
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(e) => bail!(
                "{e:#} (iperf3 client: {}, stderr: {:?}); iperf3 server log tail:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                server.log_tail(20)
            ),
        }
    }
}

/// Polls `ss` until something listens on the iperf3 port, or the server dies.
fn wait_listening(ns: &Netns, server: &mut Process) -> Result<()> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    let sport = format!(":{PORT}");
    loop {
        server.ensure_running()?;
        let mut listening = ns.command("ss");
        listening.args(["-Hltn", "sport", "=", &sport]);
        if !process::run_ok(&mut listening, Duration::from_secs(5))?
            .trim()
            .is_empty()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("iperf3 server not listening on port {PORT} after {LISTEN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn is_connect_error(json: &str) -> bool {
    let lower = json.to_ascii_lowercase();
    lower.contains("unable to connect") || lower.contains("connection refused")
}

/// Extracts the receiver-side goodput from iperf3's `-J` output.
pub fn parse(json: &str, reverse: bool) -> Result<IperfReport> {
    let v: Value = serde_json::from_str(json).context("iperf3 output is not JSON")?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3 error: {err}");
    }
    let received = v
        .pointer("/end/sum_received")
        .context("iperf3 JSON lacks end.sum_received")?;
    let bits_per_second = received
        .get("bits_per_second")
        .and_then(Value::as_f64)
        .context("iperf3 JSON lacks end.sum_received.bits_per_second")?;
    let bytes = received.get("bytes").and_then(Value::as_u64).unwrap_or(0);
    let seconds = received
        .get("seconds")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let retransmits = v
        .pointer("/end/sum_sent/retransmits")
        .and_then(Value::as_u64);
    let cpu = |which: &str| {
        v.pointer(&format!("/end/cpu_utilization_percent/{which}"))
            .and_then(Value::as_f64)
    };
    Ok(IperfReport {
        reverse,
        bits_per_second,
        bytes,
        retransmits,
        seconds,
        cpu_client_pct: cpu("host_total"),
        cpu_server_pct: cpu("remote_total"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_receiver_goodput_and_retransmits() {
        let json = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"bytes":1000,"bits_per_second":2.5e9,"retransmits":7},
            "sum_received":{"bytes":990,"bits_per_second":2.4e9,"seconds":3.01},
            "cpu_utilization_percent":{"host_total":12.5,"remote_total":30.25}}}"#;
        let r = parse(json, true).unwrap();
        assert!(r.reverse);
        assert_eq!(r.bytes, 990);
        assert_eq!(r.retransmits, Some(7));
        assert_eq!(r.seconds, 3.01);
        assert_eq!(
            (r.cpu_client_pct, r.cpu_server_pct),
            (Some(12.5), Some(30.25))
        );
        assert!((r.gbps() - 2.4).abs() < 1e-9);
    }

    #[test]
    fn reports_iperf_errors() {
        let json = r#"{"start":{},"intervals":[],"end":{},
            "error":"unable to connect to server: Connection refused"}"#;
        let e = parse(json, false).unwrap_err();
        assert!(e.to_string().contains("Connection refused"));
        assert!(is_connect_error(json));
    }

    #[test]
    fn parses_udp_receiver_counts() {
        let json = r#"{"start":{},"intervals":[],"end":{
            "sum":{"bytes":5000,"packets":10,"lost_packets":2,"lost_percent":20},
            "sum_received":{"bytes":4000,"seconds":1.5}}}"#;
        let r = parse_udp(json).unwrap();
        assert_eq!(
            r,
            UdpReport {
                bytes: 4000,
                packets: 10,
                lost: 2,
                seconds: 1.5
            }
        );
        let old = r#"{"end":{"sum":{"bytes":5000,"packets":10,"lost_packets":0}}}"#;
        assert_eq!(parse_udp(old).unwrap().bytes, 5000);
    }

    #[test]
    fn rejects_non_json() {
        assert!(parse("iperf3: error", false).is_err());
    }
}
