//! What one swarm run measured, as JSON and as text for people.
//!
//! Every number says where it comes from: the swarm's own clock and counters (handshakes,
//! what it sent, the probe's round trips), the kernel's view of the server (`/proc/<pid>`:
//! memory, CPU, TUN and UDP counters), or the server's own counters from its final log line
//! (only when the swarm stopped the server itself, in the namespaces mode).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::server::{Memory, Window};

/// Nearest-rank percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Percentiles {
    /// Sorts `samples` and reads the percentiles off; all zero without samples.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let n = samples.len();
        if n == 0 {
            return Self::default();
        }
        let rank = |q: f64| {
            let r = (q * n as f64).ceil() as usize;
            samples[r.clamp(1, n) - 1].as_secs_f64() * 1e3
        };
        Percentiles {
            count: n,
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: rank(1.0),
        }
    }
}

/// The handshake phase: every session connecting, at most `window` at a time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Handshakes {
    /// Sessions asked for.
    pub requested: usize,
    /// Sessions that came up.
    pub established: usize,
    /// Sessions that did not, and the first reason given.
    pub failed: usize,
    /// Why the first failure failed.
    pub first_failure: Option<String>,
    /// Handshakes in flight at most.
    pub window: usize,
    /// From the first initiation to the last session up, seconds.
    pub seconds: f64,
    /// `established / seconds`.
    pub per_sec: f64,
    /// Time each session took to connect (initiation to response).
    pub latency: Percentiles,
    /// The server's CPU use during the phase, percent of one core (`None` without its PID).
    pub server_cpu_percent: Option<f64>,
    /// The swarm's own CPU use during the phase, percent of one core.
    pub swarm_cpu_percent: f64,
}

/// The load phase, as the swarm saw it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Load {
    /// Sessions carrying load (all but the probe's).
    pub sessions: usize,
    /// Packets per second asked for, over all load sessions.
    pub rate_requested: u64,
    /// Bytes of each inner packet (IPv4 + UDP + payload).
    pub packet_len: usize,
    /// Where the load packets went.
    pub target: String,
    /// The measured window (after a short warm-up), seconds.
    pub window_seconds: f64,
    /// Inner packets the swarm sealed and sent per second in the window.
    pub sent_per_sec: f64,
    /// Packets the pacer skipped because it could not keep up (the swarm, not the server,
    /// was the limit when this is not 0).
    pub behind: u64,
    /// Inner packets sent over the whole load phase.
    pub sent: u64,
    /// Sends the socket refused for a moment (ENOBUFS and the like), over the whole phase.
    pub send_errors: u64,
    /// Inner packets that came back to load sessions (ICMP errors from the server's kernel).
    pub received: u64,
    /// Keepalives from the server.
    pub keepalives_received: u64,
    /// Sessions lost during the run (the server closed or stopped answering them).
    pub sessions_lost: u64,
    /// The swarm's own CPU use in the window, percent of one core.
    pub swarm_cpu_percent: f64,
    /// How long the swarm's threads waited for a CPU in the window, percent.
    pub swarm_cpu_wait_percent: f64,
}

/// The probe session's echoes through the loaded server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Probe {
    /// Echo requests sent (one every `interval_ms`).
    pub sent: u64,
    /// Replies that came back.
    pub received: u64,
    /// The interval between requests.
    pub interval_ms: f64,
    /// Round-trip times.
    pub rtt: Percentiles,
}

/// Memory of the server process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerMemory {
    /// Before any session connected.
    pub before: Memory,
    /// With every session up, before the load.
    pub with_sessions: Memory,
    /// After the load.
    pub after_load: Memory,
    /// `(with_sessions.rss - before.rss) / established`, bytes.
    pub rss_per_session_bytes: f64,
}

/// The server as the kernel saw it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Server {
    /// Its PID.
    pub pid: u32,
    /// Its TUN device.
    pub tun: String,
    /// Its memory.
    pub memory: ServerMemory,
    /// Its CPU use with every session up and no load, percent of one core (timers,
    /// keepalives).
    pub idle_cpu_percent: f64,
    /// The load window.
    pub load: Window,
}

/// Drops the server counted, by reason (the non-zero ones), from its final log line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerCounters {
    /// Every counter it logged.
    pub all: BTreeMap<String, u64>,
    /// The drop counters among them that are not zero.
    pub drops: BTreeMap<String, u64>,
}

/// The counters in the server's final line that count dropped packets or frames.
pub const SERVER_DROP_COUNTERS: &[&str] = &[
    "no_route",
    "malformed",
    "unknown_session",
    "auth",
    "replay",
    "bad_source",
    "hs_invalid",
    "unknown_peer",
    "hs_replay",
    "pool_exhausted",
    "oversize",
    "tx_full",
    "tcp_queue_full",
    "truncated",
    "offload_dropped",
    "fq_inside_dropped_codel",
    "fq_inside_dropped_overflow",
    "fq_outside_dropped_codel",
    "fq_outside_dropped_overflow",
];

impl ServerCounters {
    /// From the parsed final line.
    pub fn from_line(c: &ringway_e2e::counters::ServerCounters) -> Self {
        let all: BTreeMap<String, u64> = c.iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let drops = SERVER_DROP_COUNTERS
            .iter()
            .filter_map(|k| {
                all.get(*k)
                    .filter(|v| **v > 0)
                    .map(|v| ((*k).to_owned(), *v))
            })
            .collect();
        ServerCounters { all, drops }
    }
}

/// One run of the swarm.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Sessions asked for (the probe's included).
    pub sessions: usize,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The server's outside address.
    pub endpoint: String,
    /// The handshake phase.
    pub handshakes: Handshakes,
    /// The load phase.
    pub load: Load,
    /// The probe.
    pub probe: Probe,
    /// The server process, if its PID was known.
    pub server: Option<Server>,
    /// The server's own counters, if the swarm stopped it and read them.
    pub server_counters: Option<ServerCounters>,
}

impl Report {
    /// Packets dropped on the way into the server during the load window that the kernel saw
    /// (its UDP buffer, the TUN queue), plus every drop the server counted over its life; with
    /// the reasons, largest first.
    pub fn drops(&self) -> (u64, Vec<(String, u64)>) {
        let mut reasons: Vec<(String, u64)> = Vec::new();
        if let Some(s) = &self.server {
            reasons.push(("udp_rcvbuf".into(), s.load.udp_rcvbuf_errors));
            reasons.push(("tun_queue".into(), s.load.tun_queue_drops));
        }
        if let Some(c) = &self.server_counters {
            reasons.extend(c.drops.iter().map(|(k, v)| (k.clone(), *v)));
        }
        reasons.retain(|(_, v)| *v > 0);
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (reasons.iter().map(|(_, v)| v).sum(), reasons)
    }

    /// The report for people: one line per measurement.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let h = &self.handshakes;
        let l = &self.load;
        let p = &self.probe;
        let mut line = |k: &str, v: String| {
            let _ = writeln!(out, "{k:<22} {v}");
        };
        line(
            "sessions",
            format!(
                "{} of {} established over {} to {}",
                h.established, h.requested, self.transport, self.endpoint
            ),
        );
        if let Some(why) = &h.first_failure {
            line("  failed", format!("{} (first: {why})", h.failed));
        }
        line(
            "handshakes",
            format!(
                "{:.0}/s ({} in {:.2} s, {} in flight at most; latency p50 {:.1} ms, p99 {:.1} ms)",
                h.per_sec, h.established, h.seconds, h.window, h.latency.p50_ms, h.latency.p99_ms
            ),
        );
        line(
            "  CPU",
            format!(
                "server {}, swarm {:.0} %",
                h.server_cpu_percent
                    .map_or("n/a".to_owned(), |c| format!("{c:.0} %")),
                h.swarm_cpu_percent
            ),
        );
        line(
            "load",
            format!(
                "{} sessions, {} packets/s asked, {} B each, to {}",
                l.sessions, l.rate_requested, l.packet_len, l.target
            ),
        );
        line(
            "  sent",
            format!(
                "{:.0} packets/s over {:.2} s ({} in all; {} behind, {} send errors); swarm CPU {:.0} % (+{:.0} % waiting)",
                l.sent_per_sec,
                l.window_seconds,
                l.sent,
                l.behind,
                l.send_errors,
                l.swarm_cpu_percent,
                l.swarm_cpu_wait_percent
            ),
        );
        line(
            "  back",
            format!(
                "{} packets, {} keepalives; {} sessions lost",
                l.received, l.keepalives_received, l.sessions_lost
            ),
        );
        match &self.server {
            Some(s) => {
                line(
                    "server",
                    format!(
                        "wrote {:.0} packets/s to {} (read {:.0}/s); CPU {:.0} % loaded (and {:.0} % waiting for a CPU), {:.1} % idle with the sessions up",
                        s.load.tun_written_per_sec,
                        s.tun,
                        s.load.tun_read_per_sec,
                        s.load.cpu_percent,
                        s.load.cpu_wait_percent,
                        s.idle_cpu_percent
                    ),
                );
                let m = &s.memory;
                line(
                    "  memory",
                    format!(
                        "RSS {} KiB before, {} KiB with the sessions, {} KiB after the load (peak {} KiB): {:.0} B per session",
                        m.before.rss_kib,
                        m.with_sessions.rss_kib,
                        m.after_load.rss_kib,
                        m.after_load.hwm_kib,
                        m.rss_per_session_bytes
                    ),
                );
            }
            None => line(
                "server",
                "n/a (give --server-pid to read its memory, CPU and kernel counters)".into(),
            ),
        }
        let (total, reasons) = self.drops();
        let why: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
        line(
            "  drops",
            match (&self.server, &self.server_counters) {
                (None, None) => "n/a".into(),
                _ if total == 0 => "0".into(),
                _ => format!("{total} ({})", why.join(", ")),
            },
        );
        if let Some(c) = &self.server_counters {
            let get = |k: &str| c.all.get(k).copied().unwrap_or(0);
            line(
                "  counters",
                format!(
                    "handshakes {}, inside_tx {} packets, outside_rx {} frames, disconnected {}, expired {}",
                    get("handshakes"),
                    get("inside_tx"),
                    get("outside_rx"),
                    get("disconnected"),
                    get("expired")
                ),
            );
        }
        line(
            "probe",
            format!(
                "{} of {} echoes back, one every {} ms: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                p.received, p.sent, p.interval_ms, p.rtt.p50_ms, p.rtt.p99_ms, p.rtt.max_ms
            ),
        );
        out
    }

    /// The Markdown table's header (see [`Report::markdown_row`]).
    pub fn markdown_header() -> &'static str {
        "| sessions | handshakes/s | server pkt/s | sent pkt/s | drops | server CPU (+ waiting for one) | server RSS | RSS/session | probe p99 |\n\
         |---:|---:|---:|---:|---|---:|---:|---:|---:|"
    }

    /// This run as a row of the table in [`Report::markdown_header`].
    pub fn markdown_row(&self) -> String {
        let h = &self.handshakes;
        let (total, reasons) = self.drops();
        let drops = match (&self.server, &self.server_counters) {
            (None, None) => "n/a".to_owned(),
            _ if total == 0 => "0".to_owned(),
            _ => {
                let why: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
                format!("{total} ({})", why.join(", "))
            }
        };
        let server = self.server.as_ref();
        let na = || "n/a".to_owned();
        format!(
            "| {}{} | {:.0} | {} | {:.0} | {} | {} | {} | {} | {:.2} ms |",
            h.established,
            if h.established < h.requested {
                format!(" of {}", h.requested)
            } else {
                String::new()
            },
            h.per_sec,
            server.map_or_else(na, |s| format!("{:.0}", s.load.tun_written_per_sec)),
            self.load.sent_per_sec,
            drops,
            server.map_or_else(na, |s| format!(
                "{:.0} % (+{:.0} % wait)",
                s.load.cpu_percent, s.load.cpu_wait_percent
            )),
            server.map_or_else(na, |s| format!(
                "{:.1} MiB",
                s.memory.with_sessions.rss_kib as f64 / 1024.0
            )),
            server.map_or_else(na, |s| format!("{:.0} B", s.memory.rss_per_session_bytes)),
            self.probe.rtt.p99_ms,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        d.reverse();
        let p = Percentiles::of(&mut d);
        assert_eq!(p.count, 100);
        assert_eq!(p.p50_ms, 50.0);
        assert_eq!(p.p99_ms, 99.0);
        assert_eq!(p.max_ms, 100.0);
        let one = Percentiles::of(&mut [Duration::from_micros(1500)]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (1.5, 1.5, 1.5));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }

    #[test]
    fn drops_add_up_with_reasons_largest_first() {
        let line = ringway_e2e::counters::ServerCounters::parse(
            "stopped counters=inside_tx 90 pkts/1 B, handshakes 3, drops: no_route 4 auth 0 \
             replay 2 io=tx_full 0 eagain 7",
        );
        let r = Report {
            server: Some(Server {
                load: Window {
                    udp_rcvbuf_errors: 10,
                    ..Window::default()
                },
                ..Server::default()
            }),
            server_counters: Some(ServerCounters::from_line(&line)),
            ..Report::default()
        };
        let (total, reasons) = r.drops();
        assert_eq!(total, 16);
        assert_eq!(
            reasons,
            [
                ("udp_rcvbuf".to_owned(), 10),
                ("no_route".to_owned(), 4),
                ("replay".to_owned(), 2)
            ]
        );
        // eagain is not a drop; zero counters are left out.
        assert!(!r
            .server_counters
            .as_ref()
            .unwrap()
            .drops
            .contains_key("eagain"));
        assert!(r
            .markdown_row()
            .contains("16 (udp_rcvbuf 10, no_route 4, replay 2)"));
        assert!(r.text().contains("drops"));
    }

    #[test]
    fn without_a_server_the_server_columns_say_so() {
        let r = Report::default();
        let row = r.markdown_row();
        assert_eq!(row.matches("n/a").count(), 5, "{row}");
        assert_eq!(
            row.matches('|').count(),
            Report::markdown_header()
                .lines()
                .next()
                .unwrap()
                .matches('|')
                .count()
        );
    }
}
