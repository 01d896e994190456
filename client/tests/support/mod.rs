//! An in-process stand-in for the server on a loopback UDP socket, built from
//! `ringway-proto`'s responder, so the client library is tested against the
//! real protocol without root, a TUN or the io_uring server.
//!
//! It accepts one client key, answers handshakes (refusing timestamps that are
//! not newer, as the real server does), and echoes data frames back: IPv4
//! packets with source and destination swapped, like a ping responder, sealed
//! in place in the buffer they were opened in. Tests can also make it send
//! arbitrary datagrams, packets or a disconnect.
// Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use ringway_client::ClientConfig;
use ringway_proto::handshake::server::Responder;
use ringway_proto::handshake::Timestamp;
use ringway_proto::wire::handshake::RESP_LEN;
use ringway_proto::wire::transport::{HEADER_LEN, MAX_FRAME_LEN, OVERHEAD};
use ringway_proto::wire::{frame_type, FrameType};
use ringway_proto::{Cipher, Keypair, Opener, Sealer, SessionConfig};
use tokio::net::UdpSocket;
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            server: server_keys(),
            psk: Some(PSK),
            config: session_config(25, 180),
            echo: true,
            keepalive_every: None,
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
}

enum Command {
    Raw(Vec<u8>),
    Packet(Vec<u8>),
    /// Seal a packet and send the same frame twice.
    PacketTwice(Vec<u8>),
    Disconnect,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    pub async fn start(opts: Options) -> FakeServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), opts).await
    }

    pub async fn start_on(addr: SocketAddr, opts: Options) -> FakeServer {
        let socket = UdpSocket::bind(addr).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let (commands, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(socket, opts, Arc::clone(&seen), rx));
        FakeServer {
            addr,
            seen,
            commands,
            task,
        }
    }

    /// Sends raw bytes to the client.
    pub fn send_raw(&self, datagram: Vec<u8>) {
        let _ = self.commands.send(Command::Raw(datagram));
    }

    /// Seals `packet` in the session and sends it.
    pub fn send_packet(&self, packet: Vec<u8>) {
        let _ = self.commands.send(Command::Packet(packet));
    }

    /// Seals `packet` once and sends the frame twice (a replay).
    pub fn send_packet_twice(&self, packet: Vec<u8>) {
        let _ = self.commands.send(Command::PacketTwice(packet));
    }

    /// Ends the session.
    pub fn disconnect(&self) {
        let _ = self.commands.send(Command::Disconnect);
    }
}

struct Peer {
    addr: SocketAddr,
    sealer: Sealer,
    opener: Opener,
}

async fn serve(
    socket: UdpSocket,
    opts: Options,
    seen: Arc<Seen>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let responder = Responder::new(opts.server.secret.clone());
    let client_public = client_keys().public;
    let mut last_timestamp: Option<Timestamp> = None;
    let mut peer: Option<Peer> = None;
    let mut buf = vec![0u8; MAX_FRAME_LEN];
    let mut keepalive = opts.keepalive_every.map(tokio::time::interval);
    let now = ringway_client::now;
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                match frame_type(&buf[..n]) {
                    Ok(FrameType::HandshakeInit) => {
                        seen.inits.fetch_add(1, Relaxed);
                        let Ok(pending) = responder.read_init(&buf[..n]) else { continue };
                        if pending.client_key() != &client_public {
                            continue;
                        }
                        let ts = pending.payload().timestamp;
                        if last_timestamp.is_some_and(|last| ts <= last) {
                            seen.stale_timestamps.fetch_add(1, Relaxed);
                            continue;
                        }
                        last_timestamp = Some(ts);
                        let mut resp = [0u8; RESP_LEN];
                        let session = pending
                            .accept(opts.psk.as_ref(), SESSION_ID, &opts.config, now(), &mut resp)
                            .unwrap();
                        let (sealer, opener) = session.split();
                        peer = Some(Peer { addr: from, sealer, opener });
                        seen.accepted.fetch_add(1, Relaxed);
                        socket.send_to(&resp, from).await.unwrap();
                    }
                    Ok(_) => {
                        let Some(p) = peer.as_mut() else { continue };
                        let Ok(opened) = p.opener.open(&mut buf[..n], now()) else {
                            seen.bad_frames.fetch_add(1, Relaxed);
                            continue;
                        };
                        match opened.kind {
                            FrameType::Data => {
                                seen.data.fetch_add(1, Relaxed);
                                if opts.echo {
                                    let len = opened.payload.len();
                                    swap_addresses(&mut buf[opened.payload]);
                                    let n = p.sealer.seal_data(&mut buf, len, now()).unwrap();
                                    socket.send_to(&buf[..n], p.addr).await.unwrap();
                                }
                            }
                            FrameType::Keepalive => {
                                seen.keepalives.fetch_add(1, Relaxed);
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
            Some(command) = commands.recv() => {
                let Some(p) = peer.as_mut() else { continue };
                let mut out = vec![0u8; MAX_FRAME_LEN];
                match command {
                    Command::Raw(d) => {
                        socket.send_to(&d, p.addr).await.unwrap();
                    }
                    Command::Packet(packet) => {
                        let n = seal(&mut p.sealer, &mut out, &packet);
                        socket.send_to(&out[..n], p.addr).await.unwrap();
                    }
                    Command::PacketTwice(packet) => {
                        let n = seal(&mut p.sealer, &mut out, &packet);
                        socket.send_to(&out[..n], p.addr).await.unwrap();
                        socket.send_to(&out[..n], p.addr).await.unwrap();
                    }
                    Command::Disconnect => {
                        let n = p.sealer.seal_disconnect(&mut out, now()).unwrap();
                        socket.send_to(&out[..n], p.addr).await.unwrap();
                    }
                }
            }
            _ = async { keepalive.as_mut().unwrap().tick().await }, if keepalive.is_some() && peer.is_some() => {
                let p = peer.as_mut().unwrap();
                let mut out = [0u8; OVERHEAD];
                let n = p.sealer.seal_keepalive(&mut out, now()).unwrap();
                socket.send_to(&out[..n], p.addr).await.unwrap();
            }
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
