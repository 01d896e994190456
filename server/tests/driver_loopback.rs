//! The real io_uring driver, in process, without root: a Unix datagram
//! socketpair stands in for the TUN (it keeps packet boundaries like a TUN
//! does), UDP and TCP listen on 127.0.0.1, and clients are built from
//! ringway-proto. This exercises the ring code paths (slots, buffers, TCP
//! reassembly and send queues, teardown) that the namespace tests cover only
//! as root.
//!
//! Timing: every wait is for an event (a packet, a reply, a close) with a
//! generous bound, never a sleep; bounds are far above the server's own
//! deadlines, and why a connection was closed is read from the counters, not
//! from how fast it happened. Every test ends by stopping the loop and checking
//! that nothing is left in flight and every buffer is back.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ringway_proto::wire::handshake::RESP_LEN;
use ringway_proto::wire::stream::encode_prefix;
use ringway_proto::wire::FrameType;
use support::*;

#[test]
fn udp_and_tcp_clients_pass_packets_both_ways_at_once() {
    both_ways(false);
}

#[test]
fn with_offload_plain_packets_pass_both_ways_behind_a_zero_header() {
    both_ways(true);
}

fn both_ways(offload: bool) {
    let server = Server::start(Options {
        peers: 2,
        offload,
        ..Options::default()
    });

    // UDP client (peer 0).
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (mut hs, frame) = init(0, 1);
    udp.send_to(&frame, server.udp).unwrap();
    let mut resp = [0u8; 2048];
    let n = udp.recv(&mut resp).unwrap();
    assert_eq!(n, RESP_LEN);
    let (mut u, ucfg) = hs.handle_response(&resp[..n], Instant::now()).unwrap();

    // TCP client (peer 1).
    let mut tcp = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(1, 1);
    tcp.send(&frame);
    let resp = tcp.recv();
    let (mut t, tcfg) = hs.handle_response(&resp, Instant::now()).unwrap();
    assert_ne!(ucfg.client_addr, tcfg.client_addr);

    let mut buf = vec![0u8; 4096];
    for round in 0..200u32 {
        let tag = round as u8;
        // Outside to inside, each client.
        for (sess, cfg, is_tcp) in [(&mut u, &ucfg, false), (&mut t, &tcfg, true)] {
            let pkt = ipv4(
                cfg.client_addr,
                SERVER_INNER,
                100 + (round as usize % 1200),
                tag,
            );
            let f = seal(sess, &pkt);
            if is_tcp {
                tcp.send(&f);
            } else {
                udp.send_to(&f, server.udp).unwrap();
            }
            assert_eq!(server.read_inside(), pkt, "round {round} tcp={is_tcp}");
        }
        // Inside to outside, each client.
        for (sess, cfg, is_tcp) in [(&mut u, &ucfg, false), (&mut t, &tcfg, true)] {
            let pkt = ipv4(
                SERVER_INNER,
                cfg.client_addr,
                60 + (round as usize % 1300),
                tag,
            );
            server.write_inside(&pkt);
            let mut f = if is_tcp {
                tcp.recv()
            } else {
                let n = udp.recv(&mut buf).unwrap();
                buf[..n].to_vec()
            };
            let opened = sess.opener.open(&mut f, Instant::now()).unwrap();
            assert_eq!(opened.kind, FrameType::Data);
            assert_eq!(&f[opened.payload], &pkt[..], "round {round} tcp={is_tcp}");
        }
    }
    let (counters, io) = server.stop();
    assert_eq!(counters.handshakes, 2);
    assert_eq!(counters.inside_tx_packets, 400);
    assert_eq!(counters.inside_rx_packets, 400);
    assert_eq!(io.tcp_accepted, 1);
    // One read, one write, one datagram per packet: nothing here can be coalesced.
    assert_eq!((io.tun_rx_reads, io.tun_rx_packets), (400, 400), "{io}");
    assert_eq!((io.tun_tx_writes, io.tun_tx_packets), (400, 400), "{io}");
    assert_eq!((io.udp_rx_recvs, io.udp_rx_datagrams), (201, 201), "{io}");
    // The handshake reply, 200 packets and the disconnect at shutdown.
    assert_eq!((io.udp_tx_sends, io.udp_tx_datagrams), (202, 202), "{io}");
}

#[test]
fn tcp_frames_split_and_packed_across_reads() {
    let server = Server::start(Options::default());
    let mut tcp = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 1);
    tcp.send(&frame);
    let (mut s, cfg) = hs.handle_response(&tcp.recv(), Instant::now()).unwrap();
    // 50 frames in one stream, written in awkward chunk sizes.
    let mut stream = Vec::new();
    let mut packets = Vec::new();
    let mut ends = Vec::new();
    for i in 0..50u8 {
        let pkt = ipv4(cfg.client_addr, SERVER_INNER, 40 + i as usize * 20, i);
        let f = seal(&mut s, &pkt);
        stream.extend_from_slice(&encode_prefix(f.len()).unwrap());
        stream.extend_from_slice(&f);
        packets.push(pkt);
        ends.push(stream.len());
    }
    // After each chunk, wait for every packet it completed: the server has
    // then read up to there, so the next chunk arrives in a later read and
    // frames split across chunks are reassembled across reads.
    let mut buf = vec![0u8; 4096];
    let mut next = 0;
    let mut written = 0;
    for chunk in stream.chunks(777) {
        tcp.stream.write_all(chunk).unwrap();
        written += chunk.len();
        while next < packets.len() && ends[next] <= written {
            let n = server.inside.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &packets[next][..], "packet {next}");
            next += 1;
        }
    }
    assert_eq!(next, packets.len());
    let (counters, io) = server.stop();
    assert_eq!(counters.inside_tx_packets, 50);
    assert_eq!(io.tcp_closed_garbage, 0, "{io}");
}

/// Whether the server closes `stream` within `limit`. The limits tests use are
/// far above the server's deadlines: they catch a connection never closed,
/// and the counters say why one was.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut b = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn bad_tcp_peers_are_closed_and_good_ones_keep_working() {
    let server = Server::start(Options {
        handshake_timeout: Duration::from_secs(1),
        ..Options::default()
    });
    // Garbage: closed at once.
    let mut garbage = TcpStream::connect(server.tcp).unwrap();
    garbage.write_all(&[0xffu8; 4096]).unwrap();
    // A zero length, then an oversized one.
    let mut zero = TcpStream::connect(server.tcp).unwrap();
    zero.write_all(&[0, 0, 1, 2]).unwrap();
    let mut huge = TcpStream::connect(server.tcp).unwrap();
    huge.write_all(&[0xff, 0xff]).unwrap();
    // A valid prefix, then a stall mid-frame: closed at the handshake deadline.
    let mut stall = TcpStream::connect(server.tcp).unwrap();
    stall.write_all(&[0, 100, 1, 2, 3]).unwrap();
    // Silent connections.
    let mut idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(server.tcp).unwrap())
        .collect();

    // Meanwhile a good client works.
    let mut good = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 1);
    good.send(&frame);
    let (mut s, cfg) = hs.handle_response(&good.recv(), Instant::now()).unwrap();

    for (name, c) in [
        ("garbage", &mut garbage),
        ("zero", &mut zero),
        ("huge", &mut huge),
        ("stall", &mut stall),
    ] {
        assert!(closed_within(c, TIMEOUT), "{name} was not closed");
    }
    for c in &mut idle {
        assert!(
            closed_within(c, TIMEOUT),
            "a silent connection was not closed"
        );
    }
    // Well past its own handshake deadline, the good client still works.
    let pkt = ipv4(cfg.client_addr, SERVER_INNER, 300, 9);
    good.send(&seal(&mut s, &pkt));
    let mut buf = vec![0u8; 2048];
    let n = server.inside.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &pkt[..]);
    let (_, io) = server.stop();
    // The three bad streams for what they sent; the stall and the silent ones
    // by the handshake deadline; the good one by none.
    assert_eq!(io.tcp_closed_garbage, 3, "{io}");
    assert_eq!(io.tcp_closed_handshake_timeout, 51, "{io}");
    assert_eq!(io.tcp_accepted, 55, "{io}");
}

/// Connects and waits for the server's answer to an initiation from a key it
/// does not know (a reject): proof the connection was accepted and read.
fn connect_and_get_rejected(addr: SocketAddr) -> TcpClient {
    let mut c = TcpClient::connect(addr);
    let (_, frame) = init(UNKNOWN_PEER, 1);
    c.send(&frame);
    let reply = c.recv();
    assert_eq!(
        ringway_proto::wire::frame_type(&reply),
        Ok(FrameType::HandshakeReject)
    );
    c
}

/// A peer index no server in these tests lists.
const UNKNOWN_PEER: u8 = 200;

#[test]
fn tcp_connection_cap_refuses_cleanly() {
    let cap = 32;
    let server = Server::start(Options {
        max_connections: cap,
        ..Options::default()
    });
    // Each held connection is accepted and answered before the next opens.
    let held: Vec<TcpClient> = (0..cap)
        .map(|_| connect_and_get_rejected(server.tcp))
        .collect();
    // One more is accepted and closed at once.
    let mut extra = TcpStream::connect(server.tcp).unwrap();
    assert!(
        closed_within(&mut extra, TIMEOUT),
        "the connection over the cap stayed open"
    );
    let (counters, io) = server.stop();
    assert_eq!(io.tcp_refused, 1, "{io}");
    assert_eq!(io.tcp_accepted, u64::from(cap), "{io}");
    assert_eq!(counters.drop_unknown_peer, u64::from(cap));
    // None of the accepted ones was closed before the shutdown.
    let closed = io.tcp_closed_garbage
        + io.tcp_closed_handshake_timeout
        + io.tcp_closed_by_peer
        + io.tcp_closed_error
        + io.tcp_closed_idle;
    assert_eq!(closed, 0, "{io}");
    drop(held);
}

#[test]
fn stops_cleanly_with_requests_in_flight() {
    let server = Server::start(Options::default());
    // Twenty connections, each with a receive in flight and one reply sent;
    // a UDP datagram answered too.
    let _conns: Vec<TcpClient> = (0..20)
        .map(|_| connect_and_get_rejected(server.tcp))
        .collect();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (_, frame) = init(UNKNOWN_PEER, 1);
    udp.send_to(&frame, server.udp).unwrap();
    let mut reply = [0u8; 64];
    let n = udp.recv(&mut reply).unwrap();
    assert_eq!(
        ringway_proto::wire::frame_type(&reply[..n]),
        Ok(FrameType::HandshakeReject)
    );
    // `stop` checks that nothing is left in flight and every buffer is back.
    let (counters, io) = server.stop();
    assert_eq!(counters.drop_unknown_peer, 21);
    assert_eq!((io.tcp_accepted, io.udp_tx_datagrams), (20, 1), "{io}");
}

#[test]
fn tcp_connection_left_behind_by_its_session_is_closed_when_idle() {
    let server = Server::start(Options {
        idle_timeout: Duration::from_secs(2),
        ..Options::default()
    });
    // Handshake on A, then again on B: the session moves to B and A goes quiet.
    let mut a = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 1);
    a.send(&frame);
    hs.handle_response(&a.recv(), Instant::now()).unwrap();
    let mut b = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 2);
    b.send(&frame);
    let (mut s, cfg) = hs.handle_response(&b.recv(), Instant::now()).unwrap();
    // B stays busy; A is closed once silent for the idle timeout (2 s, checked
    // each second). The bound only catches a connection never closed.
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = vec![0u8; 2048];
    a.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut a_closed = false;
    while Instant::now() < deadline && !a_closed {
        let pkt = ipv4(cfg.client_addr, SERVER_INNER, 64, 1);
        b.send(&seal(&mut s, &pkt));
        server.inside.recv(&mut buf).unwrap();
        let mut one = [0u8; 1];
        a_closed = matches!(a.stream.read(&mut one), Ok(0));
    }
    assert!(a_closed, "the abandoned connection was not closed");
    let (_, io) = server.stop();
    assert_eq!(io.tcp_closed_idle, 1, "{io}");
}
