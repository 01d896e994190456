//! The core against a hand-driven server session: what the server's real
//! session layer would never send (a packet for another address, a frame of
//! a kind only clients send), so the core's own checks are what is tested.
//! Its behaviour against the real server is in `tests/core_pair.rs`.

use std::net::Ipv4Addr;
use std::time::Instant;

use ringway_proto::handshake::server::Responder;
use ringway_proto::wire::handshake::RESP_LEN;
use ringway_proto::wire::transport::TAG_LEN;
use ringway_proto::{EntropyError, Keypair};

use super::*;

struct Counting(u8);

impl Entropy for Counting {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        self.0 = self.0.wrapping_add(1);
        dest.fill(self.0);
        Ok(())
    }
}

const OURS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn session_config() -> SessionConfig {
    SessionConfig {
        cipher: Cipher::Aes256Gcm,
        client_addr: OURS,
        prefix_len: 24,
        server_addr: Ipv4Addr::new(198, 18, 0, 1),
        mtu: 1420,
        keepalive_secs: 10,
        idle_timeout_secs: 60,
        rekey_after_secs: 0,
    }
}

/// A connected core and the server's side of its session.
struct Rig {
    core: Core,
    server: Session,
    now: Instant,
}

fn rig() -> Rig {
    let server_keys = Keypair::from_random([1; 32]);
    let now = Instant::now();
    let mut core = Core::connect(
        CoreConfig {
            keys: ClientKeys {
                secret: Keypair::from_random([2; 32]).secret,
                server_public: server_keys.public,
                psk: None,
            },
            cipher: None,
            connect_within: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
            session: SessionOptions::default(),
            wall_clock: Duration::from_secs(1_000),
        },
        now,
        Box::new(Counting(0)),
        Arc::default(),
    );
    let mut init = [0u8; MAX_CONTROL_LEN];
    let t = core.poll_transmit(now, &mut init).unwrap();
    assert_eq!(t.kind, Control::Initiation);
    let mut resp = [0u8; RESP_LEN];
    let server = Responder::new(server_keys.secret)
        .read_init(&init[..t.len], &mut Counting(100))
        .unwrap()
        .accept(None, 7, &session_config(), now, &mut resp)
        .unwrap();
    assert_eq!(core.handle_frame(&mut resp, now), Inbound::Consumed);
    assert!(core.is_established());
    assert_eq!(
        core.poll_event(),
        Some(Event::Connected {
            session_id: 7,
            config: session_config()
        })
    );
    Rig { core, server, now }
}

impl Rig {
    /// A packet sealed by the server, as the core receives it.
    fn receive_from_server(&mut self, packet: &[u8]) -> Inbound {
        let mut frame = vec![0u8; HEADER_LEN + packet.len() + TAG_LEN];
        frame[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
        let n = self
            .server
            .sealer
            .seal_data(&mut frame, packet.len(), self.now)
            .unwrap();
        self.core.handle_frame(&mut frame[..n], self.now)
    }
}

fn ipv4(dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[16..20].copy_from_slice(&dst.octets());
    p
}

#[test]
fn only_ipv4_packets_for_our_address_come_out() {
    let mut rig = rig();
    assert_eq!(
        rig.receive_from_server(&ipv4(OURS)),
        Inbound::Packet(HEADER_LEN..HEADER_LEN + 40)
    );
    assert_eq!(
        rig.receive_from_server(&ipv4(Ipv4Addr::new(10, 1, 2, 3))),
        Inbound::Dropped(Dropped::NotForUs)
    );
    let mut v6 = ipv4(OURS);
    v6[0] = 0x60;
    assert_eq!(
        rig.receive_from_server(&v6),
        Inbound::Dropped(Dropped::NotForUs)
    );
    let s = rig.core.stats().snapshot();
    assert_eq!(
        (s.rx_packets, s.rx_bytes, s.rx_dropped_not_for_us),
        (1, 40, 2)
    );
}

#[test]
fn frames_no_server_sends_are_dropped() {
    let mut rig = rig();
    let now = rig.now;
    // An initiation (clients send those), an unknown type, an empty frame.
    let mut init = [0u8; MAX_CONTROL_LEN];
    init[0] = FrameType::HandshakeInit as u8;
    assert_eq!(
        rig.core.handle_frame(&mut init[..INIT_LEN], now),
        Inbound::Dropped(Dropped::Malformed)
    );
    assert_eq!(
        rig.core.handle_frame(&mut [99u8; 40], now),
        Inbound::Dropped(Dropped::Malformed)
    );
    assert_eq!(
        rig.core.handle_frame(&mut [], now),
        Inbound::Dropped(Dropped::Malformed)
    );
    // A response when no handshake is pending.
    let mut resp = [0u8; RESP_LEN];
    resp[0] = FrameType::HandshakeResp as u8;
    assert_eq!(
        rig.core.handle_frame(&mut resp, now),
        Inbound::Dropped(Dropped::Stray)
    );
    assert_eq!(rig.core.stats().snapshot().rx_dropped_malformed, 4);
    assert!(rig.core.is_established());
    assert_eq!(rig.core.poll_event(), None);
}

#[test]
fn an_echo_of_a_probe_never_sent_gives_no_sample() {
    let mut rig = rig();
    let mut frame = [0u8; OVERHEAD + PROBE_LEN];
    let n = rig
        .server
        .sealer
        .seal_probe(&mut frame, 12345, rig.now)
        .unwrap();
    assert_eq!(
        rig.core.handle_frame(&mut frame[..n], rig.now),
        Inbound::Consumed
    );
    let s = rig.core.stats().snapshot();
    assert_eq!((s.rx_keepalives, s.rtt), (1, None));
}

#[test]
fn a_probe_goes_out_when_asked_and_its_echo_is_timed() {
    let mut rig = rig();
    let sent_at = rig.now + Duration::from_secs(2);
    rig.core.probe(sent_at);
    let mut buf = [0u8; MAX_CONTROL_LEN];
    let t = rig.core.poll_transmit(sent_at, &mut buf).unwrap();
    assert_eq!(t.kind, Control::Probe);
    assert_eq!(rig.core.poll_transmit(sent_at, &mut buf), None);
    // The server echoes the id back.
    let opened = rig.server.opener.open(&mut buf[..t.len], sent_at).unwrap();
    let id = probe_id(&buf[opened.payload]).unwrap();
    let echo_at = sent_at + Duration::from_millis(7);
    let mut echo = [0u8; OVERHEAD + PROBE_LEN];
    let n = rig
        .server
        .sealer
        .seal_probe(&mut echo, id, echo_at)
        .unwrap();
    assert_eq!(
        rig.core.handle_frame(&mut echo[..n], echo_at),
        Inbound::Consumed
    );
    assert_eq!(
        rig.core.stats().snapshot().rtt,
        Some(Duration::from_millis(7))
    );
}

#[test]
fn seal_packet_needs_room_for_header_and_tag() {
    let mut rig = rig();
    let now = rig.now;
    let mut short = vec![0u8; HEADER_LEN + 20];
    assert_eq!(
        rig.core.seal_packet(&mut short, 40, now),
        Err(Refused::BufferTooSmall)
    );
    let mut no_tag = vec![0u8; HEADER_LEN + 40];
    no_tag[HEADER_LEN] = 0x45;
    assert_eq!(
        rig.core.seal_packet(&mut no_tag, 40, now),
        Err(Refused::BufferTooSmall)
    );
    let mut fits = vec![0u8; HEADER_LEN + 40 + TAG_LEN];
    fits[HEADER_LEN] = 0x45;
    assert_eq!(
        rig.core.seal_packet(&mut fits, 40, now),
        Ok(HEADER_LEN + 40 + TAG_LEN)
    );
}

#[test]
fn a_broken_random_source_fails_the_connect_on_our_side() {
    struct Broken;
    impl Entropy for Broken {
        fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyError> {
            Err(EntropyError)
        }
    }
    let now = Instant::now();
    let mut core = Core::connect(
        CoreConfig {
            keys: ClientKeys {
                secret: Keypair::from_random([2; 32]).secret,
                server_public: Keypair::from_random([1; 32]).public,
                psk: None,
            },
            cipher: None,
            connect_within: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
            session: SessionOptions::default(),
            wall_clock: Duration::from_secs(1_000),
        },
        now,
        Box::new(Broken),
        Arc::default(),
    );
    assert!(matches!(
        core.poll_event(),
        Some(Event::ConnectFailed(ConnectFailure::Internal(_)))
    ));
    assert!(core.is_closed());
    assert_eq!(core.poll_timeout(), None);
    assert_eq!(core.poll_transmit(now, &mut [0u8; MAX_CONTROL_LEN]), None);
}

/// The core and what it imports from the crate stay free of the runtime and
/// of sockets, so it runs anywhere a test can call it.
#[test]
fn the_core_uses_no_runtime_and_no_sockets() {
    let sources = [
        ("core/mod.rs", include_str!("mod.rs")),
        ("core/handshake.rs", include_str!("handshake.rs")),
        ("core/timers.rs", include_str!("timers.rs")),
        ("core/rtt.rs", include_str!("rtt.rs")),
        ("backoff.rs", include_str!("../backoff.rs")),
        ("ip.rs", include_str!("../ip.rs")),
        ("stats.rs", include_str!("../stats.rs")),
    ];
    let forbidden = [
        "tokio::",
        "use tokio",
        "UdpSocket",
        "TcpStream",
        "TcpListener",
        "Instant::now",
        "SystemTime::now",
    ];
    for (file, text) in sources {
        // The code, not its comments or its own tests.
        let code = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            for word in forbidden {
                assert!(!line.contains(word), "{file} uses {word}: {line}");
            }
        }
    }
}
