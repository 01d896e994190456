//! The two-namespace testbed: a real server and client connected by a veth pair.
//!
//! ```text
//!  netns rw-<pid>-<n>-s                              netns rw-<pid>-<n>-c
//!  ringway-server run                                ringway up
//!  ringway0 198.18.0.1/24 (inside)                   ringway0 198.18.0.2/24 (inside)
//!  veth-rw-s 192.0.2.1/24  <==== veth pair ====>     veth-rw-c 192.0.2.2/24 (outside)
//! ```
//!
//! Tunnel traffic (ping, iperf3, the SHA-256 transfer) goes client `ringway0` -> client ->
//! veth -> server -> server `ringway0`, so it crosses both real drivers. The root namespace is
//! never touched. [`Testbed`] owns everything through guards whose drop order is: client
//! process, server process, namespaces, temporary directory.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::binaries::Binaries;
use crate::iperf::{self, IperfReport};
use crate::netns::{self, Netns};
use crate::ping::{self, PingStats};
use crate::process::{self, Process, Termination};
use crate::tempdir::TempDir;
use crate::transfer::{self, TransferReport};

mod options;
mod ready;

pub use options::{TestbedOptions, Transport};

/// Server's outside address on the veth.
pub const SERVER_OUTSIDE_CIDR: &str = "192.0.2.1/24";
/// Client's outside address on the veth.
pub const CLIENT_OUTSIDE_CIDR: &str = "192.0.2.2/24";
/// Where the server listens and the client connects.
pub const SERVER_ENDPOINT: &str = "192.0.2.1:51820";
/// The tunnel address pool handed to `ringway-server init`.
pub const TUNNEL_POOL: &str = "198.18.0.0/24";
/// The server's inside address (first host of the pool).
pub const SERVER_TUNNEL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The address the first peer is expected to get.
pub const CLIENT_TUNNEL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The TUN device name both binaries create.
pub const TUN_NAME: &str = "ringway0";
/// veth names; they live only inside our namespaces, so fixed names cannot collide.
const SERVER_VETH: &str = "veth-rw-s";
const CLIENT_VETH: &str = "veth-rw-c";
/// Name of the single peer the testbed provisions.
const PEER_NAME: &str = "client1";
/// Bound for the config-writing subcommands.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Overall bound for [`Testbed::transfer_sha256`].
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);
/// Seed of the transfer's pseudo-random stream (fixed, so failures reproduce).
const TRANSFER_SEED: u64 = 0x5249_4e47_5741_5900;
/// Log lines quoted when something fails.
const TAIL: usize = 30;

/// A running server and client in their own namespaces; everything is torn down on drop.
#[derive(Debug)]
pub struct Testbed {
    // Field order is drop order: processes before the namespaces they live in, and the
    // directory holding their logs last.
    client: Process,
    server: Process,
    client_ns: Netns,
    server_ns: Netns,
    transport: Transport,
    client_tunnel_ip: Ipv4Addr,
    dir: TempDir,
}

impl Testbed {
    /// Builds namespaces and veth, writes configs, starts server then client, and waits until
    /// both tunnel devices are up (each wait bounded by `opts.ready_timeout`).
    pub fn start(opts: TestbedOptions) -> Result<Self> {
        let bins = Binaries::locate()?;
        // Declaration order makes early returns drop processes, then namespaces, then the dir.
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
        let client_cfg = dir.path().join("client.toml");
        provision(&bins, &server_dir, &client_cfg)?;

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
        ready::wait_server_ready(&server_ns, &mut server, opts.ready_timeout)?;

        let mut client_cmd = client_ns.command(&bins.client);
        client_cmd.arg("up").arg(&client_cfg);
        if opts.transport == Transport::Tcp {
            client_cmd.args(["--transport", "tcp"]);
        }
        client_cmd.args(&opts.client_args);
        with_log_level(&mut client_cmd);
        let mut client = Process::spawn(
            "ringway client",
            &mut client_cmd,
            &dir.path().join("client.log"),
        )?;
        let client_tunnel_ip =
            ready::wait_client_ready(&client_ns, &mut client, &mut server, opts.ready_timeout)?;

        Ok(Self {
            client,
            server,
            client_ns,
            server_ns,
            transport: opts.transport,
            client_tunnel_ip,
            dir,
        })
    }

    /// The transport this testbed was started with.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The namespace running the server.
    pub fn server_ns(&self) -> &Netns {
        &self.server_ns
    }

    /// The namespace running the client.
    pub fn client_ns(&self) -> &Netns {
        &self.client_ns
    }

    /// The temporary directory holding configs and logs (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The address the client's TUN device got.
    pub fn client_tunnel_ip(&self) -> Ipv4Addr {
        self.client_tunnel_ip
    }

    /// The server process guard (signals, exit status, log).
    pub fn server(&mut self) -> &mut Process {
        &mut self.server
    }

    /// The client process guard.
    pub fn client(&mut self) -> &mut Process {
        &mut self.client
    }

    /// Pings the server's tunnel address from the client namespace `count` times.
    pub fn ping(&mut self, count: u32) -> Result<PingStats> {
        let res = ping::ping(&self.client_ns, SERVER_TUNNEL_IP, count);
        self.explain(res)
    }

    /// Runs a `secs`-second iperf3 TCP test through the tunnel; `reverse` = server sends.
    pub fn iperf3(&mut self, reverse: bool, secs: u32) -> Result<IperfReport> {
        let res = iperf::run(
            &self.server_ns,
            &self.client_ns,
            SERVER_TUNNEL_IP,
            reverse,
            secs,
            self.dir.path(),
        );
        self.explain(res)
    }

    /// Sends `bytes` of seeded pseudo-random data client -> server over TCP through the tunnel
    /// and checks the SHA-256 on both ends (bounded by a 60 s deadline).
    pub fn transfer_sha256(&mut self, bytes: u64) -> Result<TransferReport> {
        let res = transfer::transfer_sha256(
            &self.server_ns,
            &self.client_ns,
            SERVER_TUNNEL_IP,
            bytes,
            TRANSFER_SEED,
            TRANSFER_DEADLINE,
        );
        self.explain(res)
    }

    /// Sends SIGTERM to the server and measures how long it takes to exit (waiting at most
    /// `limit`).
    pub fn stop_server(&mut self, limit: Duration) -> Result<Termination> {
        self.server.terminate(limit)
    }

    /// Sends SIGTERM to the client and measures how long it takes to exit.
    pub fn stop_client(&mut self, limit: Duration) -> Result<Termination> {
        self.client.terminate(limit)
    }

    /// Fails if the server or the client has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.server.ensure_running()?;
        self.client.ensure_running()
    }

    /// Adds process states and log tails to a failed measurement, where the cause usually is.
    ///
    /// The cause comes first and the (multi-line) logs after it, which reads better than
    /// wrapping the logs around the cause as anyhow context.
    fn explain<T>(&mut self, res: Result<T>) -> Result<T> {
        res.map_err(|e| {
            let mut notes = String::new();
            for p in [&mut self.server, &mut self.client] {
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

/// Writes the server config and key, then the peer's client config.
fn provision(bins: &Binaries, server_dir: &Path, client_cfg: &Path) -> Result<()> {
    process::run_ok(
        Command::new(&bins.server)
            .arg("init")
            .arg("--dir")
            .arg(server_dir)
            .args(["--listen", SERVER_ENDPOINT, "--pool", TUNNEL_POOL]),
        SETUP_TIMEOUT,
    )
    .context("ringway-server init")?;
    process::run_ok(
        Command::new(&bins.server)
            .args(["add-peer", PEER_NAME, "--dir"])
            .arg(server_dir)
            .args(["--endpoint", SERVER_ENDPOINT, "--out"])
            .arg(client_cfg),
        SETUP_TIMEOUT,
    )
    .context("ringway-server add-peer")?;
    for f in [server_dir.join("server.toml"), client_cfg.to_path_buf()] {
        if !f.is_file() {
            bail!("ringway-server did not write {}", f.display());
        }
    }
    Ok(())
}

/// Gives children `RUST_LOG=info` unless the caller chose a level.
fn with_log_level(cmd: &mut Command) {
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
}
