//! What the swarm can see of the server from outside: its memory, CPU time and the kernel's
//! counters of its namespace, all from `/proc/<pid>`.
//!
//! The server keeps its own counters in plain integers on its one data-path thread and logs
//! them only when it stops (`stopped counters=...`), so while it runs the kernel is the
//! witness: `/proc/<pid>/net/dev` has the TUN device's packet counters (for a TUN, `rx` is what
//! the server *wrote* into the kernel: packets it opened and delivered), `/proc/<pid>/net/snmp`
//! has the UDP receive-buffer overflows of its namespace (datagrams the kernel dropped because
//! the server did not receive them in time), `/proc/<pid>/status` its resident memory, and
//! `/proc/<pid>/task/*/schedstat` how long its threads were ready to run but waited for a CPU
//! (on a shared machine a server below 100 % CPU may still be CPU-starved).
//! The namespaces mode also stops the server at the end and adds its own counters
//! ([`ringway_e2e::counters::ServerCounters`]).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ringway_e2e::cpu::CpuTime;
use ringway_e2e::netdev::{DevCounters, NetDev};
use ringway_e2e::snmp::Snmp;

/// The server process being watched.
#[derive(Debug, Clone)]
pub struct ServerWatch {
    /// Its PID.
    pub pid: u32,
    /// Its TUN device's name (in its namespace).
    pub tun: String,
}

/// Resident memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    /// `VmRSS`: resident now, KiB.
    pub rss_kib: u64,
    /// `VmHWM`: the most ever resident, KiB.
    pub hwm_kib: u64,
}

/// One reading of everything [`ServerWatch`] looks at.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Memory.
    pub memory: Memory,
    /// CPU time so far (all threads).
    pub cpu: CpuTime,
    /// Time its threads spent runnable, waiting for a CPU, so far.
    pub run_delay: Duration,
    /// The TUN device's counters, if the device exists in the server's namespace.
    pub tun: Option<DevCounters>,
    /// `Udp.RcvbufErrors` of the server's namespace.
    pub udp_rcvbuf_errors: i64,
    /// `Udp.InErrors` of the server's namespace (includes the buffer overflows).
    pub udp_in_errors: i64,
}

impl ServerWatch {
    /// Reads everything once.
    pub fn sample(&self) -> Result<Sample> {
        let memory = memory_of(self.pid)?;
        let cpu = CpuTime::of(self.pid)?;
        let run_delay = run_delay_of(self.pid)?;
        let tun = NetDev::of_process(self.pid)?.get(&self.tun);
        let snmp = Snmp::of_process(self.pid)?;
        Ok(Sample {
            at: Instant::now(),
            memory,
            cpu,
            run_delay,
            tun,
            udp_rcvbuf_errors: snmp.get("Udp.RcvbufErrors"),
            udp_in_errors: snmp.get("Udp.InErrors"),
        })
    }

    /// Just the memory (cheap; for readings while sessions connect).
    pub fn memory(&self) -> Result<Memory> {
        memory_of(self.pid)
    }
}

/// What the server did between two samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Window {
    /// Seconds between the samples.
    pub seconds: f64,
    /// Packets the server wrote to its TUN per second (the TUN's `rx_packets`).
    pub tun_written_per_sec: f64,
    /// Packets the server read from its TUN per second (the TUN's `tx_packets`).
    pub tun_read_per_sec: f64,
    /// Packets the kernel dropped at the TUN's queue towards the server (`tx_drop`).
    pub tun_queue_drops: u64,
    /// Datagrams the kernel dropped because the server's UDP receive buffer was full.
    pub udp_rcvbuf_errors: u64,
    /// The server's CPU use, in percent of one core.
    pub cpu_percent: f64,
    /// How long the server's threads waited for a CPU while ready to run, in percent of the
    /// window: what it would have used on a machine with a core to spare.
    pub cpu_wait_percent: f64,
}

impl Window {
    /// The difference between `a` and the later `b`.
    pub fn between(a: &Sample, b: &Sample) -> Self {
        let seconds = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
        let (tun_a, tun_b) = (a.tun.unwrap_or_default(), b.tun.unwrap_or_default());
        let per_sec = |x: u64, y: u64| y.saturating_sub(x) as f64 / seconds;
        Window {
            seconds,
            tun_written_per_sec: per_sec(tun_a.rx_packets, tun_b.rx_packets),
            tun_read_per_sec: per_sec(tun_a.tx_packets, tun_b.tx_packets),
            tun_queue_drops: tun_b.tx_drop.saturating_sub(tun_a.tx_drop),
            udp_rcvbuf_errors: u64::try_from(b.udp_rcvbuf_errors - a.udp_rcvbuf_errors)
                .unwrap_or(0),
            cpu_percent: 100.0 * b.cpu.since(&a.cpu).total().as_secs_f64() / seconds,
            cpu_wait_percent: 100.0 * b.run_delay.saturating_sub(a.run_delay).as_secs_f64()
                / seconds,
        }
    }
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub fn memory_of(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status(&text).with_context(|| format!("parsing {path}"))
}

/// The run-queue wait of every thread of process `pid` so far, summed: the second field of
/// each `/proc/<pid>/task/<tid>/schedstat` (nanoseconds).
pub fn run_delay_of(pid: u32) -> Result<Duration> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for task in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = task
            .with_context(|| format!("listing {dir}"))?
            .path()
            .join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += parse_schedstat(&text).with_context(|| format!("parsing {}", path.display()))?;
    }
    Ok(Duration::from_nanos(total))
}

/// The run-queue wait (second field, ns) of a `schedstat` line.
fn parse_schedstat(text: &str) -> Result<u64> {
    let field = text.split_whitespace().nth(1).context("no second field")?;
    field
        .parse()
        .with_context(|| format!("{field:?} is not a number"))
}

/// Finds `VmRSS:` and `VmHWM:` (in kB) in a `/proc/<pid>/status` text.
fn parse_status(text: &str) -> Result<Memory> {
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name}"))?;
        let kib = line
            .split_whitespace()
            .next()
            .with_context(|| format!("{name} has no value"))?;
        kib.parse()
            .with_context(|| format!("{name} {kib:?} is not a number"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_status() {
        let text = "Name:\tringway-server\nVmPeak:\t  30000 kB\nVmHWM:\t   12345 kB\n\
                    VmRSS:\t   12000 kB\nThreads:\t1\n";
        let m = parse_status(text).unwrap();
        assert_eq!(
            m,
            Memory {
                rss_kib: 12000,
                hwm_kib: 12345
            }
        );
        assert!(parse_status("Name: x\n").is_err());
        assert_eq!(parse_schedstat("123 456 7\n").unwrap(), 456);
        assert!(parse_schedstat("123").is_err());
    }

    #[test]
    fn reads_our_own_process() {
        let m = memory_of(std::process::id()).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib, "{m:?}");
        // Our own namespace has a loopback device and UDP counters.
        let watch = ServerWatch {
            pid: std::process::id(),
            tun: "lo".into(),
        };
        let s = watch.sample().unwrap();
        assert!(s.tun.is_some());
        // Our threads' run-queue waits only grow.
        assert!(run_delay_of(std::process::id()).unwrap() >= s.run_delay);
    }

    #[test]
    fn window_is_rates_and_differences() {
        let at = Instant::now();
        let a = Sample {
            at,
            memory: Memory::default(),
            cpu: CpuTime::default(),
            run_delay: Duration::from_millis(100),
            tun: Some(DevCounters {
                rx_packets: 100,
                rx_drop: 0,
                tx_packets: 10,
                tx_drop: 1,
            }),
            udp_rcvbuf_errors: 5,
            udp_in_errors: 5,
        };
        let b = Sample {
            at: at + Duration::from_secs(2),
            cpu: CpuTime {
                user: Duration::from_millis(1500),
                system: Duration::from_millis(500),
            },
            run_delay: Duration::from_millis(600),
            tun: Some(DevCounters {
                rx_packets: 2100,
                rx_drop: 0,
                tx_packets: 30,
                tx_drop: 4,
            }),
            udp_rcvbuf_errors: 25,
            ..a.clone()
        };
        let w = Window::between(&a, &b);
        assert_eq!(w.seconds, 2.0);
        assert_eq!(w.tun_written_per_sec, 1000.0);
        assert_eq!(w.tun_read_per_sec, 10.0);
        assert_eq!(w.tun_queue_drops, 3);
        assert_eq!(w.udp_rcvbuf_errors, 20);
        assert_eq!(w.cpu_percent, 100.0);
        assert_eq!(w.cpu_wait_percent, 25.0);
    }
}
