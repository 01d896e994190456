//! What a benchmark run prints and keeps: a table per test (median and min–max of each metric
//! per system), an overview of the headline figures, the same as a Markdown document with the
//! machine and every system's setup, and every run as JSON together with the machine and the
//! builds it ran on. A system that could not start shows as `failed to start: <reason>`.

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
    Metric {
        key: "pps",
        label: "pkt/s",
        decimals: 0,
    },
    Metric {
        key: "pps_gbps",
        label: "Gbit/s",
        decimals: 3,
    },
    Metric {
        key: "pps_loss_pct",
        label: "loss %",
        decimals: 2,
    },
    Metric {
        key: "pps_steps",
        label: "steps",
        decimals: 0,
    },
    Metric {
        key: "pps_sender_limited",
        label: "sender-limited",
        decimals: 0,
    },
    Metric {
        key: "rss_peak_server_mib",
        label: "server peak MiB",
        decimals: 1,
    },
    Metric {
        key: "rss_peak_client_mib",
        label: "client peak MiB",
        decimals: 1,
    },
];

/// The overview's columns: (test, metric, heading, decimals), shown where the test ran.
/// Peak memory is the highest of any run of the system.
pub const OVERVIEW: &[(&str, &str, &str, usize)] = &[
    ("iperf-tcp-1", "gbps", "up Gbit/s", 3),
    ("iperf-tcp-1-reverse", "gbps", "down Gbit/s", 3),
    ("iperf-tcp-1", "cpu_tunnel_s_per_gb", "up CPU s/GB", 2),
    (
        "iperf-tcp-1-reverse",
        "cpu_tunnel_s_per_gb",
        "down CPU s/GB",
        2,
    ),
    ("iperf-tcp-4", "gbps", "up 4-stream Gbit/s", 3),
    ("iperf-tcp-4-reverse", "gbps", "down 4-stream Gbit/s", 3),
    ("ping-idle", "rtt_p50_ms", "idle p50 ms", 3),
    ("ping-idle", "rtt_p99_ms", "idle p99 ms", 3),
    ("ping-under-load", "rtt_p50_ms", "loaded p50 ms", 3),
    ("ping-under-load", "rtt_p99_ms", "loaded p99 ms", 3),
    ("udp-pps-1400", "pps", "pkt/s 1400 B", 0),
    ("udp-pps-64", "pps", "pkt/s 64 B", 0),
    ("*", "rss_peak_server_mib", "server peak MiB", 1),
    ("*", "rss_peak_client_mib", "client peak MiB", 1),
];

/// Longest "failed to start" reason a table shows (the JSON keeps all of it).
const REASON_CHARS: usize = 200;

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
    /// Whether it failed before anything was measured: the system could not be prepared or
    /// started.
    pub failed_to_start: bool,
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
            "failed_to_start": self.failed_to_start,
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
                    if let (true, Some(reason)) = (ok.is_empty(), start_failure(&mine)) {
                        row.push(reason);
                        row.extend(columns.iter().skip(1).map(|_| "–".to_owned()));
                        return row;
                    }
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
    // Ratios come from Ringway's server counters: no Ringway system, no ratio columns.
    if test.shows_ratios() && runs.iter().any(|r| r.build.is_some()) {
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
    if columns.is_empty() {
        // Nothing measured at all: still a cell for each row's reason.
        columns.push(("result".to_owned(), "result".to_owned(), 0));
    }
    columns
}

/// `failed to start: <first line of the reason>` if any of `runs` failed to start.
fn start_failure(runs: &[&RunRecord]) -> Option<String> {
    let reason = runs
        .iter()
        .filter(|r| r.failed_to_start)
        .find_map(|r| r.error.as_deref())?;
    Some(format!("failed to start: {}", one_line(reason)))
}

/// The first line of `text`, cut to [`REASON_CHARS`], safe inside a Markdown table cell. A
/// first line that introduces a log excerpt (ends with `:`) gets the excerpt's first line
/// that mentions an error, else its first line.
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut line = lines.next().unwrap_or_default().to_owned();
    if line.ends_with(':') {
        let rest: Vec<&str> = lines.collect();
        let detail = rest
            .iter()
            .find(|l| l.to_ascii_lowercase().contains("error"))
            .or(rest.first());
        if let Some(detail) = detail {
            line = format!("{line} {detail}");
        }
    }
    let mut cut: String = line.chars().take(REASON_CHARS).collect();
    if line.chars().count() > REASON_CHARS {
        cut.push('…');
    }
    cut.replace('|', "/")
}

/// One row per system with the headline figure of each test that ran ([`OVERVIEW`]):
/// medians of the successful runs, `n/a` where there are none, and `failed to start: ...`
/// for a system none of whose runs started.
pub fn overview(systems: &[String], runs: &[RunRecord]) -> Option<Table> {
    let columns: Vec<&(&str, &str, &str, usize)> = OVERVIEW
        .iter()
        .filter(|(test, key, _, _)| {
            if *test == "*" {
                runs.iter().any(|r| r.metrics.contains_key(*key))
            } else {
                runs.iter().any(|r| r.test == *test)
            }
        })
        .collect();
    if columns.is_empty() {
        return None;
    }
    let rows = systems
        .iter()
        .map(|system| {
            let mine: Vec<&RunRecord> = runs.iter().filter(|r| &r.system == system).collect();
            let mut row = vec![system.clone()];
            let started = mine.iter().any(|r| !r.failed_to_start);
            if let (false, Some(reason)) = (started, start_failure(&mine)) {
                row.push(reason);
                row.extend(columns.iter().skip(1).map(|_| "–".to_owned()));
                return row;
            }
            for (test, key, _, decimals) in &columns {
                let values: Vec<f64> = mine
                    .iter()
                    .filter(|r| r.error.is_none() && (*test == "*" || r.test == *test))
                    .filter_map(|r| r.metrics.get(*key).copied())
                    .collect();
                let cell = if *test == "*" {
                    Summary::of(&values).map(|s| format!("{:.decimals$}", s.max))
                } else {
                    Summary::of(&values).map(|s| format!("{:.decimals$}", s.median))
                };
                row.push(cell.unwrap_or_else(|| "n/a".to_owned()));
            }
            row
        })
        .collect();
    let mut headings = vec!["system".to_owned()];
    headings.extend(columns.iter().map(|(_, _, label, _)| (*label).to_owned()));
    Some(Table {
        test: "overview".to_owned(),
        title: "medians per system (peak memory: the highest of any run)".to_owned(),
        columns: headings,
        rows,
    })
}

/// The Markdown document of a run: the machine, each system's setup, the chart (if any),
/// the overview and the per-test tables.
pub fn markdown_document(
    machine: &Machine,
    plan: &str,
    systems: &[(String, String)],
    chart: Option<&str>,
    overview: Option<&Table>,
    tables: &[Table],
) -> String {
    let mut out = String::from("# Ringway tunnel benchmark\n\n");
    let _ = writeln!(
        out,
        "{} · kernel {} · {} ({} CPUs) · load at start {}\n",
        machine.date, machine.kernel, machine.cpu_model, machine.cpus, machine.loadavg
    );
    let _ = writeln!(out, "{plan}\n");
    out.push_str("| system | setup |\n|---|---|\n");
    for (name, setup) in systems {
        let _ = writeln!(out, "| {name} | {} |", setup.replace('|', "/"));
    }
    out.push('\n');
    if let Some(path) = chart {
        let _ = writeln!(
            out,
            "![1-stream TCP throughput and CPU-seconds per GB]({path})\n"
        );
    }
    if let Some(t) = overview {
        out.push_str(&t.markdown());
        out.push('\n');
    }
    let tables: Vec<String> = tables.iter().map(Table::markdown).collect();
    out.push_str(&tables.join("\n"));
    out
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
    systems: &[(String, String)],
    runs: &[RunRecord],
    tables: &[Table],
) -> Value {
    let table = |t: &Table| {
        json!({
            "test": t.test,
            "title": t.title,
            "columns": t.columns,
            "rows": t.rows,
        })
    };
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
        "systems": systems.iter().map(|(name, setup)| json!({
            "name": name,
            "setup": setup,
        })).collect::<Vec<_>>(),
        "runs": runs.iter().map(RunRecord::json).collect::<Vec<_>>(),
        "overview": overview(&systems.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), runs)
            .as_ref()
            .map(table),
        "tables": tables.iter().map(table).collect::<Vec<_>>(),
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
            build: system.starts_with("ringway").then(|| "local".to_owned()),
            started: rfc3339(0),
            elapsed_s: 1.0,
            metrics: metrics.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            counters: BTreeMap::new(),
            error: error.map(str::to_owned),
            failed_to_start: false,
        }
    }

    fn unstarted(test: &str, system: &str, why: &str) -> RunRecord {
        RunRecord {
            failed_to_start: true,
            ..run(test, system, &[], Some(why))
        }
    }

    #[test]
    fn systems_that_cannot_start_say_why() {
        let tests: Vec<Test> = vec![
            "iperf-tcp-1".parse().unwrap(),
            "udp-pps-64".parse().unwrap(),
        ];
        let systems = vec!["raw-veth".to_owned(), "boringtun".to_owned()];
        let why = "cargo install boringtun-cli failed (exit status: 101): error | linker\nmore";
        let runs = vec![
            run(
                "iperf-tcp-1",
                "raw-veth",
                &[("gbps", 9.0), ("rss_peak_server_mib", 1.5)],
                None,
            ),
            unstarted("iperf-tcp-1", "boringtun", why),
            run(
                "udp-pps-64",
                "raw-veth",
                &[("pps", 123_456.4), ("pps_steps", 5.0)],
                None,
            ),
            unstarted("udp-pps-64", "boringtun", why),
        ];
        let t = tables(&tests, &systems, &runs);
        assert_eq!(
            t[0].rows[1][..3],
            [
                "boringtun",
                "0/1",
                "failed to start: cargo install boringtun-cli failed (exit status: 101): error / \
                 linker"
            ]
        );
        assert_eq!(t[0].rows[1].len(), t[0].columns.len());
        assert!(t[0].rows[1][3..].iter().all(|c| c == "–"));
        assert_eq!(t[1].columns, ["system", "runs", "pkt/s", "steps"]);
        assert_eq!(t[1].rows[0], ["raw-veth", "1", "123456", "5"]);
        // A table where nothing was measured still has a cell for the reason.
        let only = tables(&tests[1..], &systems[1..], &runs[3..]);
        assert_eq!(only[0].columns, ["system", "runs", "result"]);
        assert_eq!(only[0].rows[0].len(), 3);

        let o = overview(&systems, &runs).unwrap();
        assert_eq!(
            o.columns,
            [
                "system",
                "up Gbit/s",
                "up CPU s/GB",
                "pkt/s 64 B",
                "server peak MiB"
            ]
        );
        assert_eq!(o.rows[0], ["raw-veth", "9.000", "n/a", "123456", "1.5"]);
        assert!(
            o.rows[1][1].starts_with("failed to start: cargo install"),
            "{:?}",
            o.rows[1]
        );
        assert_eq!(o.rows[1].len(), o.columns.len());

        let machine = Machine {
            date: "2026-12-02T10:00:00Z".into(),
            kernel: "6.18.0".into(),
            cpu_model: "Some CPU".into(),
            cpus: 2,
            loadavg: "0.10 0.20 0.30 1/100 42".into(),
        };
        let setups = vec![
            ("raw-veth".to_owned(), "no tunnel".to_owned()),
            (
                "boringtun".to_owned(),
                "boringtun-cli 0.7.1: --threads 1".to_owned(),
            ),
        ];
        let md = markdown_document(
            &machine,
            "1 repetition",
            &setups,
            Some("chart.svg"),
            Some(&o),
            &t,
        );
        assert!(md.starts_with("# Ringway tunnel benchmark\n\n2026-12-02T10:00:00Z · kernel 6.18.0 · Some CPU (2 CPUs)"), "{md}");
        for part in [
            "| boringtun | boringtun-cli 0.7.1: --threads 1 |",
            "![1-stream TCP throughput and CPU-seconds per GB](chart.svg)",
            "**overview**",
            "**udp-pps-64**: highest UDP packet rate",
        ] {
            assert!(md.contains(part), "no {part:?} in\n{md}");
        }
        let doc = json_document(&machine, json!({}), &[], &setups, &runs, &t);
        assert_eq!(doc["systems"][1]["name"], "boringtun");
        assert_eq!(doc["runs"][1]["failed_to_start"], true);
        assert_eq!(doc["overview"]["rows"][0][1], "9.000");
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
    fn reasons_fit_on_one_line() {
        let e = "starting ringway-udp-tokio: ringway-server exited early (exit status: 2); \
                 last lines of /tmp/x/server.log:\nerror: unexpected argument '--io' found\n\n\
                 Usage: ringway-server run --config <CONFIG>";
        assert_eq!(
            one_line(e),
            "starting ringway-udp-tokio: ringway-server exited early (exit status: 2); last \
             lines of /tmp/x/server.log: error: unexpected argument '--io' found"
        );
        assert_eq!(one_line("timed out\nsecond | line"), "timed out");
        assert_eq!(one_line("log:\nonly line"), "log: only line");
        let long = "x".repeat(300);
        assert_eq!(one_line(&long).chars().count(), REASON_CHARS + 1);
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
