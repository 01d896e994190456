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
//!
//! Offload (Linux, `--offload auto`): once connected, the socket is handed to quinn-udp
//! ([`PathSocket`]), which turns on `UDP_GRO` and probes how many segments one `UDP_SEGMENT`
//! send may carry. The sender then sends the frames of a split superpacket, back to back at a
//! fixed stride, with one `sendmsg` per [`gso_sends`](ringway_offload::gso::gso_sends) chunk (one
//! datagram per `send` where the kernel has no GSO, or after it refused it once), and the
//! receiver takes up to [`RECV_SLOTS`] receives per `recvmmsg`, each possibly many datagrams
//! at the stride the kernel reports. With offload off the socket is used as before: one
//! datagram per `send` and per `recv`.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
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
use crate::stats::{bump, inc, Stats};
use ringway_offload::gso as batch;

/// Socket buffer sizes we ask for; the kernel caps them at `net.core.*mem_max`.
/// Larger than the defaults so a burst from the TUN is not dropped by our own socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// At most one fresh socket this often, however many sends fail.
const REBIND_EVERY: Duration = Duration::from_secs(1);

/// Receives per `recvmmsg` with offload: with GRO each may be a 64 KiB aggregate, without it
/// (a server or path that does not coalesce) each is one datagram, so a burst still costs
/// one call per eight datagrams.
pub(super) const RECV_SLOTS: usize = 8;

/// Bytes per receive slot: a GRO aggregate is one skb, which the kernel keeps under 64 KiB
/// (`gro_max_size`). A longer one would arrive cut short, its last datagram failing to
/// authenticate.
pub(super) const RECV_SLOT_LEN: usize = 1 << 16;

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
            let socket = PathSocket::new(socket, opts.udp_offload);
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

/// A connected UDP socket and what the kernel lets it batch.
#[derive(Debug)]
pub(super) struct PathSocket {
    socket: UdpSocket,
    /// quinn-udp's view of the socket (GSO limit, GRO), with offload on and where it worked.
    #[cfg(target_os = "linux")]
    offload: Option<quinn_udp::UdpSocketState>,
    /// Where `UDP_SEGMENT` sends go (quinn-udp names the destination on every send).
    #[cfg(target_os = "linux")]
    server: SocketAddr,
}

/// What the UDP socket batches: the start-up line's UDP part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UdpOffload {
    /// Datagrams one `UDP_SEGMENT` send may carry (1: no GSO).
    pub gso_segments: usize,
    /// `UDP_GRO` is on: one receive may hold many datagrams.
    pub gro: bool,
}

impl std::fmt::Display for UdpOffload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.gso_segments > 1 {
            write!(f, "gso {} segments", self.gso_segments)?;
        } else {
            f.write_str("no gso")?;
        }
        f.write_str(if self.gro { ", gro" } else { ", no gro" })
    }
}

impl PathSocket {
    /// Wraps a connected socket; with `offload`, asks quinn-udp for GSO and GRO (Linux; a
    /// socket it cannot set up is used without them, and the log says why).
    pub(super) fn new(socket: UdpSocket, offload: bool) -> Self {
        #[cfg(target_os = "linux")]
        {
            let server = socket
                .peer_addr()
                .unwrap_or_else(|_| (Ipv4Addr::UNSPECIFIED, 0).into());
            let offload = offload
                .then(|| quinn_udp::UdpSocketState::new((&socket).into()))
                .and_then(|state| match state {
                    Ok(state) => {
                        let ipv6 = server.is_ipv6();
                        if let Err(e) = crate::platform::keep_default_pmtu_discovery(&socket, ipv6)
                        {
                            tracing::debug!(error = %e, "could not restore IP_PMTUDISC_WANT");
                        }
                        Some(state)
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "no UDP offload on this socket");
                        None
                    }
                });
            PathSocket {
                socket,
                offload,
                server,
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = offload;
            PathSocket { socket }
        }
    }

    /// What this socket batches.
    pub(super) fn offload(&self) -> UdpOffload {
        #[cfg(target_os = "linux")]
        if let Some(state) = &self.offload {
            return UdpOffload {
                gso_segments: state.max_gso_segments(),
                gro: state.gro_segments() > 1,
            };
        }
        UdpOffload {
            gso_segments: 1,
            gro: false,
        }
    }

    /// Whether receives go through quinn-udp (several per call, GRO).
    pub(super) fn batches_receives(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.offload.is_some();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// The plain socket (the handshake's, and every send without offload).
    pub(super) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Sends frames lying back to back at `stride` (the last possibly shorter) in one
    /// `sendmsg` with `UDP_SEGMENT`; the caller keeps within [`PathSocket::offload`]'s limit.
    #[cfg(target_os = "linux")]
    async fn send_segments(&self, frames: &[u8], stride: usize) -> io::Result<()> {
        let Some(state) = &self.offload else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let transmit = quinn_udp::Transmit {
            destination: self.server,
            ecn: None,
            contents: frames,
            segment_size: Some(stride),
            src_ip: None,
        };
        self.socket
            .async_io(tokio::io::Interest::WRITABLE, || {
                state.try_send((&self.socket).into(), &transmit)
            })
            .await
    }

    #[cfg(not(target_os = "linux"))]
    async fn send_segments(&self, _frames: &[u8], _stride: usize) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Sends what `out` says.
    async fn send_out(&self, out: Out<'_>) -> io::Result<()> {
        match out {
            Out::One(frame) => self.socket.send(frame).await.map(drop),
            Out::Segments(frames, stride) => self.send_segments(frames, stride).await,
        }
    }

    /// Receives into `buf` (cut into [`RECV_SLOTS`] slots of [`RECV_SLOT_LEN`] with offload)
    /// and pushes where each datagram lies onto `frames`. Cancel-safe: nothing is taken off
    /// the socket unless the call returns it.
    async fn recv_into(&self, buf: &mut [u8], frames: &mut Vec<Range<usize>>) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(state) = &self.offload {
            use std::io::IoSliceMut;
            let mut meta = [quinn_udp::RecvMeta::default(); RECV_SLOTS];
            let n = {
                let mut slots = buf.chunks_mut(RECV_SLOT_LEN);
                let mut iovs: [IoSliceMut<'_>; RECV_SLOTS] =
                    std::array::from_fn(|_| IoSliceMut::new(slots.next().unwrap_or_default()));
                self.socket
                    .async_io(tokio::io::Interest::READABLE, || {
                        state.recv((&self.socket).into(), &mut iovs, &mut meta)
                    })
                    .await?
            };
            for (slot, m) in meta.iter().enumerate().take(n) {
                let base = slot * RECV_SLOT_LEN;
                let len = m.len.min(RECV_SLOT_LEN);
                frames
                    .extend(batch::datagrams(len, m.stride).map(|r| base + r.start..base + r.end));
            }
            return Ok(());
        }
        let n = self.socket.recv(buf).await?;
        frames.push(0..n);
        Ok(())
    }
}

/// One send: a datagram, or frames at a stride for one `UDP_SEGMENT` sendmsg.
#[derive(Debug, Clone, Copy)]
enum Out<'a> {
    One(&'a [u8]),
    Segments(&'a [u8], usize),
}

impl Out<'_> {
    fn datagrams(&self) -> usize {
        match self {
            Out::One(_) => 1,
            Out::Segments(frames, stride) => batch::count(frames.len(), *stride),
        }
    }
}

/// The sender's UDP socket, replaceable when the local address goes away.
#[derive(Debug)]
pub(super) struct UdpPath {
    socket: Arc<PathSocket>,
    /// Tells the receiver about a new socket.
    switch: watch::Sender<Arc<PathSocket>>,
    server: SocketAddr,
    /// Whether fresh sockets get offload too.
    offload: bool,
    last_rebind: Option<Instant>,
}

impl UdpPath {
    pub(super) fn new(
        socket: Arc<PathSocket>,
        switch: watch::Sender<Arc<PathSocket>>,
        server: SocketAddr,
        offload: bool,
    ) -> Self {
        UdpPath {
            socket,
            switch,
            server,
            offload,
            last_rebind: None,
        }
    }

    /// The socket's local address.
    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.socket().local_addr()
    }

    /// What the current socket batches.
    pub(super) fn offload(&self) -> UdpOffload {
        self.socket.offload()
    }

    /// Sends one datagram; `Ok(false)` if a transient error dropped it. An
    /// error that says our address is gone takes a fresh socket (at most once
    /// a [`REBIND_EVERY`]) and tries once more on it.
    pub(super) async fn send(&mut self, frame: &[u8], stats: &Stats) -> io::Result<bool> {
        self.send_out(Out::One(frame), stats).await
    }

    /// Sends the frames lying back to back at `stride` in `frames` (the last possibly
    /// shorter): one `UDP_SEGMENT` sendmsg per [`batch::gso_sends`] chunk, or one `send` per
    /// frame where the socket has no GSO (or the kernel just refused it). Returns the frames
    /// and bytes that went out; transient errors drop a chunk and are counted per frame.
    pub(super) async fn send_frames(
        &mut self,
        frames: &[u8],
        stride: usize,
        stats: &Stats,
    ) -> io::Result<(usize, usize)> {
        let (mut sent, mut bytes) = (0, 0);
        let mut at = 0;
        while at < frames.len() {
            let max = self.socket.offload().gso_segments;
            let Some(chunk) = batch::gso_sends(frames.len() - at, stride, max).next() else {
                break;
            };
            let chunk = &frames[at..at + chunk.end];
            let out = if max > 1 && chunk.len() > stride {
                Out::Segments(chunk, stride)
            } else {
                Out::One(chunk)
            };
            match self.send_out(out, stats).await {
                Ok(true) => {
                    sent += out.datagrams();
                    bytes += chunk.len();
                }
                Ok(false) => {}
                // The kernel refused segmentation itself (quinn-udp then turns GSO off for
                // this socket): the same frames one by one.
                Err(e) if matches!(out, Out::Segments(..)) && refuses_gso(&e) => {
                    tracing::info!(error = %e, "UDP GSO refused; sending a datagram per call");
                    continue;
                }
                Err(e) => return Err(e),
            }
            at += chunk.len();
        }
        Ok((sent, bytes))
    }

    /// Sends `out`, with the roaming retry of [`UdpPath::send`]; counts the calls and
    /// datagrams that went out, and the datagrams a transient error dropped.
    async fn send_out(&mut self, out: Out<'_>, stats: &Stats) -> io::Result<bool> {
        let datagrams = out.datagrams() as u64;
        let e = match self.socket.send_out(out).await {
            Ok(()) => {
                count_send(stats, datagrams);
                return Ok(true);
            }
            Err(e) => e,
        };
        if matches!(out, Out::Segments(..))
            && refuses_gso(&e)
            && self.socket.offload().gso_segments <= 1
        {
            return Err(e);
        }
        if wants_new_socket(&e) && self.rebind(stats, &e).is_some() {
            match self.socket.send_out(out).await {
                Ok(()) => {
                    count_send(stats, datagrams);
                    return Ok(true);
                }
                Err(e2) if is_transient_socket_error(&e2) || wants_new_socket(&e2) => {}
                Err(e2) => return Err(e2),
            }
        } else if !is_transient_socket_error(&e) && !wants_new_socket(&e) {
            return Err(e);
        }
        bump(&stats.tx.send_errors, datagrams);
        tracing::trace!(error = %e, datagrams, "dropped frames on a transient send error");
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
        let old = self.socket.socket().local_addr().ok();
        match connected_socket(self.server) {
            Ok(socket) => {
                let new = socket.local_addr().ok();
                self.socket = Arc::new(PathSocket::new(socket, self.offload));
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

/// One successful send call of `datagrams` datagrams.
fn count_send(stats: &Stats, datagrams: u64) {
    inc(&stats.tx.udp_sends);
    bump(&stats.tx.udp_datagrams, datagrams);
}

/// `EIO` or `EINVAL` from a `UDP_SEGMENT` send: a device or kernel that cannot segment
/// (quinn-udp has then set the socket's GSO limit to 1).
fn refuses_gso(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    return matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL));
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
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

/// Receives into `buf` and pushes where each datagram lies onto `frames` (one, or with
/// offload up to [`RECV_SLOTS`] receives' worth, each possibly many datagrams); transient
/// errors are counted and skipped. Follows the sender to a fresh socket when it takes one
/// (`switched`). Cancel-safe.
pub(super) async fn recv_frames(
    socket: &mut Arc<PathSocket>,
    switched: &mut Option<watch::Receiver<Arc<PathSocket>>>,
    buf: &mut [u8],
    frames: &mut Vec<Range<usize>>,
    stats: &Stats,
) -> Result<(), RecvError> {
    loop {
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
            received = socket.recv_into(buf, frames) => match received {
                Ok(()) => {
                    inc(&stats.rx.udp_recvs);
                    bump(&stats.rx.udp_datagrams, frames.len() as u64);
                    return Ok(());
                }
                Err(e) if is_transient_socket_error(&e) => inc(&stats.rx.recv_errors),
                Err(e) => return Err(RecvError::Io(e)),
            },
        }
    }
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
