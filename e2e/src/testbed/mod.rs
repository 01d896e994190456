//! The two-namespace testbed: a real server and client connected by a veth pair.
//!
//! ```text
//!  netns rw-<pid>-<n>-s                              netns rw-<pid>-<n>-c
//!  ringway-server run                                ringway up (one per client)
//!  ringway0 198.18.0.1/24 (inside)                   ringway0 198.18.0.2/24 (inside, first client)
//!                                                    ringway1 198.18.0.3/24 (added clients, ...)
//!  veth-rw-s 192.0.2.1/24  <==== veth pair ====>     veth-rw-c 192.0.2.2/24 (outside)
//! ```
//!
//! Tunnel traffic (ping, iperf3, the SHA-256 transfer) goes client TUN -> client -> veth ->
//! server -> server `ringway0`, so it crosses both real drivers. More clients, each with its own
//! TUN, transport and peer entry, can join the client namespace with [`Testbed::add_client`];
//! measurements bind to a client's inside address so they take its TUN (see [`crate::path`]).
//! The root namespace is never touched. [`Testbed`] owns everything through guards whose drop
//! order is: client processes, server process, namespaces, temporary directory.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::binaries::Binaries;
use crate::iperf::{self, IperfReport};
use crate::netns::{self, Netns};
use crate::path::TunnelPath;
use crate::ping::{self, PingStats};
use crate::process::{self, Process, Termination};
use crate::tempdir::TempDir;
use crate::transfer::{self, TransferReport};

mod client;
mod options;
mod ready;

pub use client::{ClientHandle, TunCounters};
pub use options::{TestbedOptions, Transport};

/// Server's outside address on the veth.
pub const SERVER_OUTSIDE_CIDR: &str = "192.0.2.1/24";
/// Client's outside address on the veth.
pub const CLIENT_OUTSIDE_CIDR: &str = "192.0.2.2/24";
/// Where the server listens (UDP and TCP) and the clients connect.
pub const SERVER_ENDPOINT: &str = "192.0.2.1:51820";
/// The tunnel address pool handed to `ringway-server init`.
pub const TUNNEL_POOL: &str = "198.18.0.0/24";
/// The server's inside address (first host of the pool).
pub const SERVER_TUNNEL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The address the first peer is expected to get.
pub const CLIENT_TUNNEL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The TUN device name of the server and of the first client.
pub const TUN_NAME: &str = "ringway0";
/// veth names; they live only inside our namespaces, so fixed names cannot collide.
const SERVER_VETH: &str = "veth-rw-s";
const CLIENT_VETH: &str = "veth-rw-c";
/// Bound for the config-writing subcommands.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Overall bound for one SHA-256 transfer.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);
/// Seed of the transfer's pseudo-random stream (fixed, so failures reproduce); client `i`
/// uses `TRANSFER_SEED + i`.
const TRANSFER_SEED: u64 = 0x5249_4e47_5741_5900;
/// Log lines quoted when something fails.
const TAIL: usize = 30;
/// What the server's final log line says before its counters.
const COUNTERS_MARKER: &str = "stopped counters=";

/// A client process and what tests know about it.
#[derive(Debug)]
struct Client {
    process: Process,
    handle: ClientHandle,
}

/// A running server and its clients in their own namespaces; everything is torn down on drop.
#[derive(Debug)]
pub struct Testbed {
    // Field order is drop order: processes before the namespaces they live in, and the
    // directory holding their logs last. `clients[0]` is the client started with the testbed.
    clients: Vec<Client>,
    server: Process,
    client_ns: Netns,
    server_ns: Netns,
    transport: Transport,
    /// Client configs of provisioned peers no client uses yet, in the order to use them.
    spare_configs: Vec<PathBuf>,
    client_args: Vec<String>,
    ready_timeout: Duration,
    bins: Binaries,
    dir: TempDir,
}

impl Testbed {
    /// Builds namespaces and veth, writes configs (one peer, plus `opts.extra_peers`), starts
    /// the server then the first client, and waits until both tunnel devices are up (each wait
    /// bounded by `opts.ready_timeout`).
    pub fn start(opts: TestbedOptions) -> Result<Self> {
        let bins = Binaries::locate()?;
        // Declaration order makes early returns drop the server, then namespaces, then the dir.
        let dir = TempDir::new("ringway-e2e")?;
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
        std::fs::create_dir(&server_dir)
            .with_context(|| format!("creating {}", server_dir.display()))?;
        let mut configs = provision(&bins, &server_dir, dir.path(), 1 + opts.extra_peers)?;

        let mut server_cmd = server_ns.command(&bins.server);
        server_cmd
            .arg("run")
            .arg("--config")
            .arg(server_dir.join("server.toml"))
            .args(&opts.server_args);
        with_log_level(&mut server_cmd);
        let mut server = Process::spawn(
            "ringway-server",
            &mut server_cmd,
            &dir.path().join("server.log"),
        )?;
        ready::wait_server_ready(&server_ns, &mut server, opts.transport, opts.ready_timeout)?;

        let first = configs.remove(0);
        let mut bed = Self {
            clients: Vec::new(),
            server,
            client_ns,
            server_ns,
            transport: opts.transport,
            spare_configs: configs,
            client_args: opts.client_args,
            ready_timeout: opts.ready_timeout,
            bins,
            dir,
        };
        bed.spawn_client(&first, opts.transport, TUN_NAME)?;
        Ok(bed)
    }

    /// Starts another client in the client namespace, over `transport`, with its own TUN
    /// `tun_name`, using the next peer provisioned by [`TestbedOptions::extra_peers`]; waits
    /// until its TUN is up with an address (bounded like [`Testbed::start`]).
    ///
    /// The testbed's `client_args` are passed to it too. Measure through it with the `*_from`
    /// methods.
    pub fn add_client(&mut self, transport: Transport, tun_name: &str) -> Result<ClientHandle> {
        client::check_tun_name(tun_name)?;
        if let Some(c) = self.clients.iter().find(|c| c.handle.tun_name == tun_name) {
            bail!(
                "TUN {tun_name} is already used by client {}",
                c.handle.index
            );
        }
        if self.spare_configs.is_empty() {
            bail!(
                "no provisioned peer left for another client ({} running); \
                 ask for more with TestbedOptions::extra_peers",
                self.clients.len()
            );
        }
        let config = self.spare_configs.remove(0);
        client::set_tun_name(&config, tun_name)?;
        if transport != self.transport {
            ready::wait_server_listening(
                &self.server_ns,
                &mut self.server,
                transport,
                self.ready_timeout,
            )?;
        }
        self.spawn_client(&config, transport, tun_name)
    }

    /// Spawns `ringway up config` in the client namespace and waits until it is ready.
    fn spawn_client(
        &mut self,
        config: &Path,
        transport: Transport,
        tun_name: &str,
    ) -> Result<ClientHandle> {
        let index = self.clients.len();
        let (name, log) = if index == 0 {
            ("ringway client".to_owned(), "client.log".to_owned())
        } else {
            (
                format!("ringway client {index} ({transport}, {tun_name})"),
                format!("client{index}.log"),
            )
        };
        let mut cmd = self.client_ns.command(&self.bins.client);
        cmd.arg("up").arg(config);
        if transport == Transport::Tcp {
            cmd.args(["--transport", "tcp"]);
        }
        cmd.args(&self.client_args);
        with_log_level(&mut cmd);
        let mut process = Process::spawn(name, &mut cmd, &self.dir.path().join(log))?;
        let tunnel_ip = ready::wait_client_ready(
            &self.client_ns,
            tun_name,
            &mut process,
            &mut self.server,
            self.ready_timeout,
        )?;
        if let Some(other) = self
            .clients
            .iter()
            .find(|c| c.handle.tunnel_ip == tunnel_ip)
        {
            bail!(
                "client {index} got {tunnel_ip}, which client {} already has",
                other.handle.index
            );
        }
        client::route_by_source(&self.client_ns, index, tun_name, tunnel_ip)?;
        let handle = ClientHandle {
            index,
            transport,
            tun_name: tun_name.to_owned(),
            tunnel_ip,
        };
        self.clients.push(Client {
            process,
            handle: handle.clone(),
        });
        Ok(handle)
    }

    /// The transport the first client uses.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The namespace running the server.
    pub fn server_ns(&self) -> &Netns {
        &self.server_ns
    }

    /// The namespace running the clients.
    pub fn client_ns(&self) -> &Netns {
        &self.client_ns
    }

    /// The temporary directory holding configs and logs (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the server listens, as seen from the client namespace.
    pub fn server_endpoint(&self) -> SocketAddr {
        SERVER_ENDPOINT
            .parse()
            .expect("SERVER_ENDPOINT is a valid socket address")
    }

    /// The first client, started with the testbed.
    pub fn primary_client(&self) -> ClientHandle {
        self.clients[0].handle.clone()
    }

    /// Every running client, the first one first.
    pub fn clients(&self) -> Vec<ClientHandle> {
        self.clients.iter().map(|c| c.handle.clone()).collect()
    }

    /// The byte counters of `client`'s TUN device.
    pub fn tun_counters(&self, client: &ClientHandle) -> Result<TunCounters> {
        self.check(client)?;
        TunCounters::read(&self.client_ns, &client.tun_name)
    }

    /// The address the first client's TUN device got.
    pub fn client_tunnel_ip(&self) -> Ipv4Addr {
        self.clients[0].handle.tunnel_ip
    }

    /// The server process guard (signals, exit status, log).
    pub fn server(&mut self) -> &mut Process {
        &mut self.server
    }

    /// The first client's process guard.
    pub fn client(&mut self) -> &mut Process {
        &mut self.clients[0].process
    }

    /// A client's process guard.
    pub fn client_process(&mut self, client: &ClientHandle) -> Result<&mut Process> {
        let i = self.check(client)?;
        Ok(&mut self.clients[i].process)
    }

    /// Pings the server's tunnel address from the first client `count` times.
    pub fn ping(&mut self, count: u32) -> Result<PingStats> {
        self.ping_from(&self.primary_client(), count)
    }

    /// Pings the server's tunnel address `count` times from `client`'s inside address.
    pub fn ping_from(&mut self, client: &ClientHandle, count: u32) -> Result<PingStats> {
        let res = self
            .path(client)
            .and_then(|path| ping::ping(&path, count))
            .with_context(|| describe(client));
        self.explain(res)
    }

    /// Runs a `secs`-second iperf3 TCP test through the first client; `reverse` = server sends.
    pub fn iperf3(&mut self, reverse: bool, secs: u32) -> Result<IperfReport> {
        self.iperf3_from(&self.primary_client(), reverse, secs)
    }

    /// Runs a `secs`-second iperf3 TCP test through `client`; `reverse` = server sends.
    pub fn iperf3_from(
        &mut self,
        client: &ClientHandle,
        reverse: bool,
        secs: u32,
    ) -> Result<IperfReport> {
        let res = self
            .path(client)
            .and_then(|path| iperf::run(&path, reverse, secs, self.dir.path()))
            .with_context(|| describe(client));
        self.explain(res)
    }

    /// Sends `bytes` of seeded pseudo-random data client -> server over TCP through the first
    /// client and checks the SHA-256 on both ends (bounded by a 60 s deadline).
    pub fn transfer_sha256(&mut self, bytes: u64) -> Result<TransferReport> {
        self.transfer_sha256_from(&self.primary_client(), bytes)
    }

    /// Like [`Testbed::transfer_sha256`], through `client`.
    pub fn transfer_sha256_from(
        &mut self,
        client: &ClientHandle,
        bytes: u64,
    ) -> Result<TransferReport> {
        let res = self
            .path(client)
            .and_then(|path| {
                transfer::transfer_sha256(&path, bytes, transfer_seed(client), TRANSFER_DEADLINE)
            })
            .with_context(|| describe(client));
        self.explain(res)
    }

    /// Runs one SHA-256 transfer of `bytes` through each of `clients` at the same time, and
    /// returns their reports in the same order; fails if any fails.
    pub fn transfer_sha256_concurrently(
        &mut self,
        clients: &[ClientHandle],
        bytes: u64,
    ) -> Result<Vec<TransferReport>> {
        let res = self.run_concurrently(clients, bytes);
        self.explain(res)
    }

    fn run_concurrently(
        &self,
        clients: &[ClientHandle],
        bytes: u64,
    ) -> Result<Vec<TransferReport>> {
        let paths = clients
            .iter()
            .map(|c| self.path(c))
            .collect::<Result<Vec<_>>>()?;
        // Each transfer bounds itself by its deadline and socket timeouts, so the scope ends.
        let results: Vec<Result<TransferReport>> = std::thread::scope(|s| {
            let running: Vec<_> = paths
                .iter()
                .zip(clients)
                .map(|(path, c)| {
                    s.spawn(move || {
                        transfer::transfer_sha256(path, bytes, transfer_seed(c), TRANSFER_DEADLINE)
                            .with_context(|| describe(c))
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("transfer thread panicked")))
                })
                .collect()
        });
        let mut reports = Vec::with_capacity(results.len());
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(report) => reports.push(report),
                Err(e) => errors.push(format!("{e:#}")),
            }
        }
        ensure!(
            errors.is_empty(),
            "{} of {} concurrent transfers failed: {}",
            errors.len(),
            clients.len(),
            errors.join("; and ")
        );
        Ok(reports)
    }

    /// Sends SIGTERM to the server and measures how long it takes to exit (waiting at most
    /// `limit`).
    pub fn stop_server(&mut self, limit: Duration) -> Result<Termination> {
        self.server.terminate(limit)
    }

    /// The counters the server logged when it stopped (the line containing
    /// `stopped counters=`), if it has stopped and logged them.
    pub fn server_counters(&self) -> Option<String> {
        counters_line(&process::tail(self.server.log_path(), 200)).map(str::to_owned)
    }

    /// Sends SIGTERM to the first client and measures how long it takes to exit.
    pub fn stop_client(&mut self, limit: Duration) -> Result<Termination> {
        self.clients[0].process.terminate(limit)
    }

    /// Fails if the server or any client has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.server.ensure_running()?;
        for c in &mut self.clients {
            c.process.ensure_running()?;
        }
        Ok(())
    }

    /// The index of `client` in `self.clients`, if it is one of ours.
    fn check(&self, client: &ClientHandle) -> Result<usize> {
        match self.clients.get(client.index) {
            Some(c) if c.handle == *client => Ok(client.index),
            _ => bail!("{} is not a client of this testbed", describe(client)),
        }
    }

    /// The path from `client` to the server through the tunnel.
    fn path(&self, client: &ClientHandle) -> Result<TunnelPath<'_>> {
        self.check(client)?;
        Ok(TunnelPath {
            server_ns: &self.server_ns,
            server_ip: SERVER_TUNNEL_IP,
            client_ns: &self.client_ns,
            client_ip: client.tunnel_ip,
        })
    }

    /// Adds process states and log tails to a failed measurement, where the cause usually is.
    ///
    /// The cause comes first and the (multi-line) logs after it, which reads better than
    /// wrapping the logs around the cause as anyhow context.
    fn explain<T>(&mut self, res: Result<T>) -> Result<T> {
        res.map_err(|e| {
            let mut notes = String::new();
            let processes = std::iter::once(&mut self.server)
                .chain(self.clients.iter_mut().map(|c| &mut c.process));
            for p in processes {
                let state = match p.try_status() {
                    Ok(Some(status)) => format!("exited ({status})"),
                    Ok(None) => "running".to_owned(),
                    Err(e) => format!("unknown ({e})"),
                };
                notes.push_str(&format!(
                    "\n--- {} is {state}; last lines of its log:\n{}",
                    p.name(),
                    p.log_tail(TAIL)
                ));
            }
            anyhow::anyhow!("{e:#}\n=== {} testbed state:{notes}", self.transport)
        })
    }
}

/// "client 1 (tcp, ringway1, 198.18.0.3)", for messages.
fn describe(client: &ClientHandle) -> String {
    format!(
        "client {} ({}, {}, {})",
        client.index, client.transport, client.tun_name, client.tunnel_ip
    )
}

/// Each client sends a different stream, so crossed wires between clients show as a mismatch.
fn transfer_seed(client: &ClientHandle) -> u64 {
    TRANSFER_SEED.wrapping_add(client.index as u64)
}

/// The last line of `log` holding the server's final counters.
fn counters_line(log: &str) -> Option<&str> {
    log.lines()
        .rev()
        .find(|l| l.contains(COUNTERS_MARKER))
        .map(str::trim)
}

/// Writes the server config and key, then `peers` peers (`client1`, `client2`, ...) with their
/// client configs in `out_dir`; returns those configs' paths in order.
fn provision(
    bins: &Binaries,
    server_dir: &Path,
    out_dir: &Path,
    peers: usize,
) -> Result<Vec<PathBuf>> {
    process::run_ok(
        Command::new(&bins.server)
            .arg("init")
            .arg("--dir")
            .arg(server_dir)
            .args(["--listen", SERVER_ENDPOINT, "--pool", TUNNEL_POOL]),
        SETUP_TIMEOUT,
    )
    .context("ringway-server init")?;
    let server_cfg = server_dir.join("server.toml");
    if !server_cfg.is_file() {
        bail!("ringway-server did not write {}", server_cfg.display());
    }
    let mut configs = Vec::with_capacity(peers);
    for n in 1..=peers {
        let peer = format!("client{n}");
        // The first keeps the name it always had, so logs and docs stay familiar.
        let cfg = if n == 1 {
            out_dir.join("client.toml")
        } else {
            out_dir.join(format!("{peer}.toml"))
        };
        process::run_ok(
            Command::new(&bins.server)
                .args(["add-peer", &peer, "--dir"])
                .arg(server_dir)
                .args(["--endpoint", SERVER_ENDPOINT, "--out"])
                .arg(&cfg),
            SETUP_TIMEOUT,
        )
        .with_context(|| format!("ringway-server add-peer {peer}"))?;
        if !cfg.is_file() {
            bail!("ringway-server did not write {}", cfg.display());
        }
        configs.push(cfg);
    }
    Ok(configs)
}

/// Gives children `RUST_LOG=info` unless the caller chose a level.
fn with_log_level(cmd: &mut Command) {
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_last_counters_line() {
        let log = "2025 INFO ringway_server: listening\n\
                   2025 INFO ringway_server: stopped counters=tcp_accepted=1 tcp_refused=0\n\
                   2025 INFO ringway_server: stopped counters=tcp_accepted=3 tcp_refused=2  \n\
                   trailing noise\n";
        assert_eq!(
            counters_line(log),
            Some("2025 INFO ringway_server: stopped counters=tcp_accepted=3 tcp_refused=2")
        );
        assert_eq!(counters_line("no counters here"), None);
    }

    #[test]
    fn seeds_differ_per_client() {
        let h = |index| ClientHandle {
            index,
            transport: Transport::Udp,
            tun_name: TUN_NAME.to_owned(),
            tunnel_ip: CLIENT_TUNNEL_IP,
        };
        assert_ne!(transfer_seed(&h(0)), transfer_seed(&h(1)));
        assert_eq!(describe(&h(1)), "client 1 (udp, ringway0, 198.18.0.2)");
    }

    #[test]
    fn server_endpoint_parses() {
        let ep: SocketAddr = SERVER_ENDPOINT.parse().unwrap();
        assert_eq!(ep.port(), 51820);
    }
}
