//! Creating and configuring the server's TUN device.
//!
//! The device is created with `tun-tap` (IFF_TUN | IFF_NO_PI: each read is one
//! bare IP packet). Address, MTU and link state are set with iproute2's `ip`,
//! once at start: it is not on the data path, and its error messages are the
//! ones operators already know.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// An open TUN device. Closing it removes the device.
#[derive(Debug)]
pub struct Tun {
    iface: tun_tap::Iface,
}

impl Tun {
    /// Creates `name`. In non-blocking mode a read with no packet waiting fails
    /// with EAGAIN instead of sleeping, which changes how io_uring waits for it
    /// (see the README's tuning notes).
    pub fn create(name: &str, blocking: bool) -> Result<Self> {
        let iface = tun_tap::Iface::without_packet_info(name, tun_tap::Mode::Tun).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => anyhow::anyhow!(
                    "creating TUN {name} needs root or CAP_NET_ADMIN (run as root, or grant CAP_NET_ADMIN to ringway-server)"
                ),
                Some(libc::ENOENT) | Some(libc::ENODEV) => anyhow::anyhow!(
                    "/dev/net/tun is missing: load the tun module (modprobe tun) or, in a container, pass the device through"
                ),
                Some(libc::EBUSY) => anyhow::anyhow!(
                    "TUN {name} is in use by another process: stop it or set server.tun_name"
                ),
                _ => anyhow::Error::new(e).context(format!("cannot create TUN {name}")),
            }
        })?;
        if !blocking {
            iface
                .set_non_blocking()
                .context("cannot make the TUN non-blocking")?;
        }
        Ok(Tun { iface })
    }

    /// The device name the kernel gave it.
    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// The file descriptor io_uring reads and writes.
    pub fn fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }

    /// Sets address, prefix and MTU, and brings the link up.
    pub fn configure(&self, addr: Ipv4Addr, prefix_len: u8, mtu: u16) -> Result<()> {
        let name = self.name();
        ip(&["addr", "add", &format!("{addr}/{prefix_len}"), "dev", name])?;
        ip(&["link", "set", "dev", name, "mtu", &mtu.to_string(), "up"])?;
        Ok(())
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            anyhow::anyhow!("the `ip` command is missing: install iproute2")
        } else {
            anyhow::Error::new(e).context("cannot run `ip`")
        }
    })?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
