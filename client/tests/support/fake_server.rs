//! The server's real session layer behind a loopback UDP socket and TCP
//! listener, so the client's tokio side (sockets, stream framing, the driver,
//! reconnects) is tested against the real protocol without root, a TUN or
//! the io_uring driver.
//!
//! The protocol is all `Sessions`': handshakes, rejects, sealing, opening,
//! probe echoes, keepalives, expiry. What this adds is the I/O a test wants
//! to control: it echoes data packets back (a ping responder behind the
//! server, sealed by `Sessions` as if read from its TUN), can write TCP in odd
//! chunk sizes, drop connections mid-handshake, send raw bytes, packets,
//! bursts and disconnects on command, go silent, or stop and restart on the
//! same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ringway_proto::wire::stream::encode_prefix;
use ringway_proto::wire::transport::{HEADER_LEN, MAX_FRAME_LEN, OVERHEAD, PROBE_LEN, TAG_LEN};
use ringway_proto::wire::{frame_type, FrameAssembler, FrameType};
use ringway_server::config::Settings;
use ringway_server::sessions::{
    ConnId, InsideAction, Outside, OutsideAction, Sessions, TimerOutput,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::sleep_until;

use super::{echoed, server_settings, Ids};

/// How the fake server behaves.
#[derive(Debug)]
pub struct Options {
    /// The server's config: peers, timers, pool.
    pub settings: Settings,
    /// Echo data packets back.
    pub echo: bool,
    /// Listen on UDP too (TCP is always on, on the same port).
    pub udp: bool,
    /// Write what there is to send on a TCP connection in chunks of these
    /// sizes (cycling), yielding between chunks so the client sees them in
    /// separate reads; empty: in one write. Frames waiting together are always
    /// written together, so a burst arrives packed.
    pub tcp_chunks: &'static [usize],
    /// Close this many TCP connections, one per initiation, before answering
    /// one: the server dropping the client mid-handshake.
    pub tcp_drop_on_init: u64,
    /// A packet sent right behind the handshake response (over TCP, in the
    /// same write).
    pub greeting: Option<Vec<u8>>,
    /// Send the rejects `Sessions` makes (the real server does).
    pub rejects: bool,
    /// Answer every initiation over UDP with this reject instead (what an attacker who
    /// blocks UDP can send), never with a session.
    pub udp_reject: Option<ringway_proto::wire::handshake::RejectReason>,
    /// After the handshake, send nothing of its own: no keepalives, no probe
    /// echoes, no echoed packets (a server whose answers are all lost).
    pub mute: bool,
    /// Batch UDP as an offloading server does (Linux): `UDP_GRO` on its socket,
    /// so a client's `UDP_SEGMENT` send arrives as one receive that it splits by
    /// the stride, and [`FakeServer::send_gso_burst`] sends with `UDP_SEGMENT`.
    pub gso: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            settings: server_settings(25, 180),
            echo: true,
            udp: true,
            tcp_chunks: &[],
            tcp_drop_on_init: 0,
            greeting: None,
            rejects: true,
            udp_reject: None,
            mute: false,
            gso: false,
        }
    }
}

impl Options {
    /// The default server with these keepalive and idle timers.
    pub fn with_timers(keepalive_secs: u16, idle_timeout_secs: u16) -> Self {
        Options {
            settings: server_settings(keepalive_secs, idle_timeout_secs),
            ..Options::default()
        }
    }
}

/// What the fake server saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub inits: AtomicU64,
    /// Handshakes `Sessions` accepted.
    pub accepted: AtomicU64,
    /// Initiations refused as not newer than the last.
    pub stale_timestamps: AtomicU64,
    /// Data packets that reached the server's inside.
    pub data: AtomicU64,
    /// Authenticated keepalives (each a probe, from this client).
    pub keepalives: AtomicU64,
    pub probes: AtomicU64,
    /// Sessions the client ended with a disconnect.
    pub disconnects: AtomicU64,
    /// Frames `Sessions` dropped as malformed, forged or replayed.
    pub bad_frames: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub rejects: AtomicU64,
    /// Frames for a session it does not have (sealed with old keys).
    pub unknown_session: AtomicU64,
    /// Where the last authenticated UDP frame came from.
    pub last_udp_from: Mutex<Option<SocketAddr>>,
}

enum Command {
    /// One frame's bytes as they are (over TCP with a prefix in front).
    Raw(Vec<u8>),
    /// Bytes written to the TCP connection as they are, prefix or not.
    RawStream(Vec<u8>),
    Packet(Vec<u8>),
    /// Seal a packet and send the same frame twice.
    PacketTwice(Vec<u8>),
    /// Seal packets and send them at once: over TCP, in one write.
    Burst(Vec<Vec<u8>>),
    Disconnect,
    /// Close the session's TCP connection.
    CloseTcp,
    /// Seal packets (all as long as the first, the last possibly shorter) and
    /// send them over UDP with one `UDP_SEGMENT` sendmsg.
    GsoBurst(Vec<Vec<u8>>),
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    /// While set, the server ignores everything it receives and sends nothing
    /// of its own: a server that went away.
    pub silent: Arc<AtomicBool>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Listens on TCP (and UDP, unless told not to) on one loopback port.
    pub async fn start(opts: Options) -> FakeServer {
        loop {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let udp = if opts.udp {
                match UdpSocket::bind(addr).await {
                    Ok(udp) => Some(udp),
                    Err(_) => continue, // the UDP port is taken: try another
                }
            } else {
                None
            };
            return Self::serve_on(listener, udp, opts);
        }
    }

    /// Listens on `addr` (a restart on the same port).
    pub async fn start_on(addr: SocketAddr, opts: Options) -> FakeServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let udp = if opts.udp {
            Some(UdpSocket::bind(addr).await.unwrap())
        } else {
            None
        };
        Self::serve_on(listener, udp, opts)
    }

    fn serve_on(listener: TcpListener, udp: Option<UdpSocket>, opts: Options) -> FakeServer {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let silent = Arc::new(AtomicBool::new(false));
        let (commands, rx) = mpsc::unbounded_channel();
        let gso = match (&udp, opts.gso) {
            (Some(socket), true) => Some(Gso::new(socket)),
            _ => None,
        };
        let state = State {
            gso,
            sessions: Sessions::new(&opts.settings),
            ids: Ids::default(),
            opts,
            seen: Arc::clone(&seen),
            silent: Arc::clone(&silent),
            udp,
            conns: HashMap::new(),
            dropped_on_init: 0,
            client: None,
            next_timer: None,
        };
        let task = tokio::spawn(serve(state, listener, rx));
        FakeServer {
            addr,
            seen,
            silent,
            commands,
            task,
        }
    }

    /// Stops the server and waits until its sockets are closed, so a new one
    /// can start on the same port: a server restart.
    pub async fn stop(mut self) -> SocketAddr {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.addr
    }

    /// Makes the server ignore everything (or listen again).
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Relaxed);
    }

    /// Sends raw bytes to the client as one frame.
    pub fn send_raw(&self, frame: Vec<u8>) {
        let _ = self.commands.send(Command::Raw(frame));
    }

    /// Writes bytes to the client's TCP connection as they are.
    pub fn send_raw_stream(&self, bytes: Vec<u8>) {
        let _ = self.commands.send(Command::RawStream(bytes));
    }

    /// Seals `packet` in the session (as read from the server's TUN) and sends it.
    pub fn send_packet(&self, packet: Vec<u8>) {
        let _ = self.commands.send(Command::Packet(packet));
    }

    /// Seals `packet` once and sends the frame twice (a replay).
    pub fn send_packet_twice(&self, packet: Vec<u8>) {
        let _ = self.commands.send(Command::PacketTwice(packet));
    }

    /// Seals `packets` and sends them over UDP as one `UDP_SEGMENT` sendmsg
    /// (needs [`Options::gso`]); all but the last must be as long as the first.
    pub fn send_gso_burst(&self, packets: Vec<Vec<u8>>) {
        let _ = self.commands.send(Command::GsoBurst(packets));
    }

    /// Seals `packets` and sends them at once: over TCP, packed in one write.
    pub fn send_burst(&self, packets: Vec<Vec<u8>>) {
        let _ = self.commands.send(Command::Burst(packets));
    }

    /// Ends the session, as a server shutting down does.
    pub fn disconnect(&self) {
        let _ = self.commands.send(Command::Disconnect);
    }

    /// Closes the session's TCP connection without a word.
    pub fn close_tcp(&self) {
        let _ = self.commands.send(Command::CloseTcp);
    }
}

/// A TCP connection: its writer task's queue, and its reader task.
struct Conn {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    reader: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

struct State {
    /// UDP batching ([`Options::gso`]).
    gso: Option<Gso>,
    opts: Options,
    seen: Arc<Seen>,
    silent: Arc<AtomicBool>,
    sessions: Sessions,
    ids: Ids,
    udp: Option<UdpSocket>,
    conns: HashMap<u64, Conn>,
    dropped_on_init: u64,
    /// Where the client was last heard from (a handshake, an authenticated frame).
    client: Option<Outside>,
    next_timer: Option<Instant>,
}

fn now() -> Instant {
    ringway_client::now()
}

fn conn_id(id: u64) -> ConnId {
    ConnId {
        index: id as u32,
        generation: 0,
    }
}

async fn serve(
    mut state: State,
    listener: TcpListener,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let (frames_tx, mut frames) = mpsc::unbounded_channel::<(u64, Option<Vec<u8>>)>();
    let mut next_conn = 0u64;
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    loop {
        let timer = state.next_timer;
        tokio::select! {
            received = recv_udp(state.udp.as_ref(), state.gso.as_ref(), &mut buf) => {
                let Ok((n, stride, from)) = received else { continue };
                let stride = if stride == 0 { n.max(1) } else { stride };
                let mut at = 0;
                while at < n {
                    let end = (at + stride).min(n);
                    state.handle_frame(&mut buf[at..end], Outside::Udp(from)).await;
                    at = end;
                }
            }
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                state.seen.tcp_connections.fetch_add(1, Relaxed);
                stream.set_nodelay(true).unwrap();
                let (read, write) = stream.into_split();
                let id = next_conn;
                next_conn += 1;
                let (writer, queue) = mpsc::unbounded_channel();
                tokio::spawn(write_conn(write, queue, state.opts.tcp_chunks));
                let reader = tokio::spawn(read_conn(id, read, frames_tx.clone()));
                state.conns.insert(id, Conn { writer, reader });
            }
            Some((id, frame)) = frames.recv() => match frame {
                Some(mut frame) => state.handle_frame(&mut frame, Outside::Tcp(conn_id(id))).await,
                None => state.close_conn(id),
            },
            Some(command) = commands.recv() => state.handle_command(command).await,
            () = async { sleep_until(timer.unwrap_or_else(now).into()).await }, if timer.is_some() => {
                state.run_timers().await;
            }
        }
    }
}

/// A datagram (or with GRO, datagrams `stride` bytes apart) from the UDP
/// socket, or never if there is none.
async fn recv_udp(
    udp: Option<&UdpSocket>,
    gso: Option<&Gso>,
    buf: &mut [u8],
) -> std::io::Result<(usize, usize, SocketAddr)> {
    match (udp, gso) {
        (Some(socket), Some(gso)) => gso.recv(socket, buf).await,
        (Some(socket), None) => {
            let (n, from) = socket.recv_from(buf).await?;
            Ok((n, n, from))
        }
        (None, _) => std::future::pending().await,
    }
}

/// quinn-udp's state for the fake server's socket: `UDP_GRO` on, `UDP_SEGMENT` sends.
#[cfg(target_os = "linux")]
struct Gso(quinn_udp::UdpSocketState);

#[cfg(target_os = "linux")]
impl Gso {
    fn new(socket: &UdpSocket) -> Gso {
        Gso(quinn_udp::UdpSocketState::new(socket.into()).unwrap())
    }

    async fn recv(
        &self,
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> std::io::Result<(usize, usize, SocketAddr)> {
        let mut meta = [quinn_udp::RecvMeta::default()];
        let mut iov = [std::io::IoSliceMut::new(buf)];
        socket
            .async_io(tokio::io::Interest::READABLE, || {
                self.0.recv(socket.into(), &mut iov, &mut meta)
            })
            .await?;
        Ok((meta[0].len, meta[0].stride, meta[0].addr))
    }

    async fn send(&self, socket: &UdpSocket, to: SocketAddr, frames: &[u8], stride: usize) {
        let transmit = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: frames,
            segment_size: Some(stride),
            src_ip: None,
        };
        socket
            .async_io(tokio::io::Interest::WRITABLE, || {
                self.0.try_send(socket.into(), &transmit)
            })
            .await
            .expect("a UDP_SEGMENT send on loopback");
    }
}

/// Elsewhere there is no UDP batching to test.
#[cfg(not(target_os = "linux"))]
struct Gso;

#[cfg(not(target_os = "linux"))]
impl Gso {
    fn new(_socket: &UdpSocket) -> Gso {
        panic!("UDP GSO tests run on Linux only")
    }

    async fn recv(
        &self,
        _socket: &UdpSocket,
        _buf: &mut [u8],
    ) -> std::io::Result<(usize, usize, SocketAddr)> {
        std::future::pending().await
    }

    async fn send(&self, _socket: &UdpSocket, _to: SocketAddr, _frames: &[u8], _stride: usize) {}
}

impl State {
    fn silent(&self) -> bool {
        self.silent.load(Relaxed)
    }

    /// Hands one frame to the session layer and does what it says.
    async fn handle_frame(&mut self, frame: &mut [u8], from: Outside) {
        let kind = frame_type(frame).ok();
        if kind == Some(FrameType::HandshakeInit) {
            self.seen.inits.fetch_add(1, Relaxed);
        }
        if self.silent() {
            return;
        }
        if kind == Some(FrameType::HandshakeInit) {
            if let Outside::Tcp(conn) = from {
                if self.dropped_on_init < self.opts.tcp_drop_on_init {
                    self.dropped_on_init += 1;
                    self.close_conn(u64::from(conn.index));
                    return;
                }
            }
            if let (Outside::Udp(_), Some(reason)) = (from, self.opts.udp_reject) {
                let index = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                let reject = ringway_proto::wire::handshake::emit_reject(index, reason);
                self.send(from, &reject).await;
                return;
            }
        }
        let probe = kind == Some(FrameType::Keepalive) && frame.len() == OVERHEAD + PROBE_LEN;
        let drops_before = self.sessions.counters.drops();
        let (reply, inside) = match self
            .sessions
            .handle_outside(frame, from, now(), &mut self.ids)
        {
            OutsideAction::Reply(to, bytes) => (Some((to, bytes.to_vec())), None),
            OutsideAction::ToInside(range) => (None, Some(range)),
            OutsideAction::None => (None, None),
        };
        let authenticated = kind.is_some_and(FrameType::is_transport)
            && self.sessions.counters.drops() == drops_before;
        if authenticated {
            self.client = Some(from);
            if let Outside::Udp(addr) = from {
                *self.seen.last_udp_from.lock().unwrap() = Some(addr);
            }
            if kind == Some(FrameType::Keepalive) {
                self.seen.keepalives.fetch_add(1, Relaxed);
                if probe {
                    self.seen.probes.fetch_add(1, Relaxed);
                }
            }
        }
        self.update_seen();
        if let Some((to, bytes)) = reply {
            match frame_type(&bytes) {
                Ok(FrameType::HandshakeReject) if self.opts.rejects => {
                    self.seen.rejects.fetch_add(1, Relaxed);
                    self.send(to, &bytes).await;
                }
                Ok(FrameType::HandshakeReject) => {}
                Ok(FrameType::HandshakeResp) => {
                    self.client = Some(to);
                    let mut frames = vec![bytes];
                    if let Some(greeting) = self.opts.greeting.clone() {
                        frames.extend(self.seal(&greeting));
                    }
                    self.send_all(to, frames).await;
                }
                // A probe's echo.
                _ if !self.opts.mute => self.send(to, &bytes).await,
                _ => {}
            }
        }
        if let Some(range) = inside {
            if self.opts.echo && !self.opts.mute {
                let packet = echoed(frame[range].to_vec());
                if let Some(sealed) = self.seal(&packet) {
                    if let Some(to) = self.client {
                        self.send(to, &sealed).await;
                    }
                }
            }
        }
        self.run_timers().await;
    }

    /// Copies what the session layer counted into what tests read.
    fn update_seen(&self) {
        let c = &self.sessions.counters;
        self.seen.accepted.store(c.handshakes, Relaxed);
        self.seen
            .stale_timestamps
            .store(c.drop_handshake_replay, Relaxed);
        self.seen.data.store(c.inside_tx_packets, Relaxed);
        self.seen
            .disconnects
            .store(c.sessions_disconnected, Relaxed);
        self.seen
            .bad_frames
            .store(c.drop_malformed + c.drop_auth + c.drop_replay, Relaxed);
        self.seen
            .unknown_session
            .store(c.drop_unknown_session, Relaxed);
    }

    /// A packet as if read from the server's TUN: sealed by the session
    /// layer for whichever session owns its destination.
    fn seal(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; HEADER_LEN + packet.len() + TAG_LEN];
        buf[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
        match self.sessions.handle_inside(&mut buf, packet.len(), now()) {
            InsideAction::Send { to, len } => {
                self.client = Some(to);
                buf.truncate(len);
                Some(buf)
            }
            InsideAction::Drop => None,
        }
    }

    /// Runs the session layer's timers: keepalives, expiry.
    async fn run_timers(&mut self) {
        let mut out = Vec::new();
        let mut ended = Vec::new();
        self.next_timer = self.sessions.handle_timers(now(), |o| match o {
            TimerOutput::Send(to, bytes) => out.push((to, bytes.to_vec())),
            TimerOutput::Ended(to) => ended.push(to),
        });
        if self.silent() || self.opts.mute {
            return;
        }
        for (to, frame) in out {
            self.send(to, &frame).await;
        }
        for to in ended {
            if let Outside::Tcp(conn) = to {
                self.conns.remove(&u64::from(conn.index));
            }
        }
    }

    fn close_conn(&mut self, id: u64) {
        self.conns.remove(&id);
        self.sessions.connection_closed(conn_id(id));
    }

    async fn handle_command(&mut self, command: Command) {
        let Some(to) = self.client else { return };
        let frames = match command {
            Command::Raw(frame) => vec![frame],
            Command::Packet(packet) => self.seal(&packet).into_iter().collect(),
            Command::PacketTwice(packet) => match self.seal(&packet) {
                Some(frame) => vec![frame.clone(), frame],
                None => Vec::new(),
            },
            Command::Burst(packets) => packets.iter().filter_map(|p| self.seal(p)).collect(),
            Command::Disconnect => {
                let mut frames = Vec::new();
                self.sessions.disconnect_all(now(), |o| {
                    if let TimerOutput::Send(_, bytes) = o {
                        frames.push(bytes.to_vec());
                    }
                });
                frames
            }
            Command::RawStream(bytes) => {
                self.write_stream(to, bytes);
                return;
            }
            Command::CloseTcp => {
                if let Outside::Tcp(conn) = to {
                    self.close_conn(u64::from(conn.index));
                }
                return;
            }
            Command::GsoBurst(packets) => {
                let frames: Vec<Vec<u8>> = packets.iter().filter_map(|p| self.seal(p)).collect();
                let (Outside::Udp(addr), Some(gso), Some(udp), Some(first)) =
                    (to, &self.gso, &self.udp, frames.first())
                else {
                    panic!("a GSO burst needs Options::gso and a client over UDP");
                };
                let stride = first.len();
                assert!(
                    frames.iter().rev().skip(1).all(|f| f.len() == stride),
                    "a GSO burst's frames are all as long as the first but the last"
                );
                gso.send(udp, addr, &frames.concat(), stride).await;
                return;
            }
        };
        self.send_all(to, frames).await;
    }

    /// Sends frames at once: over TCP, packed in one write.
    async fn send_all(&self, to: Outside, frames: Vec<Vec<u8>>) {
        match to {
            Outside::Udp(_) => {
                for frame in frames {
                    self.send(to, &frame).await;
                }
            }
            Outside::Tcp(_) => {
                let mut bytes = Vec::new();
                for frame in frames {
                    bytes.extend_from_slice(&encode_prefix(frame.len()).unwrap());
                    bytes.extend_from_slice(&frame);
                }
                self.write_stream(to, bytes);
            }
        }
    }

    /// Queues bytes as they are for the connection's writer.
    fn write_stream(&self, to: Outside, bytes: Vec<u8>) {
        if let Outside::Tcp(conn) = to {
            if let Some(conn) = self.conns.get(&u64::from(conn.index)) {
                let _ = conn.writer.send(bytes);
            }
        }
    }

    /// Sends one frame: a datagram, or a prefixed frame on the connection.
    async fn send(&self, to: Outside, frame: &[u8]) {
        match to {
            Outside::Udp(addr) => {
                if let Some(udp) = &self.udp {
                    // Loopback to a client that may be gone: not our problem.
                    let _ = udp.send_to(frame, addr).await;
                }
            }
            Outside::Tcp(_) => {
                let mut bytes = encode_prefix(frame.len()).unwrap().to_vec();
                bytes.extend_from_slice(frame);
                self.write_stream(to, bytes);
            }
        }
    }
}

/// Reads frames off a connection for the server task; `None` when it ends.
async fn read_conn(
    id: u64,
    mut read: OwnedReadHalf,
    frames: mpsc::UnboundedSender<(u64, Option<Vec<u8>>)>,
) {
    let mut asm = FrameAssembler::new(1 << 16, MAX_FRAME_LEN);
    'read: loop {
        match read.read(asm.spare_mut()).await {
            Ok(0) | Err(_) => break,
            Ok(n) => asm.commit(n),
        }
        loop {
            match asm.next_frame() {
                Ok(Some(frame)) => {
                    let _ = frames.send((id, Some(frame.to_vec())));
                }
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
    }
    let _ = frames.send((id, None));
}

/// Writes what the server task queues, packing what waits together, in the
/// configured chunks. Dropping the queue closes the connection.
async fn write_conn(
    mut write: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    chunks: &'static [usize],
) {
    while let Some(mut bytes) = queue.recv().await {
        while let Ok(more) = queue.try_recv() {
            bytes.extend_from_slice(&more);
        }
        if chunks.is_empty() {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
            continue;
        }
        let mut rest = &bytes[..];
        for &size in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = size.clamp(1, rest.len());
            if write.write_all(&rest[..n]).await.is_err() {
                return;
            }
            rest = &rest[n..];
            tokio::task::yield_now().await;
        }
    }
}
