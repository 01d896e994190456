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
}
