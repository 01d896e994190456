//! `ringway-swarm namespaces`: the whole measurement in one command, for each session count a
//! fresh pair of namespaces, a fresh server with that many peers, the swarm, and the server's
//! own counters at the end.
//!
//! ```text
//!  netns rw-<pid>-<n>-s                                  netns rw-<pid>-<n>-c
//!  ringway-server run (pool 198.18.0.0/16, N peers)      ringway-swarm's runtime (a thread
//!  ringway0 198.18.0.1/16                                 that entered this namespace):
//!                                                         N sessions, one UDP socket each
//!  veth-sw-s 192.0.2.1/24  <===== veth pair =====>       veth-sw-c 192.0.2.2/24
//! ```
//!
//! Built from the e2e testbed's pieces ([`Netns`], [`netns::connect`], [`Process`],
//! [`TempDir`]), so every namespace, process and directory is a guard torn down on drop, also
//! when a run fails or panics; the root namespace is never touched. The testbed itself
//! provisions peers one `add-peer` process at a time into a /24, which is right for a few
//! clients and too slow and too small for ten thousand: here the pool is a /16 and the peers
//! are written in one go ([`crate::peers::provision`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringway_client::TransportChoice;
use ringway_e2e::binaries::Binaries;
use ringway_e2e::counters::{self, ServerCounters};
use ringway_e2e::netns::{self, Netns};
use ringway_e2e::process::{self, Process};
use ringway_e2e::TempDir;

use crate::report::{self, Report};
use crate::server::ServerWatch;
use crate::swarm::{self, Options};

/// The server's outside address on the veth.
const SERVER_OUTSIDE_CIDR: &str = "192.0.2.1/24";
/// The swarm's outside address on the veth.
const CLIENT_OUTSIDE_CIDR: &str = "192.0.2.2/24";
/// Where the server listens.
pub const SERVER_ENDPOINT: &str = "192.0.2.1:51820";
/// The tunnel pool: a /16 holds 65 533 clients.
pub const TUNNEL_POOL: &str = "198.18.0.0/16";
/// The server's TUN.
const TUN_NAME: &str = "ringway0";
/// veth names (they live only inside our namespaces).
const SERVER_VETH: &str = "veth-sw-s";
const CLIENT_VETH: &str = "veth-sw-c";
/// Bound for `ringway-server init`.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for the server to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for the server to exit after SIGTERM (it says goodbye to every session first).
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines quoted when something fails.
const TAIL: usize = 30;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Session counts, one fresh testbed each.
    pub sessions: Vec<usize>,
    /// Everything else the swarm does (its `sessions` is replaced per run).
    pub swarm: Options,
    /// Tokio worker threads of the swarm.
    pub threads: usize,
    /// The binaries (`ringway-server` is used).
    pub binaries: Binaries,
    /// Extra arguments for `ringway-server run`.
    pub server_args: Vec<String>,
}

/// Runs every session count of `plan` in turn; `each` sees each report as it comes.
pub fn run_all(plan: &Plan, mut each: impl FnMut(&Report)) -> Result<Vec<Report>> {
    let mut reports = Vec::with_capacity(plan.sessions.len());
    for &n in &plan.sessions {
        let report = run_one(plan, n).with_context(|| format!("the run with {n} sessions"))?;
        each(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// One testbed with `n` sessions.
fn run_one(plan: &Plan, n: usize) -> Result<Report> {
    // Declaration order is drop order in reverse: the server goes before the namespaces,
    // the namespaces before the directory holding the logs.
    let dir = TempDir::new("ringway-swarm")?;
    let [server_ns, client_ns] = Netns::create_set(["s", "c"])?;
    netns::connect(
        &server_ns,
        SERVER_VETH,
        SERVER_OUTSIDE_CIDR,
        &client_ns,
        CLIENT_VETH,
        CLIENT_OUTSIDE_CIDR,
    )?;
    let server_dir = dir.path().join("server");
    process::run_ok(
        Command::new(&plan.binaries.server)
            .arg("init")
            .arg("--dir")
            .arg(&server_dir)
            .args(["--listen", SERVER_ENDPOINT, "--pool", TUNNEL_POOL]),
        SETUP_TIMEOUT,
    )
    .context("ringway-server init")?;
    let server_config = server_dir.join(ringway_server::admin::CONFIG_NAME);
    let swarm_file = dir.path().join("swarm.toml");
    let provisioning = Instant::now();
    crate::peers::provision(&server_config, n, "swarm", SERVER_ENDPOINT, &swarm_file)?;
    let peers = crate::peers::load(&swarm_file)?;
    tracing::info!(n, took = ?provisioning.elapsed(), "provisioned");

    let mut cmd = server_ns.command(&plan.binaries.server);
    cmd.arg("run").arg("--config").arg(&server_config);
    if plan.swarm.transport == TransportChoice::Tcp {
        // One connection per session.
        cmd.args(["--max-tcp-connections", &(n + 16).to_string()]);
    }
    cmd.args(&plan.server_args);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    let log = dir.path().join("server.log");
    let mut server = Process::spawn("ringway-server", &mut cmd, &log)?;
    wait_ready(&mut server)?;
    let watch = ServerWatch {
        pid: server.pid(),
        tun: TUN_NAME.to_owned(),
    };

    let opts = Options {
        sessions: n,
        ..plan.swarm.clone()
    };
    let threads = plan.threads;
    // Connecting, idling, loading and saying goodbye, with room for a slow machine.
    let limit = opts.connect_deadline * 3
        + opts.idle_for
        + opts.load_for
        + Duration::from_secs(60 + n as u64 / 100);
    let res = client_ns.run_inside(limit, move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
            .context("building the tokio runtime")?;
        runtime.block_on(swarm::run(peers, &opts, Some(&watch)))
    });
    let mut report = match res {
        Ok(r) => r,
        Err(e) => bail!(
            "{e:#}\n--- the server is {}; last lines of its log:\n{}",
            state(&mut server),
            server.log_tail(TAIL)
        ),
    };
    if let Err(e) = server.ensure_running() {
        bail!("the server did not survive {n} sessions: {e:#}");
    }
    let stopped = server.terminate(STOP_TIMEOUT)?;
    let line = counters_line(&log).with_context(|| {
        format!(
            "the server exited ({}) without its counters line; last lines of its log:\n{}",
            stopped.status,
            server.log_tail(TAIL)
        )
    })?;
    report.server_counters = Some(report::ServerCounters::from_line(&ServerCounters::parse(
        &line,
    )));
    Ok(report)
}

/// Waits until the server has its TUN and its UDP socket, reading its namespace through
/// `/proc/<pid>/net` (no `ip` or `ss` needed).
fn wait_ready(server: &mut Process) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let port = SERVER_ENDPOINT
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .context("the endpoint has a port")?;
    loop {
        server.ensure_running()?;
        let pid = server.pid();
        let tun = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).is_ok_and(|t| {
            t.lines()
                .any(|l| l.trim_start().starts_with(&format!("{TUN_NAME}:")))
        });
        let udp = std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
            .is_ok_and(|t| udp_bound(&t, port));
        if tun && udp {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the server is not ready after {READY_TIMEOUT:?} (TUN {tun}, UDP socket {udp}); \
                 last lines of its log:\n{}",
                server.log_tail(TAIL)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `/proc/net/udp` text lists a socket bound to local `port`.
fn udp_bound(text: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|local| local.ends_with(&want))
}

/// The server's final counters line in `log`, if it has written it.
fn counters_line(log: &Path) -> Option<String> {
    process::tail(log, 200)
        .lines()
        .rev()
        .find(|l| l.contains(counters::MARKER))
        .map(|l| l.trim().to_owned())
}

/// "running" or "exited (status)", for messages.
fn state(p: &mut Process) -> String {
    match p.try_status() {
        Ok(Some(s)) => format!("exited ({s})"),
        Ok(None) => "running".to_owned(),
        Err(e) => format!("in an unknown state ({e})"),
    }
}

/// Where the release binaries are: `dir` if given, else as the e2e tests find them.
pub fn binaries(dir: Option<&PathBuf>) -> Result<Binaries> {
    match dir {
        Some(d) => Binaries::in_dir(d),
        None => Binaries::locate(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bound_port() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                    \x20 12: 010200C0:CA6C 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 0\n";
        assert!(udp_bound(text, 51820));
        assert!(!udp_bound(text, 51821));
        assert!(!udp_bound("header only\n", 51820));
    }
}
