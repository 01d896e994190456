//! Linux: the TUN device through `/dev/net/tun` (via `tun-tap`), configured with `ip`.
//!
//! `tun-tap` does the `TUNSETIFF` ioctl and the switch to non-blocking mode,
//! and its `recv`/`send` are plain `read`/`write` on the device file, which
//! tokio's [`AsyncFd`] turns into readiness-driven async calls. The device is
//! created without packet information (`IFF_NO_PI`), so each read or write is
//! exactly one IP packet, with nothing in front of it.
//!
//! The one unsafe call is registering that file with tokio's reactor: tokio
//! cannot check that the descriptor stays open and the same while registered,
//! so the caller promises it (see the `SAFETY` comment). No raw reads or writes.
#![allow(unsafe_code)]

use std::io;
use std::process::Command;

use ringway_proto::SessionConfig;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_tap::{Iface, Mode};

use super::TunError;

/// An open, non-blocking TUN device registered with the tokio reactor.
#[derive(Debug)]
pub struct TunDevice {
    fd: AsyncFd<Iface>,
}

impl TunDevice {
    /// Creates the TUN device `name` (down, no addresses). It exists until the
    /// returned value, the only holder of its file descriptor, is dropped.
    pub fn create(name: &str) -> Result<TunDevice, TunError> {
        let iface =
            Iface::without_packet_info(name, Mode::Tun).map_err(|e| create_error(name, e))?;
        iface
            .set_non_blocking()
            .map_err(|source| TunError::Create {
                name: name.to_owned(),
                source,
            })?;
        // SAFETY: `register_with_interest` needs the descriptor to stay open and
        // refer to the same file for as long as the `AsyncFd` lives. `Iface`
        // owns the `File` it opened on /dev/net/tun in a private field that
        // nothing replaces, `as_raw_fd` always returns that file's descriptor,
        // and the file closes only when the `Iface` drops, which happens only
        // when this `AsyncFd` (its sole owner; we never call `into_inner`) drops.
        let registered = unsafe {
            AsyncFd::register_with_interest(iface, Interest::READABLE | Interest::WRITABLE)
        };
        let fd = registered.map_err(|e| TunError::Create {
            name: name.to_owned(),
            source: e.into(),
        })?;
        Ok(TunDevice { fd })
    }

    /// The name the kernel gave the device.
    pub fn name(&self) -> &str {
        self.fd.get_ref().name()
    }

    /// Reads one packet. Cancel-safe: a packet is only taken off the device by
    /// a `read` that returned it.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| fd.get_ref().recv(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes one packet.
    pub async fn write(&self, packet: &[u8]) -> io::Result<()> {
        loop {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| fd.get_ref().send(packet)) {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Names the usual reasons creating a TUN fails.
fn create_error(name: &str, e: io::Error) -> TunError {
    match (e.kind(), e.raw_os_error()) {
        (io::ErrorKind::PermissionDenied, _) => TunError::PermissionDenied,
        (io::ErrorKind::NotFound, _) | (_, Some(libc::ENODEV)) | (_, Some(libc::ENXIO)) => {
            TunError::NoTunDevice
        }
        (io::ErrorKind::ResourceBusy, _) => TunError::Busy {
            name: name.to_owned(),
        },
        _ => TunError::Create {
            name: name.to_owned(),
            source: e,
        },
    }
}

/// Assigns the session's address and prefix to `name`, sets its MTU and brings
/// it up. The kernel adds the route for the prefix, which is what sends the
/// server's tunnel subnet into the TUN.
pub fn configure(name: &str, config: &SessionConfig) -> Result<(), TunError> {
    disable_ipv6(name);
    let cidr = format!("{}/{}", config.client_addr, config.prefix_len);
    ip(&["addr", "add", &cidr, "dev", name])?;
    ip(&[
        "link",
        "set",
        "dev",
        name,
        "mtu",
        &config.mtu.to_string(),
        "up",
    ])
}

/// Removes the link, for when its file descriptor cannot be closed first.
pub fn delete_link(name: &str) -> Result<(), TunError> {
    ip(&["link", "delete", "dev", name])
}

/// The tunnel carries IPv4 only; with IPv6 off on the device the kernel does
/// not send router solicitations and MLD reports into it just to have them
/// dropped. Best effort: without IPv6 in the kernel there is nothing to turn off.
fn disable_ipv6(name: &str) {
    let knob = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if let Err(e) = std::fs::write(&knob, "1") {
        tracing::debug!(%knob, error = %e, "could not disable IPv6 on the TUN");
    }
}

/// Runs `ip ARGS`, turning a failure into one line naming the command.
fn ip(args: &[&str]) -> Result<(), TunError> {
    let command = format!("ip {}", args.join(" "));
    tracing::debug!(%command, "configuring TUN");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| TunError::Command {
            command: command.clone(),
            detail: if e.kind() == io::ErrorKind::NotFound {
                "`ip` not found (install iproute2)".to_owned()
            } else {
                e.to_string()
            },
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = stderr.trim().replace('\n', "; ");
    Err(TunError::Command {
        command,
        detail: if detail.is_empty() {
            out.status.to_string()
        } else {
            detail
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_usual_failures() {
        let e = io::Error::from_raw_os_error;
        assert!(matches!(
            create_error("t", e(libc::EPERM)),
            TunError::PermissionDenied
        ));
        assert!(matches!(
            create_error("t", e(libc::EACCES)),
            TunError::PermissionDenied
        ));
        assert!(matches!(
            create_error("t", e(libc::ENOENT)),
            TunError::NoTunDevice
        ));
        assert!(matches!(
            create_error("t", e(libc::EBUSY)),
            TunError::Busy { .. }
        ));
        assert!(matches!(
            create_error("t", e(libc::EINVAL)),
            TunError::Create { .. }
        ));
        assert_eq!(
            create_error("t", e(libc::EPERM)).to_string(),
            "creating TUN needs root or CAP_NET_ADMIN (try sudo)"
        );
    }
}
