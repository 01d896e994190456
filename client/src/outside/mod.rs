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
//!
//! # Batches
//!
//! A TUN with offload hands the driver superpackets, which it cuts into
//! packets at a fixed stride in one buffer ([`ringway_offload::split`], with
//! [`TunnelSender::segment_layout`]); [`TunnelSender::send_segments`] seals
//! them all under one lock and sends them with one `UDP_SEGMENT` sendmsg per
//! chunk the kernel allows (over TCP: one write of every prefixed frame).
//! The other way, [`TunnelReceiver::recv_batch`] takes everything one receive
//! brought (a GRO aggregate and more, or every whole frame a 64 KiB stream
//! read holds), opens it all in place under one lock and hands back where the
//! packets lie:
//!
//! ```text
//!  UDP split:  | hdr | packet 0 | tag | hdr | packet 1 | tag | ... | hdr | last | tag |
//!              |<------ stride ------>|        one sendmsg, UDP_SEGMENT = stride
//!  TCP split:  | len | hdr | packet 0 | tag | len | hdr | packet 1 | tag | ...  one write
//! ```

mod error;
mod stream;
mod tcp;
mod udp;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ringway_offload::{Layout, Segments};
use ringway_proto::wire::transport::{HEADER_LEN, MAX_FRAME_LEN, OVERHEAD, TAG_LEN};
use ringway_proto::wire::STREAM_PREFIX_LEN;
use ringway_proto::{Entropy, EntropyError, SessionConfig};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

pub use error::{ConnectError, RecvError, SendError};
pub use udp::UdpOffload;

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

/// Most frames [`TunnelReceiver::recv_batch`] opens per call. A receive holds
/// at most this many over UDP (eight 64 KiB GRO aggregates of 1452-byte
/// frames hold 360); a 64 KiB stream read of tiny frames may hold more, which
/// wait for the next call.
pub const MAX_RECV_BATCH: usize = 512;

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
    /// Over UDP, let the kernel batch datagrams where it can (Linux: `UDP_SEGMENT`
    /// sends and `UDP_GRO` receives through quinn-udp, several receives per call);
    /// `false` is one datagram per system call (`ringway up --offload off`).
    pub udp_offload: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            transport: TransportChoice::Udp,
            deadline: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
            auto_udp_for: Duration::from_secs(3),
            session: SessionOptions::default(),
            udp_offload: true,
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
    Udp(udp::PathSocket),
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
    /// or `opts.deadline` passes (responses that fail to authenticate do not
    /// end it early: anyone on the path could forge them). Over
    /// TCP, a connection that fails or closes is replaced, with a growing
    /// pause between connections.
    ///
    /// A handshake reject from the server does not end the wait (anyone can
    /// send one), but if no session came by the deadline it is the reason
    /// given: [`ConnectError::UnknownServerKey`] or [`ConnectError::NotAuthorised`].
    ///
    /// [`TransportChoice::Auto`] falls back to TCP whenever UDP got no
    /// authenticated answer: silence, rejects and failing responses can all be
    /// forged by whoever blocks UDP. If TCP gets no answer either, the UDP
    /// failure (the more specific one) is reported.
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
                    Err(e) if e.is_unauthenticated() => {
                        tracing::info!(
                            %server,
                            "no authenticated answer over UDP within {udp_for:?} ({e}); trying TCP"
                        );
                        match tcp::connect(config, server, opts, deadline).await {
                            Err(ConnectError::Unreachable { .. }) => Err(e),
                            other => other,
                        }
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
            Link::Udp(socket) => socket.socket().local_addr(),
            Link::Tcp { writer, .. } => writer.local_addr(),
        }
    }

    /// Over UDP, what the socket batches (GSO segments per send, GRO); `None` over TCP.
    pub fn udp_offload(&self) -> Option<UdpOffload> {
        match &self.link {
            Link::Udp(socket) => Some(socket.offload()),
            Link::Tcp { .. } => None,
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
                // Offload asked for: room for a recvmmsg of GRO aggregates, also on
                // any fresh socket a rebind brings.
                let offload = socket.batches_receives();
                let socket = Arc::new(socket);
                let (switch, switched) = watch::channel(Arc::clone(&socket));
                let buf_len = if offload {
                    udp::RECV_SLOTS * udp::RECV_SLOT_LEN
                } else {
                    MAX_FRAME_LEN
                };
                (
                    SendLink::Udp(udp::UdpPath::new(
                        Arc::clone(&socket),
                        switch,
                        self.server,
                        offload,
                    )),
                    RecvLink::Udp {
                        socket,
                        switched: Some(switched),
                        buf: vec![0u8; buf_len].into_boxed_slice(),
                        frames: Vec::with_capacity(MAX_RECV_BATCH),
                        next: 0,
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
                packets: Vec::with_capacity(MAX_RECV_BATCH),
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
            SendLink::Tcp(writer) => {
                tcp::transmit(writer, &mut buf[..end]).await?;
                inc(&stats.tx.tcp_writes);
                inc(&stats.tx.tcp_frames);
                Ok(true)
            }
        }
    }
}

impl TunnelSender {
    /// Seals and sends the `len`-byte IPv4 packet at `buf[HEADROOM..]`; `buf`
    /// must have [`TAG_LEN`] bytes
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

    /// Where [`send_segments`](Self::send_segments) wants a split superpacket's
    /// packets: the transport header (and over TCP the length prefix) in front of
    /// each, the tag behind, no packet longer than `max_packet_len`.
    pub fn segment_layout(&self, max_packet_len: usize) -> Layout {
        let headroom = match self.link {
            SendLink::Udp(_) => HEADER_LEN,
            SendLink::Tcp(_) => HEADROOM,
        };
        Layout {
            headroom,
            tailroom: TAG_LEN,
            max_packet_len,
        }
    }

    /// Seals every packet [`ringway_offload::split`] wrote into `out` (with
    /// [`segment_layout`](Self::segment_layout)) under one lock of the core, and
    /// sends them: over UDP the sealed frames lie back to back at the split's
    /// stride, so they go out with one `UDP_SEGMENT` sendmsg per chunk the kernel
    /// takes (one datagram per call without GSO); over TCP each frame's prefix
    /// goes into the room in front of it and all of them out in one write.
    ///
    /// Packets sealed before one is refused are still sent; the refusal is the
    /// error (the rest are dropped). `out` is scratch afterwards.
    pub async fn send_segments(
        &mut self,
        out: &mut [u8],
        segs: &Segments,
    ) -> Result<(), SendError> {
        let stride = segs.stride();
        let (mut sealed, mut inner_bytes) = (0usize, 0u64);
        let mut end = 0;
        let mut refused = None;
        {
            let mut core = lock(&self.core);
            let now = crate::now();
            for packet in segs.packets() {
                let (Some(start), Some(frame_end)) = (
                    packet.start.checked_sub(HEADER_LEN),
                    packet.end.checked_add(TAG_LEN),
                ) else {
                    refused = Some(Refused::BufferTooSmall);
                    break;
                };
                let Some(frame) = out.get_mut(start..frame_end) else {
                    refused = Some(Refused::BufferTooSmall);
                    break;
                };
                match core.seal_packet(frame, packet.len(), now) {
                    Ok(n) => {
                        debug_assert_eq!(
                            n,
                            frame_end - start,
                            "a data frame is header, packet, tag"
                        );
                        sealed += 1;
                        inner_bytes += packet.len() as u64;
                        end = frame_end;
                    }
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
        }
        if sealed > 0 {
            match &mut self.link {
                SendLink::Udp(path) => {
                    let (frames, bytes) =
                        path.send_frames(&out[..end], stride, &self.stats).await?;
                    bump(&self.stats.tx.packets, frames as u64);
                    bump(
                        &self.stats.tx.bytes,
                        (bytes as u64).saturating_sub((frames * OVERHEAD) as u64),
                    );
                }
                SendLink::Tcp(writer) => {
                    for i in 0..sealed {
                        let at = i * stride;
                        let frame_len = if i + 1 == sealed {
                            end - at - STREAM_PREFIX_LEN
                        } else {
                            stride - STREAM_PREFIX_LEN
                        };
                        let prefix = ringway_proto::wire::stream::encode_prefix(frame_len)
                            .map_err(|_| Refused::TooLarge)?;
                        out[at..at + STREAM_PREFIX_LEN].copy_from_slice(&prefix);
                    }
                    tcp::write_frames(writer, &out[..end]).await?;
                    inc(&self.stats.tx.tcp_writes);
                    bump(&self.stats.tx.tcp_frames, sealed as u64);
                    bump(&self.stats.tx.packets, sealed as u64);
                    bump(&self.stats.tx.bytes, inner_bytes);
                }
            }
        }
        match refused {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Over UDP, what the socket batches now; `None` over TCP.
    pub fn udp_offload(&self) -> Option<UdpOffload> {
        match &self.link {
            SendLink::Udp(path) => Some(path.offload()),
            SendLink::Tcp(_) => None,
        }
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
    /// Where the last batch's packets lie (allocated once).
    packets: Vec<Range<usize>>,
}

#[derive(Debug)]
enum RecvLink {
    /// Datagrams into `buf`, from whichever socket the sender uses now: one
    /// per receive ([`MAX_FRAME_LEN`] bytes: a larger datagram arrives
    /// truncated and fails to authenticate), or with offload up to
    /// [`udp::RECV_SLOTS`] receives of up to 64 KiB each. `frames` says where
    /// the datagrams of the last receive lie; `next` is the first not yet
    /// handed out.
    Udp {
        socket: Arc<udp::PathSocket>,
        /// `None` once the sender is gone (no more switches).
        switched: Option<watch::Receiver<Arc<udp::PathSocket>>>,
        buf: Box<[u8]>,
        frames: Vec<Range<usize>>,
        next: usize,
    },
    Tcp(FrameReader<OwnedReadHalf>),
}

impl RecvLink {
    /// Up to `max` frames (at least one), in place in the link's buffer: what
    /// is left of the last receive, or what the next one brings. Cancel-safe.
    async fn next_frames(
        &mut self,
        max: usize,
        stats: &Stats,
    ) -> Result<(&mut [u8], &[Range<usize>]), RecvError> {
        match self {
            RecvLink::Udp {
                socket,
                switched,
                buf,
                frames,
                next,
            } => {
                while *next >= frames.len() {
                    frames.clear();
                    *next = 0;
                    udp::recv_frames(socket, switched, buf, frames, stats).await?;
                }
                let start = *next;
                *next = frames.len().min(start + max.max(1));
                Ok((&mut buf[..], &frames[start..*next]))
            }
            RecvLink::Tcp(reader) => {
                let (buf, frames) = reader.next_frames(max, stats).await?;
                Ok((buf, frames))
            }
        }
    }
}

/// What one [`TunnelReceiver::recv_batch`] brought: the packets among the
/// frames, decrypted in place in the receiver's buffer.
///
/// Each packet lies behind its frame's transport header, so the
/// [`PACKET_HEADROOM`] bytes in front of it are free (a TUN writer puts the
/// `virtio_net_hdr` there and writes from it).
#[derive(Debug)]
pub struct ReceivedBatch<'a> {
    buf: &'a mut [u8],
    packets: &'a [Range<usize>],
    consumed: bool,
    frames: usize,
}

/// Scratch bytes in front of every packet of a [`ReceivedBatch`]: its frame's
/// transport header, consumed once the frame opened.
pub const PACKET_HEADROOM: usize = HEADER_LEN;

impl<'a> ReceivedBatch<'a> {
    /// Where the packets lie in the receive buffer, in arrival order.
    pub fn packets(&self) -> &[Range<usize>] {
        self.packets
    }

    /// Packet `i`.
    pub fn packet(&self, i: usize) -> Option<&[u8]> {
        self.packets.get(i).and_then(|r| self.buf.get(r.clone()))
    }

    /// Whether a frame for the protocol arrived (a keepalive or probe echo, a
    /// handshake answer, a disconnect): see [`TunnelReceiver::poll_event`].
    pub fn consumed(&self) -> bool {
        self.consumed
    }

    /// Frames received in this batch, whatever they were.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The buffer and the packets' ranges in it, for writing them out (the
    /// [`PACKET_HEADROOM`] in front of each may be overwritten).
    pub fn into_parts(self) -> (&'a mut [u8], &'a [Range<usize>]) {
        (self.buf, self.packets)
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
        let (buf, frames) = self.link.next_frames(1, &self.stats).await?;
        let Some(range) = frames.first().cloned() else {
            return Err(RecvError::Corrupt(ringway_proto::wire::Error::Truncated));
        };
        let frame = &mut buf[range];
        let inbound = lock(&self.core).handle_frame(frame, crate::now());
        Ok(match inbound {
            Inbound::Packet(range) => Received::Packet(&frame[range]),
            Inbound::Consumed => Received::Consumed,
            Inbound::Dropped(why) => Received::Dropped(why),
        })
    }

    /// Waits for frames, then opens everything the receive brought (up to
    /// [`MAX_RECV_BATCH`] frames) in place under one lock of the core, and says
    /// where the packets lie. Frames that do not open are counted and left out;
    /// whether any was for the protocol is [`ReceivedBatch::consumed`].
    ///
    /// Cancel-safe, as [`recv`](Self::recv) is.
    pub async fn recv_batch(&mut self) -> Result<ReceivedBatch<'_>, RecvError> {
        let (buf, frames) = self.link.next_frames(MAX_RECV_BATCH, &self.stats).await?;
        self.packets.clear();
        let mut consumed = false;
        {
            let mut core = lock(&self.core);
            let now = crate::now();
            for frame in frames {
                match core.handle_frame(&mut buf[frame.clone()], now) {
                    Inbound::Packet(p) => {
                        self.packets
                            .push(frame.start + p.start..frame.start + p.end);
                    }
                    Inbound::Consumed => consumed = true,
                    Inbound::Dropped(_) => {}
                }
            }
        }
        Ok(ReceivedBatch {
            buf,
            packets: &self.packets,
            consumed,
            frames: frames.len(),
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
