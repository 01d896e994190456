//! What a benchmark run prints and keeps: a table per test (median and min–max of each metric
//! per system), the same as Markdown for the README, and every run as JSON together with the
//! machine and the builds it ran on.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::build::Build;
use super::ratios;
use super::stats::Summary;
use super::test::{Metrics, Test};

/// How a metric is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Its name in [`Metrics`] and JSON.
    pub key: &'static str,
    /// Column heading.
    pub label: &'static str,
    /// Decimal places.
    pub decimals: usize,
}

/// Known metrics in column order; others a test produces follow, under their own names.
pub const METRICS: &[Metric] = &[
    Metric {
        key: "gbps",
        label: "Gbit/s",
        decimals: 3,
    },
    Metric {
        key: "retransmits",
        label: "retr",
        decimals: 0,
    },
    Metric {
        key: "cpu_server_s_per_gb",
        label: "server s/GB",
        decimals: 2,
    },
    Metric {
        key: "cpu_client_s_per_gb",
        label: "client s/GB",
        decimals: 2,
    },
    Metric {
        key: "cpu_tunnel_s_per_gb",
        label: "sum s/GB",
        decimals: 2,
    },
    Metric {
        key: "cpu_iperf3_s_per_gb",
        label: "iperf3 s/GB",
        decimals: 2,
    },
    Metric {
        key: "rtt_p50_ms",
        label: "p50 ms",
        decimals: 3,
    },
    Metric {
        key: "rtt_p99_ms",
        label: "p99 ms",
        decimals: 3,
    },
    Metric {
        key: "rtt_avg_ms",
        label: "avg ms",
        decimals: 3,
    },
    Metric {
        key: "loss_pct",
        label: "loss %",
        decimals: 1,
    },
    Metric {
        key: "bulk_gbps",
        label: "bulk Gbit/s",
        decimals: 3,
    },
    Metric {
        key: "bulk_retransmits",
        label: "bulk retr",
        decimals: 0,
    },
    Metric {
        key: "bulk_retrans_pct",
        label: "retr %",
        decimals: 2,
    },
    Metric {
        key: "drops_tun_client",
        label: "TUN drops client",
        decimals: 0,
    },
    Metric {
        key: "drops_tun_server",
        label: "TUN drops server",
        decimals: 0,
    },
    Metric {
        key: "drops_rcvbuf_client",
        label: "rcvbuf drops client",
        decimals: 0,
    },
    Metric {
        key: "drops_rcvbuf_server",
        label: "rcvbuf drops server",
        decimals: 0,
    },
];

/// Decimal places of packets-per-call ratios.
const RATIO_DECIMALS: usize = 2;

/// One run as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// Repetition, from 1.
    pub rep: u32,
    /// The test's name.
    pub test: String,
    /// The system's name.
    pub system: String,
    /// The build's label, for Ringway systems.
    pub build: Option<String>,
    /// When it started (UTC, RFC 3339).
    pub started: String,
    /// How long it took, start to teardown, in seconds.
    pub elapsed_s: f64,
    /// What it measured (empty if it failed).
    pub metrics: Metrics,
    /// The server's final counters, if it has a server, and its client's (`client_*`).
    pub counters: BTreeMap<String, u64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl RunRecord {
    fn json(&self) -> Value {
        json!({
            "rep": self.rep,
            "test": self.test,
            "system": self.system,
            "build": self.build,
            "started": self.started,
            "elapsed_s": self.elapsed_s,
            "metrics": self.metrics,
            "counters": self.counters,
            "error": self.error,
        })
    }
}

/// A table of one test: a row per system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The test's name.
    pub test: String,
    /// What it measures.
    pub title: String,
    /// Column headings, `system` first.
    pub columns: Vec<String>,
    /// One row per system, in run order.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// Aligned plain text.
    pub fn text(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
                let pad = w - cell.chars().count();
                if i == 0 {
                    let _ = write!(s, "{cell}{}", " ".repeat(pad));
                } else {
                    let _ = write!(s, "  {}{cell}", " ".repeat(pad));
                }
            }
            s.trim_end().to_owned()
        };
        let mut out = format!("{}: {}\n", self.test, self.title);
        out.push_str(&line(&self.columns));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }

    /// A Markdown table under a bold heading.
    pub fn markdown(&self) -> String {
        let mut out = format!("**{}**: {}\n\n", self.test, self.title);
        out.push_str(&format!("| {} |\n", self.columns.join(" | ")));
        let rule: Vec<&str> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---" } else { "---:" })
            .collect();
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}

/// The tables of a run: one per test, a row per system, each cell the median (min–max) over
/// the successful repetitions, `n/a` where no run produced the metric.
pub fn tables(tests: &[Test], systems: &[String], runs: &[RunRecord]) -> Vec<Table> {
    tests
        .iter()
        .map(|test| {
            let name = test.to_string();
            let of_test: Vec<&RunRecord> = runs.iter().filter(|r| r.test == name).collect();
            let columns = columns_for(test, &of_test);
            let rows = systems
                .iter()
                .map(|system| {
                    let mine: Vec<&RunRecord> = of_test
                        .iter()
                        .copied()
                        .filter(|r| &r.system == system)
                        .collect();
                    let ok: Vec<&RunRecord> =
                        mine.iter().copied().filter(|r| r.error.is_none()).collect();
                    let mut row = vec![system.clone()];
                    row.push(if ok.len() == mine.len() {
                        ok.len().to_string()
                    } else {
                        format!("{}/{}", ok.len(), mine.len())
                    });
                    for (key, _, decimals) in &columns {
                        let values: Vec<f64> = ok
                            .iter()
                            .filter_map(|r| r.metrics.get(key).copied())
                            .collect();
                        row.push(
                            Summary::of(&values)
                                .map_or_else(|| "n/a".to_owned(), |s| s.format(*decimals)),
                        );
                    }
                    row
                })
                .collect();
            let mut headings = vec!["system".to_owned(), "runs".to_owned()];
            headings.extend(columns.into_iter().map(|(_, label, _)| label));
            Table {
                test: name,
                title: test.describe(),
                columns: headings,
                rows,
            }
        })
        .collect()
}

/// (metric key, heading, decimals) of a test's columns: known metrics its runs have, in
/// [`METRICS`] order; for throughput tests every ratio path ([`ratios::PATHS`] always); then
/// any other metric, under its own name.
fn columns_for(test: &Test, runs: &[&RunRecord]) -> Vec<(String, String, usize)> {
    let present: BTreeSet<&str> = runs
        .iter()
        .flat_map(|r| r.metrics.keys().map(String::as_str))
        .collect();
    let mut columns: Vec<(String, String, usize)> = METRICS
        .iter()
        .filter(|m| present.contains(m.key))
        .map(|m| (m.key.to_owned(), m.label.to_owned(), m.decimals))
        .collect();
    if test.shows_ratios() {
        let mut paths: Vec<String> = ratios::PATHS.iter().map(|p| (*p).to_owned()).collect();
        for p in present.iter().filter_map(|k| ratios::path_of(k)) {
            if !paths.iter().any(|q| q == p) {
                paths.push(p.to_owned());
            }
        }
        columns.extend(paths.into_iter().map(|p| {
            (
                ratios::metric_name(&p),
                format!("{p} pkt/call"),
                RATIO_DECIMALS,
            )
        }));
    }
    for key in present {
        let known = METRICS.iter().any(|m| m.key == key) || ratios::path_of(key).is_some();
        if !known {
            columns.push((key.to_owned(), key.to_owned(), 3));
        }
    }
    columns
}

/// Facts about the machine a run was made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// When the run started (UTC, RFC 3339).
    pub date: String,
    /// `uname -r`.
    pub kernel: String,
    /// The first `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// /proc/loadavg when the run started: how busy the shared machine already was.
    pub loadavg: String,
}

impl Machine {
    /// Reads them from /proc.
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu_model = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            date: utc_now(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            loadavg: read("/proc/loadavg").trim().to_owned(),
        }
    }
}

/// Everything about a run, for the JSON file.
pub fn json_document(
    machine: &Machine,
    options: Value,
    builds: &[Build],
    runs: &[RunRecord],
    tables: &[Table],
) -> Value {
    json!({
        "tool": "ringway-tunnel-bench",
        "format": 1,
        "date": machine.date,
        "kernel": machine.kernel,
        "cpu_model": machine.cpu_model,
        "cpus": machine.cpus,
        "loadavg_at_start": machine.loadavg,
        "options": options,
        "builds": builds.iter().map(|b| json!({
            "label": b.label,
            "dir": b.dir.display().to_string(),
            "commit": b.commit,
        })).collect::<Vec<_>>(),
        "runs": runs.iter().map(RunRecord::json).collect::<Vec<_>>(),
        "tables": tables.iter().map(|t| json!({
            "test": t.test,
            "title": t.title,
            "columns": t.columns,
            "rows": t.rows,
        })).collect::<Vec<_>>(),
    })
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(test: &str, system: &str, metrics: &[(&str, f64)], error: Option<&str>) -> RunRecord {
        RunRecord {
            rep: 1,
            test: test.into(),
            system: system.into(),
            build: None,
            started: rfc3339(0),
            elapsed_s: 1.0,
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            counters: BTreeMap::new(),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn tables_show_medians_ranges_and_na() {
        let tests: Vec<Test> = vec!["iperf-tcp-1".parse().unwrap(), "ping-idle".parse().unwrap()];
        let systems = vec!["raw-veth".to_owned(), "ringway-udp".to_owned()];
        let runs = vec![
            run("iperf-tcp-1", "raw-veth", &[("gbps", 9.0)], None),
            run("iperf-tcp-1", "raw-veth", &[("gbps", 11.0)], None),
            run(
                "iperf-tcp-1",
                "ringway-udp",
                &[
                    ("gbps", 0.5),
                    ("cpu_server_s_per_gb", 4.0),
                    ("pkts_per_call.tun_rx", 3.0),
                ],
                None,
            ),
            run("iperf-tcp-1", "ringway-udp", &[], Some("iperf3 failed")),
            run(
                "ping-idle",
                "raw-veth",
                &[("rtt_p50_ms", 0.05), ("weird", 1.0)],
                None,
            ),
        ];
        let t = tables(&tests, &systems, &runs);
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0].columns,
            [
                "system",
                "runs",
                "Gbit/s",
                "server s/GB",
                "tun_rx pkt/call",
                "udp_tx pkt/call",
                "udp_rx pkt/call",
                "tun_tx pkt/call"
            ]
        );
        assert_eq!(
            t[0].rows[0],
            [
                "raw-veth",
                "2",
                "10.000 (9.000–11.000)",
                "n/a",
                "n/a",
                "n/a",
                "n/a",
                "n/a"
            ]
        );
        assert_eq!(
            t[0].rows[1],
            [
                "ringway-udp",
                "1/2",
                "0.500",
                "4.00",
                "3.00",
                "n/a",
                "n/a",
                "n/a"
            ]
        );
        // Ping tables have no ratio columns; unknown metrics keep their names.
        assert_eq!(t[1].columns, ["system", "runs", "p50 ms", "weird"]);
        assert_eq!(t[1].rows[1], ["ringway-udp", "0", "n/a", "n/a"]);
        let md = t[0].markdown();
        assert!(md.contains("| system | runs | Gbit/s |"), "{md}");
        assert!(md.contains("|---|---:|"), "{md}");
        let text = t[0].text();
        assert!(
            text.starts_with("iperf-tcp-1: iperf3 TCP client → server"),
            "{text}"
        );
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_764_550_923), "2025-12-01T01:02:03Z");
    }

    #[test]
    fn machine_facts_are_read() {
        let m = Machine::probe();
        assert!(!m.kernel.is_empty());
        assert!(m.cpus > 0);
        assert!(m.date.ends_with('Z'));
    }
}
