//! What the two userspace WireGuards share: keys from `wg genkey`, the UAPI socket each daemon
//! opens, and the `wg set` that configures it through that socket.
//!
//! The UAPI socket lives at `/var/run/wireguard/<device>.sock`, a path every namespace sees,
//! so device names are unique per benchmark process and run (`wg<pid>x<n><s|c>`), and a socket
//! a killed daemon leaves behind is removed with the pair.

use std::io::Write;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ringway_e2e::netns::Netns;

use super::pair::{self, Pair, Side, SERVER_OUTSIDE_IP};

/// The server's UDP port.
pub const PORT: u16 = 51820;
/// Where userspace WireGuards put their UAPI sockets.
const UAPI_DIR: &str = "/var/run/wireguard";
/// Bound for `wg pubkey`.
const PUBKEY_LIMIT: Duration = Duration::from_secs(10);

/// A key pair, base64 as `wg` prints it.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The private key.
    pub private: String,
    /// Its public key.
    pub public: String,
}

impl Keys {
    /// A fresh pair from `wg genkey` and `wg pubkey`.
    pub fn generate() -> Result<Self> {
        let private = pair::output(Command::new("wg").arg("genkey"))?
            .trim()
            .to_owned();
        let public = pubkey(&private)?;
        Ok(Self { private, public })
    }
}

/// `wg pubkey`, which reads the private key on stdin.
fn pubkey(private: &str) -> Result<String> {
    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning wg pubkey")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{private}\n").as_bytes())
            .context("writing to wg pubkey")?;
    }
    let deadline = Instant::now() + PUBKEY_LIMIT;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("wg pubkey did not finish within {PUBKEY_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // It has exited; its few bytes of output are waiting in the pipe.
    let out = child.wait_with_output().context("reading wg pubkey")?;
    if !out.status.success() {
        bail!("wg pubkey failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A device name no other run uses (at most 15 characters).
pub fn device_name(side: Side) -> String {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed) % 1000;
    let end = &side.role()[..1];
    format!("wg{}x{n}{end}", std::process::id())
}

/// The UAPI socket of device `name`.
fn uapi_socket(name: &str) -> PathBuf {
    PathBuf::from(UAPI_DIR).join(format!("{name}.sock"))
}

/// Starts a userspace WireGuard at both ends of `pair` (`daemon` builds the command that
/// runs it in a namespace for a device name), configures both with fresh keys, gives the
/// devices their inside addresses, and waits for a reply through the tunnel.
pub fn bring_up(
    pair: &mut Pair,
    name: &str,
    daemon: impl Fn(&Netns, &str) -> Command,
) -> Result<()> {
    let keys = [Keys::generate()?, Keys::generate()?];
    let devices = Side::BOTH.map(device_name);
    for (side, device) in Side::BOTH.into_iter().zip(&devices) {
        pair.remove_on_drop(uapi_socket(device));
        let mut cmd = daemon(pair.ns(side), device);
        pair.spawn(side, name, &mut cmd)?;
    }
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        let device = &devices[i];
        let socket = uapi_socket(device);
        pair.wait_until(&format!("{}'s UAPI socket", side.role()), |_| {
            socket.exists()
        })?;
        pair.wait_link(side, device)?;
        let key_file = pair.dir().join(format!("wg-{}.key", side.role()));
        pair::write_private(&key_file, &format!("{}\n", keys[i].private))?;
        let peer = side.peer();
        let mut set = pair.ns(side).command("wg");
        set.args(["set", device, "private-key"]).arg(&key_file);
        if side == Side::Server {
            set.args(["listen-port", &PORT.to_string()]);
        }
        set.args(["peer", &keys[1 - i].public, "allowed-ips"])
            .arg(format!("{}/32", peer.inside_ip()));
        if side == Side::Client {
            set.arg("endpoint")
                .arg(SocketAddrV4::new(SERVER_OUTSIDE_IP, PORT).to_string());
        }
        pair::output(&mut set).with_context(|| format!("configuring {device}"))?;
        pair.configure_inside(side, device)?;
    }
    pair.wait_tunnel()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_fit_and_differ() {
        let a = device_name(Side::Server);
        let b = device_name(Side::Client);
        assert_ne!(a, b);
        assert!(a.ends_with('s') && b.ends_with('c'));
        // PIDs reach 4194304 (7 digits): wg + 7 + x + 3 + 1 = 14.
        assert!(a.len() <= 15, "{a}");
        assert_eq!(
            uapi_socket("wg1x2s"),
            PathBuf::from("/var/run/wireguard/wg1x2s.sock")
        );
    }
}
