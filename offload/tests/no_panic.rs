//! Any bytes give `Ok` or `Err`, never a panic: for the header parser, the segmenter and
//! the coalescer, on raw garbage and on valid packets with random damage. And whatever the
//! coalescer merges from damaged input is still a superpacket whose every segment verifies.

mod common;

use std::collections::HashSet;

use common::{fill, naive_sum, Spec};

use proptest::prelude::*;
use ringway_offload::{
    prepare, split, CoalesceConfig, Coalescer, GsoType, Layout, Output, VnetHdr, VNET_HDR_LEN,
};

fn layout(max_packet_len: usize) -> Layout {
    Layout {
        headroom: 16,
        tailroom: 16,
        max_packet_len,
    }
}

fn arbitrary_hdr() -> impl Strategy<Value = VnetHdr> {
    (
        any::<bool>(),
        prop_oneof![
            Just(GsoType::None),
            Just(GsoType::TcpV4),
            Just(GsoType::TcpV6),
            Just(GsoType::UdpL4)
        ],
        any::<bool>(),
        any::<[u16; 4]>(),
    )
        .prop_map(
            |(needs_csum, gso, ecn, [hdr_len, gso_size, csum_start, csum_offset])| VnetHdr {
                needs_csum,
                data_valid: false,
                gso,
                ecn,
                hdr_len,
                gso_size,
                csum_start,
                csum_offset,
            },
        )
}

/// Runs every entry point on `hdr` + `packet`; returns nothing, must not panic.
fn exercise(hdr: &VnetHdr, packet: &[u8], max_packet_len: usize) {
    let l = layout(max_packet_len);
    let mut out = vec![0u8; 64 * 1024];
    if let Ok(s) = split(hdr, packet, &mut out, &l) {
        for r in s.packets() {
            assert!(r.end <= out.len());
            assert!(r.len() <= max_packet_len);
        }
    }
    let mut copy = packet.to_vec();
    let _ = prepare(hdr, &mut copy, &l);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn raw_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 0usize..2000) {
        if let Ok(hdr) = VnetHdr::parse(&bytes) {
            exercise(&hdr, &bytes[VNET_HDR_LEN..], max);
        }
        let mut co = Coalescer::new(CoalesceConfig { udp: true, ..CoalesceConfig::default() });
        let mut bufs = vec![vec![0u8; 2048]; 2];
        for chunk in bytes.chunks(37) {
            let _ = co.push(chunk, 0, &mut bufs);
        }
        let _ = co.push(&bytes, 1, &mut bufs);
        prop_assert!(co.flush(&mut bufs).count() >= 1);
    }

    #[test]
    fn ip_shaped_bytes_with_any_header_never_panic(
        hdr in arbitrary_hdr(),
        version in prop_oneof![Just(0x45u8), Just(0x46), Just(0x4f), Just(0x60)],
        proto in prop_oneof![Just(6u8), Just(17), Just(0), Just(1)],
        mut bytes in proptest::collection::vec(any::<u8>(), 0..400),
        max in 0usize..1500,
    ) {
        // Make the IP header mostly consistent so parsing gets deep.
        if bytes.len() >= 40 {
            bytes[0] = version;
            let len = bytes.len() as u16;
            if version >> 4 == 4 {
                bytes[2..4].copy_from_slice(&len.to_be_bytes());
                bytes[6] &= 0x40;
                bytes[7] = 0;
                bytes[9] = proto;
            } else {
                bytes[4..6].copy_from_slice(&(len - 40).to_be_bytes());
                bytes[6] = proto;
            }
        }
        exercise(&hdr, &bytes, max);
    }

    #[test]
    fn damaged_superpackets_never_panic(
        tcp in any::<bool>(),
        v6 in any::<bool>(),
        gso_size in 1u16..1500,
        len in 0usize..5000,
        seed in any::<u64>(),
        damage in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
        hdr in arbitrary_hdr(),
        use_real_hdr in any::<bool>(),
        max in 0usize..1600,
    ) {
        let spec = small_spec(tcp, v6, gso_size, fill(seed, len));
        let (real, mut p) = spec.superpacket();
        for (at, x) in damage {
            let i = at % p.len();
            p[i] ^= x;
        }
        if cut % 4 == 0 {
            p.truncate(cut % (p.len() + 1));
        }
        exercise(if use_real_hdr { &real } else { &hdr }, &p, max);
    }

    #[test]
    fn coalescer_output_from_damaged_segments_is_always_valid(
        tcp in any::<bool>(),
        v6 in any::<bool>(),
        gso_size in 1u16..600,
        len in 1usize..8000,
        seed in any::<u64>(),
        damage in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 0..4),
        max_runs in 1usize..4,
    ) {
        let spec = small_spec(tcp, v6, gso_size, fill(seed, len));
        let (hdr, p) = spec.superpacket();
        let l = layout(spec.headers() + usize::from(gso_size));
        let count = len.div_ceil(usize::from(gso_size));
        let mut out = vec![0u8; count * (spec.headers() + usize::from(gso_size) + 32)];
        let segs = split(&hdr, &p, &mut out, &l).expect("valid superpacket");
        let mut packets: Vec<Vec<u8>> = segs.packets().map(|r| out[r].to_vec()).collect();
        let originals: HashSet<Vec<u8>> = packets.iter().map(|p| payload_of(p).to_vec()).collect();
        // One damaged byte per packet at most: the Internet checksum catches every single
        // byte change, but two can cancel out (a known weakness, not ours to fix).
        let mut damaged = HashSet::new();
        for (which, at, x) in damage {
            let n = packets.len();
            if !damaged.insert(which % n) {
                continue;
            }
            let pk = &mut packets[which % n];
            let i = at % pk.len();
            pk[i] ^= x;
        }
        let mut co = Coalescer::new(CoalesceConfig { max_runs, udp: true, ..CoalesceConfig::default() });
        let mut bufs = vec![vec![0u8; VNET_HDR_LEN + 65535]; max_runs];
        // A driver flushes when the batch is full, then pushes again.
        for (tag, pk) in packets.iter().enumerate() {
            if co.push(pk, tag as u64, &mut bufs).is_err() {
                let outs: Vec<Output> = co.flush(&mut bufs).collect();
                check_outputs(&outs, &bufs, &originals)?;
                co.push(pk, tag as u64, &mut bufs).expect("room after a flush");
            }
        }
        let outs: Vec<Output> = co.flush(&mut bufs).collect();
        check_outputs(&outs, &bufs, &originals)?;
    }
}

/// Resegments every superpacket the coalescer emitted and verifies each packet the textbook
/// way, and that its payload is one of the undamaged originals: a damaged input must never
/// have become part of a valid-looking superpacket (resegmenting recomputes checksums, so
/// the payload comparison is what catches a merged corrupt segment).
fn check_outputs(
    outs: &[Output],
    bufs: &[Vec<u8>],
    originals: &HashSet<Vec<u8>>,
) -> Result<(), TestCaseError> {
    for &o in outs {
        let Output::Buffer {
            slot,
            len,
            segments,
        } = o
        else {
            continue;
        };
        let b = &bufs[slot][..len];
        let h = VnetHdr::parse(&b[..VNET_HDR_LEN]).expect("emitted header parses");
        let mut again = vec![0u8; segments * (65535 + 32)];
        let s = split(&h, &b[VNET_HDR_LEN..], &mut again, &layout(65535))
            .expect("emitted superpacket splits");
        prop_assert_eq!(s.count(), segments);
        for r in s.packets() {
            let q = &again[r];
            let (ip_len, pseudo) = pseudo(q);
            if q[0] >> 4 == 4 {
                prop_assert_eq!(naive_sum(&[&q[..ip_len]]), 0xffff, "IPv4 header checksum");
            }
            prop_assert_eq!(
                naive_sum(&[&pseudo, &q[ip_len..]]),
                0xffff,
                "segment checksum"
            );
            prop_assert!(
                originals.contains(payload_of(q)),
                "a merged payload is not an original one"
            );
        }
    }
    Ok(())
}

/// The transport payload of a TCP or UDP packet.
fn payload_of(q: &[u8]) -> &[u8] {
    let (ip_len, _) = pseudo(q);
    let proto = if q[0] >> 4 == 6 { q[6] } else { q[9] };
    let l4 = &q[ip_len..];
    if proto == 6 {
        &l4[usize::from(l4[12] >> 4) * 4..]
    } else {
        &l4[8..]
    }
}

/// The pseudo-header of `q`, read from `q` itself (damage may have changed any field), and
/// its IP header length.
fn pseudo(q: &[u8]) -> (usize, Vec<u8>) {
    let mut p = Vec::new();
    if q[0] >> 4 == 6 {
        let l4 = q.len() - 40;
        p.extend_from_slice(&q[8..40]);
        p.extend_from_slice(&(l4 as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, q[6]]);
        (40, p)
    } else {
        let ip_len = usize::from(q[0] & 0xf) * 4;
        let l4 = q.len() - ip_len;
        p.extend_from_slice(&q[12..20]);
        p.extend_from_slice(&[0, q[9]]);
        p.extend_from_slice(&(l4 as u16).to_be_bytes());
        (ip_len, p)
    }
}

fn small_spec(tcp: bool, v6: bool, gso_size: u16, payload: Vec<u8>) -> Spec {
    Spec {
        v6,
        tcp,
        src: [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        dst: [198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        sport: 40000,
        dport: 5201,
        seq: 0xffff_f000,
        ack: 77,
        window: 512,
        flags: 0x10,
        tcp_options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        ip_options: Vec::new(),
        ident: 0xfff0,
        dont_frag: false,
        tos: 0,
        ttl: 64,
        flow_label: 7,
        gso_size,
        payload,
    }
}
