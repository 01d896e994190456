//! The batching data path against the server's session layer on loopback,
//! without root: superpackets from an inside that speaks `virtio_net_hdr`
//! (the in-memory one, as an offloading TUN does) go out as one `UDP_SEGMENT`
//! send or one TCP write and come back coalesced; `UDP_SEGMENT` bursts from
//! the server arrive as one GRO receive, every packet once and in order; with
//! offload off, one datagram per call as before. Linux only: elsewhere the
//! client has no UDP batching to test.
#![cfg(target_os = "linux")]

#[macro_use]
mod support;

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use ringway_client::inside::memory::{memory, memory_with_offloads, MemoryHost};
use ringway_client::inside::Offloads;
use ringway_client::{driver, ConnectOptions, Stats, TransportChoice, Tunnel};
use ringway_offload::checksum::pseudo_header_v4;
use ringway_offload::{split, Checksum, GsoType, Layout, VnetHdr, VNET_HDR_LEN};
use support::*;
use tokio::sync::oneshot;

over_both!(superpackets_from_the_inside_go_out_in_one_call_and_come_back);

const OFFLOADS: Offloads = Offloads {
    vnet_hdr: true,
    tso: true,
    uso: false,
    refused: None,
};

/// A TCP/IPv4 segment (DF, flags ACK, valid checksums) carrying `payload` at `seq`.
fn tcp_segment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ports: (u16, u16),
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let len = 40 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = Checksum::new().add_bytes(&p[..20]).finish();
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p[20..22].copy_from_slice(&ports.0.to_be_bytes());
    p[22..24].copy_from_slice(&ports.1.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&7u32.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    p[34..36].copy_from_slice(&512u16.to_be_bytes());
    p[40..].copy_from_slice(payload);
    let sum = pseudo_header_v4(src.octets(), dst.octets(), 6, (len - 20) as u16)
        .add_bytes(&p[20..])
        .finish();
    p[36..38].copy_from_slice(&sum.to_be_bytes());
    p
}

/// What an offloading TUN hands its reader for a TCP send of `payload`: a
/// `virtio_net_hdr` (TCPv4, `gso_size`, partial checksum) and one superpacket.
fn superpacket_read(payload: &[u8], gso_size: u16) -> Vec<u8> {
    let packet = tcp_segment(CLIENT_ADDR, SERVER_ADDR, (40000, 5201), 1, payload);
    let hdr = VnetHdr {
        needs_csum: true,
        data_valid: false,
        gso: GsoType::TcpV4,
        ecn: false,
        hdr_len: 40,
        gso_size,
        csum_start: 20,
        csum_offset: 16,
    };
    let mut read = vec![0u8; VNET_HDR_LEN];
    hdr.emit(&mut read).unwrap();
    read.extend(packet);
    read
}

/// The packets in one write to an offloading inside: the packet behind a zero
/// header, or a superpacket's segments.
fn packets_of(write: &[u8]) -> Vec<Vec<u8>> {
    let hdr = VnetHdr::parse(write).expect("every write starts with a virtio_net_hdr");
    let packet = &write[VNET_HDR_LEN..];
    if hdr.gso == GsoType::None {
        assert!(!hdr.needs_csum, "a lone packet's checksum is complete");
        return vec![packet.to_vec()];
    }
    let layout = Layout {
        headroom: 0,
        tailroom: 0,
        max_packet_len: 65535,
    };
    let mut out = vec![0u8; 2 * packet.len() + 64 * 60];
    let segs = split(&hdr, packet, &mut out, &layout).expect("a superpacket we can cut");
    segs.packets().map(|r| out[r].to_vec()).collect()
}

/// Reads writes off the host until they hold `n` packets; the writes too.
async fn host_packets(host: &mut MemoryHost, n: usize) -> (Vec<Vec<u8>>, usize) {
    let mut packets = Vec::new();
    let mut writes = 0;
    while packets.len() < n {
        let write = tokio::time::timeout(HANG_GUARD, host.from_tunnel.recv())
            .await
            .expect("packets before the hang guard")
            .expect("the driver is running");
        writes += 1;
        packets.extend(packets_of(&write));
    }
    (packets, writes)
}

/// The TCP sequence number and payload of a segment.
fn seq_and_payload(p: &[u8]) -> (u32, &[u8]) {
    let seq = u32::from_be_bytes(p[24..28].try_into().unwrap());
    let data_off = usize::from(p[32] >> 4) * 4;
    (seq, &p[20 + data_off..])
}

/// Runs the driver on `tunnel` and `inside` until the returned sender fires.
fn run_driver(
    tunnel: Tunnel,
    inside: ringway_client::inside::memory::MemoryInside,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ringway_client::DriverError>>,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driver::run(tunnel, inside, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

async fn superpackets_from_the_inside_go_out_in_one_call_and_come_back(transport: TransportChoice) {
    const SEGMENTS: usize = 20;
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, transport).await;
    let udp = tunnel.udp_offload();
    let stats = Arc::clone(tunnel.stats());
    let (inside, mut host) = memory_with_offloads(64, OFFLOADS);
    let (stop, task) = run_driver(tunnel, inside);

    let payload: Vec<u8> = (0..SEGMENTS * 1000).map(|i| (i * 7 % 251) as u8).collect();
    host.to_tunnel
        .send(superpacket_read(&payload, 1000))
        .await
        .unwrap();

    // Every segment reached the server's inside once, and its echo came back.
    let (echoes, _) = host_packets(&mut host, SEGMENTS).await;
    wait_until(|| server.seen.data.load(Relaxed) == SEGMENTS as u64).await;
    let mut stream = Vec::new();
    let mut next_seq = 1;
    for echo in &echoes {
        // The server answers from where we sent to.
        assert_eq!(&echo[12..16], &SERVER_ADDR.octets());
        assert_eq!(&echo[16..20], &CLIENT_ADDR.octets());
        let (seq, data) = seq_and_payload(echo);
        assert_eq!(seq, next_seq, "segments in order, each once");
        next_seq += data.len() as u32;
        stream.extend_from_slice(data);
    }
    assert_eq!(stream, payload);

    let s = stats.snapshot();
    assert_eq!((s.tun_rx_reads, s.tun_rx_packets), (1, SEGMENTS as u64));
    assert_eq!((s.tx_packets, s.tx_bytes), (20, 20 * 1040));
    assert_eq!(s.tun_tx_packets, SEGMENTS as u64);
    assert_eq!(s.tx_dropped() + s.rx_dropped(), 0);
    match udp {
        Some(udp) => {
            // One UDP_SEGMENT sendmsg for all twenty (1072-byte frames, 21 KB),
            // or one send per datagram on a kernel without GSO.
            let sends = if udp.gso_segments > 1 {
                1
            } else {
                SEGMENTS as u64
            };
            assert_eq!((s.udp_tx_sends, s.udp_tx_datagrams), (sends, 20));
        }
        None => assert_eq!((s.tcp_tx_writes, s.tcp_tx_frames), (1, 20)),
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_gso_burst_arrives_in_one_receive_once_and_in_order() {
    const BURST: u32 = 40;
    let server = FakeServer::start(Options {
        gso: true,
        ..Options::default()
    })
    .await;
    let tunnel = connected(&server, TransportChoice::Udp).await;
    assert!(tunnel.udp_offload().unwrap().gro, "UDP_GRO on loopback");
    let stats = Arc::clone(tunnel.stats());
    let (_tx, mut rx) = tunnel.split();
    for burst in 0..3u32 {
        let expected: Vec<Vec<u8>> = (0..BURST)
            .map(|i| {
                let seq = burst * BURST + i;
                // All 1000 bytes but the last: a GSO batch's short tail.
                let len = if i + 1 == BURST { 600 } else { 1000 };
                ipv4_packet(SERVER_ADDR, CLIENT_ADDR, seq, len)
            })
            .collect();
        server.send_gso_burst(expected.clone());
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let batch = tokio::time::timeout(HANG_GUARD, rx.recv_batch())
                .await
                .expect("a batch before the hang guard")
                .unwrap();
            for i in 0..batch.packets().len() {
                got.push(batch.packet(i).unwrap().to_vec());
            }
        }
        assert_eq!(got, expected, "burst {burst}");
    }
    let s = stats.snapshot();
    // Each burst was one UDP_SEGMENT send, and the socket took each as one aggregate.
    assert_eq!(
        (s.udp_rx_recvs, s.udp_rx_datagrams),
        (3, 3 * u64::from(BURST))
    );
    assert_eq!(s.rx_packets, 3 * u64::from(BURST));
    assert_eq!(s.rx_dropped(), 0);
}

#[tokio::test]
async fn a_gso_burst_of_two_flows_becomes_one_write_per_flow() {
    const PER_FLOW: u32 = 16;
    let server = FakeServer::start(Options {
        gso: true,
        ..Options::default()
    })
    .await;
    let tunnel = connected(&server, TransportChoice::Udp).await;
    let stats = Arc::clone(tunnel.stats());
    let (inside, mut host) = memory_with_offloads(64, OFFLOADS);
    let (stop, task) = run_driver(tunnel, inside);

    // Two TCP flows from the server interleaved, every segment 1200 bytes of payload.
    let flows = [(5201u16, 40000u16), (5202, 40001)];
    let mut burst = Vec::new();
    for i in 0..PER_FLOW {
        for (f, ports) in flows.iter().enumerate() {
            let payload = vec![(i as u8) ^ (f as u8 * 0x55); 1200];
            burst.push(tcp_segment(
                SERVER_ADDR,
                CLIENT_ADDR,
                *ports,
                1 + i * 1200,
                &payload,
            ));
        }
    }
    server.send_gso_burst(burst.clone());
    let (packets, writes) = host_packets(&mut host, burst.len()).await;
    // One receive, one batch: each flow's run became one superpacket.
    assert_eq!(writes, 2, "one write per flow");
    for (f, ports) in flows.iter().enumerate() {
        let expected: Vec<&Vec<u8>> = burst
            .iter()
            .filter(|p| p[20..22] == ports.0.to_be_bytes())
            .collect();
        let got: Vec<&Vec<u8>> = packets
            .iter()
            .filter(|p| p[20..22] == ports.0.to_be_bytes())
            .collect();
        assert_eq!(got.len(), expected.len(), "flow {f}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(seq_and_payload(g), seq_and_payload(e), "flow {f}");
        }
    }
    let s = stats.snapshot();
    assert_eq!(
        (s.tun_tx_writes, s.tun_tx_packets),
        (2, 2 * u64::from(PER_FLOW))
    );
    assert_eq!(
        (s.udp_rx_recvs, s.udp_rx_datagrams),
        (1, 2 * u64::from(PER_FLOW))
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn offload_off_is_one_datagram_per_call() {
    const PACKETS: u32 = 10;
    let server = FakeServer::start(Options::default()).await;
    let config = client_config(server.addr, server_keys().public, Some(PSK));
    let opts = ConnectOptions {
        udp_offload: false,
        ..quick(TransportChoice::Udp, 10_000)
    };
    let tunnel = Tunnel::connect_with(&config, &opts).await.unwrap();
    let off = tunnel.udp_offload().unwrap();
    assert_eq!((off.gso_segments, off.gro), (1, false));
    let stats: Arc<Stats> = Arc::clone(tunnel.stats());
    let (inside, mut host) = memory(64);
    let (stop, task) = run_driver(tunnel, inside);
    for seq in 0..PACKETS {
        let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, seq, 1400);
        host.to_tunnel.send(packet.clone()).await.unwrap();
        let echo = tokio::time::timeout(HANG_GUARD, host.from_tunnel.recv())
            .await
            .unwrap()
            .unwrap();
        // Bare packets both ways: no header in front.
        assert_eq!(echo, echoed(packet));
    }
    let s = stats.snapshot();
    let n = u64::from(PACKETS);
    assert_eq!((s.tun_rx_reads, s.tun_rx_packets), (n, n));
    assert_eq!((s.udp_tx_sends, s.udp_tx_datagrams), (n, n));
    assert_eq!((s.udp_rx_recvs, s.udp_rx_datagrams), (n, n));
    assert_eq!((s.tun_tx_writes, s.tun_tx_packets), (n, n));
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_bare_packet_through_an_offloading_inside_keeps_its_bytes() {
    // A plain read (zero header) is sealed where it lies; its echo comes back
    // behind a zero header, written in place.
    let server = FakeServer::start(Options::default()).await;
    let tunnel = connected(&server, TransportChoice::Udp).await;
    let (inside, mut host) = memory_with_offloads(8, OFFLOADS);
    let (stop, task) = run_driver(tunnel, inside);
    let packet = ipv4_packet(CLIENT_ADDR, SERVER_ADDR, 3, 1400);
    let mut read = vec![0u8; VNET_HDR_LEN];
    read.extend_from_slice(&packet);
    host.to_tunnel.send(read).await.unwrap();
    let write = tokio::time::timeout(HANG_GUARD, host.from_tunnel.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&write[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
    assert_eq!(write[VNET_HDR_LEN..], echoed(packet)[..]);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
