//! The UDP outside: one frame per datagram on a socket connected to the server.
//!
//! The socket is connected, so the kernel drops datagrams from anyone but the
//! server before we see them, and reports ICMP errors for our sends (as
//! `ConnectionRefused` on a later call), which we count and otherwise ignore.
//!
//! [`connect`] runs the handshake: send a fresh initiation, wait up to the
//! retry interval for the matching response, repeat until the deadline (or
//! until a few responses in a row failed to authenticate, which no retry
//! fixes). Strays (responses to an earlier initiation, anything that is not a
//! response) are ignored without touching the pending handshake.
//!
//! Roaming: a socket connected while the host had another address keeps that
//! address as its source, and sends fail once it is gone (`EINVAL`,
//! `EADDRNOTAVAIL`, `ENETUNREACH`, or `EPERM` from a firewall that no longer
//! knows it). [`wants_new_socket`] names those errors; the sender then
//! connects a fresh socket, which picks a source address from the routes as
//! they are now.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ringway_proto::wire::transport::MAX_FRAME_LEN;
use ringway_proto::wire::STREAM_PREFIX_LEN;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::timeout_at;

use super::handshake::{ConnectError, Handshaker};
use super::{is_transient, ConnectOptions, Link, RecvError, Transport, Tunnel};
use crate::config::ClientConfig;
use crate::stats::{inc, Stats};

/// Socket buffer sizes we ask for; the kernel caps them at `net.core.*mem_max`.
/// Larger than the defaults so a burst from the TUN is not dropped by our own socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// Handshakes with `server` over UDP until `deadline`.
pub(super) async fn connect(
    config: &ClientConfig,
    server: SocketAddr,
    opts: &ConnectOptions,
    deadline: Instant,
) -> Result<Tunnel, ConnectError> {
    let socket = connected_socket(server).map_err(|source| ConnectError::Socket {
        server,
        transport: Transport::Udp,
        source,
    })?;
    let mut hs = Handshaker::new(config, server, Transport::Udp);
    // A response is exactly RESP_LEN bytes; the spare room lets an overlong
    // datagram be seen as such instead of arriving truncated to look right.
    let mut buf = vec![0u8; MAX_FRAME_LEN].into_boxed_slice();

    while crate::now() < deadline {
        let init = hs.initiate()?;
        if let Err(e) = socket.send(&init[STREAM_PREFIX_LEN..]).await {
            if !is_transient(&e) {
                return Err(ConnectError::Socket {
                    server,
                    transport: Transport::Udp,
                    source: e,
                });
            }
            hs.record_io_error(&e);
        }
        let retry_at = (crate::now() + opts.retry_interval).min(deadline);
        // Wait out the interval: a stray or a failed response does not end it
        // early, so a server that keeps answering badly is not flooded.
        while let Ok(received) = timeout_at(retry_at.into(), socket.recv(&mut buf)).await {
            let n = match received {
                Ok(n) => n,
                Err(e) if is_transient(&e) => {
                    hs.record_io_error(&e);
                    continue;
                }
                Err(e) => {
                    return Err(ConnectError::Socket {
                        server,
                        transport: Transport::Udp,
                        source: e,
                    })
                }
            };
            if let Some((session, session_config)) = hs.handle_frame(&buf[..n])? {
                return Ok(Tunnel::new(
                    Link::Udp(socket),
                    server,
                    session,
                    session_config,
                    hs.initiator().clone(),
                ));
            }
        }
    }
    Err(hs.give_up())
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
                Err(e) if is_transient(&e) => inc(&stats.rx.recv_errors),
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
