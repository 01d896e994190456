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

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::binaries::Binaries;
use crate::iperf::{self, IperfReport};
use crate::netns::{self, Netns};
use crate::ping::{self, PingStats};
use crate::process::{self, Process, Termination};
use crate::tempdir::TempDir;
use crate::transfer::{self, TransferReport};

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
/// Readiness poll interval.
const READY_POLL: Duration = Duration::from_millis(50);
/// Overall bound for [`Testbed::transfer_sha256`].
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);
/// Seed of the transfer's pseudo-random stream (fixed, so failures reproduce).
const TRANSFER_SEED: u64 = 0x5249_4e47_5741_5900;
/// Log lines quoted when something fails.
const TAIL: usize = 30;

/// The outside transport between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Datagrams over UDP (the default, and the only one the client may be given no flag for).
    #[default]
    Udp,
    /// A TCP stream, for networks that block UDP.
    Tcp,
}

impl Transport {
    /// Every transport, in the order the demo runs them.
    pub const ALL: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    /// The name used on command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            other => bail!("unknown transport {other:?} (expected udp or tcp)"),
        }
    }
}

/// How to build a [`Testbed`].
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// Outside transport; `--transport tcp` is passed to the client only for [`Transport::Tcp`].
    pub transport: Transport,
    /// Extra arguments appended to `ringway-server run --config ...` (e.g. `--tun-rx-slots 64`).
    pub server_args: Vec<String>,
    /// Extra arguments appended to `ringway up FILE ...`.
    pub client_args: Vec<String>,
    /// Bound for each readiness wait (server up, then client up).
    pub ready_timeout: Duration,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Udp,
            server_args: Vec::new(),
            client_args: Vec::new(),
            ready_timeout: Duration::from_secs(10),
        }
    }
}

impl TestbedOptions {
    /// Defaults with the given transport.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            ..Self::default()
        }
    }

    /// Defaults over UDP.
    pub fn udp() -> Self {
        Self::new(Transport::Udp)
    }

    /// Defaults over TCP.
    pub fn tcp() -> Self {
        Self::new(Transport::Tcp)
    }

    /// Appends arguments for `ringway-server run`.
    pub fn server_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.server_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends arguments for `ringway up`.
    pub fn client_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client_args.extend(args.into_iter().map(Into::into));
        self
    }
}

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
        wait_server_ready(&server_ns, &mut server, opts.ready_timeout)?;

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
            wait_client_ready(&client_ns, &mut client, &mut server, opts.ready_timeout)?;

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
            e.context(format!("{} testbed:{notes}", self.transport))
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

/// Polls until the server's TUN is up with its address and its outside socket is bound.
fn wait_server_ready(ns: &Netns, server: &mut Process, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    let port = SERVER_ENDPOINT.rsplit_once(':').map_or("51820", |(_, p)| p);
    let sport = format!(":{port}");
    let mut state;
    loop {
        server.ensure_running()?;
        let up = tun_is_up(ns);
        let addr = tun_ipv4(ns);
        let mut ss = ns.command("ss");
        ss.args(["-Hlnut", "sport", "=", &sport]);
        let bound = process::run_ok(&mut ss, Duration::from_secs(5))
            .is_ok_and(|out| !out.trim().is_empty());
        if up && addr == Some(SERVER_TUNNEL_IP) && bound {
            return Ok(());
        }
        state = format!(
            "{TUN_NAME} up: {up}, address: {addr:?} (want {SERVER_TUNNEL_IP}), \
             socket on port {port}: {bound}"
        );
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(READY_POLL);
    }
    bail!(
        "server not ready after {limit:?} in {}: {state}; last lines of its log:\n{}",
        ns.name(),
        server.log_tail(TAIL)
    )
}

/// Polls until the client's TUN has an IPv4 address, which it gets from the handshake.
fn wait_client_ready(
    ns: &Netns,
    client: &mut Process,
    server: &mut Process,
    limit: Duration,
) -> Result<Ipv4Addr> {
    let deadline = Instant::now() + limit;
    loop {
        client.ensure_running()?;
        server.ensure_running()?;
        if let Some(ip) = tun_ipv4(ns) {
            return Ok(ip);
        }
        if Instant::now() >= deadline {
            bail!(
                "client has no address on {TUN_NAME} after {limit:?} in {}; \
                 last lines of its log:\n{}\n--- server log:\n{}",
                ns.name(),
                client.log_tail(TAIL),
                server.log_tail(TAIL)
            );
        }
        std::thread::sleep(READY_POLL);
    }
}

/// Whether the TUN device exists with the UP flag (a missing device counts as not up).
fn tun_is_up(ns: &Netns) -> bool {
    ns.ip(&["-o", "link", "show", "dev", TUN_NAME])
        .is_ok_and(|out| link_flags_up(&out))
}

/// The first IPv4 address on the TUN device, if the device exists and has one.
fn tun_ipv4(ns: &Netns) -> Option<Ipv4Addr> {
    ns.ip(&["-o", "-4", "addr", "show", "dev", TUN_NAME])
        .ok()
        .and_then(|out| first_inet(&out))
}

/// Parses `<...,UP,...>` out of `ip -o link show`.
fn link_flags_up(line: &str) -> bool {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"))
}

/// Parses the address after the first `inet` in `ip -o -4 addr show`.
fn first_inet(out: &str) -> Option<Ipv4Addr> {
    let mut words = out.split_whitespace();
    words.find(|w| *w == "inet")?;
    let cidr = words.next()?;
    cidr.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_link_flags() {
        let up = "7: ringway0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1420 qdisc fq_codel";
        let down = "7: ringway0: <POINTOPOINT,MULTICAST,NOARP> mtu 1500 qdisc noop state DOWN";
        assert!(link_flags_up(up));
        assert!(!link_flags_up(down));
        assert!(!link_flags_up(""));
    }

    #[test]
    fn parses_inet_address() {
        let out =
            "7: ringway0    inet 198.18.0.2/24 scope global ringway0\\       valid_lft forever";
        assert_eq!(first_inet(out), Some(CLIENT_TUNNEL_IP));
        assert_eq!(first_inet(""), None);
    }

    #[test]
    fn transport_round_trips() {
        for t in Transport::ALL {
            assert_eq!(t.as_str().parse::<Transport>().unwrap(), t);
        }
        assert!("quic".parse::<Transport>().is_err());
    }

    #[test]
    fn options_collect_extra_args() {
        let o = TestbedOptions::tcp()
            .server_args(["--tun-rx-slots", "64"])
            .client_args(["-v"]);
        assert_eq!(o.transport, Transport::Tcp);
        assert_eq!(o.server_args, ["--tun-rx-slots", "64"]);
        assert_eq!(o.client_args, ["-v"]);
    }
}
