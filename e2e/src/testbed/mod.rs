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
//! Tests of the client's own behaviour start the testbed
//! [without a client](TestbedOptions::without_client) and add theirs with [`ClientOptions`]
//! (extra flags such as `--full-tunnel`, no testbed routing), or run the client binary one-shot
//! with [`Testbed::client_command`]; [`Testbed::restart_server`] stops and starts the server
//! with the same config. The root namespace is never touched. [`Testbed`] owns everything
//! through guards whose drop order is: client processes, server process, namespaces, temporary
//! directory.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::binaries::Binaries;
use crate::counters::{self, ServerCounters};
use crate::iperf::{self, IperfReport};
use crate::netns::{self, Netns};
use crate::path::TunnelPath;
use crate::ping::{self, PingStats, PingStream};
use crate::process::{self, Process, Termination};
use crate::tempdir::TempDir;
use crate::transfer::{self, TransferReport};

mod client;
mod options;
mod ready;

pub use client::{ClientHandle, TunCounters};
pub use options::{ClientOptions, TestbedOptions, Transport};

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
/// How long [`Testbed::wait_for_reply_from`] waits for each probe's reply.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Bound for one `ringway status` query.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines quoted when something fails.
const TAIL: usize = 30;

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
    // directory holding their logs last. `clients[0]` is the client started with the testbed
    // (or, without one, the first added).
    clients: Vec<Client>,
    server: Process,
    client_ns: Netns,
    server_ns: Netns,
    transport: Transport,
    /// Client configs of provisioned peers no client uses yet, in the order to use them.
    spare_configs: Vec<PathBuf>,
    server_config: PathBuf,
    server_args: Vec<String>,
    /// How many times the server has been started (1 after [`Testbed::start`]).
    server_starts: u32,
    /// Ping streams started so far, for their log names.
    ping_streams: u32,
    client_args: Vec<String>,
    ready_timeout: Duration,
    bins: Binaries,
    dir: TempDir,
}

impl Testbed {
    /// Builds namespaces and veth, writes configs (one peer, plus `opts.extra_peers`), starts
    /// the server then (unless [`TestbedOptions::without_client`]) the first client, and waits
    /// until both tunnel devices are up (each wait bounded by `opts.ready_timeout`).
    pub fn start(opts: TestbedOptions) -> Result<Self> {
        let bins = match opts.binaries.clone() {
            Some(bins) => bins,
            None => Binaries::locate()?,
        };
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
        let server_config = server_dir.join("server.toml");

        let mut server = spawn_server(
            &server_ns,
            &bins,
            &server_config,
            &opts.server_args,
            dir.path(),
            "ringway-server",
        )?;
        ready::wait_server_ready(&server_ns, &mut server, opts.transport, opts.ready_timeout)?;

        let first = if opts.start_client {
            Some(configs.remove(0))
        } else {
            None
        };
        let mut bed = Self {
            clients: Vec::new(),
            server,
            client_ns,
            server_ns,
            transport: opts.transport,
            spare_configs: configs,
            server_config,
            server_args: opts.server_args,
            server_starts: 1,
            ping_streams: 0,
            client_args: opts.client_args,
            ready_timeout: opts.ready_timeout,
            bins,
            dir,
        };
        if let Some(first) = first {
            let client = ClientOptions::new(opts.transport, TUN_NAME);
            bed.spawn_client(&first, &client)?;
        }
        Ok(bed)
    }

    /// Starts another client in the client namespace, over `transport`, with its own TUN
    /// `tun_name`, using the next peer provisioned by [`TestbedOptions::extra_peers`]; waits
    /// until its TUN is up with an address (bounded like [`Testbed::start`]).
    ///
    /// The testbed's `client_args` are passed to it too. Measure through it with the `*_from`
    /// methods.
    pub fn add_client(&mut self, transport: Transport, tun_name: &str) -> Result<ClientHandle> {
        self.add_client_with(ClientOptions::new(transport, tun_name))
    }

    /// Like [`Testbed::add_client`], with the client's own extra arguments and the choice of
    /// leaving the namespace's routing to it alone (see [`ClientOptions`]).
    ///
    /// In a testbed started [without a client](TestbedOptions::without_client), the first
    /// client added becomes the first client (index 0) that [`Testbed::ping`] and friends use.
    pub fn add_client_with(&mut self, opts: ClientOptions) -> Result<ClientHandle> {
        client::check_tun_name(&opts.tun_name)?;
        if let Some(c) = self
            .clients
            .iter_mut()
            .find(|c| c.handle.tun_name == opts.tun_name)
        {
            // A client that has exited has taken its TUN with it.
            if c.process.try_status()?.is_none() {
                bail!(
                    "TUN {} is already used by client {}",
                    opts.tun_name,
                    c.handle.index
                );
            }
        }
        let config = self.take_peer_config()?;
        client::set_tun_name(&config, &opts.tun_name)?;
        client::append_lines(&config, &opts.config_lines)?;
        if opts.transport != self.transport {
            ready::wait_server_listening(
                &self.server_ns,
                &mut self.server,
                opts.transport,
                self.ready_timeout,
            )?;
        }
        self.spawn_client(&config, &opts)
    }

    /// Takes the config of the next provisioned peer no client uses yet, for a test that runs
    /// the client binary itself (see [`Testbed::client_command`]) or edits the config first.
    ///
    /// The file is the one `ringway-server add-peer` wrote (mode 0600, `tun_name` unset), in
    /// the testbed's directory; the peer is in the server's list.
    pub fn take_peer_config(&mut self) -> Result<PathBuf> {
        if self.spare_configs.is_empty() {
            bail!(
                "no provisioned peer left for another client ({} started); \
                 ask for more with TestbedOptions::extra_peers",
                self.clients.len()
            );
        }
        Ok(self.spare_configs.remove(0))
    }

    /// A command that runs the client binary in the client namespace, optionally under
    /// `wrapper` (e.g. `["setpriv", "--reuid=nobody", ...]`, which must exec its argument):
    /// `ip netns exec <client ns> [wrapper...] <ringway>`. The caller adds the subcommand and
    /// arguments, and bounds it with [`process::run`] or guards it with [`Process::spawn`].
    pub fn client_command<S: AsRef<OsStr>>(&self, wrapper: &[S]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = self.client_ns.command(program);
                cmd.args(args).arg(&self.bins.client);
                cmd
            }
            None => self.client_ns.command(&self.bins.client),
        };
        with_log_level(&mut cmd);
        cmd
    }

    /// The server and client executables under test.
    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// The server's config file (its peer list is read at start).
    pub fn server_config(&self) -> &Path {
        &self.server_config
    }

    /// Spawns `ringway up config` in the client namespace and waits until it is ready.
    fn spawn_client(&mut self, config: &Path, opts: &ClientOptions) -> Result<ClientHandle> {
        let index = self.clients.len();
        let (transport, tun_name) = (opts.transport, opts.tun_name.as_str());
        let (name, log) = if index == 0 {
            ("ringway client".to_owned(), "client.log".to_owned())
        } else {
            (
                format!("ringway client {index} ({transport}, {tun_name})"),
                format!("client{index}.log"),
            )
        };
        // A status socket of its own, in our directory: the default (/run/ringway/<tun>.sock)
        // is shared by every network namespace, so clients of concurrent test runs with the
        // same TUN name would take each other's, and it would outlive a crashed run on the host.
        let status_socket = self.dir.path().join(format!("status-{index}.sock"));
        let mut cmd = self.client_ns.command(&self.bins.client);
        cmd.arg("up").arg(config);
        if transport == Transport::Tcp {
            cmd.args(["--transport", "tcp"]);
        }
        cmd.arg("--status-socket").arg(&status_socket);
        cmd.args(&self.client_args).args(&opts.args);
        with_log_level(&mut cmd);
        let mut process = Process::spawn(name, &mut cmd, &self.dir.path().join(log))?;
        let tunnel_ip = ready::wait_client_ready(
            &self.client_ns,
            tun_name,
            &mut process,
            &mut self.server,
            self.ready_timeout,
        )?;
        for other in &mut self.clients {
            // An exited client's address is free for the server to give out again.
            let running = other.process.try_status()?.is_none();
            if running && other.handle.tunnel_ip == tunnel_ip {
                bail!(
                    "client {index} got {tunnel_ip}, which client {} already has",
                    other.handle.index
                );
            }
        }
        if opts.source_rule {
            client::route_by_source(&self.client_ns, index, tun_name, tunnel_ip)?;
        }
        let handle = ClientHandle {
            index,
            transport,
            tun_name: tun_name.to_owned(),
            tunnel_ip,
            status_socket,
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
    ///
    /// # Panics
    /// If the testbed was started [without a client](TestbedOptions::without_client) and none
    /// has been added yet.
    pub fn primary_client(&self) -> ClientHandle {
        self.first().handle.clone()
    }

    fn first(&self) -> &Client {
        self.clients
            .first()
            .expect("testbed started without_client and no client added yet")
    }

    fn first_mut(&mut self) -> &mut Client {
        self.clients
            .first_mut()
            .expect("testbed started without_client and no client added yet")
    }

    /// Every running client, the first one first.
    pub fn clients(&self) -> Vec<ClientHandle> {
        self.clients.iter().map(|c| c.handle.clone()).collect()
    }

    /// What `client` reports about itself: `ringway status --socket <its socket> --json`, run in
    /// the client namespace, parsed (one JSON object; see the client's `status` module).
    pub fn client_status(&mut self, client: &ClientHandle) -> Result<Value> {
        let res = self.check(client).and_then(|_| {
            let mut cmd = self.client_command::<&str>(&[]);
            cmd.arg("status")
                .arg("--socket")
                .arg(&client.status_socket)
                .arg("--json")
                .env("RUST_LOG", "off");
            let out = process::run(&mut cmd, STATUS_TIMEOUT)?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            ensure!(
                out.status.success(),
                "`ringway status` failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            );
            serde_json::from_str(stdout.trim())
                .with_context(|| format!("`ringway status --json` printed {stdout:?}"))
        });
        let res = res.with_context(|| describe(client));
        self.explain(res)
    }

    /// The byte counters of `client`'s TUN device.
    pub fn tun_counters(&self, client: &ClientHandle) -> Result<TunCounters> {
        self.check(client)?;
        TunCounters::read(&self.client_ns, &client.tun_name)
    }

    /// The address the first client's TUN device got (panics like
    /// [`Testbed::primary_client`]).
    pub fn client_tunnel_ip(&self) -> Ipv4Addr {
        self.first().handle.tunnel_ip
    }

    /// The server's PID (for reading its CPU time; signal it through [`Testbed::server`]).
    pub fn server_pid(&self) -> u32 {
        self.server.pid()
    }

    /// The first client's PID (panics like [`Testbed::primary_client`]).
    pub fn client_pid(&self) -> u32 {
        self.first().process.pid()
    }

    /// The server process guard (signals, exit status, log).
    pub fn server(&mut self) -> &mut Process {
        &mut self.server
    }

    /// The first client's process guard (panics like [`Testbed::primary_client`]).
    pub fn client(&mut self) -> &mut Process {
        &mut self.first_mut().process
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

    /// Starts pinging the server's tunnel address from `client` in the background, one echo
    /// request every `interval`, for at most `limit`; the stream logs to `ping-<n>.log` in the
    /// testbed's directory and is stopped when dropped.
    pub fn ping_stream_from(
        &mut self,
        client: &ClientHandle,
        interval: Duration,
        limit: Duration,
    ) -> Result<PingStream> {
        self.ping_streams += 1;
        let log = self
            .dir
            .path()
            .join(format!("ping-{}.log", self.ping_streams));
        let res = self
            .path(client)
            .and_then(|path| PingStream::start(&path, interval, limit, &log))
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

    /// Starts the server again, after it stopped, with the same config and arguments (so the
    /// same key, peers and addresses); its output is appended to the same log. Waits until it
    /// is ready and listening for every transport a client uses, like [`Testbed::start`].
    ///
    /// Fails if the server is still running: stop it first, or use
    /// [`Testbed::restart_server`].
    pub fn start_server(&mut self) -> Result<()> {
        if let Some(status) = self.server.try_status()? {
            println!("ringway-e2e: starting the server again (it exited {status})");
        } else {
            bail!(
                "the server (pid {}) is still running; stop it first",
                self.server.pid()
            );
        }
        self.server_starts += 1;
        let name = format!("ringway-server (start {})", self.server_starts);
        // The old guard holds a reaped process, so replacing it signals nothing.
        self.server = spawn_server(
            &self.server_ns,
            &self.bins,
            &self.server_config,
            &self.server_args,
            self.dir.path(),
            &name,
        )?;
        ready::wait_server_ready(
            &self.server_ns,
            &mut self.server,
            self.transport,
            self.ready_timeout,
        )?;
        for t in Transport::ALL {
            let used = self.clients.iter().any(|c| c.handle.transport == t);
            if used && t != self.transport {
                ready::wait_server_listening(
                    &self.server_ns,
                    &mut self.server,
                    t,
                    self.ready_timeout,
                )?;
            }
        }
        Ok(())
    }

    /// Stops the server with SIGTERM (it must exit within `limit`), then starts it again with
    /// [`Testbed::start_server`]; returns how the old one ended. Clients are left alone: they
    /// are expected to notice and reconnect by themselves.
    pub fn restart_server(&mut self, limit: Duration) -> Result<Termination> {
        let stopped = self.stop_server(limit)?;
        self.start_server()?;
        Ok(stopped)
    }

    /// Pings the server's tunnel address from `client` once every [`PROBE_INTERVAL`] until a
    /// reply comes back, for at most `limit`; returns how long that took. For waiting until
    /// traffic flows again after the server or the path went away.
    pub fn wait_for_reply_from(
        &mut self,
        client: &ClientHandle,
        limit: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        let res = self.path(client).and_then(|path| {
            let mut attempts = 0u32;
            loop {
                attempts += 1;
                let probe = Instant::now();
                if ping::ping_once(&path, PROBE_INTERVAL)? {
                    return Ok(start.elapsed());
                }
                // A probe that failed at once (no route yet) must not turn this into a spin.
                std::thread::sleep(PROBE_INTERVAL.saturating_sub(probe.elapsed()));
                if start.elapsed() >= limit {
                    bail!("no echo reply through the tunnel within {limit:?} ({attempts} tries)");
                }
            }
        });
        let res = res.with_context(|| describe(client));
        self.explain(res)
    }

    /// The counters the server logged when it stopped (the line containing
    /// `stopped counters=`), if it has stopped and logged them.
    pub fn server_counters(&self) -> Option<String> {
        counters_line(&process::tail(self.server.log_path(), 200)).map(str::to_owned)
    }

    /// The counters of [`Testbed::server_counters`], parsed; `None` until the server has
    /// stopped and logged them.
    pub fn final_server_counters(&self) -> Option<ServerCounters> {
        self.server_counters()
            .map(|line| ServerCounters::parse(&line))
    }

    /// Sends SIGTERM to the first client and measures how long it takes to exit.
    pub fn stop_client(&mut self, limit: Duration) -> Result<Termination> {
        self.first_mut().process.terminate(limit)
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

    /// The path from `client` to the server through the tunnel, for measurements of a test's
    /// own (its [`TunnelPath::reversed`] goes the other way).
    pub fn tunnel_path(&self, client: &ClientHandle) -> Result<TunnelPath<'_>> {
        self.path(client)
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
    /// wrapping the logs around the cause as anyhow context. The measurement methods do this
    /// themselves; tests use it for checks of their own.
    pub fn explain<T>(&mut self, res: Result<T>) -> Result<T> {
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
        .find(|l| l.contains(counters::MARKER))
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

/// The environment variable that runs every testbed's server on one I/O backend
/// (`RINGWAY_E2E_SERVER_IO=tokio cargo test -p ringway-e2e`): `--io <value>` is appended to
/// the server's arguments unless the test chose a backend itself.
pub const SERVER_IO_ENV: &str = "RINGWAY_E2E_SERVER_IO";

/// The server's arguments: the test's, then `--io` from [`SERVER_IO_ENV`] if set and the
/// test gave none.
fn server_arguments(args: &[String], io: Option<String>) -> Vec<String> {
    let mut all = args.to_vec();
    if let Some(io) = io.filter(|v| !v.is_empty()) {
        if !args.iter().any(|a| a == "--io") {
            all.extend(["--io".to_owned(), io]);
        }
    }
    all
}

/// Spawns `ringway-server run --config <config> <args>` in `ns`, logging to `dir/server.log`.
fn spawn_server(
    ns: &Netns,
    bins: &Binaries,
    config: &Path,
    args: &[String],
    dir: &Path,
    name: &str,
) -> Result<Process> {
    let mut cmd = ns.command(&bins.server);
    let args = server_arguments(args, std::env::var(SERVER_IO_ENV).ok());
    cmd.arg("run").arg("--config").arg(config).args(args);
    with_log_level(&mut cmd);
    Process::spawn(name, &mut cmd, &dir.join("server.log"))
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
    fn the_backend_from_the_environment_never_overrides_the_tests_own() {
        let own = vec!["--io".to_owned(), "uring".to_owned()];
        assert_eq!(server_arguments(&own, Some("tokio".into())), own);
        let none: Vec<String> = vec!["--offload".into(), "off".into()];
        assert_eq!(
            server_arguments(&none, Some("tokio".into())),
            ["--offload", "off", "--io", "tokio"]
        );
        assert_eq!(server_arguments(&none, None), none);
        assert_eq!(server_arguments(&none, Some(String::new())), none);
    }

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
            status_socket: PathBuf::from("/tmp/status-0.sock"),
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
