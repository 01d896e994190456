//! The setting every other VPN runs in: two fresh namespaces joined by a veth pair, a
//! daemon in each, and the guards that take it all down again.
//!
//! ```text
//!  netns rw-<pid>-<n>-s                              netns rw-<pid>-<n>-c
//!  VPN server daemon                                 VPN client daemon
//!  <tun> 198.18.0.1 (inside, MTU 1420)               <tun> 198.18.0.2 (inside, MTU 1420)
//!  veth-rw-s 192.0.2.1/24  <==== veth pair ====>     veth-rw-c 192.0.2.2/24 (outside)
//! ```
//!
//! The addresses are Ringway's testbed's, so every tunnel is measured on the same path; the
//! inside MTU is Ringway's and WireGuard's default, so every tunnel carries the same packets.
//! [`Pair`] is itself the [`Running`] system: its fields drop daemons first (SIGTERM, then
//! SIGKILL by PID), then leftover files, then the namespaces, then the directory holding keys,
//! configs and logs.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringway_e2e::counters::ServerCounters;
use ringway_e2e::netns::{self, Netns};
use ringway_e2e::path::TunnelPath;
use ringway_e2e::{process, Process, TempDir};

use super::{Running, TunnelProcess};

/// The server's outside address (on the veth).
pub const SERVER_OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The client's outside address.
pub const CLIENT_OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The server's inside (tunnel) address, in 198.18.0.0/15.
pub const SERVER_INSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The client's inside address.
pub const CLIENT_INSIDE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Prefix length of the inside network.
pub const INSIDE_PREFIX: u8 = 24;
/// The tunnel MTU every system gets: Ringway's default and WireGuard's.
pub const TUNNEL_MTU: u16 = 1420;
/// Bound for a tunnel to come up (devices, handshake, first reply).
const READY_LIMIT: Duration = Duration::from_secs(20);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long a daemon may take to exit after SIGTERM before the run counts as failed.
const STOP_LIMIT: Duration = Duration::from_secs(5);
/// Log lines quoted when something fails.
const TAIL: usize = 15;

/// Which end of the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The end in the server namespace, where listeners go.
    Server,
    /// The end in the client namespace, where measurements start.
    Client,
}

impl Side {
    /// Both, server first.
    pub const BOTH: [Side; 2] = [Side::Server, Side::Client];

    /// `server` or `client`.
    pub fn role(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
        }
    }

    /// Its inside address.
    pub fn inside_ip(self) -> Ipv4Addr {
        match self {
            Self::Server => SERVER_INSIDE_IP,
            Self::Client => CLIENT_INSIDE_IP,
        }
    }

    /// The other end.
    pub fn peer(self) -> Side {
        match self {
            Self::Server => Self::Client,
            Self::Client => Self::Server,
        }
    }
}

/// Two namespaces joined by a veth pair, the daemons in them, and their files.
pub struct Pair {
    // Field order is drop order (see the module doc).
    daemons: Vec<(Side, Process)>,
    leftovers: Vec<RemoveOnDrop>,
    server_ns: Netns,
    client_ns: Netns,
    dir: TempDir,
}

impl Pair {
    /// Creates the namespaces and the veth pair with the outside addresses; `label` names the
    /// temporary directory.
    pub fn create(label: &str) -> Result<Self> {
        let dir = TempDir::new(&format!("ringway-bench-{label}"))?;
        let [server_ns, client_ns] = Netns::create_set(["s", "c"])?;
        netns::connect(
            &server_ns,
            "veth-rw-s",
            &format!("{SERVER_OUTSIDE_IP}/24"),
            &client_ns,
            "veth-rw-c",
            &format!("{CLIENT_OUTSIDE_IP}/24"),
        )?;
        Ok(Self {
            daemons: Vec::new(),
            leftovers: Vec::new(),
            server_ns,
            client_ns,
            dir,
        })
    }

    /// Where keys, configs and logs go (deleted on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The namespace of one end.
    pub fn ns(&self, side: Side) -> &Netns {
        match side {
            Side::Server => &self.server_ns,
            Side::Client => &self.client_ns,
        }
    }

    /// Starts the daemon of `side` (a command built for its namespace, see
    /// [`Netns::command`], which execs so the PID is the daemon's); its output goes to
    /// `<role>.log` in [`Pair::dir`].
    pub fn spawn(&mut self, side: Side, name: &str, cmd: &mut Command) -> Result<()> {
        let log = self.dir().join(format!("{}.log", side.role()));
        let process = Process::spawn(format!("{name} {}", side.role()), cmd, &log)?;
        self.daemons.push((side, process));
        Ok(())
    }

    /// Deletes `path` once the daemons have stopped (a socket a killed daemon leaves behind).
    pub fn remove_on_drop(&mut self, path: PathBuf) {
        self.leftovers.push(RemoveOnDrop(path));
    }

    /// Fails with the log tails if a daemon has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        for (_, p) in &mut self.daemons {
            p.ensure_running()?;
        }
        Ok(())
    }

    /// The last lines of every daemon's log, for error messages.
    pub fn log_tails(&self) -> String {
        self.daemons
            .iter()
            .map(|(_, p)| format!("{} log:\n{}", p.name(), p.log_tail(TAIL)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls until `ready()` holds, bounded by [`READY_LIMIT`]; a daemon exiting meanwhile
    /// fails at once. `what` says what was awaited.
    pub fn wait_until(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) -> Result<()> {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            self.ensure_running()?;
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{what}: not after {READY_LIMIT:?}; {}", self.log_tails());
            }
            std::thread::sleep(READY_POLL);
        }
    }

    /// Waits until the daemon of `side` has created network device `ifname`.
    pub fn wait_link(&mut self, side: Side, ifname: &str) -> Result<()> {
        let what = format!("device {ifname} in the {} namespace", side.role());
        self.wait_until(&what, |p| {
            p.ns(side).ip(&["link", "show", "dev", ifname]).is_ok()
        })
    }

    /// Waits until something in the namespace of `side` has bound UDP `port`: a server
    /// that is listening before its client starts gets the client's first handshake instead
    /// of making it wait for a retry (fastd's come seconds apart).
    pub fn wait_udp_bound(&mut self, side: Side, port: u16) -> Result<()> {
        let what = format!("UDP port {port} in the {} namespace", side.role());
        let sport = format!(":{port}");
        self.wait_until(&what, |p| {
            let mut ss = p.ns(side).command("ss");
            ss.args(["-Hlun", "sport", "=", &sport]);
            process::run_ok(&mut ss, Duration::from_secs(5)).is_ok_and(|out| !out.trim().is_empty())
        })
    }

    /// Gives `ifname` on `side` its inside address and the tunnel MTU, and sets it up.
    pub fn configure_inside(&self, side: Side, ifname: &str) -> Result<()> {
        let ns = self.ns(side);
        let cidr = format!("{}/{INSIDE_PREFIX}", side.inside_ip());
        ns.ip(&["addr", "add", &cidr, "dev", ifname])?;
        ns.ip(&[
            "link",
            "set",
            "dev",
            ifname,
            "mtu",
            &TUNNEL_MTU.to_string(),
            "up",
        ])?;
        Ok(())
    }

    /// Waits until a ping from the client's inside address gets a reply from the server's:
    /// both daemons up, handshake done, routes in place.
    pub fn wait_tunnel(&mut self) -> Result<()> {
        self.wait_until("a ping reply through the tunnel", |p| {
            let mut ping = p.client_ns.command("ping");
            ping.args(["-n", "-q", "-c", "1", "-W", "1", "-I"])
                .arg(CLIENT_INSIDE_IP.to_string())
                .arg(SERVER_INSIDE_IP.to_string());
            process::run(&mut ping, Duration::from_secs(5)).is_ok_and(|o| o.status.success())
        })
    }

    /// Stops the daemons, client first; fails if one had died during the run or does not
    /// exit within [`STOP_LIMIT`] of SIGTERM (the guards then kill it).
    fn stop(&mut self) -> Result<()> {
        self.ensure_running()
            .context("a daemon exited during the run")?;
        for (_, p) in self.daemons.iter_mut().rev() {
            p.terminate(STOP_LIMIT)?;
        }
        Ok(())
    }
}

impl Running for Pair {
    fn path(&self) -> TunnelPath<'_> {
        TunnelPath {
            server_ns: &self.server_ns,
            server_ip: SERVER_INSIDE_IP,
            client_ns: &self.client_ns,
            client_ip: CLIENT_INSIDE_IP,
        }
    }

    fn processes(&self) -> Vec<TunnelProcess> {
        self.daemons
            .iter()
            .map(|(side, p)| TunnelProcess {
                role: side.role(),
                pid: p.pid(),
            })
            .collect()
    }

    fn finish(mut self: Box<Self>) -> Result<Option<ServerCounters>> {
        self.stop()?;
        Ok(None)
    }
}

/// A file deleted on drop, if it is still there.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `cmd` (bounded) and returns its stdout, failing with its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    process::run_ok(cmd, Duration::from_secs(30))
}

/// Writes `text` to `path` readable by its owner only (keys, configs holding keys).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_and_addresses() {
        assert_eq!(Side::Server.peer(), Side::Client);
        assert_eq!(Side::Client.inside_ip(), CLIENT_INSIDE_IP);
        // Inside addresses are in 198.18.0.0/15, outside ones in 192.0.2.0/24.
        for ip in [SERVER_INSIDE_IP, CLIENT_INSIDE_IP] {
            assert_eq!(ip.octets()[..2], [198, 18]);
        }
        for ip in [SERVER_OUTSIDE_IP, CLIENT_OUTSIDE_IP] {
            assert_eq!(ip.octets()[..3], [192, 0, 2]);
        }
    }

    #[test]
    fn private_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("ringway-bench-unit").unwrap();
        let path = dir.path().join("key");
        write_private(&path, "secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_private(&path, "again").is_err(), "never overwrites");
    }
}
