//! The listening socket and the options every accepted connection gets.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Pending connections the kernel may hold before we accept them.
const BACKLOG: i32 = 1024;

/// A bound, listening TCP socket.
#[derive(Debug)]
pub struct Listener {
    socket: TcpListener,
}

impl Listener {
    /// Binds and listens on `addr`.
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .context("cannot create TCP socket")?;
        // A restarted server must not wait out TIME_WAIT from its last run.
        socket.set_reuse_address(true).context("SO_REUSEADDR")?;
        socket.bind(&addr.into()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!("cannot listen on TCP {addr}: address already in use (another server running? change server.listen_tcp)")
            } else if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                anyhow::anyhow!("cannot listen on TCP {addr}: no interface has that address (fix server.listen_tcp)")
            } else {
                anyhow::Error::new(e).context(format!("cannot listen on TCP {addr}"))
            }
        })?;
        socket
            .listen(BACKLOG)
            .with_context(|| format!("cannot listen on TCP {addr}"))?;
        Ok(Listener {
            socket: socket.into(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    /// The descriptor io_uring accepts on.
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The socket itself, for a backend that registers it with its own reactor.
    pub fn into_std(self) -> TcpListener {
        self.socket
    }
}

/// Socket options for a tunnel connection: no Nagle delay (every frame is a
/// packet someone is waiting for), and buffer sizes when configured (0 keeps
/// the kernel's autotuning, usually the better choice).
pub fn configure_connection(fd: &impl AsFd, send_buffer: usize, recv_buffer: usize) {
    let sock = SockRef::from(fd);
    let _ = sock.set_nodelay(true);
    if send_buffer > 0 {
        let _ = sock.set_send_buffer_size(send_buffer);
    }
    if recv_buffer > 0 {
        let _ = sock.set_recv_buffer_size(recv_buffer);
    }
}

/// The remote address of a connection, for logs.
pub fn peer_addr(fd: &impl AsFd) -> Option<SocketAddr> {
    SockRef::from(fd).peer_addr().ok()?.as_socket()
}
