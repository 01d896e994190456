//! The tunnel benchmark end to end in its cheapest mode, so that `scripts/bench` cannot rot
//! unnoticed: one repetition of 1 s, raw veth, Ringway over UDP and one other VPN (fastd: a
//! small Debian package that the bench installs if missing, and up in a fraction of a
//! second), one iperf3 run and one ping each. It checks that every run succeeded and was
//! recorded with the metrics, counters and peak memory it should have, and that the JSON,
//! Markdown and chart were written, never how fast anything was.
//!
//! Needs what the e2e tests need (root, ip, ping, iperf3, the release binaries) and apt-get
//! for fastd; reported as ignored without them unless `CI` is set.

use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::{binaries, process, TempDir};
use serde_json::Value;

/// Bound for the whole smoke run (6 runs of a few seconds each, setup, maybe an apt-get).
const LIMIT: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    harness::main([Scenario::testbed(
        "tunnel_bench_smoke_run",
        &["iperf3", "ping"],
        smoke,
    )])
}

fn smoke(test: &str) -> Result<()> {
    let dir = TempDir::new("ringway-bench-smoke")?;
    let out = dir.path().join("out");
    let result = process::run(
        Command::new(env!("CARGO_BIN_EXE_ringway-tunnel-bench"))
            .arg("--build")
            .arg(format!("local={}", binaries::bin_dir().display()))
            .args(["--quick", "--reps", "1", "--seconds", "1"])
            .args(["--systems", "raw-veth,ringway-udp,fastd"])
            .args(["--tests", "iperf-tcp-1,ping-idle"])
            .arg("--out")
            .arg(&out),
        LIMIT,
    )?;
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    println!("{test}: the bench printed:\n{stdout}{stderr}");
    ensure!(
        result.status.success(),
        "ringway-tunnel-bench exited {}",
        result.status
    );
    ensure!(
        stdout.contains("| system | runs |"),
        "no Markdown table in the output"
    );

    let json = out.join("results.json");
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(&json).with_context(|| format!("reading {}", json.display()))?,
    )
    .context("the JSON file does not parse")?;
    let markdown = std::fs::read_to_string(out.join("results.md")).context("no results.md")?;
    ensure!(
        markdown.starts_with("# Ringway tunnel benchmark") && markdown.contains("| fastd |"),
        "results.md lacks its heading or fastd:\n{markdown}"
    );
    let svg = std::fs::read_to_string(out.join("chart.svg")).context("no chart.svg")?;
    ensure!(
        svg.starts_with("<svg") && svg.contains("fastd"),
        "chart.svg is not a chart of the systems"
    );
    for key in ["date", "kernel", "cpu_model"] {
        ensure!(doc[key].is_string(), "no {key} in the JSON");
    }
    ensure!(
        doc["builds"][0]["label"] == "local",
        "builds: {}",
        doc["builds"]
    );
    let runs = doc["runs"].as_array().context("no runs array")?;
    let found: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            (
                r["test"].as_str().unwrap_or_default().to_owned(),
                r["system"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want = [
        ("iperf-tcp-1", "raw-veth"),
        ("iperf-tcp-1", "ringway-udp"),
        ("iperf-tcp-1", "fastd"),
        ("ping-idle", "raw-veth"),
        ("ping-idle", "ringway-udp"),
        ("ping-idle", "fastd"),
    ];
    ensure!(
        found
            .iter()
            .map(|(t, s)| (t.as_str(), s.as_str()))
            .eq(want.iter().copied()),
        "runs in the wrong order or missing: {found:?}, want {want:?}"
    );
    for r in runs {
        let name = format!("{} on {}", r["test"], r["system"]);
        ensure!(r["error"].is_null(), "{name} failed: {}", r["error"]);
        let metrics = &r["metrics"];
        let want: &[&str] = if r["test"] == "iperf-tcp-1" {
            &["gbps"]
        } else {
            &["rtt_p50_ms", "rtt_p99_ms", "loss_pct"]
        };
        for key in want {
            ensure!(metrics[key].is_number(), "{name}: no {key} in {metrics}");
        }
        let counters = r["counters"].as_object().context("no counters object")?;
        let tunnel = r["system"] != "raw-veth";
        if r["system"] == "ringway-udp" {
            ensure!(
                !counters.is_empty(),
                "{name}: the server's counters were not recorded"
            );
        } else {
            ensure!(
                counters.is_empty(),
                "{name}: only Ringway's server counts, yet {counters:?}"
            );
        }
        if tunnel {
            for key in ["rss_peak_server_mib", "rss_peak_client_mib"] {
                ensure!(metrics[key].is_number(), "{name}: no {key} in {metrics}");
            }
            if r["test"] == "iperf-tcp-1" {
                for key in [
                    "cpu_server_s_per_gb",
                    "cpu_client_s_per_gb",
                    "cpu_tunnel_s_per_gb",
                ] {
                    ensure!(metrics[key].is_number(), "{name}: no {key} in {metrics}");
                }
            }
        }
    }
    let tables = doc["tables"].as_array().context("no tables")?;
    ensure!(tables.len() == 2, "{} tables, want 2", tables.len());
    Ok(())
}
