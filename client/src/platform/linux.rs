//! Linux: the TUN device through `/dev/net/tun` (via `tun-tap`), configured
//! with `ip`, and routes added and removed with `ip route`.
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
use std::net::Ipv4Addr;
use std::process::Command;

use ringway_proto::SessionConfig;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_tap::{Iface, Mode};

use super::TunError;
use crate::routes::{OutsidePath, Route, RouteOps};

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
    ///
    /// Also wakes on error readiness: a device deleted under us (`ip link
    /// del`) only ever reports `EPOLLERR`, never readable, and the read that
    /// follows fails (`EBADFD`), so the caller learns the device is gone.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.ready(Interest::READABLE | Interest::ERROR).await?;
            match ready.try_io(|fd| fd.get_ref().recv(buf)) {
                Ok(result) => return result.map_err(name_gone),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes one packet.
    pub async fn write(&self, packet: &[u8]) -> io::Result<()> {
        loop {
            let mut ready = self.fd.ready(Interest::WRITABLE | Interest::ERROR).await?;
            match ready.try_io(|fd| fd.get_ref().send(packet)) {
                Ok(result) => return result.map(drop).map_err(name_gone),
                Err(_would_block) => continue,
            }
        }
    }
}

/// `EBADFD` from a TUN file means its device was deleted: say so.
fn name_gone(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::EBADFD) {
        io::Error::new(e.kind(), "the device was deleted (EBADFD)")
    } else {
        e
    }
}

/// `EIO`: what a TUN write returns while the link is down.
pub fn is_eio(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

/// `ENOBUFS`: a full socket or device queue.
pub fn is_no_buffer_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
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
    ip(&["addr", "add", &address(config), "dev", name])?;
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

/// Moves `name` from the session config `old` to `new`: the address (and
/// with it the subnet route) if it changed, and the MTU if that did. Routes
/// through the device stay, since they name the device, not the address.
pub fn reconfigure(name: &str, old: &SessionConfig, new: &SessionConfig) -> Result<(), TunError> {
    if (old.client_addr, old.prefix_len) != (new.client_addr, new.prefix_len) {
        // Add first, so the device is never without an address.
        ip(&["addr", "add", &address(new), "dev", name])?;
        if let Err(e) = ip(&["addr", "del", &address(old), "dev", name]) {
            tracing::warn!(tun = name, "could not remove the old address: {e}");
        }
    }
    if old.mtu != new.mtu {
        ip(&["link", "set", "dev", name, "mtu", &new.mtu.to_string()])?;
    }
    Ok(())
}

/// `client_addr/prefix_len`.
fn address(config: &SessionConfig) -> String {
    format!("{}/{}", config.client_addr, config.prefix_len)
}

/// Routes through `ip route`.
#[derive(Debug, Default)]
pub struct SystemRoutes;

impl RouteOps for SystemRoutes {
    fn lookup(&mut self, dst: Ipv4Addr) -> Result<OutsidePath, TunError> {
        let dst = dst.to_string();
        let out = ip_output(&["-4", "route", "get", &dst])?;
        parse_route_get(&out).ok_or_else(|| TunError::Command {
            command: format!("ip -4 route get {dst}"),
            detail: format!("cannot read its answer: {:?}", out.trim()),
        })
    }

    fn add(&mut self, route: &Route) -> Result<(), TunError> {
        ip(&route_args("add", route)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>())
    }

    fn delete(&mut self, route: &Route) -> Result<(), TunError> {
        ip(&route_args("del", route)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>())
    }
}

/// `-4 route VERB DEST [via GW] dev DEV`.
fn route_args(verb: &str, route: &Route) -> Vec<String> {
    let mut args = vec![
        "-4".into(),
        "route".into(),
        verb.into(),
        route.dest.to_string(),
    ];
    if let Some(via) = route.via {
        args.extend(["via".into(), via.to_string()]);
    }
    args.extend(["dev".into(), route.dev.clone()]);
    args
}

/// Reads `ip route get`'s first line, e.g.
/// `203.0.113.5 via 192.0.2.254 dev eth0 src 192.0.2.10 uid 0`: the gateway
/// (if any) and the device. `None` for an answer without a device
/// (`unreachable`, `prohibit`).
fn parse_route_get(out: &str) -> Option<OutsidePath> {
    let line = out.lines().next()?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| {
        words
            .windows(2)
            .find(|w| w[0] == key)
            .map(|w| w[1].to_owned())
    };
    let dev = after("dev")?;
    let via = match after("via") {
        Some(v) => Some(v.parse().ok()?),
        None => None,
    };
    Some(OutsidePath { via, dev })
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
    ip_output(args).map(drop)
}

/// Runs `ip ARGS` and returns its stdout; a failure is one line naming the
/// command, or [`TunError::AlreadyExists`] / [`TunError::PermissionDenied`]
/// when `ip` says so.
fn ip_output(args: &[&str]) -> Result<String, TunError> {
    let command = format!("ip {}", args.join(" "));
    tracing::debug!(%command, "running");
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
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = stderr.trim().replace('\n', "; ");
    if let Some(e) = classify(args, &detail) {
        return Err(e);
    }
    Err(TunError::Command {
        command,
        detail: if detail.is_empty() {
            out.status.to_string()
        } else {
            detail
        },
    })
}

/// The `ip` failures with an error of their own: what we add is already
/// there ("File exists"), or we lack the privilege.
fn classify(args: &[&str], stderr: &str) -> Option<TunError> {
    if stderr.contains("File exists") {
        // `addr add CIDR ...` / `-4 route add DEST ...`: name the object.
        let what = args
            .iter()
            .position(|a| *a == "add")
            .and_then(|i| args.get(i + 1))
            .map(|obj| {
                let kind = if args.contains(&"route") {
                    "route"
                } else {
                    "address"
                };
                format!("{kind} {obj}")
            })
            .unwrap_or_else(|| format!("`ip {}`", args.join(" ")));
        return Some(TunError::AlreadyExists { what });
    }
    if stderr.contains("Operation not permitted") {
        return Some(TunError::PermissionDenied);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_errors() {
        assert!(is_eio(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(is_no_buffer_space(&io::Error::from_raw_os_error(
            libc::ENOBUFS
        )));
        assert!(!is_eio(&io::ErrorKind::InvalidInput.into()));
        let gone = name_gone(io::Error::from_raw_os_error(libc::EBADFD));
        assert_eq!(gone.to_string(), "the device was deleted (EBADFD)");
        assert_eq!(
            name_gone(io::Error::from_raw_os_error(libc::EIO)).raw_os_error(),
            Some(libc::EIO)
        );
    }

    #[test]
    fn reads_route_get() {
        let via = "203.0.113.5 via 192.0.2.254 dev eth0 src 192.0.2.10 uid 0 \n    cache \n";
        assert_eq!(
            parse_route_get(via),
            Some(OutsidePath {
                via: Some(Ipv4Addr::new(192, 0, 2, 254)),
                dev: "eth0".into()
            })
        );
        let onlink = "192.0.2.1 dev veth-c src 192.0.2.2 uid 0 \n    cache \n";
        assert_eq!(
            parse_route_get(onlink),
            Some(OutsidePath {
                via: None,
                dev: "veth-c".into()
            })
        );
        assert_eq!(parse_route_get("unreachable 10.0.0.1 uid 0"), None);
        assert_eq!(parse_route_get(""), None);
        assert_eq!(parse_route_get("1.2.3.4 via nonsense dev x"), None);
    }

    #[test]
    fn route_commands() {
        let r = Route {
            dest: "203.0.113.5/32".parse().unwrap(),
            via: Some(Ipv4Addr::new(192, 0, 2, 254)),
            dev: "eth0".into(),
        };
        assert_eq!(
            route_args("add", &r).join(" "),
            "-4 route add 203.0.113.5/32 via 192.0.2.254 dev eth0"
        );
        let r = Route {
            via: None,
            dev: "rw0".into(),
            ..r
        };
        assert_eq!(
            route_args("del", &r).join(" "),
            "-4 route del 203.0.113.5/32 dev rw0"
        );
    }

    #[test]
    fn classifies_ip_failures() {
        let e = classify(
            &["-4", "route", "add", "0.0.0.0/1", "dev", "rw0"],
            "RTNETLINK answers: File exists",
        );
        assert_eq!(
            e.unwrap().to_string(),
            "route 0.0.0.0/1 already exists (is another ringway running, or was it added by hand?)"
        );
        let e = classify(
            &["addr", "add", "198.18.0.2/24", "dev", "rw0"],
            "RTNETLINK answers: File exists",
        );
        assert!(e
            .unwrap()
            .to_string()
            .starts_with("address 198.18.0.2/24 already exists"));
        assert!(matches!(
            classify(
                &["link", "set"],
                "RTNETLINK answers: Operation not permitted"
            ),
            Some(TunError::PermissionDenied)
        ));
        assert!(classify(&["link", "set"], "Cannot find device \"x\"").is_none());
    }

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
