//! What the client's tests share: keys and configs, the server's settings,
//! deterministic random sources, packets, and two stand-ins for the server,
//! both built on the server's real session layer (`ringway_server::sessions`):
//!
//! - [`pair`]: the client's core and the server's `Sessions` stepped against
//!   each other in memory, on a simulated clock, with loss, reordering,
//!   duplication and tampering on demand. For protocol behaviour.
//! - [`fake_server`]: `Sessions` behind a loopback UDP socket and TCP
//!   listener, for the tokio side (sockets, framing, the driver, reconnects).
// Each test crate uses a different part of this module.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod fake_server;
pub mod pair;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ringway_client::{ClientConfig, ConnectOptions, Transport, TransportChoice, Tunnel};
use ringway_proto::{Cipher, Entropy, EntropyError, Keypair, PublicKey, SessionConfig};
use ringway_server::config::{Offload, Peer, Settings, TcpSection, UringSection};
use ringway_server::sessions::IdSource;

pub use fake_server::{FakeServer, Options};

/// What the server's pool hands its first client, and the server's own address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The id of the first session a server with [`Ids`] makes.
pub const SESSION_ID: u32 = 0x5eed_0001;
pub const PSK: [u8; 32] = [44u8; 32];

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

/// A server config listing `peers` (name, key, PSK), with the given timers.
pub fn settings(
    peers: &[(&str, PublicKey, Option<[u8; 32]>)],
    keepalive_secs: u16,
    idle_timeout_secs: u16,
    rekey_after_secs: u16,
) -> Settings {
    Settings {
        listen_udp: Some("127.0.0.1:0".parse().unwrap()),
        listen_tcp: None,
        udp_socket_buffer: 0,
        secret_key: server_keys().secret,
        pool: "198.18.0.0/24".parse().unwrap(),
        tun_name: "unused".into(),
        offload: Offload::Off,
        mtu: 1420,
        keepalive_secs,
        idle_timeout_secs,
        cipher: Cipher::ChaCha20Poly1305,
        rekey_after_secs,
        uring: UringSection::default(),
        fair_queue: None,
        io: Default::default(),
        state_file: std::path::PathBuf::from("/nonexistent/last-handshakes"),
        tcp: TcpSection::default(),
        peers: peers
            .iter()
            .map(|(name, public_key, psk)| Peer {
                name: (*name).to_owned(),
                public_key: *public_key,
                psk: *psk,
            })
            .collect(),
    }
}

/// The usual server: our client (with [`PSK`]) as its only peer.
pub fn server_settings(keepalive_secs: u16, idle_timeout_secs: u16) -> Settings {
    settings(
        &[("client", client_keys().public, Some(PSK))],
        keepalive_secs,
        idle_timeout_secs,
        0,
    )
}

/// The session config a server with `settings` gives its first client.
pub fn expected_config(settings: &Settings) -> SessionConfig {
    SessionConfig {
        cipher: settings.cipher,
        client_addr: CLIENT_ADDR,
        prefix_len: 24,
        server_addr: SERVER_ADDR,
        mtu: settings.mtu,
        keepalive_secs: settings.keepalive_secs,
        idle_timeout_secs: settings.idle_timeout_secs,
        rekey_after_secs: settings.rekey_after_secs,
    }
}

/// A client config for `server` pinning `server_public`.
pub fn client_config(
    server: SocketAddr,
    server_public: PublicKey,
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

/// splitmix64: a deterministic random source for tests (never for keys
/// anyone relies on).
#[derive(Debug, Clone)]
pub struct Seeded(pub u64);

impl Seeded {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Entropy for Seeded {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in dest.chunks_mut(8) {
            let n = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&n[..chunk.len()]);
        }
        Ok(())
    }
}

/// The server's randomness: session ids counting up from [`SESSION_ID`], so
/// tests can name them, and seeded bytes for its handshake keys.
#[derive(Debug)]
pub struct Ids {
    next: u32,
    bytes: Seeded,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            next: SESSION_ID,
            bytes: Seeded(0x5e55_1005),
        }
    }
}

impl IdSource for Ids {
    fn next_id(&mut self) -> u32 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }

    fn fill(&mut self, dest: &mut [u8]) {
        let _ = Entropy::fill(&mut self.bytes, dest);
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

/// Answers an IPv4 packet as a ping responder would: swap source and destination.
pub fn swap_addresses(packet: &mut [u8]) {
    if packet.len() >= 20 && packet[0] >> 4 == 4 {
        let mut src = [0u8; 4];
        src.copy_from_slice(&packet[12..16]);
        packet.copy_within(16..20, 12);
        packet[16..20].copy_from_slice(&src);
    }
}

/// The packet the fake server echoes for `ipv4_packet(src, dst, ..)`.
pub fn echoed(mut packet: Vec<u8>) -> Vec<u8> {
    swap_addresses(&mut packet);
    packet
}

/// Connect options for loopback: `deadline_ms`, and a fresh initiation
/// every 100 ms.
pub fn quick(transport: TransportChoice, deadline_ms: u64) -> ConnectOptions {
    ConnectOptions {
        transport,
        deadline: Duration::from_millis(deadline_ms),
        retry_interval: Duration::from_millis(100),
        ..ConnectOptions::default()
    }
}

/// The transport a choice ends up on when the server answers it.
pub fn transport_of(choice: TransportChoice) -> Transport {
    match choice {
        TransportChoice::Tcp => Transport::Tcp,
        TransportChoice::Udp | TransportChoice::Auto => Transport::Udp,
    }
}

/// A tunnel to the fake server over `transport`, with our usual keys.
pub async fn connected(server: &FakeServer, transport: TransportChoice) -> Tunnel {
    let config = client_config(server.addr, server_keys().public, Some(PSK));
    let tunnel = Tunnel::connect_with(&config, &quick(transport, 10_000))
        .await
        .unwrap();
    assert_eq!(tunnel.transport(), transport_of(transport));
    tunnel
}

/// How long a loopback test waits for something that takes microseconds
/// before calling it lost: a guard against hangs, not a timing claim, so it
/// is long enough for a loaded machine.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Polls `done` until it holds, for effects another task finishes a moment
/// later (the fake server counting a datagram). Fails after [`HANG_GUARD`].
pub async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {HANG_GUARD:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Receives the next data packet on a tunnel's receiving half, skipping
/// everything else; bounded by [`HANG_GUARD`].
pub async fn next_packet(rx: &mut ringway_client::TunnelReceiver) -> Vec<u8> {
    loop {
        let received = tokio::time::timeout(HANG_GUARD, rx.recv())
            .await
            .expect("a packet before the hang guard")
            .unwrap();
        if let ringway_client::Received::Packet(packet) = received {
            return packet.to_vec();
        }
    }
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
macro_rules! over_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use ringway_client::TransportChoice;
            #[tokio::test]
            async fn udp() {
                super::$name(TransportChoice::Udp).await
            }
            #[tokio::test]
            async fn tcp() {
                super::$name(TransportChoice::Tcp).await
            }
        }
    )*};
}

/// [`over_both`] on tokio's paused clock.
macro_rules! over_both_paused {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use ringway_client::TransportChoice;
            #[tokio::test(start_paused = true)]
            async fn udp() {
                super::$name(TransportChoice::Udp).await
            }
            #[tokio::test(start_paused = true)]
            async fn tcp() {
                super::$name(TransportChoice::Tcp).await
            }
        }
    )*};
}
