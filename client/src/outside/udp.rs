//! The UDP outside: one frame per datagram on a socket connected to the server.
//!
//! The socket is connected, so the kernel drops datagrams from anyone but the
//! server before we see them, and reports ICMP errors for our sends (as
//! `ConnectionRefused` on a later call), which we count and otherwise ignore.
//!
//! [`connect`] runs the core's handshake over the socket: it sends what the
//! core owes (a fresh initiation every retry interval), hands it every
//! datagram and every timeout, and stops at the core's verdict. Which
//! datagrams answer us, and when to give up, is the core's business.
//!
//! Roaming: a socket connected while the host had another address keeps that
//! address as its source, and sends fail once it is gone (`EINVAL`,
//! `EADDRNOTAVAIL`, `ENETUNREACH`, or `EPERM` from a firewall that no longer
//! knows it). [`wants_new_socket`] names those errors; the sender then
//! connects a fresh socket, which picks a source address from the routes as
//! they are now.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_proto::wire::transport::MAX_FRAME_LEN;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::sleep_until;

use super::{
    connect_progress, is_transient_socket_error, new_core, ConnectError, ConnectOptions,
    Connecting, Link, RecvError, Transport, Tunnel,
};
use crate::config::ClientConfig;
use crate::core::MAX_CONTROL_LEN;
use crate::stats::{inc, Stats};

/// Socket buffer sizes we ask for; the kernel caps them at `net.core.*mem_max`.
/// Larger than the defaults so a burst from the TUN is not dropped by our own socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// At most one fresh socket this often, however many sends fail.
const REBIND_EVERY: Duration = Duration::from_secs(1);

/// Handshakes with `server` over UDP until `deadline`: sends what the core
/// owes, feeds it every datagram and its timeouts, until it has a verdict.
pub(super) async fn connect(
    config: &ClientConfig,
    server: SocketAddr,
    opts: &ConnectOptions,
    deadline: Instant,
) -> Result<Tunnel, ConnectError> {
    let socket_error = |source| ConnectError::Socket {
        server,
        transport: Transport::Udp,
        source,
    };
    let socket = connected_socket(server).map_err(socket_error)?;
    let mut core = new_core(config, opts, deadline);
    // A response is exactly RESP_LEN bytes; the spare room lets an overlong
    // datagram be seen as such instead of arriving truncated to look right.
    let mut buf = vec![0u8; MAX_FRAME_LEN].into_boxed_slice();
    let mut control = [0u8; MAX_CONTROL_LEN];
    loop {
        while let Some(t) = core.poll_transmit(crate::now(), &mut control) {
            tracing::debug!(%server, transport = "UDP", "sending handshake initiation");
            if let Err(e) = socket.send(&control[..t.len]).await {
                if !is_transient_socket_error(&e) {
                    return Err(socket_error(e));
                }
                core.handle_io_error(&e);
            }
        }
        if let Connecting::Connected = connect_progress(&mut core, server, Transport::Udp)? {
            return Tunnel::new(Link::Udp(socket), server, core);
        }
        let wake = core.poll_timeout().unwrap_or(deadline);
        tokio::select! {
            received = socket.recv(&mut buf) => match received {
                Ok(n) => {
                    core.handle_frame(&mut buf[..n], crate::now());
                }
                Err(e) if is_transient_socket_error(&e) => core.handle_io_error(&e),
                Err(e) => return Err(socket_error(e)),
            },
            () = sleep_until(wake.into()) => core.handle_timeout(crate::now()),
        }
    }
}

/// The sender's UDP socket, replaceable when the local address goes away.
#[derive(Debug)]
pub(super) struct UdpPath {
    socket: Arc<UdpSocket>,
    /// Tells the receiver about a new socket.
    switch: watch::Sender<Arc<UdpSocket>>,
    server: SocketAddr,
    last_rebind: Option<Instant>,
}

impl UdpPath {
    pub(super) fn new(
        socket: Arc<UdpSocket>,
        switch: watch::Sender<Arc<UdpSocket>>,
        server: SocketAddr,
    ) -> Self {
        UdpPath {
            socket,
            switch,
            server,
            last_rebind: None,
        }
    }

    /// The socket's local address.
    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends one datagram; `Ok(false)` if a transient error dropped it. An
    /// error that says our address is gone takes a fresh socket (at most once
    /// a [`REBIND_EVERY`]) and tries once more on it.
    pub(super) async fn send(&mut self, frame: &[u8], stats: &Stats) -> io::Result<bool> {
        let e = match self.socket.send(frame).await {
            Ok(_) => return Ok(true),
            Err(e) => e,
        };
        if wants_new_socket(&e) && self.rebind(stats, &e).is_some() {
            match self.socket.send(frame).await {
                Ok(_) => return Ok(true),
                Err(e2) if is_transient_socket_error(&e2) || wants_new_socket(&e2) => {}
                Err(e2) => return Err(e2),
            }
        } else if !is_transient_socket_error(&e) && !wants_new_socket(&e) {
            return Err(e);
        }
        inc(&stats.tx.send_errors);
        tracing::trace!(error = %e, "dropped a frame on a transient send error");
        Ok(false)
    }

    /// Takes a fresh socket towards the server now, whenever the last was taken.
    pub(super) fn rebind_now(
        &mut self,
        stats: &Stats,
        why: &dyn fmt::Display,
    ) -> Option<SocketAddr> {
        self.last_rebind = None;
        self.rebind(stats, why)
    }

    /// Takes a fresh socket towards the server unless one was taken within
    /// [`REBIND_EVERY`]; the new local address, if one was taken.
    pub(super) fn rebind(&mut self, stats: &Stats, why: &dyn fmt::Display) -> Option<SocketAddr> {
        let now = crate::now();
        if self.last_rebind.is_some_and(|t| now < t + REBIND_EVERY) {
            return None;
        }
        self.last_rebind = Some(now);
        let old = self.socket.local_addr().ok();
        match connected_socket(self.server) {
            Ok(socket) => {
                let new = socket.local_addr().ok();
                self.socket = Arc::new(socket);
                self.switch.send_replace(Arc::clone(&self.socket));
                inc(&stats.tx.rebinds);
                tracing::info!(
                    server = %self.server,
                    old = ?old,
                    new = ?new,
                    reason = %why,
                    "took a fresh UDP socket (roaming)"
                );
                new
            }
            Err(e) => {
                tracing::debug!(error = %e, "no fresh UDP socket yet");
                None
            }
        }
    }
}

/// A non-blocking UDP socket on an ephemeral port, connected to `server`.
pub(super) fn connected_socket(server: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    socket.set_nonblocking(true)?;
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not enlarge the UDP {what} buffer");
        }
    }
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    socket.bind(&any.into())?;
    socket.connect(&server.into())?;
    UdpSocket::from_std(socket.into())
}

/// Send errors that may mean our source address is gone, so a fresh socket
/// could get through where this one cannot.
pub(super) fn wants_new_socket(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        AddrNotAvailable | NetworkUnreachable | InvalidInput | PermissionDenied
    )
}

/// Whether `ip` is still one of this host's addresses: binding to it works.
pub(super) fn is_local(ip: IpAddr) -> bool {
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    match std::net::UdpSocket::bind((ip, 0)) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::AddrNotAvailable,
    }
}

/// Receives the next datagram into `buf` and returns it; transient errors are
/// counted and skipped. Follows the sender to a fresh socket when it takes
/// one (`switched`). Cancel-safe.
pub(super) async fn recv_frame<'b>(
    socket: &mut Arc<UdpSocket>,
    switched: &mut Option<watch::Receiver<Arc<UdpSocket>>>,
    buf: &'b mut [u8],
    stats: &Stats,
) -> Result<&'b mut [u8], RecvError> {
    let n = loop {
        tokio::select! {
            biased;
            changed = async {
                match switched.as_mut() {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => {
                match (changed, switched.as_mut()) {
                    (true, Some(rx)) => *socket = Arc::clone(&rx.borrow_and_update()),
                    // The sender is gone: the socket will not change again.
                    _ => *switched = None,
                }
            }
            received = socket.recv(buf) => match received {
                Ok(n) => break n,
                Err(e) if is_transient_socket_error(&e) => inc(&stats.rx.recv_errors),
                Err(e) => return Err(RecvError::Io(e)),
            },
        }
    };
    Ok(&mut buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roaming_errors() {
        assert!(wants_new_socket(&io::ErrorKind::AddrNotAvailable.into()));
        assert!(wants_new_socket(&io::ErrorKind::InvalidInput.into()));
        assert!(!wants_new_socket(&io::ErrorKind::ConnectionRefused.into()));
        assert!(!wants_new_socket(&io::ErrorKind::WouldBlock.into()));
    }

    #[test]
    fn local_addresses() {
        assert!(is_local(Ipv4Addr::LOCALHOST.into()));
        assert!(is_local(Ipv4Addr::UNSPECIFIED.into()));
        // TEST-NET-3: never configured here.
        assert!(!is_local(Ipv4Addr::new(203, 0, 113, 254).into()));
    }
}
