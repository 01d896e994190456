//! The outside: the network path to the server.
//!
//! Two transports carry the same frames: `udp` one frame per datagram, and
//! `tcp` one stream with a 2-byte length in front of each frame (read by
//! `stream`), for networks that block UDP. Both run the handshake through
//! [`handshake`] and end up as the same [`Tunnel`], whose halves
//! ([`TunnelSender`], [`TunnelReceiver`]) seal and open in place whatever the
//! transport, so the driver does not know which one it runs over.
//!
//! A packet to send sits [`HEADROOM`] bytes into its buffer: room for the
//! transport header, sealed in place in front of it, and in front of that
//! room for the stream's length prefix, so a TCP frame goes out in one write
//! and the packet is never moved:
//!
//! ```text
//!  buf: [ prefix (2) | header (16) | packet (len) | tag (16) ]
//!                      `-- frame, sealed in place at buf[STREAM_PREFIX_LEN..]
//!  UDP sends the frame; TCP writes the prefix into buf[..2] and writes prefix + frame.
//! ```

pub mod handshake;
mod stream;
mod tcp;
mod udp;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringway_proto::session::{OpenError, SealError};
use ringway_proto::wire::transport::{HEADER_LEN, MAX_FRAME_LEN, OVERHEAD};
use ringway_proto::wire::{self, FrameType, STREAM_PREFIX_LEN};
use ringway_proto::{Opener, Sealer, Session, SessionConfig};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UdpSocket;

pub use handshake::ConnectError;

use crate::config::ClientConfig;
use crate::stats::{bump, inc, Stats};
use stream::FrameReader;

/// Bytes in front of a packet in a send buffer: the stream prefix and the
/// transport header (see the module doc).
pub const HEADROOM: usize = STREAM_PREFIX_LEN + HEADER_LEN;

/// A send buffer this long holds the largest packet a frame can carry, with
/// its headroom and tag.
pub const SEND_BUF_LEN: usize = STREAM_PREFIX_LEN + MAX_FRAME_LEN;

/// How to reach the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Transport {
    /// One frame per datagram.
    #[default]
    Udp,
    /// Length-prefixed frames on one TCP connection, to the same host and port.
    Tcp,
    /// UDP first, for [`ConnectOptions::auto_udp_for`]; TCP if UDP got no answer.
    Auto,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Auto => "auto",
        })
    }
}

/// How, how long and how often [`Tunnel::connect_with`] tries.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Which transport to use.
    pub transport: Transport,
    /// Give up after this long without a session.
    pub deadline: Duration,
    /// Send a fresh initiation this often while no answer comes.
    pub retry_interval: Duration,
    /// With [`Transport::Auto`], how long UDP gets before TCP is tried; at most
    /// half the deadline, so TCP always gets the rest.
    pub auto_udp_for: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            transport: Transport::Udp,
            deadline: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
            auto_udp_for: Duration::from_secs(3),
        }
    }
}

/// An established session with the server, over either transport.
#[derive(Debug)]
pub struct Tunnel {
    link: Link,
    server: SocketAddr,
    session: Session,
    config: SessionConfig,
    stats: Arc<Stats>,
}

/// The connection a session runs over, before it is split.
#[derive(Debug)]
enum Link {
    Udp(UdpSocket),
    Tcp {
        reader: FrameReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    },
}

impl Tunnel {
    fn new(link: Link, server: SocketAddr, session: Session, config: SessionConfig) -> Self {
        Tunnel {
            link,
            server,
            session,
            config,
            stats: Arc::default(),
        }
    }

    /// Resolves the endpoint and handshakes over UDP with the default deadline
    /// (10 s) and retry interval (1 s).
    pub async fn connect(config: &ClientConfig) -> Result<Tunnel, ConnectError> {
        Self::connect_with(config, &ConnectOptions::default()).await
    }

    /// Resolves the endpoint and handshakes over `opts.transport`, sending a
    /// fresh initiation every `opts.retry_interval` until a response
    /// authenticates or `opts.deadline` passes. Over TCP, a connection that
    /// fails or closes is replaced, with a growing pause between connections.
    /// Gives up early, with [`ConnectError::KeyMismatch`], once three responses
    /// in a row failed to authenticate.
    ///
    /// [`Transport::Auto`] falls back to TCP only when UDP got no answer at all:
    /// a server that answered with the wrong key would not do better over TCP.
    pub async fn connect_with(
        config: &ClientConfig,
        opts: &ConnectOptions,
    ) -> Result<Tunnel, ConnectError> {
        let server = resolve(&config.endpoint).await?;
        let deadline = crate::now() + opts.deadline;
        match opts.transport {
            Transport::Udp => udp::connect(config, server, opts, deadline).await,
            Transport::Tcp => tcp::connect(config, server, opts, deadline).await,
            Transport::Auto => {
                let udp_for = opts.auto_udp_for.min(opts.deadline / 2);
                match udp::connect(config, server, opts, crate::now() + udp_for).await {
                    Err(ConnectError::Unreachable { .. }) => {
                        tracing::info!(
                            %server,
                            "no answer over UDP within {udp_for:?}; trying TCP"
                        );
                        tcp::connect(config, server, opts, deadline).await
                    }
                    other => other,
                }
            }
        }
    }

    /// What the server assigned: addresses, MTU, cipher, timers.
    pub fn session_config(&self) -> &SessionConfig {
        &self.config
    }

    /// The transport the session runs over: [`Transport::Udp`] or [`Transport::Tcp`].
    pub fn transport(&self) -> Transport {
        match self.link {
            Link::Udp(_) => Transport::Udp,
            Link::Tcp { .. } => Transport::Tcp,
        }
    }

    /// The server's address, as resolved.
    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// Our socket's local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.link {
            Link::Udp(socket) => socket.local_addr(),
            Link::Tcp { writer, .. } => writer.local_addr(),
        }
    }

    /// The session id every transport frame carries.
    pub fn session_id(&self) -> u32 {
        self.session.id()
    }

    /// The counters both halves update.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Separates the directions. Over UDP they share the socket; over TCP each
    /// owns its half of the connection. Both share the counters.
    pub fn split(self) -> (TunnelSender, TunnelReceiver) {
        let (sealer, opener) = self.session.split();
        let (send, recv) = match self.link {
            Link::Udp(socket) => {
                let socket = Arc::new(socket);
                let buf = vec![0u8; MAX_FRAME_LEN].into_boxed_slice();
                (
                    SendLink::Udp(Arc::clone(&socket)),
                    RecvLink::Udp { socket, buf },
                )
            }
            Link::Tcp { reader, writer } => (SendLink::Tcp(writer), RecvLink::Tcp(reader)),
        };
        (
            TunnelSender {
                link: send,
                sealer,
                control: [0; STREAM_PREFIX_LEN + OVERHEAD],
                stats: Arc::clone(&self.stats),
            },
            TunnelReceiver {
                link: recv,
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

/// Why a frame could not be sent.
///
/// Transient UDP errors never get here: the sender counts and drops them, as
/// a router drops a packet it has no route for.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The session refused to seal: an oversized packet, a buffer without room
    /// for header and tag, or a used-up counter.
    #[error("cannot seal frame: {0}")]
    Seal(#[from] SealError),
    /// The UDP socket failed in a way that will not pass.
    #[error("cannot send to the server: {0}")]
    Io(#[from] io::Error),
    /// The TCP connection failed (reset, timed out, closed by the server).
    #[error("the connection to the server was lost: {0}")]
    ConnectionLost(io::Error),
}

impl SendError {
    /// Whether the tunnel cannot go on: everything but a single oversized packet.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, SendError::Seal(SealError::PayloadTooLarge))
    }

    /// Whether the session ended on the server's side or the path's, rather
    /// than through a failure of ours.
    pub fn is_session_lost(&self) -> bool {
        matches!(self, SendError::ConnectionLost(_))
    }
}

/// Why no more frames will come.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The server closed the TCP connection.
    #[error("the server closed the connection")]
    Closed,
    /// The TCP connection failed (reset, timed out).
    #[error("the connection to the server was lost: {0}")]
    ConnectionLost(io::Error),
    /// The server sent a length prefix of zero or over the limit: the stream
    /// cannot be followed any more.
    #[error("the server sent a corrupt stream: {0}")]
    Corrupt(wire::Error),
    /// The UDP socket failed in a way that will not pass.
    #[error("receiving from the server failed: {0}")]
    Io(io::Error),
}

impl RecvError {
    /// Whether the session ended on the server's side or the path's, rather
    /// than through a failure of ours.
    pub fn is_session_lost(&self) -> bool {
        !matches!(self, RecvError::Io(_))
    }
}

/// What a frame from the server turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A data frame: the IP packet, decrypted in place in the receiver's buffer.
    Packet(&'a [u8]),
    /// The server is alive and has nothing to send.
    Keepalive,
    /// The server ended the session.
    Disconnected,
    /// A frame that did not open (malformed, another session's, replayed or
    /// forged); it is counted in the stats and otherwise ignored.
    Dropped(OpenError),
}

/// The sending half: seals in the caller's buffer and sends.
#[derive(Debug)]
pub struct TunnelSender {
    link: SendLink,
    sealer: Sealer,
    /// Room for keepalive and disconnect frames (with a stream prefix), so they
    /// need no allocation either.
    control: [u8; STREAM_PREFIX_LEN + OVERHEAD],
    stats: Arc<Stats>,
}

#[derive(Debug)]
enum SendLink {
    Udp(Arc<UdpSocket>),
    Tcp(OwnedWriteHalf),
}

impl SendLink {
    /// Sends the `frame_len`-byte frame at `buf[STREAM_PREFIX_LEN..]`, using the
    /// room in front for a stream prefix; `Ok(false)` if a transient error
    /// dropped it.
    async fn transmit(
        &mut self,
        buf: &mut [u8],
        frame_len: usize,
        stats: &Stats,
    ) -> Result<bool, SendError> {
        let end = STREAM_PREFIX_LEN + frame_len;
        match self {
            SendLink::Udp(socket) => {
                Ok(udp::transmit(socket, stats, &buf[STREAM_PREFIX_LEN..end]).await?)
            }
            SendLink::Tcp(writer) => tcp::transmit(writer, &mut buf[..end]).await.map(|()| true),
        }
    }
}

impl TunnelSender {
    /// Seals and sends the `len`-byte packet at `buf[HEADROOM..]`; `buf` must
    /// have [`TAG_LEN`](ringway_proto::wire::transport::TAG_LEN) bytes to spare
    /// after it. The packet is encrypted in place and the frame's prefix and
    /// header are written in front of it, so `buf` is scratch afterwards.
    ///
    /// Over UDP a transient socket error is counted and the packet dropped
    /// (`Ok`). Over TCP this waits while the connection is backed up: the
    /// caller's reads from the TUN simply pause.
    pub async fn send_packet(&mut self, buf: &mut [u8], len: usize) -> Result<(), SendError> {
        let frame = buf
            .get_mut(STREAM_PREFIX_LEN..)
            .ok_or(SealError::BufferTooSmall)?;
        let n = match self.sealer.seal_data(frame, len, crate::now()) {
            Ok(n) => n,
            Err(e) => {
                if e == SealError::PayloadTooLarge {
                    inc(&self.stats.tx.dropped_too_large);
                }
                return Err(e.into());
            }
        };
        if self.link.transmit(buf, n, &self.stats).await? {
            inc(&self.stats.tx.packets);
            bump(&self.stats.tx.bytes, len as u64);
        }
        Ok(())
    }

    /// Sends a keepalive, telling the server we are here though idle.
    pub async fn send_keepalive(&mut self) -> Result<(), SendError> {
        let n = self
            .sealer
            .seal_keepalive(&mut self.control[STREAM_PREFIX_LEN..], crate::now())?;
        if self
            .link
            .transmit(&mut self.control, n, &self.stats)
            .await?
        {
            inc(&self.stats.tx.keepalives);
        }
        Ok(())
    }

    /// Tells the server we are leaving, so it can free the session now rather
    /// than at its idle timeout. Best effort: UDP may lose it.
    pub async fn send_disconnect(&mut self) -> Result<(), SendError> {
        let n = self
            .sealer
            .seal_disconnect(&mut self.control[STREAM_PREFIX_LEN..], crate::now())?;
        self.link
            .transmit(&mut self.control, n, &self.stats)
            .await?;
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

/// The receiving half: receives into its own buffer and opens in place there.
#[derive(Debug)]
pub struct TunnelReceiver {
    link: RecvLink,
    opener: Opener,
    stats: Arc<Stats>,
}

#[derive(Debug)]
enum RecvLink {
    /// A datagram at a time into `buf` ([`MAX_FRAME_LEN`] bytes: a larger
    /// datagram arrives truncated and fails to authenticate).
    Udp {
        socket: Arc<UdpSocket>,
        buf: Box<[u8]>,
    },
    Tcp(FrameReader<OwnedReadHalf>),
}

impl RecvLink {
    /// The next frame, in place in the link's buffer. Cancel-safe.
    async fn next_frame(&mut self, stats: &Stats) -> Result<&mut [u8], RecvError> {
        match self {
            RecvLink::Udp { socket, buf } => udp::recv_frame(socket, buf, stats).await,
            RecvLink::Tcp(reader) => reader.next_frame().await,
        }
    }
}

impl TunnelReceiver {
    /// Waits for the next frame, opens it in place and says what it was.
    ///
    /// A frame that does not open is counted and comes back as
    /// [`Event::Dropped`], never as an error: over UDP anyone can send us
    /// datagrams. An error means no more frames will come over this
    /// connection ([`RecvError::is_session_lost`] tells whose doing that was).
    ///
    /// Cancel-safe: the only await is the read from the socket, and nothing is
    /// changed before it completes, so this can sit in a `select!`.
    pub async fn recv(&mut self) -> Result<Event<'_>, RecvError> {
        let frame = self.link.next_frame(&self.stats).await?;
        let rx = &self.stats.rx;
        let opened = match self.opener.open(frame, crate::now()) {
            Ok(opened) => opened,
            Err(e) => {
                inc(match e {
                    OpenError::Malformed(_) => &rx.dropped_malformed,
                    OpenError::WrongSession => &rx.dropped_wrong_session,
                    OpenError::Replay(_) => &rx.dropped_replay,
                    OpenError::Auth => &rx.dropped_auth,
                });
                tracing::trace!(error = %e, len = frame.len(), "dropped an inbound frame");
                return Ok(Event::Dropped(e));
            }
        };
        Ok(match opened.kind {
            FrameType::Data => {
                let packet = &frame[opened.payload];
                inc(&rx.packets);
                bump(&rx.bytes, packet.len() as u64);
                Event::Packet(packet)
            }
            FrameType::Keepalive => {
                inc(&rx.keepalives);
                Event::Keepalive
            }
            FrameType::Disconnect => Event::Disconnected,
            // `open` accepts transport frames only.
            FrameType::HandshakeInit | FrameType::HandshakeResp => {
                inc(&rx.dropped_malformed);
                Event::Dropped(OpenError::Malformed(wire::Error::InvalidField))
            }
        })
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

/// Socket errors that say something about one datagram or the path right now,
/// not about the socket: the next datagram may well go through.
///
/// A connected UDP socket reports an ICMP error from an earlier send as
/// `ConnectionRefused` on a later call; routes and addresses come and go while
/// a laptop changes networks; `ENOBUFS` is a full queue.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | NetworkUnreachable
            | HostUnreachable
            | NetworkDown
            | AddrNotAvailable
            | PermissionDenied
            | WouldBlock
            | Interrupted
    ) || is_no_buffer_space(e)
}

#[cfg(target_os = "linux")]
fn is_no_buffer_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

#[cfg(not(target_os = "linux"))]
fn is_no_buffer_space(_: &io::Error) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        assert!(is_transient(&io::ErrorKind::ConnectionRefused.into()));
        assert!(is_transient(&io::ErrorKind::NetworkUnreachable.into()));
        assert!(!is_transient(&io::ErrorKind::InvalidInput.into()));
        #[cfg(target_os = "linux")]
        assert!(is_transient(&io::Error::from_raw_os_error(libc::ENOBUFS)));
    }

    #[test]
    fn only_oversized_packets_are_survivable() {
        assert!(!SendError::Seal(SealError::PayloadTooLarge).is_fatal());
        assert!(SendError::Seal(SealError::CounterExhausted).is_fatal());
        assert!(SendError::Io(io::ErrorKind::InvalidInput.into()).is_fatal());
        assert!(SendError::ConnectionLost(io::ErrorKind::BrokenPipe.into()).is_fatal());
    }

    #[test]
    fn whose_fault() {
        assert!(SendError::ConnectionLost(io::ErrorKind::BrokenPipe.into()).is_session_lost());
        assert!(!SendError::Io(io::ErrorKind::InvalidInput.into()).is_session_lost());
        assert!(RecvError::Closed.is_session_lost());
        assert!(RecvError::Corrupt(wire::Error::TooLong).is_session_lost());
        assert!(RecvError::ConnectionLost(io::ErrorKind::ConnectionReset.into()).is_session_lost());
        assert!(!RecvError::Io(io::ErrorKind::InvalidInput.into()).is_session_lost());
    }

    #[test]
    fn headroom_fits_prefix_and_header() {
        assert_eq!(HEADROOM, 18);
        assert_eq!(
            SEND_BUF_LEN - HEADROOM - ringway_proto::wire::transport::TAG_LEN,
            ringway_proto::wire::transport::MAX_PAYLOAD_LEN
        );
    }
}
