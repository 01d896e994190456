//! `ringway-swarm`: many client sessions from one process against a real server, to measure
//! what a session costs the server and how many it takes.
//!
//! Each session is the client library's own [`ringway_client::Tunnel`] (its own key, its own
//! UDP socket, the real handshake and sealing), without a TUN device, so neither root nor a
//! device per session is needed on the client side. What it measures, and where each number
//! comes from, is in [`report`].
//!
//! - [`peers`]: the swarm file (every peer's keys in one file) and provisioning N peers on a
//!   server in the format `ringway-server add-peer` writes.
//! - [`swarm`]: one run: connect, idle, load with a probe alongside, goodbye.
//! - [`packet`]: the synthetic inner packets.
//! - [`server`]: the server as `/proc/<pid>` shows it (memory, CPU, TUN and UDP counters).
//! - [`namespaces`]: the whole measurement in throwaway namespaces, for several session counts.
//! - [`report`]: the results, as JSON, text and a Markdown table.
//! - [`sys`]: the open-file limit (one socket per session).

pub mod namespaces;
pub mod packet;
pub mod peers;
pub mod report;
pub mod server;
pub mod swarm;
pub mod sys;

/// What the machine was, for the JSON record: kernel, CPU model, CPUs and load at the start.
pub fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    serde_json::json!({
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu_model": cpu_model,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg_at_start": read("/proc/loadavg").trim(),
    })
}
