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
//!
//! A session can be replaced in place (a *rekey*): the sender sends a fresh
//! initiation on the same link, the receiver recognises the answer among the
//! transport frames, derives the new session, keeps opening with it (and with
//! the old one for stragglers), and hands the new sending half over for the
//! sender to pick up before its next frame. The two halves share only that
//! hand-over (`Shared`), so the per-packet paths take no lock: the sender
//! checks one flag.
//!
//! Over UDP a sender whose socket lost its local address (a laptop changing
//! networks) takes a fresh socket towards the same server and carries on in
//! the same session: the server follows authenticated frames to their new
//! source. The receiver switches to the new socket through a `watch` channel.

pub mod handshake;
mod stream;
mod tcp;
mod udp;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringway_proto::handshake::client::ClientHandshake;
use ringway_proto::session::{probe_id, OpenError, SealError};
use ringway_proto::wire::handshake::{RejectReason, INIT_LEN};
use ringway_proto::wire::transport::{
    peek_session_id, HEADER_LEN, MAX_FRAME_LEN, OVERHEAD, PROBE_LEN,
};
use ringway_proto::wire::{self, frame_type, FrameType, STREAM_PREFIX_LEN};
use ringway_proto::{Opener, Sealer, Session, SessionConfig};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UdpSocket;
use tokio::sync::watch;

pub use handshake::ConnectError;

use crate::config::ClientConfig;
use crate::stats::{bump, inc, Stats};
use handshake::Initiator;
use stream::FrameReader;

/// Bytes in front of a packet in a send buffer: the stream prefix and the
/// transport header (see the module doc).
pub const HEADROOM: usize = STREAM_PREFIX_LEN + HEADER_LEN;

/// A send buffer this long holds the largest packet a frame can carry, with
/// its headroom and tag.
pub const SEND_BUF_LEN: usize = STREAM_PREFIX_LEN + MAX_FRAME_LEN;

/// The largest frame the sender builds in its own buffer: an initiation, or a
/// keepalive carrying a probe.
const CONTROL_LEN: usize = if INIT_LEN > OVERHEAD + PROBE_LEN {
    INIT_LEN
} else {
    OVERHEAD + PROBE_LEN
};

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

impl Transport {
    /// `udp`, `tcp` or `auto`, as on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Auto => "auto",
        }
    }
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
    /// Makes the initiations of later rekeys (newer timestamps than this
    /// session's).
    initiator: Initiator,
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
    fn new(
        link: Link,
        server: SocketAddr,
        session: Session,
        config: SessionConfig,
        initiator: Initiator,
    ) -> Self {
        Tunnel {
            link,
            server,
            session,
            config,
            stats: Arc::default(),
            initiator,
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
    /// A handshake reject from the server does not end the wait (anyone can
    /// send one), but if no session came by the deadline it is the reason
    /// given: [`ConnectError::UnknownServerKey`] or [`ConnectError::NotAuthorised`].
    ///
    /// [`Transport::Auto`] falls back to TCP only when UDP got no answer at all:
    /// a server that answered with the wrong key would not do better over TCP.
    pub async fn connect_with(
        config: &ClientConfig,
        opts: &ConnectOptions,
    ) -> Result<Tunnel, ConnectError> {
        let server = resolve(&config.endpoint).await?;
        Self::connect_to(config, server, opts).await
    }

    /// As [`connect_with`](Self::connect_with), to an address already resolved.
    pub async fn connect_to(
        config: &ClientConfig,
        server: SocketAddr,
        opts: &ConnectOptions,
    ) -> Result<Tunnel, ConnectError> {
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

    /// The same tunnel counting into `stats` (so counters add up across
    /// reconnects).
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Tunnel {
        self.stats = stats;
        self
    }

    /// Separates the directions. Over UDP they share the socket; over TCP each
    /// owns its half of the connection. Both share the counters.
    pub fn split(self) -> (TunnelSender, TunnelReceiver) {
        let now = crate::now();
        let (sealer, opener) = self.session.split();
        let (send, recv) = match self.link {
            Link::Udp(socket) => {
                let socket = Arc::new(socket);
                let (switch, switched) = watch::channel(Arc::clone(&socket));
                let buf = vec![0u8; MAX_FRAME_LEN].into_boxed_slice();
                (
                    SendLink::Udp(UdpPath {
                        socket: Arc::clone(&socket),
                        switch,
                        server: self.server,
                        last_rebind: None,
                    }),
                    RecvLink::Udp {
                        socket,
                        switched: Some(switched),
                        buf,
                    },
                )
            }
            Link::Tcp { reader, writer } => (SendLink::Tcp(writer), RecvLink::Tcp(reader)),
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(None),
            next: Mutex::new(None),
            next_ready: AtomicBool::new(false),
            last_received: AtomicU64::new(0),
            epoch: now,
        });
        (
            TunnelSender {
                link: send,
                sealer,
                config: self.config,
                control: [0; STREAM_PREFIX_LEN + CONTROL_LEN],
                stats: Arc::clone(&self.stats),
                shared: Arc::clone(&shared),
                initiator: self.initiator,
                session_started: now,
                rekey: None,
            },
            TunnelReceiver {
                link: recv,
                opener,
                previous: None,
                stats: self.stats,
                shared,
            },
        )
    }
}

/// What the halves share: the hand-over of a rekeyed session, and when the
/// receiver last heard from the server.
#[derive(Debug)]
struct Shared {
    /// The rekey initiation in flight: set by the sender, answered in the receiver.
    pending: Mutex<Option<ClientHandshake>>,
    /// A new session's sending half and config, for the sender to pick up.
    next: Mutex<Option<(Sealer, SessionConfig)>>,
    /// Set once `next` is filled, so the sender's per-packet check is one load.
    next_ready: AtomicBool,
    /// When a frame last opened, in nanoseconds after `epoch` (0: none yet).
    last_received: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn touch(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.epoch).as_nanos();
        self.last_received
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn last_received(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.last_received.load(Ordering::Relaxed))
    }
}

/// Locks, shrugging off poisoning: the data is a hand-over slot, valid whatever
/// a panicking holder was doing.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    /// The TCP connection failed (reset, timed out, closed by the server), or
    /// its local address went away.
    #[error("the connection to the server was lost: {0}")]
    ConnectionLost(io::Error),
    /// A rekey's initiation could not be made (our side: no randomness).
    #[error("cannot start a rekey: {0}")]
    Initiate(String),
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
    /// A rekey completed: frames now open (and, from the sender's next frame,
    /// are sealed) with the new session.
    Rekeyed {
        /// The new session's id.
        session_id: u32,
        /// What the server assigned this time (usually as before).
        config: SessionConfig,
    },
    /// The server refused our rekey initiation. Unauthenticated, so only a
    /// hint: the pending rekey stays open for a genuine answer.
    Rejected(RejectReason),
    /// A frame that did not open (malformed, another session's, replayed or
    /// forged, or a handshake answer nothing was waiting for); it is counted
    /// in the stats and otherwise ignored.
    Dropped(OpenError),
}

/// The sending half: seals in the caller's buffer and sends.
#[derive(Debug)]
pub struct TunnelSender {
    link: SendLink,
    sealer: Sealer,
    config: SessionConfig,
    /// Room for keepalives, disconnects and initiations (with a stream
    /// prefix), so they need no allocation either.
    control: [u8; STREAM_PREFIX_LEN + CONTROL_LEN],
    stats: Arc<Stats>,
    shared: Arc<Shared>,
    initiator: Initiator,
    session_started: Instant,
    rekey: Option<RekeyAttempt>,
}

/// A rekey under way: when it began, and how many initiations went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyAttempt {
    /// When the first initiation of this rekey went out.
    pub started: Instant,
    /// When the latest went out.
    pub last_sent: Instant,
    /// How many went out.
    pub initiations: u32,
}

#[derive(Debug)]
enum SendLink {
    Udp(UdpPath),
    Tcp(OwnedWriteHalf),
}

/// The sender's UDP socket, replaceable when the local address goes away.
#[derive(Debug)]
struct UdpPath {
    socket: Arc<UdpSocket>,
    /// Tells the receiver about a new socket.
    switch: watch::Sender<Arc<UdpSocket>>,
    server: SocketAddr,
    last_rebind: Option<Instant>,
}

/// At most one fresh socket this often, however many sends fail.
const REBIND_EVERY: Duration = Duration::from_secs(1);

impl UdpPath {
    /// Sends one datagram; `Ok(false)` if a transient error dropped it. An
    /// error that says our address is gone takes a fresh socket (at most once
    /// a [`REBIND_EVERY`]) and tries once more on it.
    async fn send(&mut self, frame: &[u8], stats: &Stats) -> io::Result<bool> {
        let e = match self.socket.send(frame).await {
            Ok(_) => return Ok(true),
            Err(e) => e,
        };
        if udp::wants_new_socket(&e) && self.rebind(stats, &e).is_some() {
            match self.socket.send(frame).await {
                Ok(_) => return Ok(true),
                Err(e2) if is_transient(&e2) || udp::wants_new_socket(&e2) => {}
                Err(e2) => return Err(e2),
            }
        } else if !is_transient(&e) && !udp::wants_new_socket(&e) {
            return Err(e);
        }
        inc(&stats.tx.send_errors);
        tracing::trace!(error = %e, "dropped a frame on a transient send error");
        Ok(false)
    }

    /// Takes a fresh socket towards the server unless one was taken within
    /// [`REBIND_EVERY`]; the new local address, if one was taken.
    fn rebind(&mut self, stats: &Stats, why: &dyn fmt::Display) -> Option<SocketAddr> {
        let now = crate::now();
        if self.last_rebind.is_some_and(|t| now < t + REBIND_EVERY) {
            return None;
        }
        self.last_rebind = Some(now);
        let old = self.socket.local_addr().ok();
        match udp::connected_socket(self.server) {
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
    /// Seals and sends the `len`-byte packet at `buf[HEADROOM..]`; `buf` must
    /// have [`TAG_LEN`](ringway_proto::wire::transport::TAG_LEN) bytes to spare
    /// after it. The packet is encrypted in place and the frame's prefix and
    /// header are written in front of it, so `buf` is scratch afterwards.
    ///
    /// Over UDP a transient socket error is counted and the packet dropped
    /// (`Ok`). Over TCP this waits while the connection is backed up: the
    /// caller's reads from the TUN simply pause.
    pub async fn send_packet(&mut self, buf: &mut [u8], len: usize) -> Result<(), SendError> {
        self.poll_rekey();
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

    /// Sends a keepalive, telling the server we are here though idle. It
    /// carries a probe: the server echoes it, and the receiver times the
    /// round trip into [`Stats::rtt`].
    pub async fn send_keepalive(&mut self) -> Result<(), SendError> {
        self.poll_rekey();
        let now = crate::now();
        let probe = self.stats.with_rtt(|rtt| rtt.start_probe(now));
        let n = self
            .sealer
            .seal_probe(&mut self.control[STREAM_PREFIX_LEN..], probe, now)?;
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
        self.poll_rekey();
        let n = self
            .sealer
            .seal_disconnect(&mut self.control[STREAM_PREFIX_LEN..], crate::now())?;
        self.link
            .transmit(&mut self.control, n, &self.stats)
            .await?;
        Ok(())
    }

    /// Starts (or retries) a rekey: sends a fresh initiation on this link.
    /// The receiver completes it when the answer comes, and this half picks
    /// the new session up before its next frame ([`poll_rekey`](Self::poll_rekey)).
    /// Until then the current session carries on.
    pub async fn start_rekey(&mut self) -> Result<(), SendError> {
        let now = crate::now();
        let out: &mut [u8; INIT_LEN] = (&mut self.control
            [STREAM_PREFIX_LEN..STREAM_PREFIX_LEN + INIT_LEN])
            .try_into()
            .map_err(|_| SendError::Initiate("initiation buffer mis-sized".into()))?;
        let hs = self
            .initiator
            .initiate(out)
            .map_err(|e| SendError::Initiate(e.to_string()))?;
        tracing::debug!(
            sender_index = hs.sender_index(),
            "sending a rekey initiation"
        );
        *lock(&self.shared.pending) = Some(hs);
        self.rekey = Some(match self.rekey {
            Some(r) => RekeyAttempt {
                last_sent: now,
                initiations: r.initiations + 1,
                ..r
            },
            None => RekeyAttempt {
                started: now,
                last_sent: now,
                initiations: 1,
            },
        });
        self.link
            .transmit(&mut self.control, INIT_LEN, &self.stats)
            .await?;
        Ok(())
    }

    /// Picks up the session a completed rekey made, if there is one waiting,
    /// and returns its config. Called before every frame, so callers need it
    /// only to learn of the change.
    pub fn poll_rekey(&mut self) -> Option<SessionConfig> {
        if !self.shared.next_ready.load(Ordering::Acquire) {
            return None;
        }
        self.shared.next_ready.store(false, Ordering::Relaxed);
        let (sealer, config) = lock(&self.shared.next).take()?;
        self.sealer = sealer;
        self.config = config;
        self.session_started = crate::now();
        self.rekey = None;
        Some(config)
    }

    /// The rekey under way, if any.
    pub fn rekey_in_progress(&self) -> Option<RekeyAttempt> {
        self.rekey
    }

    /// Over UDP, takes a fresh socket towards the server now (new local port,
    /// and whatever local address the route offers now), keeping the session;
    /// the new local address. Over TCP, `None`: a connection cannot move.
    pub fn rebind(&mut self) -> Option<SocketAddr> {
        match &mut self.link {
            SendLink::Udp(path) => {
                path.last_rebind = None;
                path.rebind(&self.stats, &"asked to")
            }
            SendLink::Tcp(_) => None,
        }
    }

    /// Checks that our local address still exists. Over UDP, if it is gone,
    /// takes a fresh socket and returns `Ok(true)` (send something soon, so
    /// the server learns the new address). Over TCP a connection whose
    /// address is gone is dead: [`SendError::ConnectionLost`].
    pub fn check_path(&mut self) -> Result<bool, SendError> {
        let local = match &self.link {
            SendLink::Udp(path) => path.socket.local_addr(),
            SendLink::Tcp(writer) => writer.local_addr(),
        };
        let Ok(local) = local else { return Ok(false) };
        if udp::is_local(local.ip()) {
            return Ok(false);
        }
        let why = format!("local address {} is gone", local.ip());
        match &mut self.link {
            SendLink::Udp(path) => Ok(path.rebind(&self.stats, &why).is_some()),
            SendLink::Tcp(_) => Err(SendError::ConnectionLost(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                why,
            ))),
        }
    }

    /// Our socket's local address now.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.link {
            SendLink::Udp(path) => path.socket.local_addr(),
            SendLink::Tcp(writer) => writer.local_addr(),
        }
    }

    /// The transport: [`Transport::Udp`] or [`Transport::Tcp`].
    pub fn transport(&self) -> Transport {
        match self.link {
            SendLink::Udp(_) => Transport::Udp,
            SendLink::Tcp(_) => Transport::Tcp,
        }
    }

    /// The config of the session frames are sealed with.
    pub fn session_config(&self) -> &SessionConfig {
        &self.config
    }

    /// The id of the session frames are sealed with.
    pub fn session_id(&self) -> u32 {
        self.sealer.session_id()
    }

    /// When the current session began (its handshake, or the rekey that made it).
    pub fn session_started(&self) -> Instant {
        self.session_started
    }

    /// When a frame was last sealed (or the session began).
    pub fn last_sent(&self) -> Instant {
        self.sealer.last_sent()
    }

    /// When the receiving half last opened a frame (or the session began).
    pub fn last_received(&self) -> Instant {
        self.shared.last_received()
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
    /// The session before the last rekey, for frames sent before the switch.
    previous: Option<Opener>,
    stats: Arc<Stats>,
    shared: Arc<Shared>,
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
    /// Waits for the next frame, opens it in place and says what it was.
    ///
    /// A frame that does not open is counted and comes back as
    /// [`Event::Dropped`], never as an error: over UDP anyone can send us
    /// datagrams. An error means no more frames will come over this
    /// connection ([`RecvError::is_session_lost`] tells whose doing that was).
    ///
    /// The answer to a rekey the sender started completes it here
    /// ([`Event::Rekeyed`]); a keepalive echoing a probe becomes an RTT sample.
    ///
    /// Cancel-safe: the only await is the read from the socket, and nothing is
    /// changed before it completes, so this can sit in a `select!`.
    pub async fn recv(&mut self) -> Result<Event<'_>, RecvError> {
        let TunnelReceiver {
            link,
            opener,
            previous,
            stats,
            shared,
        } = self;
        let frame = link.next_frame(stats).await?;
        let rx = &stats.rx;
        let now = crate::now();
        match frame_type(frame) {
            Ok(FrameType::HandshakeResp) => {
                return Ok(complete_rekey(frame, opener, previous, stats, shared, now))
            }
            Ok(FrameType::HandshakeReject) => return Ok(rekey_rejected(frame, stats, shared)),
            _ => {}
        }
        // The old session's frames still in flight open with the old keys
        // (a server reusing the id gets the new ones).
        let opener = match previous {
            Some(p)
                if p.session_id() != opener.session_id()
                    && peek_session_id(frame) == Some(p.session_id()) =>
            {
                p
            }
            _ => opener,
        };
        let opened = match opener.open(frame, now) {
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
        shared.touch(now);
        Ok(match opened.kind {
            FrameType::Data => {
                let packet = &frame[opened.payload];
                inc(&rx.packets);
                bump(&rx.bytes, packet.len() as u64);
                Event::Packet(packet)
            }
            FrameType::Keepalive => {
                inc(&rx.keepalives);
                if let Some(id) = probe_id(&frame[opened.payload]) {
                    if let Some(rtt) = stats.with_rtt(|r| r.on_echo(id, now)) {
                        tracing::trace!(?rtt, "probe echoed");
                    }
                }
                Event::Keepalive
            }
            FrameType::Disconnect => Event::Disconnected,
            // `open` accepts transport frames only.
            FrameType::HandshakeInit | FrameType::HandshakeResp | FrameType::HandshakeReject => {
                inc(&rx.dropped_malformed);
                Event::Dropped(OpenError::Malformed(wire::Error::InvalidField))
            }
        })
    }

    /// When a frame last opened (or the session began).
    pub fn last_received(&self) -> std::time::Instant {
        self.opener.last_received()
    }

    /// The id of the session frames open with.
    pub fn session_id(&self) -> u32 {
        self.opener.session_id()
    }

    /// The counters this half updates.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }
}

/// A handshake response: if it answers the pending rekey, the new session
/// takes over (opening here now; the sealer waits for the sender).
fn complete_rekey<'a>(
    frame: &[u8],
    opener: &mut Opener,
    previous: &mut Option<Opener>,
    stats: &Stats,
    shared: &Shared,
    now: Instant,
) -> Event<'a> {
    let stray = || {
        inc(&stats.rx.dropped_malformed);
        Event::Dropped(OpenError::Malformed(wire::Error::InvalidField))
    };
    let Some(hs) = lock(&shared.pending).take_if(|hs| hs.is_response_to_me(frame)) else {
        return stray();
    };
    match hs.handle_response(frame, now) {
        Ok((session, config)) => {
            let session_id = session.id();
            let (sealer, new_opener) = session.split();
            *previous = Some(std::mem::replace(opener, new_opener));
            *lock(&shared.next) = Some((sealer, config));
            shared.next_ready.store(true, Ordering::Release);
            shared.touch(now);
            tracing::debug!(session_id, "rekeyed");
            Event::Rekeyed { session_id, config }
        }
        Err(e) => {
            // The sender tries again with a fresh initiation.
            inc(&stats.rx.dropped_auth);
            tracing::warn!(error = %e, "the answer to our rekey did not hold up");
            Event::Dropped(OpenError::Auth)
        }
    }
}

/// A handshake reject: a hint if it answers the pending rekey, a stray otherwise.
fn rekey_rejected<'a>(frame: &[u8], stats: &Stats, shared: &Shared) -> Event<'a> {
    let reason = lock(&shared.pending)
        .as_ref()
        .and_then(|hs| hs.reject_reason(frame));
    match reason {
        Some(reason) => {
            inc(&stats.rx.rejects);
            Event::Rejected(reason)
        }
        None => {
            inc(&stats.rx.dropped_malformed);
            Event::Dropped(OpenError::Malformed(wire::Error::InvalidField))
        }
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
    ) || crate::platform::is_no_buffer_space(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        assert!(is_transient(&io::ErrorKind::ConnectionRefused.into()));
        assert!(is_transient(&io::ErrorKind::NetworkUnreachable.into()));
        assert!(!is_transient(&io::ErrorKind::InvalidInput.into()));
    }

    #[test]
    fn only_oversized_packets_are_survivable() {
        assert!(!SendError::Seal(SealError::PayloadTooLarge).is_fatal());
        assert!(SendError::Seal(SealError::CounterExhausted).is_fatal());
        assert!(SendError::Io(io::ErrorKind::InvalidInput.into()).is_fatal());
        assert!(SendError::ConnectionLost(io::ErrorKind::BrokenPipe.into()).is_fatal());
        assert!(SendError::Initiate("x".into()).is_fatal());
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
