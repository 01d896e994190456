//! Session-layer tests with in-memory clients: no sockets, no TUN, a chosen clock.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ringway_proto::handshake::client::{ClientHandshake, ClientKeys};
use ringway_proto::handshake::{InitPayload, Keypair, Timestamp};
use ringway_proto::wire::handshake::INIT_LEN;
use ringway_proto::wire::transport::{HEADER_LEN, OVERHEAD};
use ringway_proto::{Cipher, Session};

use super::*;
use crate::config::{Peer, Settings, UringSection};

struct Counter(u32);
impl IdSource for Counter {
    fn next_id(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

/// The same counter as the client side's random source.
impl ringway_proto::Entropy for Counter {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), ringway_proto::EntropyError> {
        IdSource::fill(self, dest);
        Ok(())
    }
}

fn server_keys() -> Keypair {
    Keypair::from_random([1; 32])
}

fn settings(peers: &[(&str, &Keypair, Option<[u8; 32]>)], pool: &str) -> Settings {
    Settings {
        listen_udp: Some("127.0.0.1:0".parse().unwrap()),
        listen_tcp: None,
        udp_socket_buffer: 0,
        secret_key: server_keys().secret,
        pool: pool.parse().unwrap(),
        tun_name: "t".into(),
        offload: crate::inside::tun::Offload::Off,
        mtu: 1420,
        keepalive_secs: 10,
        idle_timeout_secs: 60,
        cipher: Cipher::Aes256Gcm,
        rekey_after_secs: 0,
        uring: UringSection::default(),
        fair_queue: None,
        io: Default::default(),
        state_file: std::path::PathBuf::from("/nonexistent/last-handshakes"),
        tcp: crate::config::TcpSection::default(),
        peers: peers
            .iter()
            .map(|(n, k, psk)| Peer {
                name: n.to_string(),
                public_key: k.public,
                psk: *psk,
            })
            .collect(),
    }
}

fn addr(port: u16) -> Outside {
    Outside::Udp(SocketAddr::from(([192, 0, 2, 2], port)))
}

/// Runs a handshake for `client` and returns its session and config, or `None`
/// if the server did not answer.
fn connect(
    s: &mut Sessions,
    client: &Keypair,
    psk: Option<[u8; 32]>,
    ts: u64,
    from: Outside,
    now: Instant,
) -> Option<(Session, SessionConfig)> {
    let keys = ClientKeys {
        secret: client.secret.clone(),
        server_public: server_keys().public,
        psk,
    };
    let mut init = [0u8; INIT_LEN];
    let payload = InitPayload {
        timestamp: Timestamp { secs: ts, nanos: 0 },
        cipher: None,
    };
    let mut hs = ClientHandshake::initiate(&keys, payload, &mut Counter(9), &mut init).unwrap();
    let mut frame = init.to_vec();
    match s.handle_outside(&mut frame, from, now, &mut Counter(ts as u32 * 100)) {
        OutsideAction::Reply(to, bytes) => {
            assert_eq!(to, from);
            let bytes = bytes.to_vec();
            if hs.reject_reason(&bytes).is_some() {
                return None;
            }
            Some(hs.handle_response(&bytes, now).unwrap())
        }
        _ => None,
    }
}

fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(20)];
    p[0] = 0x45;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p
}

fn seal_from_client(c: &mut Session, packet: &[u8], now: Instant) -> Vec<u8> {
    let mut buf = vec![0u8; packet.len() + OVERHEAD];
    buf[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
    let n = c.sealer.seal_data(&mut buf, packet.len(), now).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn handshake_then_packets_both_ways() {
    let alice = Keypair::from_random([2; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    let now = Instant::now();
    let (mut c, cfg) = connect(&mut s, &alice, None, 1, addr(1000), now).unwrap();
    assert_eq!(cfg.client_addr, Ipv4Addr::new(198, 18, 0, 2));
    assert_eq!(cfg.server_addr, Ipv4Addr::new(198, 18, 0, 1));
    assert_eq!(cfg.prefix_len, 24);
    assert_eq!(s.len(), 1);

    // Client to server: decrypted in place, handed to the TUN.
    let pkt = ipv4_packet(cfg.client_addr, cfg.server_addr, 100);
    let mut frame = seal_from_client(&mut c, &pkt, now);
    match s.handle_outside(&mut frame, addr(1000), now, &mut Counter(0)) {
        OutsideAction::ToInside(r) => assert_eq!(&frame[r], &pkt[..]),
        other => panic!("expected ToInside, got {other:?}"),
    }

    // Server to client: sealed in place in the buffer, sent to the client's address.
    let reply = ipv4_packet(cfg.server_addr, cfg.client_addr, 60);
    let mut buf = vec![0u8; 60 + OVERHEAD];
    buf[HEADER_LEN..HEADER_LEN + 60].copy_from_slice(&reply);
    let InsideAction::Send { to, len } = s.handle_inside(&mut buf, 60, now) else {
        panic!("expected Send");
    };
    assert_eq!(to, addr(1000));
    let opened = c.opener.open(&mut buf[..len], now).unwrap();
    assert_eq!(&buf[opened.payload], &reply[..]);
    assert_eq!(s.counters.inside_rx_packets, 1);
    assert_eq!(s.counters.inside_tx_packets, 1);
}

#[test]
fn spoofed_source_and_unknown_destination_are_dropped() {
    let alice = Keypair::from_random([2; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    let now = Instant::now();
    let (mut c, cfg) = connect(&mut s, &alice, None, 1, addr(1), now).unwrap();
    let spoofed = ipv4_packet(Ipv4Addr::new(198, 18, 0, 99), cfg.server_addr, 40);
    let mut frame = seal_from_client(&mut c, &spoofed, now);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(1), now, &mut Counter(0)),
        OutsideAction::None
    ));
    assert_eq!(s.counters.drop_bad_source, 1);

    let mut buf = ipv4_packet(cfg.server_addr, Ipv4Addr::new(198, 18, 0, 77), 40);
    buf.splice(0..0, [0u8; HEADER_LEN]);
    buf.extend_from_slice(&[0u8; 16]);
    assert_eq!(s.handle_inside(&mut buf, 40, now), InsideAction::Drop);
    let mut v6 = [0x60u8; HEADER_LEN + 40 + 16];
    assert_eq!(s.handle_inside(&mut v6[..], 40, now), InsideAction::Drop);
    assert_eq!(s.counters.drop_no_route, 2);
}

#[test]
fn unknown_peer_replayed_init_and_garbage_get_no_answer() {
    let alice = Keypair::from_random([2; 32]);
    let mallory = Keypair::from_random([3; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    let now = Instant::now();
    assert!(connect(&mut s, &mallory, None, 1, addr(1), now).is_none());
    assert_eq!(s.counters.drop_unknown_peer, 1);
    assert!(connect(&mut s, &alice, None, 5, addr(1), now).is_some());
    // Same or older timestamp: a replay.
    assert!(connect(&mut s, &alice, None, 5, addr(1), now).is_none());
    assert!(connect(&mut s, &alice, None, 4, addr(1), now).is_none());
    assert_eq!(s.counters.drop_handshake_replay, 2);
    for junk in [&b""[..], &[1u8; 3], &[3u8; 40], &[2u8; 80], &[9u8; 200]] {
        let mut j = junk.to_vec();
        assert!(matches!(
            s.handle_outside(&mut j, addr(1), now, &mut Counter(0)),
            OutsideAction::None
        ));
    }
    assert_eq!(s.len(), 1);
}

#[test]
fn reconnect_keeps_address_and_replaces_session() {
    let alice = Keypair::from_random([2; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    let now = Instant::now();
    let (mut old, cfg1) = connect(&mut s, &alice, None, 1, addr(1), now).unwrap();
    let (mut new, cfg2) = connect(&mut s, &alice, None, 2, addr(2), now).unwrap();
    assert_eq!(cfg1.client_addr, cfg2.client_addr);
    assert_eq!(s.len(), 1);
    // The client's first frame on the new session makes it the current one.
    let pkt = ipv4_packet(cfg1.client_addr, cfg1.server_addr, 20);
    let mut frame = seal_from_client(&mut new, &pkt, now);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(2), now, &mut Counter(0)),
        OutsideAction::ToInside(_)
    ));
    assert_eq!(s.len(), 1);
    // Once the old session's grace period is over, its frames are unknown.
    s.handle_timers(now + REKEY_GRACE, |_| {});
    let mut frame = seal_from_client(&mut old, &pkt, now);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(1), now, &mut Counter(0)),
        OutsideAction::None
    ));
    assert_eq!(s.counters.drop_unknown_session, 1);
}

#[test]
fn pool_exhaustion_is_counted() {
    let a = Keypair::from_random([2; 32]);
    let b = Keypair::from_random([3; 32]);
    let mut s = Sessions::new(&settings(
        &[("a", &a, None), ("b", &b, None)],
        "198.18.0.0/30",
    ));
    let now = Instant::now();
    assert!(connect(&mut s, &a, None, 1, addr(1), now).is_some());
    assert!(connect(&mut s, &b, None, 1, addr(2), now).is_none());
    assert_eq!(s.counters.drop_pool_exhausted, 1);
}

#[test]
fn psk_peer_needs_the_psk() {
    let a = Keypair::from_random([2; 32]);
    let mut s = Sessions::new(&settings(&[("a", &a, Some([7; 32]))], "198.18.0.0/24"));
    let now = Instant::now();
    assert!(connect(&mut s, &a, Some([7; 32]), 1, addr(1), now).is_some());
}

#[test]
fn keepalives_then_expiry_then_address_reuse() {
    let alice = Keypair::from_random([2; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    let t0 = Instant::now();
    let (mut c, _) = connect(&mut s, &alice, None, 1, addr(1), t0).unwrap();
    let mut sent = Vec::new();
    let mut ended = Vec::new();
    let mut record = |o: TimerOutput<'_>| match o {
        TimerOutput::Send(to, b) => sent.push((to, b.to_vec())),
        TimerOutput::Ended(to) => ended.push(to),
    };
    let next = s.handle_timers(t0, &mut record);
    assert_eq!(next, Some(t0 + Duration::from_secs(10)));
    s.handle_timers(t0 + Duration::from_secs(10), &mut record);
    let next = s.handle_timers(t0 + Duration::from_secs(60), &mut record);
    assert_eq!(next, None);
    assert_eq!(sent.len(), 1);
    let (to, mut ka) = sent.pop().unwrap();
    assert_eq!(to, addr(1));
    assert_eq!(
        c.opener.open(&mut ka, t0).unwrap().kind,
        ringway_proto::wire::FrameType::Keepalive
    );
    assert_eq!(ended, vec![addr(1)]);
    assert_eq!(s.counters.sessions_expired, 1);
    assert!(s.is_empty());
}

#[test]
fn disconnect_frame_ends_the_session() {
    let alice = Keypair::from_random([2; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    let now = Instant::now();
    let (mut c, _) = connect(&mut s, &alice, None, 1, addr(1), now).unwrap();
    let mut buf = [0u8; OVERHEAD];
    let n = c.sealer.seal_disconnect(&mut buf, now).unwrap();
    s.handle_outside(&mut buf[..n], addr(1), now, &mut Counter(0));
    assert!(s.is_empty());
    assert_eq!(s.counters.sessions_disconnected, 1);
    // Coming back after a clean disconnect: the same inner address.
    let (_, cfg2) = connect(&mut s, &alice, None, 2, addr(1), now).unwrap();
    assert_eq!(cfg2.client_addr, Ipv4Addr::new(198, 18, 0, 2));
}

#[test]
fn tcp_sessions_end_with_their_connection_and_can_move() {
    let alice = Keypair::from_random([2; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    let now = Instant::now();
    let conn = ConnId {
        index: 3,
        generation: 1,
    };
    let (mut c, cfg) = connect(&mut s, &alice, None, 1, Outside::Tcp(conn), now).unwrap();
    // Replies to the server's side go to the connection.
    let mut buf = ipv4_packet(cfg.server_addr, cfg.client_addr, 40);
    buf.splice(0..0, [0u8; HEADER_LEN]);
    buf.extend_from_slice(&[0u8; 16]);
    assert!(matches!(
        s.handle_inside(&mut buf, 40, now),
        InsideAction::Send { to: Outside::Tcp(c2), .. } if c2 == conn
    ));
    // Another connection with the same index but a newer generation is a different one.
    s.connection_closed(ConnId {
        index: 3,
        generation: 2,
    });
    assert_eq!(s.len(), 1);
    // The client moves to UDP: authenticated frames re-point the session.
    let pkt = ipv4_packet(cfg.client_addr, cfg.server_addr, 20);
    let mut frame = seal_from_client(&mut c, &pkt, now);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(7), now, &mut Counter(0)),
        OutsideAction::ToInside(_)
    ));
    s.connection_closed(conn);
    assert_eq!(s.len(), 1, "the session moved off the closed connection");
    // A new session over TCP waits for the client's first frame; its connection closing
    // first ends only it, and the UDP session carries on.
    let (_c, _) = connect(&mut s, &alice, None, 2, Outside::Tcp(conn), now).unwrap();
    s.connection_closed(conn);
    assert_eq!(s.len(), 1);
    assert_eq!(s.sessions.len(), 1);
    // Confirmed, a TCP session ends with its connection.
    let (mut c3, _) = connect(&mut s, &alice, None, 3, Outside::Tcp(conn), now).unwrap();
    let mut frame = seal_from_client(&mut c3, &pkt, now);
    assert!(matches!(
        s.handle_outside(&mut frame, Outside::Tcp(conn), now, &mut Counter(0)),
        OutsideAction::ToInside(_)
    ));
    s.connection_closed(conn);
    assert!(s.is_empty(), "{:?}", s.sessions.keys());
}

#[test]
fn a_closing_connection_ends_exactly_its_sessions_and_the_index_keeps_nothing() {
    let alice = Keypair::from_random([2; 32]);
    let bob = Keypair::from_random([3; 32]);
    let mut s = Sessions::new(&settings(
        &[("alice", &alice, None), ("bob", &bob, None)],
        "198.18.0.0/24",
    ));
    let now = Instant::now();
    let conn = |index| ConnId {
        index,
        generation: 1,
    };
    connect(&mut s, &alice, None, 1, Outside::Tcp(conn(1)), now).unwrap();
    // A rekey on the same connection: the old session retires, both are the connection's.
    connect(&mut s, &alice, None, 2, Outside::Tcp(conn(1)), now).unwrap();
    connect(&mut s, &bob, None, 1, Outside::Tcp(conn(2)), now).unwrap();
    assert_eq!(s.by_conn[&conn(1)].len(), 2);
    // A connection that never completed a handshake: nothing to end.
    s.connection_closed(conn(9));
    assert_eq!(s.len(), 2);
    s.connection_closed(conn(1));
    assert_eq!(s.len(), 1, "bob's session is on another connection");
    assert_eq!(s.sessions.len(), 1, "alice's retired session went too");
    assert!(!s.by_conn.contains_key(&conn(1)));
    // Expiry removes a TCP session from the index as well.
    let later = now + Duration::from_secs(3600);
    s.handle_timers(later, |_| {});
    assert!(s.is_empty());
    assert!(s.by_conn.is_empty(), "{:?}", s.by_conn);
}

#[test]
fn a_replayed_initiation_answered_first_does_not_take_the_traffic() {
    let alice = Keypair::from_random([2; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    let now = Instant::now();
    let (mut live, cfg) = connect(&mut s, &alice, None, 1, addr(1), now).unwrap();
    // The session works: the client has used it.
    let pkt = ipv4_packet(cfg.client_addr, cfg.server_addr, 20);
    let mut frame = seal_from_client(&mut live, &pkt, now);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(1), now, &mut Counter(0)),
        OutsideAction::ToInside(_)
    ));
    // The client's rekey initiation, captured and replayed by an on-path racer from its own
    // address before the real one arrives: the racer gets an answer it cannot use.
    let keys = ClientKeys {
        secret: alice.secret.clone(),
        server_public: server_keys().public,
        psk: None,
    };
    let mut init = [0u8; INIT_LEN];
    let payload = InitPayload {
        timestamp: Timestamp { secs: 2, nanos: 0 },
        cipher: None,
    };
    ClientHandshake::initiate(&keys, payload, &mut Counter(9), &mut init).unwrap();
    let racer = addr(666);
    let mut replayed = init.to_vec();
    assert!(matches!(
        s.handle_outside(&mut replayed, racer, now, &mut Counter(7)),
        OutsideAction::Reply(to, _) if to == racer
    ));
    let mut genuine = init.to_vec();
    assert!(matches!(
        s.handle_outside(&mut genuine, addr(1), now, &mut Counter(8)),
        OutsideAction::None
    ));
    // Traffic to the client still goes to the client, on the session that works.
    let mut buf = ipv4_packet(cfg.server_addr, cfg.client_addr, 40);
    buf.splice(0..0, [0u8; HEADER_LEN]);
    buf.extend_from_slice(&[0u8; 16]);
    let InsideAction::Send { to, len } = s.handle_inside(&mut buf, 40, now) else {
        panic!("expected Send");
    };
    assert_eq!(to, addr(1));
    assert!(live.opener.open(&mut buf[..len], now).is_ok());
    // The unconfirmed session sends no keepalives to the racer and ends quietly; the client's
    // retry with a fresh timestamp is answered and, once used, current.
    let later = now + Duration::from_secs(30);
    let mut sent_to = Vec::new();
    s.handle_timers(later, |out| {
        if let TimerOutput::Send(to, _) = out {
            sent_to.push(to);
        }
    });
    assert!(!sent_to.contains(&racer), "{sent_to:?}");
    let (mut next, _) = connect(&mut s, &alice, None, 3, addr(1), later).unwrap();
    let mut frame = seal_from_client(&mut next, &pkt, later);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(1), later, &mut Counter(0)),
        OutsideAction::ToInside(_)
    ));
    assert_eq!(s.len(), 1);
    assert_eq!(s.counters.sessions_expired, 0);
}

#[test]
fn restored_timestamps_refuse_initiations_from_before_a_restart() {
    let alice = Keypair::from_random([2; 32]);
    let gone = Keypair::from_random([9; 32]).public;
    let st = settings(&[("alice", &alice, None)], "198.18.0.0/24");
    let now = Instant::now();
    // The first run accepts alice's initiation at t=5 and saves it.
    let mut first = Sessions::new(&st);
    assert!(!first.timestamps_changed());
    connect(&mut first, &alice, None, 5, addr(1), now).unwrap();
    assert!(first.timestamps_changed());
    assert!(!first.timestamps_changed(), "cleared by the call");
    let saved: std::collections::HashMap<_, _> = first.timestamps().map(|(k, t)| (*k, t)).collect();
    assert_eq!(saved[&alice.public], Timestamp { secs: 5, nanos: 0 });
    // The restarted server refuses it replayed, and takes a newer one.
    let mut again = Sessions::new(&st);
    let mut restored = saved.clone();
    restored.insert(gone, Timestamp { secs: 1, nanos: 0 });
    again.restore_timestamps(restored);
    assert!(connect(&mut again, &alice, None, 5, addr(1), now).is_none());
    assert_eq!(again.counters.drop_handshake_replay, 1);
    assert!(connect(&mut again, &alice, None, 6, addr(1), now).is_some());
    // A key no longer in the peer list keeps its timestamp for the next save.
    let keys: Vec<_> = again.timestamps().map(|(k, _)| *k).collect();
    assert!(keys.contains(&gone) && keys.contains(&alice.public));
}

/// The reply a fresh initiation from `client` (pinning `server_public`) gets.
fn reply_to_init(
    s: &mut Sessions,
    client: &Keypair,
    server_public: ringway_proto::PublicKey,
) -> Option<Vec<u8>> {
    let keys = ClientKeys {
        secret: client.secret.clone(),
        server_public,
        psk: None,
    };
    let mut init = [0u8; INIT_LEN];
    let payload = InitPayload {
        timestamp: Timestamp { secs: 1, nanos: 0 },
        cipher: None,
    };
    let hs = ClientHandshake::initiate(&keys, payload, &mut Counter(4241), &mut init).unwrap();
    let mut frame = init.to_vec();
    match s.handle_outside(&mut frame, addr(9), Instant::now(), &mut Counter(0)) {
        OutsideAction::Reply(_, b) => {
            let reply = b.to_vec();
            let f = ringway_proto::wire::handshake::RejectFrame::new_checked(&reply[..]).unwrap();
            assert_eq!(f.receiver_index(), hs.sender_index());
            Some(reply)
        }
        _ => None,
    }
}

#[test]
fn rejects_say_why() {
    use ringway_proto::wire::handshake::{RejectFrame, RejectReason};
    let alice = Keypair::from_random([2; 32]);
    let mallory = Keypair::from_random([3; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    // Not in the peer list.
    let r = reply_to_init(&mut s, &mallory, server_keys().public).unwrap();
    let f = RejectFrame::new_checked(&r[..]).unwrap();
    assert_eq!(f.reason(), RejectReason::NotAuthorised);
    // Pinned the wrong server key: mac1 fails.
    let wrong = Keypair::from_random([9; 32]).public;
    let r = reply_to_init(&mut s, &alice, wrong).unwrap();
    assert_eq!(
        RejectFrame::new_checked(&r[..]).unwrap().reason(),
        RejectReason::UnknownServerKey
    );
    assert!(s.is_empty());
    assert_eq!(s.counters.drop_unknown_peer, 1);
    assert_eq!(s.counters.drop_handshake_invalid, 1);
}

#[test]
fn probes_are_echoed() {
    let alice = Keypair::from_random([2; 32]);
    let mut s = Sessions::new(&settings(&[("alice", &alice, None)], "198.18.0.0/24"));
    let now = Instant::now();
    let (mut c, _) = connect(&mut s, &alice, None, 1, addr(1), now).unwrap();
    let mut probe = [0u8; OVERHEAD + 8];
    let n = c.sealer.seal_probe(&mut probe, 77, now).unwrap();
    let mut echo = match s.handle_outside(&mut probe[..n], addr(1), now, &mut Counter(0)) {
        OutsideAction::Reply(to, b) => {
            assert_eq!(to, addr(1));
            b.to_vec()
        }
        other => panic!("expected an echo, got {other:?}"),
    };
    let o = c.opener.open(&mut echo, now).unwrap();
    assert_eq!(ringway_proto::session::probe_id(&echo[o.payload]), Some(77));
    // A plain keepalive is not answered.
    let mut ka = [0u8; OVERHEAD];
    let n = c.sealer.seal_keepalive(&mut ka, now).unwrap();
    assert!(matches!(
        s.handle_outside(&mut ka[..n], addr(1), now, &mut Counter(0)),
        OutsideAction::None
    ));
}

#[test]
fn rekey_keeps_the_old_session_open_for_a_grace_period() {
    let alice = Keypair::from_random([2; 32]);
    let mut st = settings(&[("alice", &alice, None)], "198.18.0.0/24");
    st.rekey_after_secs = 120;
    let mut s = Sessions::new(&st);
    let t0 = Instant::now();
    let (mut old, cfg) = connect(&mut s, &alice, None, 1, addr(1), t0).unwrap();
    assert_eq!(cfg.rekey_after_secs, 120);
    // The session is in use when the rekey comes.
    let used = ipv4_packet(cfg.client_addr, cfg.server_addr, 30);
    let mut frame = seal_from_client(&mut old, &used, t0);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(1), t0, &mut Counter(0)),
        OutsideAction::ToInside(_)
    ));
    let (mut new, cfg2) = connect(&mut s, &alice, None, 2, addr(1), t0).unwrap();
    assert_eq!(cfg.client_addr, cfg2.client_addr);
    // A packet sealed under the old keys, still in flight, is delivered.
    let pkt = ipv4_packet(cfg.client_addr, cfg.server_addr, 30);
    let mut frame = seal_from_client(&mut old, &pkt, t0);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(1), t0, &mut Counter(0)),
        OutsideAction::ToInside(_)
    ));
    // Traffic to the client stays on the old session until the client has used the new one
    // (an answered initiation proves nothing: it may be a replay), then uses the new one only.
    let to_client = |s: &mut Sessions| {
        let mut buf = ipv4_packet(cfg.server_addr, cfg.client_addr, 40);
        buf.splice(0..0, [0u8; HEADER_LEN]);
        buf.extend_from_slice(&[0u8; 16]);
        let InsideAction::Send { len, .. } = s.handle_inside(&mut buf, 40, t0) else {
            panic!("expected Send");
        };
        buf.truncate(len);
        buf
    };
    let mut sealed = to_client(&mut s);
    assert!(old.opener.open(&mut sealed, t0).is_ok());
    let mut frame = seal_from_client(&mut new, &pkt, t0);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(1), t0, &mut Counter(0)),
        OutsideAction::ToInside(_)
    ));
    let mut sealed = to_client(&mut s);
    assert!(new.opener.open(&mut sealed, t0).is_ok());
    // After the grace period the old session is gone, the address stays.
    s.handle_timers(t0 + REKEY_GRACE, |_| {});
    assert_eq!(s.len(), 1);
    let mut frame = seal_from_client(&mut old, &pkt, t0);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(1), t0, &mut Counter(0)),
        OutsideAction::None
    ));
    let mut frame = seal_from_client(&mut new, &pkt, t0);
    assert!(matches!(
        s.handle_outside(&mut frame, addr(1), t0, &mut Counter(0)),
        OutsideAction::ToInside(_)
    ));
    assert_eq!(s.counters.sessions_expired, 0);
}
