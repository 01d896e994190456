//! The end-to-end tunnel benchmark: what a tunnel costs compared with the bare link, what one
//! build costs compared with another, and how Ringway compares with other VPNs, measured side
//! by side in one run.
//!
//! The pieces are kept apart so that later questions are additions, not rewrites:
//!
//! - a [`system`] is something that carries traffic between two namespaces and can be started
//!   and stopped: the raw veth (the limit), Ringway over UDP or TCP (each one per [`build`],
//!   with the server's default or tokio backend), wireguard-go, boringtun, OpenVPN and fastd.
//!   A running system names its processes (for CPU and peak memory) and, once stopped, the
//!   server's counters;
//! - a [`test`] is one measurement through a running system: iperf3 with N streams either
//!   way, ping idle, ping beside bulk TCP, the highest UDP packet rate ([`rate`] is its
//!   search, sans-IO). Each yields named metrics;
//! - the [`plan`] orders runs so that systems alternate (A B C A B C) within each test and
//!   repetition, so slow drift of a shared machine spreads over all systems alike;
//! - [`ratios`] turns the server's counters into packets per system call, table-driven;
//! - [`rss`] reads a process's peak resident memory just before it is stopped;
//! - [`report`] prints medians with min–max per system and test, as text and Markdown, and
//!   writes every run to JSON with the machine and build it ran on; [`chart`] draws
//!   throughput and CPU per GB as SVG.
//!
//! Every run gets a fresh system (so the server's final counters belong to that one run), is
//! bounded in time by its parts (readiness waits, iperf3 and ping limits), and is torn down by
//! the testbed's guards, also on panic or Ctrl-C.

pub mod build;
pub mod chart;
pub mod plan;
pub mod rate;
pub mod ratios;
pub mod report;
pub mod rss;
pub mod stats;
pub mod system;
pub mod test;
