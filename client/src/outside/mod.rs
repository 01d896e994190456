//! The outside: the network path to the server, and nothing else.
//!
//! Two transports carry the same frames: `udp` one frame per datagram, and
//! `tcp` one stream with a 2-byte length in front of each frame (read by
//! `stream`), for networks that block UDP. Either way the protocol is the
//! [`Core`]'s: this module moves its bytes and its time. [`Tunnel::connect_with`]
//! runs a core's handshake over a socket and hands back the [`Tunnel`], whose
//! halves ([`TunnelSender`], [`TunnelReceiver`]) share that core and seal and
//! open in place whatever the transport, so the driver does not know which
//! one it runs over.
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
//!
//! The halves share the core behind a mutex, held only while a frame is
//! sealed or opened (or a timer handled), never across an await: the
//! sender's socket write and the receiver's read run unlocked, in parallel.
//!
//! Over UDP a sender whose socket lost its local address (a laptop changing
//! networks) takes a fresh socket towards the same server and carries on in
//! the same session: the core sends a probe, and the server follows
//! authenticated frames to their new source. The receiver switches to the new
//! socket through a `watch` channel.

mod error;
mod stream;
mod tcp;
mod udp;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ringway_proto::wire::transport::{HEADER_LEN, MAX_FRAME_LEN};
use ringway_proto::wire::STREAM_PREFIX_LEN;
use ringway_proto::{Entropy, EntropyError, SessionConfig};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UdpSocket;
use tokio::sync::watch;

pub use error::{ConnectError, RecvError, SendError};

use crate::config::ClientConfig;
use crate::core::{
    Control, Core, CoreConfig, Dropped, Event, Inbound, Refused, SessionOptions, MAX_CONTROL_LEN,
};
use crate::stats::{bump, inc, Stats};
use stream::FrameReader;

/// Bytes in front of a packet in a send buffer: the stream prefix and the
/// transport header (see the module doc).
pub const HEADROOM: usize = STREAM_PREFIX_LEN + HEADER_LEN;

/// A send buffer this long holds the largest packet a frame can carry, with
/// its headroom and tag.
pub const SEND_BUF_LEN: usize = STREAM_PREFIX_LEN + MAX_FRAME_LEN;

/// What a tunnel runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One frame per datagram.
    Udp,
    /// Length-prefixed frames on one TCP connection, to the same host and port.
    Tcp,
}

impl Transport {
    /// `udp` or `tcp`, as on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        })
    }
}

/// Which transport [`Tunnel::connect_with`] tries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransportChoice {
    /// UDP only.
    #[default]
    Udp,
    /// TCP only.
    Tcp,
    /// UDP first, for [`ConnectOptions::auto_udp_for`]; TCP if UDP got no answer.
    Auto,
}

impl fmt::Display for TransportChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportChoice::Udp => "UDP",
            TransportChoice::Tcp => "TCP",
            TransportChoice::Auto => "auto",
        })
    }
}

/// How, how long and how often [`Tunnel::connect_with`] tries, and the
/// session's own timers once it is up.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Which transport to use.
    pub transport: TransportChoice,
    /// Give up after this long without a session.
    pub deadline: Duration,
    /// Send a fresh initiation this often while no answer comes.
    pub retry_interval: Duration,
    /// With [`TransportChoice::Auto`], how long UDP gets before TCP is tried;
    /// at most half the deadline, so TCP always gets the rest.
    pub auto_udp_for: Duration,
    /// Probe and rekey-retry timers of the session.
    pub session: SessionOptions,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            transport: TransportChoice::Udp,
            deadline: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
            auto_udp_for: Duration::from_secs(3),
            session: SessionOptions::default(),
        }
    }
}

/// The operating system's random source, for the core's keys and jitter.
#[derive(Debug)]
pub struct OsEntropy(SystemRandom);

impl OsEntropy {
    /// The system's generator.
    pub fn new() -> Self {
        OsEntropy(SystemRandom::new())
    }
}

impl Default for OsEntropy {
    fn default() -> Self {
        Self::new()
    }
}

impl Entropy for OsEntropy {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        self.0.fill(dest).map_err(|_| EntropyError)
    }
}

/// A core to connect with `config` under `opts`, giving up at `deadline`.
fn new_core(config: &ClientConfig, opts: &ConnectOptions, deadline: Instant) -> Core {
    let now = crate::now();
    let wall_clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Core::connect(
        CoreConfig {
            keys: config.client_keys(),
            cipher: config.cipher,
            connect_within: deadline.saturating_duration_since(now),
            retry_interval: opts.retry_interval,
            session: opts.session.clone(),
            wall_clock,
        },
        now,
        Box::new(OsEntropy::new()),
        Arc::default(),
    )
}

/// While connecting: the verdict, if the core has come to one.
enum Connecting {
    /// Keep going.
    Pending,
    /// The session is up.
    Connected,
}

/// Reads the core's events after a step of a connect loop.
fn connect_progress(
    core: &mut Core,
    server: SocketAddr,
    transport: Transport,
) -> Result<Connecting, ConnectError> {
    while let Some(event) = core.poll_event() {
        match event {
            Event::Connected { .. } => return Ok(Connecting::Connected),
            Event::ConnectFailed(failure) => {
                return Err(ConnectError::from_failure(failure, server, transport))
            }
            // Nothing else happens before a session exists.
            other => tracing::debug!(?other, "unexpected event while connecting"),
        }
    }
    if core.is_closed() {
        // A core ends a connect with a verdict; this is a bug, not the server.
        return Err(ConnectError::Internal(
            "the connect ended without a verdict".into(),
        ));
    }
    Ok(Connecting::Pending)
}

/// An established session with the server, over either transport.
#[derive(Debug)]
pub struct Tunnel {
    link: Link,
    server: SocketAddr,
    core: Core,
    config: SessionConfig,
    session_id: u32,
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
    /// A tunnel over `link` for the established `core`.
    fn new(link: Link, server: SocketAddr, core: Core) -> Result<Self, ConnectError> {
        let (Some(config), Some(session_id)) = (core.session_config().copied(), core.session_id())
        else {
            return Err(ConnectError::Internal("connected without a session".into()));
        };
        Ok(Tunnel {
            link,
            server,
            core,
            config,
            session_id,
        })
    }

    /// Resolves the endpoint and handshakes over UDP with the default deadline
    /// (10 s) and retry interval (1 s).
    pub async fn connect(config: &ClientConfig) -> Result<Tunnel, ConnectError> {
        Self::connect_with(config, &ConnectOptions::default()).await
    }

    /// Resolves the endpoint and handshakes over `opts.transport`; see
    /// [`connect_to`](Self::connect_to).
    pub async fn connect_with(
        config: &ClientConfig,
        opts: &ConnectOptions,
    ) -> Result<Tunnel, ConnectError> {
        let server = resolve(&config.endpoint).await?;
        Self::connect_to(config, server, opts).await
    }

    /// Handshakes with `server` over `opts.transport`: the core sends a fresh
    /// initiation every `opts.retry_interval` until a response authenticates
    /// or `opts.deadline` passes (or, with responses that keep failing to
    /// authenticate, gives up early with [`ConnectError::KeyMismatch`]). Over
    /// TCP, a connection that fails or closes is replaced, with a growing
    /// pause between connections.
    ///
    /// A handshake reject from the server does not end the wait (anyone can
    /// send one), but if no session came by the deadline it is the reason
    /// given: [`ConnectError::UnknownServerKey`] or [`ConnectError::NotAuthorised`].
    ///
    /// [`TransportChoice::Auto`] falls back to TCP only when UDP got no answer
    /// at all: a server that answered with the wrong key would not do better
    /// over TCP.
    pub async fn connect_to(
        config: &ClientConfig,
        server: SocketAddr,
        opts: &ConnectOptions,
    ) -> Result<Tunnel, ConnectError> {
        let deadline = crate::now() + opts.deadline;
        match opts.transport {
            TransportChoice::Udp => udp::connect(config, server, opts, deadline).await,
            TransportChoice::Tcp => tcp::connect(config, server, opts, deadline).await,
            TransportChoice::Auto => {
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

    /// The transport the session runs over.
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
        self.session_id
    }

    /// The counters both halves update.
    pub fn stats(&self) -> &Arc<Stats> {
        self.core.stats()
    }

    /// The same tunnel counting into `stats` (so counters add up across
    /// reconnects).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Tunnel {
        self.core.set_stats(stats);
        self
    }

    /// Separates the directions, which share the core. Over UDP they share
    /// the socket; over TCP each owns its half of the connection.
    pub fn split(self) -> (TunnelSender, TunnelReceiver) {
        let stats = Arc::clone(self.core.stats());
        let core = Arc::new(Mutex::new(self.core));
        let (send, recv) = match self.link {
            Link::Udp(socket) => {
                let socket = Arc::new(socket);
                let (switch, switched) = watch::channel(Arc::clone(&socket));
                let buf = vec![0u8; MAX_FRAME_LEN].into_boxed_slice();
                (
                    SendLink::Udp(udp::UdpPath::new(Arc::clone(&socket), switch, self.server)),
                    RecvLink::Udp {
                        socket,
                        switched: Some(switched),
                        buf,
                    },
                )
            }
            Link::Tcp { reader, writer } => (SendLink::Tcp(writer), RecvLink::Tcp(reader)),
        };
        (
            TunnelSender {
                link: send,
                core: Arc::clone(&core),
                control: [0; STREAM_PREFIX_LEN + MAX_CONTROL_LEN],
                stats: Arc::clone(&stats),
            },
            TunnelReceiver {
                link: recv,
                core,
                stats,
            },
        )
    }
}

/// Locks the shared core, shrugging off poisoning: a panic while holding it
/// is a bug that ends the task anyway, and the core's state stays consistent
/// between calls.
fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resolves `host:port`, taking the first address the resolver offers.
pub async fn resolve(endpoint: &str) -> Result<SocketAddr, ConnectError> {
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

/// What a frame from the server turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<'a> {
    /// A data frame: the IP packet, decrypted in place in the receiver's buffer.
    Packet(&'a [u8]),
    /// A frame for the protocol (keepalive, probe echo, handshake answer,
    /// disconnect): see [`TunnelReceiver::poll_event`] for what it changed.
    Consumed,
    /// A frame that did not open, or did not hold a packet for us; counted in
    /// the stats and otherwise ignored.
    Dropped(Dropped),
}

/// The sending half: seals in the caller's buffer and sends; runs the core's
/// timers and sends the control frames they call for.
#[derive(Debug)]
pub struct TunnelSender {
    link: SendLink,
    core: Arc<Mutex<Core>>,
    /// Room for keepalives, disconnects and initiations (with a stream
    /// prefix), so they need no allocation either.
    control: [u8; STREAM_PREFIX_LEN + MAX_CONTROL_LEN],
    stats: Arc<Stats>,
}

#[derive(Debug)]
enum SendLink {
    Udp(udp::UdpPath),
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
            SendLink::Udp(path) => Ok(path.send(&buf[STREAM_PREFIX_LEN..end], stats).await?),
            SendLink::Tcp(writer) => tcp::transmit(writer, &mut buf[..end]).await.map(|()| true),
        }
    }
}

impl TunnelSender {
    /// Seals and sends the `len`-byte IPv4 packet at `buf[HEADROOM..]`; `buf`
    /// must have [`TAG_LEN`](ringway_proto::wire::transport::TAG_LEN) bytes
    /// to spare after it. The packet is encrypted in place and the frame's
    /// prefix and header are written in front of it, so `buf` is scratch
    /// afterwards.
    ///
    /// Over UDP a transient socket error is counted and the packet dropped
    /// (`Ok`). Over TCP this waits while the connection is backed up: the
    /// caller's reads from the TUN simply pause.
    pub async fn send_packet(&mut self, buf: &mut [u8], len: usize) -> Result<(), SendError> {
        let frame = buf
            .get_mut(STREAM_PREFIX_LEN..)
            .ok_or(Refused::BufferTooSmall)?;
        let n = lock(&self.core).seal_packet(frame, len, crate::now())?;
        if self.link.transmit(buf, n, &self.stats).await? {
            inc(&self.stats.tx.packets);
            bump(&self.stats.tx.bytes, len as u64);
        }
        Ok(())
    }

    /// Sends every control frame the core owes the server, in turn.
    pub async fn flush(&mut self) -> Result<(), SendError> {
        loop {
            let owed = lock(&self.core)
                .poll_transmit(crate::now(), &mut self.control[STREAM_PREFIX_LEN..]);
            let Some(t) = owed else { return Ok(()) };
            let sent = self
                .link
                .transmit(&mut self.control, t.len, &self.stats)
                .await?;
            if sent && t.kind == Control::Probe {
                inc(&self.stats.tx.keepalives);
            }
        }
    }

    /// Lets the core do what is due now (keepalives, rekeys, expiry), and
    /// sends what that calls for. What changed comes out of
    /// [`poll_event`](Self::poll_event).
    pub async fn handle_timeout(&mut self) -> Result<(), SendError> {
        lock(&self.core).handle_timeout(crate::now());
        self.flush().await
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to
    /// do; `None` once the session is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        lock(&self.core).poll_timeout()
    }

    /// The next thing the core has to say (the halves share one queue).
    pub fn poll_event(&self) -> Option<Event> {
        lock(&self.core).poll_event()
    }

    /// Sends a keepalive carrying an RTT probe now: the server echoes it and
    /// the core times the round trip into [`Stats`].
    pub async fn send_keepalive(&mut self) -> Result<(), SendError> {
        lock(&self.core).probe(crate::now());
        self.flush().await
    }

    /// Tells the server we are leaving, so it can free the session now rather
    /// than at its idle timeout. Best effort: UDP may lose it. The session is
    /// over afterwards.
    pub async fn send_disconnect(&mut self) -> Result<(), SendError> {
        lock(&self.core).close(crate::now());
        self.flush().await
    }

    /// Over UDP, takes a fresh socket towards the server now (new local port,
    /// and whatever local address the route offers now), keeping the session,
    /// and sends the probe the core then owes the server from there; the new
    /// local address. Over TCP, `None`: a connection cannot move.
    pub async fn rebind(&mut self) -> Result<Option<SocketAddr>, SendError> {
        let SendLink::Udp(path) = &mut self.link else {
            return Ok(None);
        };
        let Some(new) = path.rebind_now(&self.stats, &"asked to") else {
            return Ok(None);
        };
        lock(&self.core).handle_path_change(crate::now());
        self.flush().await?;
        Ok(Some(new))
    }

    /// Checks that our local address still exists. Over UDP, if it is gone,
    /// takes a fresh socket and tells the server from there. Over TCP a
    /// connection whose address is gone is dead: [`SendError::ConnectionLost`].
    pub async fn check_path(&mut self) -> Result<(), SendError> {
        let local = match &self.link {
            SendLink::Udp(path) => path.local_addr(),
            SendLink::Tcp(writer) => writer.local_addr(),
        };
        let Ok(local) = local else { return Ok(()) };
        if udp::is_local(local.ip()) {
            return Ok(());
        }
        let why = format!("local address {} is gone", local.ip());
        match &mut self.link {
            SendLink::Udp(path) => {
                if path.rebind(&self.stats, &why).is_some() {
                    lock(&self.core).handle_path_change(crate::now());
                    self.flush().await?;
                }
                Ok(())
            }
            SendLink::Tcp(_) => Err(SendError::ConnectionLost(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                why,
            ))),
        }
    }

    /// Our socket's local address now.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.link {
            SendLink::Udp(path) => path.local_addr(),
            SendLink::Tcp(writer) => writer.local_addr(),
        }
    }

    /// The transport.
    pub fn transport(&self) -> Transport {
        match self.link {
            SendLink::Udp(_) => Transport::Udp,
            SendLink::Tcp(_) => Transport::Tcp,
        }
    }

    /// The config of the session frames are sealed with (`None` once it is over).
    pub fn session_config(&self) -> Option<SessionConfig> {
        lock(&self.core).session_config().copied()
    }

    /// The id of the session frames are sealed with.
    pub fn session_id(&self) -> Option<u32> {
        lock(&self.core).session_id()
    }

    /// When a frame was last sealed (or the session began).
    pub fn last_sent(&self) -> Option<Instant> {
        lock(&self.core).last_sent()
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
    core: Arc<Mutex<Core>>,
    stats: Arc<Stats>,
}

#[derive(Debug)]
enum RecvLink {
    /// A datagram at a time into `buf` ([`MAX_FRAME_LEN`] bytes: a larger
    /// datagram arrives truncated and fails to authenticate), from whichever
    /// socket the sender uses now.
    Udp {
        socket: Arc<UdpSocket>,
        /// `None` once the sender is gone (no more switches).
        switched: Option<watch::Receiver<Arc<UdpSocket>>>,
        buf: Box<[u8]>,
    },
    Tcp(FrameReader<OwnedReadHalf>),
}

impl RecvLink {
    /// The next frame, in place in the link's buffer. Cancel-safe.
    async fn next_frame(&mut self, stats: &Stats) -> Result<&mut [u8], RecvError> {
        match self {
            RecvLink::Udp {
                socket,
                switched,
                buf,
            } => udp::recv_frame(socket, switched, buf, stats).await,
            RecvLink::Tcp(reader) => reader.next_frame().await,
        }
    }
}

impl TunnelReceiver {
    /// Waits for the next frame, lets the core open it in place and says what
    /// it was.
    ///
    /// A frame that does not open is counted and comes back as
    /// [`Received::Dropped`], never as an error: over UDP anyone can send us
    /// datagrams. An error means no more frames will come over this
    /// connection ([`RecvError::is_session_lost`] tells whose doing that was).
    ///
    /// Cancel-safe: the only await is the read from the socket, and nothing is
    /// changed before it completes, so this can sit in a `select!`.
    pub async fn recv(&mut self) -> Result<Received<'_>, RecvError> {
        let frame = self.link.next_frame(&self.stats).await?;
        let inbound = lock(&self.core).handle_frame(frame, crate::now());
        Ok(match inbound {
            Inbound::Packet(range) => Received::Packet(&frame[range]),
            Inbound::Consumed => Received::Consumed,
            Inbound::Dropped(why) => Received::Dropped(why),
        })
    }

    /// The next thing the core has to say (the halves share one queue).
    pub fn poll_event(&self) -> Option<Event> {
        lock(&self.core).poll_event()
    }

    /// When a frame last opened (or the session began).
    pub fn last_received(&self) -> Option<Instant> {
        lock(&self.core).last_received()
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
pub(crate) fn is_transient_socket_error(e: &io::Error) -> bool {
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
    ) || crate::platform::is_no_buffer_space(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        assert!(is_transient_socket_error(
            &io::ErrorKind::ConnectionRefused.into()
        ));
        assert!(is_transient_socket_error(
            &io::ErrorKind::NetworkUnreachable.into()
        ));
        assert!(!is_transient_socket_error(
            &io::ErrorKind::InvalidInput.into()
        ));
    }

    #[test]
    fn headroom_fits_prefix_and_header() {
        assert_eq!(HEADROOM, 18);
        assert_eq!(
            SEND_BUF_LEN - HEADROOM - ringway_proto::wire::transport::TAG_LEN,
            ringway_proto::wire::transport::MAX_PAYLOAD_LEN
        );
    }

    #[test]
    fn os_entropy_fills() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        OsEntropy::new().fill(&mut a).unwrap();
        OsEntropy::new().fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
