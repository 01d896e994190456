//! Segmentation offload through the real io_uring driver, in process, without root: the
//! TUN stand-in (a Unix datagram socketpair) carries a `virtio_net_hdr` in front of every
//! packet, as a TUN opened with `IFF_VNET_HDR` does, and UDP on loopback has `UDP_SEGMENT`
//! and `UDP_GRO` (loopback keeps a GSO send whole up to a receiver with `UDP_GRO`, so a
//! batch arrives in one receive, deterministically).
//!
//! Every inner TCP segment checked here is read independently of the offload crate: IPv4
//! and TCP header fields and checksums by hand, payload byte for byte.

mod support;

use std::io::{IoSlice, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Instant;

use ringway_offload::{GsoType, VnetHdr};
use ringway_proto::wire::handshake::RESP_LEN;
use ringway_proto::wire::stream::encode_prefix;
use ringway_proto::wire::FrameType;
use ringway_proto::{Session, SessionConfig};
use socket2::{MsgHdr, SockAddr, SockRef};
use support::*;

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// TCP payload per segment at MTU 1420 without TCP options.
const MSS: usize = 1380;

fn sum16(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The TCP pseudo-header sum of an IPv4 packet whose IP header is `ihl` bytes.
fn pseudo(packet: &[u8], ihl: usize) -> u32 {
    let l4_len = (packet.len() - ihl) as u32;
    sum16(sum16(0, &packet[12..20]), &[0, 6]) + l4_len
}

/// An IPv4/TCP segment with valid checksums; `options` are IPv4 options (a multiple of 4).
fn tcp_segment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    options: &[u8],
    seq: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 20 + options.len();
    let len = ihl + 20 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x40 | (ihl / 4) as u8;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..ihl].copy_from_slice(options);
    let c = !fold(sum16(0, &p[..ihl]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let t = &mut p[ihl..];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&7u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&512u16.to_be_bytes());
    t[20..].copy_from_slice(payload);
    let c = !fold(sum16(pseudo(&p, ihl), &p[ihl..]));
    p[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
    p
}

/// What an independent reading of an IPv4/TCP packet finds.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    seq: u32,
    flags: u8,
    payload: Vec<u8>,
}

/// Checks an IPv4/TCP packet's lengths and both checksums and returns its fields.
fn read_segment(p: &[u8]) -> Seen {
    assert_eq!(p[0] >> 4, 4, "not IPv4");
    let ihl = usize::from(p[0] & 15) * 4;
    assert_eq!(
        usize::from(u16::from_be_bytes([p[2], p[3]])),
        p.len(),
        "IPv4 total length"
    );
    assert_eq!(fold(sum16(0, &p[..ihl])), 0xffff, "IPv4 header checksum");
    assert_eq!(p[9], 6, "not TCP");
    assert_eq!(
        fold(sum16(pseudo(p, ihl), &p[ihl..])),
        0xffff,
        "TCP checksum"
    );
    let t = &p[ihl..];
    let thl = usize::from(t[12] >> 4) * 4;
    Seen {
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        flags: t[13],
        payload: t[thl..].to_vec(),
    }
}

/// `n` bytes no two segments share.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Stops the server (checking, as [`Server::stop`] does, that nothing is left in flight)
/// and checks that no read, write or send failed.
fn stop_clean(
    server: Server,
) -> (
    ringway_server::metrics::SessionCounters,
    ringway_server::metrics::IoCounters,
) {
    let (counters, io) = server.stop();
    assert_eq!(io.io_errors, 0, "{io}");
    (counters, io)
}

/// A UDP client with a session.
fn udp_client(server: &Server) -> (UdpSocket, Session, SessionConfig) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (mut hs, frame) = init(0, 1);
    udp.send_to(&frame, server.udp).unwrap();
    let mut resp = [0u8; 2048];
    let n = udp.recv(&mut resp).unwrap();
    assert_eq!(n, RESP_LEN);
    let (s, cfg) = hs.handle_response(&resp[..n], Instant::now()).unwrap();
    (udp, s, cfg)
}

/// A TCP client with a session.
fn tcp_client(server: &Server) -> (TcpClient, Session, SessionConfig) {
    let mut tcp = TcpClient::connect(server.tcp);
    let (mut hs, frame) = init(0, 1);
    tcp.send(&frame);
    let (s, cfg) = hs.handle_response(&tcp.recv(), Instant::now()).unwrap();
    (tcp, s, cfg)
}

/// Sends `frames` (all of one size but the last) to `to` in one `sendmsg` with
/// `UDP_SEGMENT`, as an offloading client does.
fn send_gso(udp: &UdpSocket, to: SocketAddr, frames: &[Vec<u8>]) {
    let size = frames[0].len() as u16;
    // struct cmsghdr { size_t len; int level; int type; } then the u16, padded to 8.
    let mut control = Vec::with_capacity(24);
    control.extend_from_slice(&18usize.to_ne_bytes());
    control.extend_from_slice(&libc::SOL_UDP.to_ne_bytes());
    control.extend_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    control.extend_from_slice(&size.to_ne_bytes());
    control.resize(24, 0);
    let bytes: Vec<u8> = frames.concat();
    let iov = [IoSlice::new(&bytes)];
    let addr = SockAddr::from(to);
    let msg = MsgHdr::new()
        .with_addr(&addr)
        .with_buffers(&iov)
        .with_control(&control);
    let sent = SockRef::from(udp).sendmsg(&msg, 0).unwrap();
    assert_eq!(sent, bytes.len());
}

/// The superpacket an offloading TUN hands the server: `segments` segments of [`MSS`]
/// bytes of `payload` (the last shorter), partial checksum, from the server's inside
/// address to `to`.
fn superpacket(to: Ipv4Addr, payload: &[u8], seq: u32) -> (VnetHdr, Vec<u8>) {
    let mut p = tcp_segment(SERVER_INNER, to, 1, &[], seq, ACK | PSH, payload);
    // The kernel leaves the pseudo-header sum in the checksum field.
    let partial = fold(pseudo(&p, 20));
    p[36..38].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        needs_csum: true,
        data_valid: false,
        gso: GsoType::TcpV4,
        ecn: false,
        hdr_len: 40,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    (hdr, p)
}

/// Checks that `segments` are the superpacket `payload` from `seq`, cut at [`MSS`] as
/// Linux cuts it: consecutive sequence numbers, PSH only on the last.
fn check_cut(segments: &[Seen], payload: &[u8], seq: u32) {
    assert_eq!(segments.len(), payload.len().div_ceil(MSS));
    for (i, s) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert_eq!(s.seq, seq + (i * MSS) as u32, "segment {i}");
        assert_eq!(s.flags, if last { ACK | PSH } else { ACK }, "segment {i}");
        let want = &payload[i * MSS..((i + 1) * MSS).min(payload.len())];
        assert!(s.payload == want, "segment {i}'s payload differs");
    }
}

#[test]
fn a_tun_superpacket_leaves_for_a_udp_peer_in_one_gso_send() {
    let server = Server::start(Options {
        offload: true,
        ..Options::default()
    });
    assert!(server.path.udp_gso, "loopback has UDP_SEGMENT");
    let (udp, mut s, cfg) = udp_client(&server);
    let payload = pattern(30 * MSS + 500);
    let (hdr, sp) = superpacket(cfg.client_addr, &payload, 1000);
    server.write_inside_with(&hdr, &sp);

    let mut segments = Vec::new();
    let mut buf = vec![0u8; 2048];
    for _ in 0..31 {
        let n = udp.recv(&mut buf).unwrap();
        let mut f = buf[..n].to_vec();
        let opened = s.opener.open(&mut f, Instant::now()).unwrap();
        assert_eq!(opened.kind, FrameType::Data);
        segments.push(read_segment(&f[opened.payload]));
    }
    check_cut(&segments, &payload, 1000);

    let (counters, io) = stop_clean(server);
    assert_eq!(counters.inside_rx_packets, 31);
    assert_eq!((io.tun_rx_reads, io.tun_rx_packets), (1, 31), "{io}");
    assert_eq!(io.tun_rx_superpackets, 1, "{io}");
    assert_eq!(
        io.tun_rx_multishot_arms, 1,
        "one multishot read serves every packet"
    );
    // The handshake reply, the 31 segments in one send, the disconnect at shutdown.
    assert_eq!((io.udp_tx_sends, io.udp_tx_datagrams), (3, 33), "{io}");
}

#[test]
fn without_gso_a_tun_superpacket_leaves_one_datagram_per_send() {
    let server = Server::start(Options {
        offload: true,
        gso: false,
        ..Options::default()
    });
    let (udp, mut s, cfg) = udp_client(&server);
    let payload = pattern(7 * MSS + 3);
    let (hdr, sp) = superpacket(cfg.client_addr, &payload, 1);
    server.write_inside_with(&hdr, &sp);
    let mut buf = vec![0u8; 2048];
    let segments: Vec<Seen> = (0..8)
        .map(|_| {
            let n = udp.recv(&mut buf).unwrap();
            let mut f = buf[..n].to_vec();
            let opened = s.opener.open(&mut f, Instant::now()).unwrap();
            read_segment(&f[opened.payload])
        })
        .collect();
    check_cut(&segments, &payload, 1);
    let (_, io) = stop_clean(server);
    assert_eq!((io.udp_tx_sends, io.udp_tx_datagrams), (10, 10), "{io}");
}

#[test]
fn a_tun_superpacket_leaves_for_a_tcp_peer_as_back_to_back_frames() {
    let server = Server::start(Options {
        offload: true,
        ..Options::default()
    });
    let (mut tcp, mut s, cfg) = tcp_client(&server);
    let payload = pattern(40 * MSS + 1);
    let (hdr, sp) = superpacket(cfg.client_addr, &payload, 77);
    server.write_inside_with(&hdr, &sp);
    let segments: Vec<Seen> = (0..41)
        .map(|_| {
            let mut f = tcp.recv();
            let opened = s.opener.open(&mut f, Instant::now()).unwrap();
            read_segment(&f[opened.payload])
        })
        .collect();
    check_cut(&segments, &payload, 77);
    let (_, io) = stop_clean(server);
    assert_eq!((io.tun_rx_reads, io.tun_rx_packets), (1, 41), "{io}");
    // The handshake reply and 41 frames.
    assert_eq!(io.tcp_tx_frames, 42, "{io}");
}

/// `count` consecutive segments of one flow from the client, sealed.
fn flow_frames(
    s: &mut Session,
    from: Ipv4Addr,
    payload: &[u8],
    seq: u32,
    options: &[u8],
) -> Vec<Vec<u8>> {
    payload
        .chunks(MSS)
        .enumerate()
        .map(|(i, chunk)| {
            let last = (i + 1) * MSS >= payload.len();
            let flags = if last { ACK | PSH } else { ACK };
            let seg = tcp_segment(
                from,
                SERVER_INNER,
                100 + i as u16,
                options,
                seq + (i * MSS) as u32,
                flags,
                chunk,
            );
            seal(s, &seg)
        })
        .collect()
}

#[test]
fn a_gro_batch_from_a_udp_peer_becomes_one_superpacket_write() {
    let server = Server::start(Options {
        offload: true,
        ..Options::default()
    });
    assert!(server.path.udp_gro, "loopback has UDP_GRO");
    let (udp, mut s, cfg) = udp_client(&server);
    let payload = pattern(20 * MSS);
    let frames = flow_frames(&mut s, cfg.client_addr, &payload, 5000, &[]);
    send_gso(&udp, server.udp, &frames);

    let (hdr, packet) = server.read_inside_offload();
    let hdr = hdr.unwrap();
    assert_eq!(
        (hdr.gso, hdr.gso_size, hdr.needs_csum),
        (GsoType::TcpV4, MSS as u16, true),
        "{hdr:?}"
    );
    assert_eq!((hdr.csum_start, hdr.csum_offset), (20, 16));
    assert_eq!(packet.len(), 40 + payload.len());
    // The checksum field holds the pseudo-header sum, for the kernel to finish.
    let field = u16::from_be_bytes([packet[36], packet[37]]);
    assert_eq!(field, fold(pseudo(&packet, 20)));
    let mut whole = packet.clone();
    whole[36..38].fill(0);
    let c = !fold(sum16(pseudo(&whole, 20), &whole[20..]));
    whole[36..38].copy_from_slice(&c.to_be_bytes());
    let seen = read_segment(&whole);
    assert_eq!((seen.seq, seen.flags), (5000, ACK | PSH));
    assert!(seen.payload == payload, "the superpacket's payload differs");

    let (counters, io) = stop_clean(server);
    assert_eq!(counters.inside_tx_packets, 20);
    // The initiation, then the batch in one receive, both completions of the one
    // multishot receive armed at start.
    assert_eq!((io.udp_rx_recvs, io.udp_rx_datagrams), (2, 21), "{io}");
    assert_eq!(io.udp_rx_multishot_arms, 1, "{io}");
    assert_eq!((io.tun_tx_writes, io.tun_tx_packets), (1, 20), "{io}");
    assert_eq!(io.tun_tx_superpackets, 1, "{io}");
}

#[test]
fn ipv4_packets_with_options_are_never_coalesced() {
    let server = Server::start(Options {
        offload: true,
        ..Options::default()
    });
    let (udp, mut s, cfg) = udp_client(&server);
    let payload = pattern(12 * MSS - 8);
    // A NOP-padded option word: valid, and not for GRO to merge across.
    let options = [1u8, 1, 1, 0];
    let frames = flow_frames(&mut s, cfg.client_addr, &payload, 9, &options);
    send_gso(&udp, server.udp, &frames);
    for i in 0..frames.len() {
        let (hdr, packet) = server.read_inside_offload();
        assert_eq!(hdr, Some(VnetHdr::NONE), "packet {i} came merged");
        let ihl = usize::from(packet[0] & 15) * 4;
        assert_eq!(&packet[20..ihl], &options, "packet {i}'s options");
        let seen = read_segment(&packet);
        assert_eq!(seen.seq, 9 + (i * MSS) as u32);
        assert!(seen.payload == payload[i * MSS..((i + 1) * MSS).min(payload.len())]);
    }
    let (_, io) = stop_clean(server);
    assert_eq!((io.tun_tx_writes, io.tun_tx_packets), (12, 12), "{io}");
    assert_eq!(io.tun_tx_superpackets, 0, "{io}");
}

#[test]
fn frames_from_a_tcp_peer_are_coalesced_and_arrive_whole() {
    let server = Server::start(Options {
        offload: true,
        ..Options::default()
    });
    let (mut tcp, mut s, cfg) = tcp_client(&server);
    let payload = pattern(30 * MSS);
    let mut stream = Vec::new();
    for f in flow_frames(&mut s, cfg.client_addr, &payload, 1, &[]) {
        stream.extend_from_slice(&encode_prefix(f.len()).unwrap());
        stream.extend_from_slice(&f);
    }
    tcp.stream.write_all(&stream).unwrap();
    // However the stream was cut into receives, the segments come out in order, whole,
    // merged into superpackets where one receive held several.
    let mut got = Vec::new();
    let mut next_seq = 1u32;
    while got.len() < payload.len() {
        let (hdr, mut packet) = server.read_inside_offload();
        let hdr = hdr.unwrap();
        if hdr.gso != GsoType::None {
            assert_eq!((hdr.gso, hdr.gso_size), (GsoType::TcpV4, MSS as u16));
            packet[36..38].fill(0);
            let c = !fold(sum16(pseudo(&packet, 20), &packet[20..]));
            packet[36..38].copy_from_slice(&c.to_be_bytes());
        }
        let seen = read_segment(&packet);
        assert_eq!(seen.seq, next_seq);
        next_seq += seen.payload.len() as u32;
        got.extend_from_slice(&seen.payload);
    }
    assert!(got == payload, "the stream's payload differs");
    let (_, io) = stop_clean(server);
    assert_eq!(io.tun_tx_packets, 30, "{io}");
    assert_eq!(io.tcp_rx_frames, 31, "{io}");
    println!("30 segments from TCP in {} TUN writes", io.tun_tx_writes);
}

#[test]
fn a_gso_batch_to_a_server_without_offload_arrives_one_packet_per_write() {
    let server = Server::start(Options::default());
    let (udp, mut s, cfg) = udp_client(&server);
    let payload = pattern(10 * MSS);
    let frames = flow_frames(&mut s, cfg.client_addr, &payload, 3, &[]);
    send_gso(&udp, server.udp, &frames);
    // Without UDP_GRO the kernel hands the batch over datagram by datagram.
    for i in 0..10 {
        let seen = read_segment(&server.read_inside());
        assert_eq!(seen.seq, 3 + (i * MSS) as u32);
        assert!(seen.payload == payload[i * MSS..(i + 1) * MSS]);
    }
    let (_, io) = stop_clean(server);
    assert_eq!((io.udp_rx_recvs, io.udp_rx_datagrams), (11, 11), "{io}");
    assert_eq!(io.udp_rx_multishot_arms, 0, "offload off: single receives");
    assert_eq!((io.tun_tx_writes, io.tun_tx_packets), (10, 10), "{io}");
}

#[test]
fn a_burst_larger_than_the_buffer_ring_is_received_whole() {
    let server = Server::start(Options {
        offload: true,
        ..Options::default()
    });
    let (udp, mut s, cfg) = udp_client(&server);
    // Far more datagrams than the ring has buffers (RX_SLOTS), sent without waiting: the
    // kernel may find the ring empty and end the multishot receive, which then re-arms
    // and picks up what waited in the socket. Keepalives, so that nothing is written to
    // the TUN stand-in (whose queue holds only a few datagrams); and few enough that the
    // server's socket buffer (capped by net.core.rmem_max) holds them all, as UDP would
    // otherwise drop some before the server could see them.
    const BURST: u64 = 100;
    let mut frame = [0u8; 64];
    for _ in 0..BURST {
        let n = s.sealer.seal_keepalive(&mut frame, Instant::now()).unwrap();
        udp.send_to(&frame[..n], server.udp).unwrap();
    }
    // Then a packet, which can only come out after every keepalive went in.
    let pkt = ipv4(cfg.client_addr, SERVER_INNER, 100, 7);
    udp.send_to(&seal(&mut s, &pkt), server.udp).unwrap();
    assert_eq!(server.read_inside(), pkt);
    let (counters, io) = stop_clean(server);
    // The initiation, the keepalives, the packet.
    assert_eq!(counters.outside_rx_frames, 1 + BURST + 1, "{io}");
    assert_eq!(counters.drops(), 0, "{counters}");
    assert!(io.udp_rx_multishot_arms >= 1, "{io}");
    println!("multishot receive armed {} times", io.udp_rx_multishot_arms);
}

#[test]
fn bursts_from_the_tun_larger_than_its_buffer_ring_go_out_whole_and_in_order() {
    bursts_from_the_tun(None);
}

#[test]
fn bursts_from_the_tun_through_the_flow_queue_go_out_whole() {
    bursts_from_the_tun(Some(ringway_server::config::FairQueue::default()));
}

/// Without the flow queue every burst comes out in the order it went in. With it, each
/// packet here is a flow of its own (its protocol byte differs), so the queue may
/// interleave them: each burst then comes out whole, in some order.
fn bursts_from_the_tun(fair_queue: Option<ringway_server::config::FairQueue>) {
    let in_order = fair_queue.is_none();
    let server = Server::start(Options {
        offload: true,
        fair_queue,
        ..Options::default()
    });
    let (udp, mut s, cfg) = udp_client(&server);
    // Bursts of twice as many packets as the ring has buffers (RX_SLOTS), each read
    // back before the next, so the client's socket buffer (which UDP would overflow
    // silently) never holds more than one burst.
    const BURST: usize = 2 * RX_SLOTS as usize;
    let sent: Vec<Vec<u8>> = (0..20 * BURST as u32)
        .map(|i| {
            let mut p = ipv4(
                SERVER_INNER,
                cfg.client_addr,
                60 + (i as usize % 1300),
                i as u8,
            );
            p[4..8].copy_from_slice(&i.to_be_bytes());
            p
        })
        .collect();
    let mut buf = vec![0u8; 2048];
    for (b, burst) in sent.chunks(BURST).enumerate() {
        for p in burst {
            server.write_inside(p);
        }
        let mut got: Vec<Vec<u8>> = (0..burst.len())
            .map(|_| {
                let n = udp.recv(&mut buf).unwrap();
                let mut f = buf[..n].to_vec();
                let opened = s.opener.open(&mut f, Instant::now()).unwrap();
                f[opened.payload].to_vec()
            })
            .collect();
        let mut want = burst.to_vec();
        if !in_order {
            got.sort();
            want.sort();
        }
        for (i, (got, want)) in got.iter().zip(&want).enumerate() {
            assert_eq!(got, want, "burst {b} packet {i}");
        }
    }
    let (_, io) = stop_clean(server);
    let n = sent.len() as u64;
    assert_eq!((io.tun_rx_reads, io.tun_rx_packets), (n, n), "{io}");
    assert!(io.tun_rx_multishot_arms >= 1, "{io}");
}
