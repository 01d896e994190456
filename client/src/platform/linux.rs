//! Linux: the shared `ringway-tun` device registered with tokio's reactor, and routes added
//! and removed with `ip route` (through the same crate's `ip` helper).
//!
//! `ringway-tun` does the `TUNSETIFF` ioctl (with `IFF_NO_PI`, so each read or write is
//! exactly one IP packet, with nothing in front of it while offload is off) and opens the
//! device non-blocking; its `read`/`write` are plain `read(2)`/`write(2)` on the device file,
//! which tokio's [`AsyncFd`] turns into readiness-driven async calls.
//!
//! The unsafe calls are registering that file with tokio's reactor (tokio cannot check that
//! the descriptor stays open and the same while registered, so the caller promises it) and one
//! `setsockopt` that socket2 does not offer ([`keep_default_pmtu_discovery`]); each has its
//! `SAFETY` comment. No raw reads or writes.
#![allow(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use ringway_tun::{ip, Tun, TunOptions};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{Offload, Offloads, TunError, DATA_PATH_HANDLES_VNET_HDR};
use crate::routes::{OutsidePath, Route, RouteOps};

/// An open, non-blocking TUN device registered with the tokio reactor.
#[derive(Debug)]
pub struct TunDevice {
    fd: AsyncFd<Tun>,
}

impl TunDevice {
    /// Creates the TUN device `name` (down, no addresses). It exists until the returned
    /// value, the only holder of its file descriptor, is dropped.
    ///
    /// `offload` is what `--offload` asked for ([`DATA_PATH_HANDLES_VNET_HDR`]: the data path
    /// handles the `virtio_net_hdr`); the log line says what the kernel gave.
    pub fn create(name: &str, offload: Offload) -> Result<TunDevice, TunError> {
        let tun = Tun::create(
            name,
            &TunOptions {
                offload: offload.for_data_path(DATA_PATH_HANDLES_VNET_HDR),
                blocking: false,
            },
        )?;
        tracing::info!(
            tun = tun.name(),
            "TUN offload: {}",
            offload.describe("--offload", DATA_PATH_HANDLES_VNET_HDR, tun.offloads())
        );
        // SAFETY: `register_with_interest` needs the descriptor to stay open and refer to the
        // same file for as long as the `AsyncFd` lives. `ringway_tun::Tun` owns the `File` it
        // opened on /dev/net/tun in a private field that nothing replaces, `as_raw_fd` always
        // returns that file's descriptor, and the file closes only when the `Tun` drops, which
        // happens only when this `AsyncFd` (its sole owner; we never call `into_inner`) drops.
        let registered = unsafe {
            AsyncFd::register_with_interest(tun, Interest::READABLE | Interest::WRITABLE)
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

    /// What the device got: with `vnet_hdr`, every read and write starts with the header.
    pub fn offloads(&self) -> Offloads {
        *self.fd.get_ref().offloads()
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
            match ready.try_io(|fd| fd.get_ref().read(buf)) {
                Ok(result) => return result.map_err(name_gone),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes one packet.
    pub async fn write(&self, packet: &[u8]) -> io::Result<()> {
        loop {
            let mut ready = self.fd.ready(Interest::WRITABLE | Interest::ERROR).await?;
            match ready.try_io(|fd| fd.get_ref().write(packet)) {
                Ok(result) => return result.map(drop).map_err(name_gone),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Puts a UDP socket's path-MTU behaviour back to the kernel's default (`IP_PMTUDISC_WANT`,
/// and for IPv6 also `IPV6_PMTUDISC_WANT` without `IPV6_DONTFRAG`): quinn-udp sets
/// `IP_PMTUDISC_PROBE` (DF always, the learned path MTU ignored), which suits QUIC's own MTU
/// discovery but would turn a path narrower than our datagrams into a black hole where the
/// kernel used to fragment. A `UDP_SEGMENT` send larger than the path MTU then fails with
/// `EINVAL`, and the sender falls back to one datagram per call, fragmented as before.
pub fn keep_default_pmtu_discovery(socket: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    // quinn-udp asks for receive timestamps; while any socket does, the kernel stamps every
    // packet it receives.
    set_int(socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0)?;
    set_int(
        socket,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_WANT,
    )?;
    if ipv6 {
        set_int(
            socket,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        )?;
        set_int(socket, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0)?;
    }
    Ok(())
}

/// `setsockopt(level, name, &value, sizeof(int))`.
fn set_int(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the kernel reads `size_of::<c_int>()` bytes from `&value`, a live local that
    // outlives the call, and keeps no pointer to it; the descriptor is borrowed from a socket
    // the caller holds for the duration, and a bad one is an error return, not UB.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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

/// Routes through `ip route`.
#[derive(Debug, Default)]
pub struct SystemRoutes;

impl RouteOps for SystemRoutes {
    fn lookup(&mut self, dst: Ipv4Addr) -> Result<OutsidePath, TunError> {
        let dst = dst.to_string();
        let out = ip::run(&["-4", "route", "get", &dst])?;
        parse_route_get(&out).ok_or_else(|| TunError::Command {
            command: format!("ip -4 route get {dst}"),
            detail: format!("cannot read its answer: {:?}", out.trim()),
        })
    }

    fn add(&mut self, route: &Route) -> Result<(), TunError> {
        ip::run(
            &route_args("add", route)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .map(drop)
    }

    fn delete(&mut self, route: &Route) -> Result<(), TunError> {
        ip::run(
            &route_args("del", route)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .map(drop)
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

    fn get_int(socket: &impl AsRawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `value`, a live local, and the
        // new length into `len`; the socket outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                level,
                name,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn pmtu_discovery_goes_back_to_the_kernels_default() {
        let v4 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // What quinn-udp sets.
        set_int(
            &v4,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )
        .unwrap();
        keep_default_pmtu_discovery(&v4, false).unwrap();
        assert_eq!(
            get_int(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_WANT
        );
        if let Ok(v6) = std::net::UdpSocket::bind("[::1]:0") {
            set_int(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1).unwrap();
            keep_default_pmtu_discovery(&v6, true).unwrap();
            assert_eq!(get_int(&v6, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG), 0);
            assert_eq!(
                get_int(&v6, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
                libc::IPV6_PMTUDISC_WANT
            );
        }
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
}
