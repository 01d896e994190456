//! Cost of the offload byte work per 64 KiB superpacket: splitting a TCP/IPv4 superpacket
//! at MSS 1380 into a strided buffer ready for in-place sealing (the TUN-read side), and
//! coalescing the 45 segments back into one superpacket (the TUN-write side), with and
//! without checksum verification. Baselines printed alongside: a plain `memcpy` of the same
//! payload (the least any copying design pays), and the per-packet paths for traffic that
//! does not coalesce (45 distinct flows, 45 ICMP packets) so "no slower than today" can be
//! read off directly.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringway_offload::ip::{Ipv4Packet, PROTO_TCP};
use ringway_offload::tcp::{TcpPacket, ACK};
use ringway_offload::{
    split, CoalesceConfig, Coalescer, GsoType, Layout, Output, VnetHdr, VNET_HDR_LEN,
};

const MSS: usize = 1380;
const SEGMENTS: usize = 45;
const PAYLOAD: usize = MSS * SEGMENTS; // 62 100 bytes
const HEADERS: usize = 40;
const LAYOUT: Layout = Layout {
    headroom: 16,
    tailroom: 16,
    max_packet_len: HEADERS + MSS,
};

/// A TCP/IPv4 packet of flow `sport` with valid checksums; `partial` leaves the TCP field
/// holding the pseudo-header sum, as a GSO superpacket from the TUN has it.
fn tcp4(sport: u16, seq: u32, ident: u16, payload: usize, partial: bool) -> Vec<u8> {
    let len = HEADERS + payload;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = PROTO_TCP;
    p[12..16].copy_from_slice(&[198, 18, 0, 1]);
    p[16..20].copy_from_slice(&[198, 18, 0, 2]);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = ACK;
    p[34..36].copy_from_slice(&1000u16.to_be_bytes());
    for (i, b) in p[HEADERS..].iter_mut().enumerate() {
        *b = (i * 7 + seq as usize) as u8;
    }
    let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
    ip.fill_checksum();
    let pseudo = ip.pseudo_header((len - 20) as u16);
    let mut t = TcpPacket::new_unchecked(&mut p[20..]);
    if partial {
        t.set_checksum(pseudo.fold());
    } else {
        t.fill_checksum(pseudo);
    }
    p
}

fn superpacket() -> (VnetHdr, Vec<u8>) {
    let hdr = VnetHdr {
        needs_csum: true,
        data_valid: false,
        gso: GsoType::TcpV4,
        ecn: false,
        hdr_len: HEADERS as u16,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    (hdr, tcp4(40000, 1, 100, PAYLOAD, true))
}

fn push_all(co: &mut Coalescer, packets: &[Vec<u8>], bufs: &mut [Vec<u8>]) -> usize {
    for (tag, p) in packets.iter().enumerate() {
        black_box(co.push(p, tag as u64, bufs).expect("room"));
    }
    co.flush(bufs)
        .map(|o| match o {
            Output::Buffer { len, .. } => len,
            Output::Input { .. } => 0,
        })
        .sum()
}

fn offload(c: &mut Criterion) {
    let (hdr, packet) = superpacket();
    let mut out = vec![0u8; SEGMENTS * (LAYOUT.headroom + HEADERS + MSS + LAYOUT.tailroom)];

    let mut group = c.benchmark_group("offload/64k");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    group.bench_function("memcpy baseline", |b| {
        let mut dst = vec![0u8; packet.len()];
        b.iter(|| {
            dst.copy_from_slice(black_box(&packet));
            black_box(&dst);
        });
    });
    group.bench_function("split 45 segments", |b| {
        b.iter(|| {
            let s = split(&hdr, black_box(&packet), &mut out, &LAYOUT).expect("split");
            black_box(s.count())
        });
    });

    let segs = split(&hdr, &packet, &mut out, &LAYOUT).expect("split");
    let segments: Vec<Vec<u8>> = segs.packets().map(|r| out[r].to_vec()).collect();
    assert_eq!(segments.len(), SEGMENTS);
    for verify in [true, false] {
        let name = if verify {
            "coalesce 45 segments (verify)"
        } else {
            "coalesce 45 segments (no verify)"
        };
        let mut co = Coalescer::new(CoalesceConfig {
            verify_checksums: verify,
            ..CoalesceConfig::default()
        });
        let mut bufs = vec![vec![0u8; VNET_HDR_LEN + 65535]; 1];
        assert_eq!(
            push_all(&mut co, &segments, &mut bufs),
            VNET_HDR_LEN + packet.len()
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(push_all(&mut co, &segments, &mut bufs)));
        });
    }
    group.finish();

    // Traffic that does not coalesce, per 45 packets: each distinct TCP flow starts a run
    // (one copy into an output buffer); ICMP is left in place (no copy).
    let mut group = c.benchmark_group("offload/no-coalesce");
    let flows: Vec<Vec<u8>> = (0..SEGMENTS as u16)
        .map(|f| tcp4(f + 1, 1, 0, MSS, false))
        .collect();
    let mut icmp = vec![0u8; HEADERS + MSS];
    icmp[0] = 0x45;
    icmp[2..4].copy_from_slice(&((HEADERS + MSS) as u16).to_be_bytes());
    icmp[9] = 1;
    let icmps = vec![icmp; SEGMENTS];
    group.throughput(Throughput::Bytes((SEGMENTS * MSS) as u64));
    let mut co = Coalescer::new(CoalesceConfig {
        max_runs: SEGMENTS,
        ..CoalesceConfig::default()
    });
    let mut bufs = vec![vec![0u8; VNET_HDR_LEN + 65535]; SEGMENTS];
    group.bench_function("45 TCP flows, 1 segment each", |b| {
        b.iter(|| black_box(push_all(&mut co, &flows, &mut bufs)));
    });
    group.bench_function("45 ICMP packets", |b| {
        b.iter(|| black_box(push_all(&mut co, &icmps, &mut bufs)));
    });
    group.finish();
}

criterion_group!(benches, offload);
criterion_main!(benches);
