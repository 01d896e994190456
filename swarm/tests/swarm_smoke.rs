//! `ringway-swarm namespaces` end to end with a small swarm: 20 sessions, 2 s of load at
//! 2000 packets/s, so that the load generator cannot rot unnoticed. It checks that every
//! session came up, that the server took the packets (its own counters and its TUN's), and
//! that the report's numbers are sane; never how fast anything was.
//!
//! Needs root, `ip` and the release binaries, like the other e2e tests; reported as ignored
//! without them unless `CI` is set.

use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ringway_e2e::harness::{self, Scenario};
use ringway_e2e::{binaries, process};
use serde_json::Value;

/// Sessions in the swarm.
const SESSIONS: u64 = 20;
/// Packets per second over the 19 load sessions.
const RATE: u64 = 2000;
/// Bound for the whole run (a few seconds normally).
const LIMIT: Duration = Duration::from_secs(180);

fn main() -> ExitCode {
    harness::main([Scenario::testbed(
        "swarm_of_20_sessions_loads_the_server",
        &[],
        smoke,
    )])
}

fn smoke(test: &str) -> Result<()> {
    let out = process::run(
        Command::new(env!("CARGO_BIN_EXE_ringway-swarm"))
            .arg("namespaces")
            .args(["--sessions", &SESSIONS.to_string()])
            .args(["--rate", &RATE.to_string(), "--seconds", "2"])
            .args(["--idle-seconds", "0.5", "--json"])
            .arg("--bin-dir")
            .arg(binaries::bin_dir()),
        LIMIT,
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{test}: ringway-swarm said:\n{stderr}");
    ensure!(
        out.status.success(),
        "ringway-swarm exited {}; stdout:\n{stdout}",
        out.status
    );
    let doc: Value = serde_json::from_str(&stdout).context("stdout is not one JSON object")?;
    let runs = doc["runs"].as_array().context("no runs")?;
    ensure!(
        runs.len() == 1,
        "one run asked for, {} reported",
        runs.len()
    );
    let r = &runs[0];
    let num = |v: &Value, what: &str| v.as_f64().with_context(|| format!("{what} is missing"));

    // Every session came up, through the real handshake.
    let h = &r["handshakes"];
    ensure!(
        h["established"] == SESSIONS && h["failed"] == 0,
        "sessions: {h}"
    );
    let per_sec = num(&h["per_sec"], "handshakes.per_sec")?;
    ensure!(
        per_sec > 0.0 && per_sec.is_finite(),
        "handshakes/s {per_sec}"
    );

    // The load went out, and the server took it: its own count of packets it opened and wrote
    // to the TUN, and the TUN's count of them.
    let load = &r["load"];
    let sent = num(&load["sent"], "load.sent")?;
    ensure!(
        sent >= 0.5 * (RATE * 2) as f64,
        "the swarm sent {sent} packets, asked for about {}",
        RATE * 2
    );
    ensure!(load["sessions_lost"] == 0, "sessions lost: {load}");
    let counters = &r["server_counters"]["all"];
    let handshakes = num(&counters["handshakes"], "server handshakes")?;
    ensure!(
        handshakes >= SESSIONS as f64,
        "the server counted {handshakes} handshakes"
    );
    let inside_tx = num(&counters["inside_tx"], "server inside_tx")?;
    ensure!(
        inside_tx >= 0.9 * sent,
        "the server wrote {inside_tx} packets to its TUN of {sent} sent"
    );
    ensure!(
        num(&counters["disconnected"], "server disconnected")? >= 1.0,
        "no session said goodbye: {counters}"
    );
    let server = &r["server"];
    let written = num(
        &server["load"]["tun_written_per_sec"],
        "tun_written_per_sec",
    )?;
    ensure!(written > 0.0, "the server's TUN took nothing: {server}");

    // Memory is read, and grows with sessions rather than shrinking to nothing.
    let mem = &server["memory"];
    let rss = num(&mem["with_sessions"]["rss_kib"], "rss with sessions")?;
    let hwm = num(&mem["after_load"]["hwm_kib"], "peak rss")?;
    ensure!(rss > 0.0 && hwm >= rss, "server memory: {mem}");

    // The probe's echoes came back with plausible round trips.
    let probe = &r["probe"];
    let received = num(&probe["received"], "probe.received")?;
    ensure!(received > 0.0, "no probe echo came back: {probe}");
    let p50 = num(&probe["rtt"]["p50_ms"], "probe p50")?;
    let p99 = num(&probe["rtt"]["p99_ms"], "probe p99")?;
    ensure!(
        p50 > 0.0 && p99 >= p50 && p99 < 10_000.0,
        "probe round trips: {probe}"
    );
    println!(
        "{test}: {per_sec:.0} handshakes/s, {sent} packets sent, server wrote {inside_tx}, \
         probe p99 {p99:.2} ms, server RSS {rss} KiB"
    );
    Ok(())
}
