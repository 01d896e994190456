//! An in-process stand-in for the server on a loopback port, UDP and TCP,
//! built from `ringway-proto`'s responder, so the client library is tested
//! against the real protocol without root, a TUN or the io_uring server.
//!
//! It accepts one client key, answers handshakes (refusing timestamps that are
//! not newer, as the real server does) on whichever transport they came, and
//! echoes data frames back: IPv4 packets with source and destination swapped,
//! like a ping responder, sealed in place in the buffer they were opened in.
//! Over TCP each connection has a reader task feeding frames to the server
//! task and a writer task that can write in odd chunk sizes. Tests can also
//! make it send arbitrary frames or bytes, packets, a disconnect, or close the
//! connection.
// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringway_client::ClientConfig;
use ringway_proto::handshake::server::Responder;
use ringway_proto::handshake::Timestamp;
use ringway_proto::session::probe_id;
use ringway_proto::wire::handshake::{emit_reject, InitFrame, RejectReason, RESP_LEN};
use ringway_proto::wire::stream::encode_prefix;
use ringway_proto::wire::transport::{HEADER_LEN, MAX_FRAME_LEN, OVERHEAD};
use ringway_proto::wire::{frame_type, FrameAssembler, FrameType};
use ringway_proto::{Cipher, Keypair, Opener, Sealer, SessionConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const SESSION_ID: u32 = 0x5eed_0001;

/// The session config the fake server hands out, with the given timers.
pub fn session_config(keepalive_secs: u16, idle_timeout_secs: u16) -> SessionConfig {
    SessionConfig {
        cipher: Cipher::ChaCha20Poly1305,
        client_addr: CLIENT_ADDR,
        prefix_len: 24,
        server_addr: SERVER_ADDR,
        mtu: 1420,
        keepalive_secs,
        idle_timeout_secs,
        rekey_after_secs: 0,
    }
}

/// Deterministic keys: the server's, the client's, and a stranger's.
pub fn server_keys() -> Keypair {
    Keypair::from_random([11u8; 32])
}
pub fn client_keys() -> Keypair {
    Keypair::from_random([22u8; 32])
}
pub fn other_keys() -> Keypair {
    Keypair::from_random([33u8; 32])
}
pub const PSK: [u8; 32] = [44u8; 32];

/// A client config for `server` pinning `server_public`.
pub fn client_config(
    server: SocketAddr,
    server_public: ringway_proto::PublicKey,
    psk: Option<[u8; 32]>,
) -> ClientConfig {
    ClientConfig {
        endpoint: server.to_string(),
        server_public_key: server_public,
        private_key: client_keys().secret,
        psk,
        cipher: None,
        tun_name: "unused".into(),
        routes: Vec::new(),
    }
}

/// How the fake server behaves.
#[derive(Debug, Clone)]
pub struct Options {
    pub server: Keypair,
    pub psk: Option<[u8; 32]>,
    pub config: SessionConfig,
    /// Echo data frames back.
    pub echo: bool,
    /// Send a keepalive this often once a session exists.
    pub keepalive_every: Option<Duration>,
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
    /// Answer initiations it cannot use with a reject, as the real server
    /// does: `UnknownServerKey` when they are not for its key, `NotAuthorised`
    /// when the client's key is not the one it accepts.
    pub rejects: bool,
    /// The client key it accepts.
    pub client_key: ringway_proto::PublicKey,
    /// Echo probes (keepalives carrying an id) back, as the real server does.
    pub echo_probes: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            server: server_keys(),
            psk: Some(PSK),
            config: session_config(25, 180),
            echo: true,
            keepalive_every: None,
            udp: true,
            tcp_chunks: &[],
            tcp_drop_on_init: 0,
            greeting: None,
            rejects: false,
            client_key: client_keys().public,
            echo_probes: true,
        }
    }
}

/// What the fake server saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub inits: AtomicU64,
    pub accepted: AtomicU64,
    pub stale_timestamps: AtomicU64,
    pub data: AtomicU64,
    pub keepalives: AtomicU64,
    pub disconnects: AtomicU64,
    pub bad_frames: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub probes: AtomicU64,
    pub rejects: AtomicU64,
    /// Frames for a session it no longer has (sealed with old keys).
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
        let task = tokio::spawn(serve(
            udp,
            listener,
            opts,
            Arc::clone(&seen),
            Arc::clone(&silent),
            rx,
        ));
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

    /// Seals `packet` in the session and sends it.
    pub fn send_packet(&self, packet: Vec<u8>) {
        let _ = self.commands.send(Command::Packet(packet));
    }

    /// Seals `packet` once and sends the frame twice (a replay).
    pub fn send_packet_twice(&self, packet: Vec<u8>) {
        let _ = self.commands.send(Command::PacketTwice(packet));
    }

    /// Seals `packets` and sends them at once: over TCP, packed in one write.
    pub fn send_burst(&self, packets: Vec<Vec<u8>>) {
        let _ = self.commands.send(Command::Burst(packets));
    }

    /// Ends the session.
    pub fn disconnect(&self) {
        let _ = self.commands.send(Command::Disconnect);
    }

    /// Closes the session's TCP connection without a word.
    pub fn close_tcp(&self) {
        let _ = self.commands.send(Command::CloseTcp);
    }
}

/// Where a frame came from, and where the peer's replies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Udp(SocketAddr),
    Tcp(u64),
}

struct Peer {
    path: Path,
    sealer: Sealer,
    opener: Opener,
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
    opts: Options,
    seen: Arc<Seen>,
    responder: Responder,
    last_timestamp: Option<Timestamp>,
    peer: Option<Peer>,
    udp: Option<UdpSocket>,
    conns: HashMap<u64, Conn>,
    dropped_on_init: u64,
}

async fn serve(
    udp: Option<UdpSocket>,
    listener: TcpListener,
    opts: Options,
    seen: Arc<Seen>,
    silent: Arc<AtomicBool>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut keepalive = opts.keepalive_every.map(tokio::time::interval);
    let mut state = State {
        responder: Responder::new(opts.server.secret.clone()),
        opts,
        seen,
        last_timestamp: None,
        peer: None,
        udp,
        conns: HashMap::new(),
        dropped_on_init: 0,
    };
    let (frames_tx, mut frames) = mpsc::unbounded_channel::<(u64, Option<Vec<u8>>)>();
    let mut next_conn = 0u64;
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    loop {
        tokio::select! {
            received = recv_udp(state.udp.as_ref(), &mut buf) => {
                let Ok((n, from)) = received else { continue };
                if silent.load(Relaxed) {
                    continue;
                }
                state.handle_frame(&mut buf[..n], Path::Udp(from)).await;
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
                Some(_) if silent.load(Relaxed) => {}
                Some(mut frame) => state.handle_frame(&mut frame, Path::Tcp(id)).await,
                None => { state.conns.remove(&id); }
            },
            Some(command) = commands.recv() => state.handle_command(command).await,
            _ = async { keepalive.as_mut().unwrap().tick().await }, if keepalive.is_some() && state.peer.is_some() => {
                if silent.load(Relaxed) {
                    continue;
                }
                let p = state.peer.as_mut().unwrap();
                let mut out = [0u8; OVERHEAD];
                let n = p.sealer.seal_keepalive(&mut out, now()).unwrap();
                let path = p.path;
                state.send(path, &out[..n]).await;
            }
        }
    }
}

fn now() -> std::time::Instant {
    ringway_client::now()
}

/// A datagram from the UDP socket, or never if there is none.
async fn recv_udp(udp: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match udp {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl State {
    /// Handles one frame in place in `frame` (exactly its bytes).
    async fn handle_frame(&mut self, frame: &mut [u8], from: Path) {
        let seen = Arc::clone(&self.seen);
        match frame_type(frame) {
            Ok(FrameType::HandshakeInit) => {
                seen.inits.fetch_add(1, Relaxed);
                if let Path::Tcp(id) = from {
                    if self.dropped_on_init < self.opts.tcp_drop_on_init {
                        self.dropped_on_init += 1;
                        self.conns.remove(&id);
                        return;
                    }
                }
                let Ok(pending) = self.responder.read_init(frame) else {
                    self.reject(frame, from, RejectReason::UnknownServerKey)
                        .await;
                    return;
                };
                if pending.client_key() != &self.opts.client_key {
                    self.reject(frame, from, RejectReason::NotAuthorised).await;
                    return;
                }
                let ts = pending.payload().timestamp;
                if self.last_timestamp.is_some_and(|last| ts <= last) {
                    seen.stale_timestamps.fetch_add(1, Relaxed);
                    return;
                }
                self.last_timestamp = Some(ts);
                let mut resp = [0u8; RESP_LEN];
                // A new id for every session, as the real server draws them.
                let session_id = SESSION_ID + seen.accepted.load(Relaxed) as u32;
                let session = pending
                    .accept(
                        self.opts.psk.as_ref(),
                        session_id,
                        &self.opts.config,
                        now(),
                        &mut resp,
                    )
                    .unwrap();
                let (mut sealer, opener) = session.split();
                let mut frames = vec![resp.to_vec()];
                if let Some(packet) = &self.opts.greeting {
                    let mut out = vec![0u8; MAX_FRAME_LEN];
                    let n = seal(&mut sealer, &mut out, packet);
                    frames.push(out[..n].to_vec());
                }
                self.peer = Some(Peer {
                    path: from,
                    sealer,
                    opener,
                });
                seen.accepted.fetch_add(1, Relaxed);
                self.send_all(from, frames).await;
            }
            Ok(_) => {
                let Some(p) = self.peer.as_mut() else { return };
                if ringway_proto::wire::transport::peek_session_id(frame)
                    != Some(p.opener.session_id())
                {
                    seen.unknown_session.fetch_add(1, Relaxed);
                    return;
                }
                let Ok(opened) = p.opener.open(frame, now()) else {
                    seen.bad_frames.fetch_add(1, Relaxed);
                    return;
                };
                // Authenticated: follow the client to wherever it sends from now.
                p.path = from;
                if let Path::Udp(addr) = from {
                    *seen.last_udp_from.lock().unwrap() = Some(addr);
                }
                match opened.kind {
                    FrameType::Data => {
                        seen.data.fetch_add(1, Relaxed);
                        if self.opts.echo {
                            let len = opened.payload.len();
                            swap_addresses(&mut frame[opened.payload]);
                            let n = p.sealer.seal_data(frame, len, now()).unwrap();
                            let path = p.path;
                            self.send(path, &frame[..n]).await;
                        }
                    }
                    FrameType::Keepalive => {
                        seen.keepalives.fetch_add(1, Relaxed);
                        if let Some(id) = probe_id(&frame[opened.payload]) {
                            seen.probes.fetch_add(1, Relaxed);
                            if self.opts.echo_probes {
                                let mut out = [0u8; OVERHEAD + 8];
                                let n = p.sealer.seal_probe(&mut out, id, now()).unwrap();
                                let path = p.path;
                                self.send(path, &out[..n]).await;
                            }
                        }
                    }
                    FrameType::Disconnect => {
                        seen.disconnects.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
            }
            Err(_) => {
                seen.bad_frames.fetch_add(1, Relaxed);
            }
        }
    }

    /// Answers an initiation it will not accept, if told to.
    async fn reject(&self, frame: &[u8], from: Path, reason: RejectReason) {
        if !self.opts.rejects {
            return;
        }
        let Ok(init) = InitFrame::new_checked(frame) else {
            return;
        };
        self.seen.rejects.fetch_add(1, Relaxed);
        let reject = emit_reject(init.sender_index(), reason);
        self.send(from, &reject).await;
    }

    async fn handle_command(&mut self, command: Command) {
        let Some(p) = self.peer.as_mut() else { return };
        let path = p.path;
        let mut out = vec![0u8; MAX_FRAME_LEN];
        // Frames to send, sealed while the peer is borrowed.
        let frames = match command {
            Command::Raw(frame) => vec![frame],
            Command::Packet(packet) => {
                let n = seal(&mut p.sealer, &mut out, &packet);
                vec![out[..n].to_vec()]
            }
            Command::PacketTwice(packet) => {
                let n = seal(&mut p.sealer, &mut out, &packet);
                vec![out[..n].to_vec(), out[..n].to_vec()]
            }
            Command::Burst(packets) => packets
                .iter()
                .map(|packet| {
                    let n = seal(&mut p.sealer, &mut out, packet);
                    out[..n].to_vec()
                })
                .collect(),
            Command::Disconnect => {
                let n = p.sealer.seal_disconnect(&mut out, now()).unwrap();
                vec![out[..n].to_vec()]
            }
            Command::RawStream(bytes) => {
                self.write_stream(path, bytes);
                return;
            }
            Command::CloseTcp => {
                if let Path::Tcp(id) = path {
                    self.conns.remove(&id);
                }
                return;
            }
        };
        self.send_all(path, frames).await;
    }

    /// Sends frames at once: over TCP, packed in one write.
    async fn send_all(&self, path: Path, frames: Vec<Vec<u8>>) {
        match path {
            Path::Udp(_) => {
                for frame in frames {
                    self.send(path, &frame).await;
                }
            }
            Path::Tcp(_) => {
                let mut bytes = Vec::new();
                for frame in frames {
                    bytes.extend_from_slice(&encode_prefix(frame.len()).unwrap());
                    bytes.extend_from_slice(&frame);
                }
                self.write_stream(path, bytes);
            }
        }
    }

    /// Queues bytes as they are for the connection's writer.
    fn write_stream(&self, path: Path, bytes: Vec<u8>) {
        if let Path::Tcp(id) = path {
            if let Some(conn) = self.conns.get(&id) {
                let _ = conn.writer.send(bytes);
            }
        }
    }

    /// Sends one frame: a datagram, or a prefixed frame on the connection.
    async fn send(&self, path: Path, frame: &[u8]) {
        match path {
            Path::Udp(addr) => {
                if let Some(udp) = &self.udp {
                    udp.send_to(frame, addr).await.unwrap();
                }
            }
            Path::Tcp(_) => {
                let mut bytes = encode_prefix(frame.len()).unwrap().to_vec();
                bytes.extend_from_slice(frame);
                self.write_stream(path, bytes);
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

fn seal(sealer: &mut Sealer, out: &mut [u8], packet: &[u8]) -> usize {
    out[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
    sealer
        .seal_data(out, packet.len(), ringway_client::now())
        .unwrap()
}

/// Answers an IPv4 packet as a ping responder would: swap source and destination.
fn swap_addresses(packet: &mut [u8]) {
    if packet.len() >= 20 && packet[0] >> 4 == 4 {
        let mut src = [0u8; 4];
        src.copy_from_slice(&packet[12..16]);
        packet.copy_within(16..20, 12);
        packet[16..20].copy_from_slice(&src);
    }
}

/// A fake IPv4 packet of `len` bytes from `src` to `dst`, with `seq` in its payload.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, seq: u32, len: usize) -> Vec<u8> {
    assert!(len >= 24);
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..24].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[24..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    p
}

/// The packet the fake server echoes for `ipv4_packet(src, dst, ..)`.
pub fn echoed(mut packet: Vec<u8>) -> Vec<u8> {
    swap_addresses(&mut packet);
    packet
}

/// Polls `done` until it holds, for effects another task finishes a moment
/// later (the fake server counting a datagram). Fails after 5 s.
pub async fn wait_until(mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

/// A loopback address whose port is free on both UDP and TCP right now, for a
/// server started later.
pub fn free_port() -> SocketAddr {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// Runs `async fn $name(transport: Transport)` as two tests, `$name::udp` and
/// `$name::tcp`, on the real clock.
#[allow(unused_macros)]
macro_rules! over_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use ringway_client::Transport;
            #[tokio::test]
            async fn udp() {
                super::$name(Transport::Udp).await
            }
            #[tokio::test]
            async fn tcp() {
                super::$name(Transport::Tcp).await
            }
        }
    )*};
}
