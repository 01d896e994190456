//! The UDP outside: one frame per datagram on a socket connected to the server.
//!
//! The socket is connected, so the kernel drops datagrams from anyone but the
//! server before we see them, and reports ICMP errors for our sends (as
//! `ConnectionRefused` on a later call), which we count and otherwise ignore.
//!
//! [`Tunnel::connect`] runs the handshake: send a fresh initiation, wait up to
//! the retry interval for the matching response, repeat until the deadline (or
//! until a few responses in a row failed to authenticate, which no retry fixes).
//! Strays (responses to an earlier initiation, anything that is not a response)
//! are ignored without touching the pending handshake. The established tunnel
//! [`split`](Tunnel::split)s into a [`TunnelSender`] and a [`TunnelReceiver`] so
//! each direction runs on its own task with no lock between them.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ringway_proto::session::{OpenError, SealError};
use ringway_proto::wire::handshake::INIT_LEN;
use ringway_proto::wire::transport::{MAX_FRAME_LEN, OVERHEAD};
use ringway_proto::wire::FrameType;
use ringway_proto::{Opener, Sealer, Session, SessionConfig};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::timeout_at;

use super::handshake::{Attempts, ConnectError, Initiator};
use super::{is_transient, Event, SendError};
use crate::config::ClientConfig;
use crate::stats::{bump, inc, Stats};

/// Socket buffer sizes we ask for; the kernel caps them at `net.core.*mem_max`.
/// Larger than the defaults so a burst from the TUN is not dropped by our own socket.
const SOCKET_BUFFER: usize = 4 << 20;

/// How long and how often [`Tunnel::connect_with`] tries.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Give up after this long without a session.
    pub deadline: Duration,
    /// Send a fresh initiation this often while no answer comes.
    pub retry_interval: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            deadline: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// An established session with the server over UDP.
#[derive(Debug)]
pub struct Tunnel {
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    session: Session,
    config: SessionConfig,
    stats: Arc<Stats>,
}

impl Tunnel {
    /// Resolves the endpoint and handshakes with the default deadline (10 s) and
    /// retry interval (1 s).
    pub async fn connect(config: &ClientConfig) -> Result<Tunnel, ConnectError> {
        Self::connect_with(config, &ConnectOptions::default()).await
    }

    /// Resolves the endpoint and handshakes, retrying with a fresh initiation
    /// every `opts.retry_interval` until a response authenticates or
    /// `opts.deadline` passes. Gives up early, with
    /// [`ConnectError::KeyMismatch`], once three responses in a row failed to
    /// authenticate.
    pub async fn connect_with(
        config: &ClientConfig,
        opts: &ConnectOptions,
    ) -> Result<Tunnel, ConnectError> {
        let server = resolve(&config.endpoint).await?;
        let socket =
            connected_socket(server).map_err(|source| ConnectError::Socket { server, source })?;
        let started = crate::now();
        let deadline = started + opts.deadline;
        let mut initiator = Initiator::new(config);
        let mut attempts = Attempts::default();
        let mut init = [0u8; INIT_LEN];
        // A response is exactly RESP_LEN bytes; the spare room lets an overlong
        // datagram be seen as such instead of arriving truncated to look right.
        let mut buf = vec![0u8; MAX_FRAME_LEN].into_boxed_slice();

        while crate::now() < deadline {
            let mut pending = Some(initiator.initiate(&mut init)?);
            attempts.sent += 1;
            tracing::debug!(%server, attempt = attempts.sent, "sending handshake initiation");
            if let Err(e) = socket.send(&init).await {
                if !is_transient(&e) {
                    return Err(ConnectError::Socket { server, source: e });
                }
                attempts.record_io_error(&e);
            }
            let retry_at = (crate::now() + opts.retry_interval).min(deadline);
            // Wait out the interval: a stray or a failed response does not end it
            // early, so a server that keeps answering badly is not flooded.
            while let Ok(received) = timeout_at(retry_at.into(), socket.recv(&mut buf)).await {
                let n = match received {
                    Ok(n) => n,
                    Err(e) if is_transient(&e) => {
                        attempts.record_io_error(&e);
                        continue;
                    }
                    Err(e) => return Err(ConnectError::Socket { server, source: e }),
                };
                let frame = &buf[..n];
                let Some(hs) = pending.take_if(|hs| hs.is_response_to_me(frame)) else {
                    tracing::debug!(len = n, "ignoring a datagram that does not answer us");
                    continue;
                };
                match hs.handle_response(frame, crate::now()) {
                    Ok((session, session_config)) => {
                        tracing::debug!(
                            %server,
                            session_id = session.id(),
                            took = ?(crate::now() - started),
                            "handshake complete"
                        );
                        return Ok(Tunnel {
                            socket: Arc::new(socket),
                            server,
                            session,
                            config: session_config,
                            stats: Arc::default(),
                        });
                    }
                    Err(e) => {
                        if let Some(line) = attempts.record_failure(&e) {
                            tracing::warn!(%server, "{line}");
                        } else {
                            tracing::debug!(%server, error = %e, "handshake response refused");
                        }
                        if attempts.is_hopeless() {
                            return Err(attempts.verdict(server, crate::now() - started));
                        }
                    }
                }
            }
        }
        Err(attempts.verdict(server, opts.deadline))
    }

    /// What the server assigned: addresses, MTU, cipher, timers.
    pub fn session_config(&self) -> &SessionConfig {
        &self.config
    }

    /// The server's address, as resolved.
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// Our socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The session id every transport frame carries.
    pub fn session_id(&self) -> u32 {
        self.session.id()
    }

    /// The counters both halves update.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Separates the directions; they share the socket and the counters.
    pub fn split(self) -> (TunnelSender, TunnelReceiver) {
        let (sealer, opener) = self.session.split();
        (
            TunnelSender {
                socket: Arc::clone(&self.socket),
                sealer,
                control: [0; OVERHEAD],
                stats: Arc::clone(&self.stats),
            },
            TunnelReceiver {
                socket: self.socket,
                opener,
                stats: self.stats,
            },
        )
    }
}

/// Resolves `host:port`, taking the first address the resolver offers.
async fn resolve(endpoint: &str) -> Result<SocketAddr, ConnectError> {
    let resolve_error = |source| ConnectError::Resolve {
        endpoint: endpoint.to_owned(),
        source,
    };
    tokio::net::lookup_host(endpoint)
        .await
        .map_err(resolve_error)?
        .next()
        .ok_or_else(|| resolve_error(io::ErrorKind::NotFound.into()))
}

/// A non-blocking UDP socket on an ephemeral port, connected to `server`.
fn connected_socket(server: SocketAddr) -> io::Result<UdpSocket> {
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

/// The sending half: seals in the caller's buffer and sends.
#[derive(Debug)]
pub struct TunnelSender {
    socket: Arc<UdpSocket>,
    sealer: Sealer,
    /// Room for keepalive and disconnect frames, so they need no allocation either.
    control: [u8; OVERHEAD],
    stats: Arc<Stats>,
}

impl TunnelSender {
    /// Seals and sends the `len`-byte packet at `buf[HEADER_LEN..]` (see
    /// [`HEADER_LEN`](ringway_proto::wire::transport::HEADER_LEN)); `buf` must
    /// have [`TAG_LEN`](ringway_proto::wire::transport::TAG_LEN) bytes to spare
    /// after it. The packet is encrypted in place, so `buf` is scratch afterwards.
    ///
    /// A transient socket error is counted and the packet dropped (`Ok`).
    pub async fn send_packet(&mut self, buf: &mut [u8], len: usize) -> Result<(), SendError> {
        let n = match self.sealer.seal_data(buf, len, crate::now()) {
            Ok(n) => n,
            Err(e) => {
                if e == SealError::PayloadTooLarge {
                    inc(&self.stats.tx.dropped_too_large);
                }
                return Err(e.into());
            }
        };
        if transmit(&self.socket, &self.stats, &buf[..n]).await? {
            inc(&self.stats.tx.packets);
            bump(&self.stats.tx.bytes, len as u64);
        }
        Ok(())
    }

    /// Sends a keepalive, telling the server we are here though idle.
    pub async fn send_keepalive(&mut self) -> Result<(), SendError> {
        let n = self
            .sealer
            .seal_keepalive(&mut self.control, crate::now())?;
        if transmit(&self.socket, &self.stats, &self.control[..n]).await? {
            inc(&self.stats.tx.keepalives);
        }
        Ok(())
    }

    /// Tells the server we are leaving, so it can free the session now rather
    /// than at its idle timeout. Best effort: UDP may lose it.
    pub async fn send_disconnect(&mut self) -> Result<(), SendError> {
        let n = self
            .sealer
            .seal_disconnect(&mut self.control, crate::now())?;
        transmit(&self.socket, &self.stats, &self.control[..n]).await?;
        Ok(())
    }

    /// When a frame was last sealed (or the session began).
    pub fn last_sent(&self) -> std::time::Instant {
        self.sealer.last_sent()
    }

    /// The counters this half updates.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// Sends one datagram; `Ok(false)` if a transient error dropped it.
async fn transmit(socket: &UdpSocket, stats: &Stats, frame: &[u8]) -> io::Result<bool> {
    match socket.send(frame).await {
        Ok(_) => Ok(true),
        Err(e) if is_transient(&e) => {
            inc(&stats.tx.send_errors);
            tracing::trace!(error = %e, "dropped a frame on a transient send error");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The receiving half: receives into the caller's buffer and opens in place.
#[derive(Debug)]
pub struct TunnelReceiver {
    socket: Arc<UdpSocket>,
    opener: Opener,
    stats: Arc<Stats>,
}

impl TunnelReceiver {
    /// Waits for the next frame that opens and says what it was.
    ///
    /// Malformed, replayed, forged and other sessions' frames are counted and
    /// skipped, never returned as errors: anyone can send us datagrams. `buf`
    /// should hold [`MAX_FRAME_LEN`] bytes; a larger datagram arrives truncated
    /// and fails to authenticate.
    ///
    /// Cancel-safe: the only await is the socket receive, and nothing is
    /// changed before it completes, so this can sit in a `select!`.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<Event> {
        let rx = &self.stats.rx;
        loop {
            let n = match self.socket.recv(buf).await {
                Ok(n) => n,
                Err(e) if is_transient(&e) => {
                    inc(&rx.recv_errors);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let opened = match self.opener.open(&mut buf[..n], crate::now()) {
                Ok(opened) => opened,
                Err(e) => {
                    inc(match e {
                        OpenError::Malformed(_) => &rx.dropped_malformed,
                        OpenError::WrongSession => &rx.dropped_wrong_session,
                        OpenError::Replay(_) => &rx.dropped_replay,
                        OpenError::Auth => &rx.dropped_auth,
                    });
                    tracing::trace!(error = %e, len = n, "dropped an inbound frame");
                    continue;
                }
            };
            return Ok(match opened.kind {
                FrameType::Data => {
                    inc(&rx.packets);
                    bump(&rx.bytes, opened.payload.len() as u64);
                    Event::Packet(opened.payload)
                }
                FrameType::Keepalive => {
                    inc(&rx.keepalives);
                    Event::Keepalive
                }
                FrameType::Disconnect => Event::Disconnected,
                // `open` accepts transport frames only.
                FrameType::HandshakeInit | FrameType::HandshakeResp => {
                    inc(&rx.dropped_malformed);
                    continue;
                }
            });
        }
    }

    /// When a frame last opened (or the session began).
    pub fn last_received(&self) -> std::time::Instant {
        self.opener.last_received()
    }

    /// The counters this half updates.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}
