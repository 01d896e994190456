//! The server's UDP socket.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

/// A bound UDP socket, left in blocking mode: io_uring polls it internally and
/// never blocks the loop on it.
#[derive(Debug)]
pub struct Udp {
    socket: UdpSocket,
}

impl Udp {
    /// Binds `addr`, asking for `buffer` bytes of socket buffer each way: a
    /// burst of thousands of packets must not be dropped while the loop is busy
    /// with the previous batch.
    pub fn bind(addr: SocketAddr, buffer: usize) -> Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .context("cannot create UDP socket")?;
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        if buffer > 0 {
            let _ = socket.set_recv_buffer_size(buffer);
            let _ = socket.set_send_buffer_size(buffer);
        }
        socket.bind(&addr.into()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!("cannot listen on UDP {addr}: address already in use (another server running? change server.listen_udp)")
            } else if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                anyhow::anyhow!("cannot listen on UDP {addr}: no interface has that address (fix server.listen_udp)")
            } else {
                anyhow::Error::new(e).context(format!("cannot listen on UDP {addr}"))
            }
        })?;
        Ok(Udp {
            socket: socket.into(),
        })
    }

    /// The address actually bound (resolves port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    /// The descriptor io_uring uses.
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The socket itself, for a backend that registers it with its own reactor.
    pub fn into_std(self) -> UdpSocket {
        self.socket
    }

    /// Whether the kernel sends many datagrams per `sendmsg` (`UDP_SEGMENT`, Linux 4.18+).
    /// Asked by setting the socket's default segment size to 0 (none), which changes
    /// nothing but fails where the option does not exist. Each send then names its own
    /// size in a control message.
    pub fn probe_gso(&self) -> bool {
        set_udp_option(self.fd(), libc::UDP_SEGMENT, 0).is_ok()
    }

    /// Turns on `UDP_GRO` (Linux 5.0+): one receive may then return many datagrams of one
    /// sender, all of one size but the last, with that size in a control message. `false`
    /// where the kernel does not have it.
    pub fn enable_gro(&self) -> bool {
        set_udp_option(self.fd(), libc::UDP_GRO, 1).is_ok()
    }
}

/// Undoes what quinn-udp sets that a tunnel does not want: puts back the kernel's default
/// path-MTU behaviour (`IP_PMTUDISC_WANT`: fragment locally when the route's MTU is smaller,
/// and learn it) after it turned on DF, which would drop a tunnel's full-size frames on a
/// narrower path instead, and turns receive timestamps off (while any socket asks for them
/// the kernel stamps every packet it receives).
pub fn keep_default_pmtu_discovery(fd: &impl AsRawFd, ipv6: bool) -> std::io::Result<()> {
    let fd = fd.as_raw_fd();
    set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0)?;
    set_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_WANT,
    )?;
    if ipv6 {
        set_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_WANT,
        )?;
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0)?;
    }
    Ok(())
}

fn set_udp_option(fd: RawFd, option: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    set_int(fd, libc::SOL_UDP, option, value)
}

/// `setsockopt(level, name, &value, sizeof(int))`.
#[allow(unsafe_code)]
fn set_int(
    fd: RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `&value`, a live c_int on
    // our stack; `fd` is a socket the caller holds open for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
