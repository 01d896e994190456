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
use ringway_proto::{Session, SessionConfig};
use ringway_server::metrics::IoCounters;
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
    // None of the accepted ones was closed before the shutdown, except, on a slow run, for
    // failing to complete a handshake within the 2 s a full table allows.
    let closed =
        io.tcp_closed_garbage + io.tcp_closed_by_peer + io.tcp_closed_error + io.tcp_closed_idle;
    assert_eq!(closed, 0, "{io}");
    drop(held);
}

#[test]
fn one_address_gets_at_most_its_share_of_tcp_connections() {
    let share = 3;
    let server = Server::start(Options {
        max_per_source: Some(share),
        ..Options::default()
    });
    // Every connection of a test comes from 127.0.0.1.
    let held: Vec<TcpClient> = (0..share)
        .map(|_| connect_and_get_rejected(server.tcp))
        .collect();
    let mut extra = TcpStream::connect(server.tcp).unwrap();
    assert!(
        closed_within(&mut extra, TIMEOUT),
        "a connection over the address's share stayed open"
    );
    let (_, io) = server.stop();
    assert_eq!(io.tcp_refused_per_source, 1, "{io}");
    assert_eq!(io.tcp_refused, 0, "{io}");
    assert_eq!(io.tcp_accepted, u64::from(share), "{io}");
    drop(held);
}

#[test]
fn under_pressure_silent_tcp_connections_get_two_seconds() {
    // Three of four slots taken is pressure: connections that send nothing are closed after
    // 2 s, not after the minute-long handshake timeout.
    let server = Server::start(Options {
        max_connections: 4,
        handshake_timeout: Duration::from_secs(60),
        ..Options::default()
    });
    let mut silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(server.tcp).unwrap())
        .collect();
    let started = std::time::Instant::now();
    for s in &mut silent {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "a silent connection outlived the pressure deadline"
        );
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "closed too soon: {waited:?}"
    );
    let (_, io) = server.stop();
    assert_eq!(io.tcp_closed_handshake_timeout, 3, "{io}");
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

/// A download to a TCP peer that reads nothing until it is all sent: the kernel's buffers
/// fill (the server's SO_SNDBUF is small, the client's window its initial one), then the
/// connection's send queue up to its gate, and the rest waits in the flow queue. Once
/// the client reads, every packet arrives, in order, and none was tail-dropped.
#[test]
fn a_tcp_download_through_the_flow_queue_waits_for_room_and_arrives_whole_in_order() {
    stalled_tcp_download_waits_in_the_flow_queue(false);
}

#[test]
fn with_offload_a_tcp_download_through_the_flow_queue_waits_for_room() {
    stalled_tcp_download_waits_in_the_flow_queue(true);
}

fn stalled_tcp_download_waits_in_the_flow_queue(offload: bool) {
    let io = stalled_tcp_download(offload, patient_queue());
    assert_eq!(io.drop_tcp_queue_full, 0, "{io}");
    assert_eq!(io.fq_outside.dropped_overflow, 0, "{io}");
    // Far more than the connection's 64 KiB send queue held: the backlog stood in the
    // flow queue.
    assert!(io.fq_outside.peak >= STALLED_PACKETS as u64 / 4, "{io}");
    assert_eq!(io.fq_outside.dequeued, STALLED_PACKETS as u64, "{io}");
}

/// The same download without the flow queue: the connection's send queue fills and
/// tail-drops, which is what the queue is for (here the client then sees a gap, so only
/// the counters are read).
#[test]
fn without_the_flow_queue_a_stalled_tcp_download_is_tail_dropped() {
    let server = Server::start(Options {
        fair_queue: None,
        tcp_send_buffer: 4096,
        ..Options::default()
    });
    let (_tcp, _s, cfg) = tcp_session(&server);
    for i in 0..STALLED_PACKETS {
        server.write_inside(&numbered(cfg.client_addr, i));
    }
    let (_, io) = server.stop();
    assert!(io.drop_tcp_queue_full > 0, "{io}");
}

/// Packets in [`stalled_tcp_download`]: 1 MiB, many times what the socket buffers and
/// the connection's send queue hold, and less than the flow queue's limit.
const STALLED_PACKETS: u32 = 800;

/// The default queue, but with CoDel's target out of reach: the test stalls the
/// download for as long as a slow machine needs, and CoDel's drops are not under test.
fn patient_queue() -> ringway_server::config::FairQueue {
    let mut fq = ringway_server::config::FairQueue::default();
    fq.queue.target = Duration::from_secs(5);
    fq.queue.interval = Duration::from_secs(10);
    assert!(fq.queue.limit_items >= STALLED_PACKETS);
    fq
}

/// One TCP peer with a session.
fn tcp_session(server: &Server) -> (TcpClient, Session, SessionConfig) {
    let mut tcp = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 1);
    tcp.send(&frame);
    let (s, cfg) = hs.handle_response(&tcp.recv(), Instant::now()).unwrap();
    (tcp, s, cfg)
}

/// A 1300-byte packet of one flow to `to`, numbered `i` in its IP ID field.
fn numbered(to: std::net::Ipv4Addr, i: u32) -> Vec<u8> {
    let mut p = ipv4(SERVER_INNER, to, 1300, 17);
    p[4..8].copy_from_slice(&i.to_be_bytes());
    p
}

/// Writes [`STALLED_PACKETS`] packets of one flow for a TCP peer into the TUN, all
/// before the peer reads a byte, then reads them: they must all come, in order.
fn stalled_tcp_download(
    offload: bool,
    fair_queue: ringway_server::config::FairQueue,
) -> IoCounters {
    let server = Server::start(Options {
        offload,
        fair_queue: Some(fair_queue),
        tcp_send_buffer: 4096,
        ..Options::default()
    });
    let (mut tcp, mut s, cfg) = tcp_session(&server);
    let sent: Vec<Vec<u8>> = (0..STALLED_PACKETS)
        .map(|i| numbered(cfg.client_addr, i))
        .collect();
    for p in &sent {
        server.write_inside(p);
    }
    for (i, want) in sent.iter().enumerate() {
        let mut f = tcp.recv();
        let opened = s.opener.open(&mut f, Instant::now()).unwrap();
        assert_eq!(&f[opened.payload], &want[..], "packet {i}");
    }
    let (_, io) = server.stop();
    io
}

/// A TCP peer that stops reading holds up no one else: its backlog waits in the flow
/// queue while another peer's packets pass it. When its connection closes, what waits for
/// it is dropped as its turn comes (the session went with the connection), counted, and
/// the buffers come back.
#[test]
fn a_stalled_tcp_peer_holds_up_no_one_and_its_backlog_goes_when_it_closes() {
    let server = Server::start(Options {
        peers: 2,
        fair_queue: Some(patient_queue()),
        tcp_send_buffer: 4096,
        ..Options::default()
    });
    let (stalled, _s, cfg) = tcp_session(&server);
    for i in 0..STALLED_PACKETS {
        server.write_inside(&numbered(cfg.client_addr, i));
    }
    let mut other = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(1, 1);
    other.send(&frame);
    let (mut s, cfg) = hs.handle_response(&other.recv(), Instant::now()).unwrap();
    let mut exchange = |i| {
        let p = numbered(cfg.client_addr, i);
        server.write_inside(&p);
        let mut f = other.recv();
        let opened = s.opener.open(&mut f, Instant::now()).unwrap();
        assert_eq!(&f[opened.payload], &p[..]);
    };
    exchange(1);
    // Closing with unread bytes resets the connection; the server sees the reset before
    // the next packet for the other peer, whose round ends with the pump.
    drop(stalled);
    exchange(2);
    let (counters, io) = server.stop();
    assert!(counters.drop_no_route > 0, "{counters}");
    assert_eq!(io.drop_tcp_queue_full, 0, "{io}");
}
