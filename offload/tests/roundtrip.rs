//! Properties of segmentation and coalescing together, checked against an independent
//! reading of every packet (tests/common: textbook checksums, no code shared with the crate).
//!
//! The headline property, from issue 8: any superpacket split then coalesced gives back the
//! same bytes and valid checksums.

mod common;

use common::{check_packet, fill, Spec};
use proptest::prelude::*;
use ringway_offload::{
    split, CoalesceConfig, Coalescer, GsoType, Layout, Output, Pushed, VnetHdr, VNET_HDR_LEN,
};

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;
const CWR: u8 = 0x80;

/// A flow's headers and a superpacket size: `mss` and a payload longer than one segment.
fn spec(tcp: bool, v6: bool, ip_options: bool) -> impl Strategy<Value = Spec> {
    let addrs = (
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u16>(),
    );
    let tcp_fields = (
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<bool>(),
        0usize..=10,
    );
    let ip_fields = (
        any::<u16>(),
        any::<bool>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        1usize..=10,
    );
    let sizes = (1u16..=1400, any::<u32>(), any::<u64>(), any::<u64>());
    (addrs, tcp_fields, ip_fields, sizes).prop_map(
        move |(
            (src, dst, sport, dport),
            (seq, ack, window, psh, tcp_opt_words),
            (ident, dont_frag, tos, ttl, flow_label, ip_opt_words),
            (gso_size, frac, seed, opt_seed),
        )| {
            let mut s = Spec {
                v6,
                tcp,
                src,
                dst,
                sport,
                dport,
                seq,
                ack,
                window,
                flags: if psh { ACK | PSH } else { ACK },
                tcp_options: if tcp {
                    fill(opt_seed, tcp_opt_words * 4)
                } else {
                    Vec::new()
                },
                ip_options: if ip_options && !v6 {
                    fill(opt_seed ^ 0x55, ip_opt_words * 4)
                } else {
                    Vec::new()
                },
                ident,
                dont_frag,
                tos,
                ttl,
                flow_label,
                gso_size,
                payload: Vec::new(),
            };
            // More than one segment, at most 200 of them, within 64 KiB.
            let lo = usize::from(gso_size) + 1;
            let hi = (65535 - s.headers()).min(usize::from(gso_size) * 200);
            let len = lo + (frac as usize) % (hi - lo + 1);
            s.payload = fill(seed, len);
            s
        },
    )
}

fn any_spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        spec(true, false, false),
        spec(true, true, false),
        spec(false, false, false),
        spec(false, true, false),
    ]
}

fn coalescer(max_runs: usize) -> (Coalescer, Vec<Vec<u8>>) {
    let c = Coalescer::new(CoalesceConfig {
        max_runs,
        max_outputs: 4096,
        max_segments: 65535,
        udp: true,
        verify_checksums: true,
    });
    (c, vec![vec![0u8; VNET_HDR_LEN + 65535]; max_runs])
}

const GAP: u8 = 0xee;

/// Splits `spec`'s superpacket, checks every segment independently, returns them.
fn split_checked(spec: &Spec, max_packet_len: usize) -> Vec<Vec<u8>> {
    let (hdr, packet) = spec.superpacket();
    let layout = Layout {
        headroom: 18,
        tailroom: 16,
        max_packet_len,
    };
    let mut out = vec![GAP; 100 + 200 * (max_packet_len + 34)];
    let segs = split(&hdr, &packet, &mut out, &layout).expect("split");
    let seg_payload = usize::from(spec.gso_size).min(max_packet_len - spec.headers());
    assert_eq!(segs.count(), spec.payload.len().div_ceil(seg_payload));
    assert_eq!(segs.stride(), 18 + segs.segment_len() + 16);
    let mut packets = Vec::new();
    let mut end_of_previous = 0;
    for (i, r) in segs.packets().enumerate() {
        assert_eq!(r.start, i * segs.stride() + 18, "segment {i} position");
        assert!(
            out[end_of_previous..r.start].iter().all(|&b| b == GAP),
            "headroom/tailroom before segment {i} written"
        );
        end_of_previous = r.end;
        let p = &out[r];
        assert!(p.len() <= max_packet_len);
        let seen = check_packet(spec, p, false);
        let from = i * seg_payload;
        let last = i + 1 == segs.count();
        assert_eq!(
            seen.payload,
            &spec.payload[from..(from + seg_payload).min(spec.payload.len())]
        );
        if spec.tcp {
            assert_eq!(seen.seq, spec.seq.wrapping_add(from as u32), "seq of {i}");
            // FIN and PSH only on the last segment, CWR only on the first.
            let mut want = spec.flags;
            if !last {
                want &= !(PSH | FIN);
            }
            if i > 0 {
                want &= !CWR;
            }
            assert_eq!(seen.flags, want, "flags of {i}");
        }
        if !spec.v6 {
            assert_eq!(
                seen.ident,
                spec.ident.wrapping_add(i as u16),
                "IPv4 id of {i}"
            );
        }
        packets.push(p.to_vec());
    }
    packets
}

/// The merged output of one whole flow must be the original superpacket byte for byte,
/// behind the virtio header the kernel would have sent.
fn assert_is_superpacket(spec: &Spec, seg_payload: usize, buf: &[u8], segments: usize) {
    let (_, original) = spec.superpacket();
    let hdr = VnetHdr::parse(&buf[..VNET_HDR_LEN]).expect("vnet header");
    assert_eq!(hdr, spec.vnet(seg_payload as u16));
    assert_eq!(segments, spec.payload.len().div_ceil(seg_payload));
    check_packet(spec, &buf[VNET_HDR_LEN..], true);
    assert!(
        buf[VNET_HDR_LEN..] == original[..],
        "coalesced bytes differ from the original superpacket"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn split_then_coalesce_gives_back_the_superpacket(
        spec in any_spec(),
        extra in 0usize..200,
        recut in 0usize..8,
    ) {
        // Mostly the kernel's gso_size fits the tunnel; sometimes (TCP only) it does not and
        // the split re-derives the payload per packet (kept to at most 200 packets).
        let gso = usize::from(spec.gso_size);
        let min_recut = spec.payload.len().div_ceil(200);
        let max_packet_len = if spec.tcp && recut == 0 && min_recut < gso {
            spec.headers() + min_recut + extra % (gso - min_recut)
        } else {
            spec.headers() + gso + extra
        };
        let seg_payload = usize::from(spec.gso_size).min(max_packet_len - spec.headers());
        prop_assume!(spec.payload.len() > seg_payload);
        let segments = split_checked(&spec, max_packet_len);
        let (mut co, mut bufs) = coalescer(4);
        for (i, s) in segments.iter().enumerate() {
            let pushed = co.push(s, i as u64, &mut bufs).unwrap();
            prop_assert_eq!(pushed, if i == 0 { Pushed::Started } else { Pushed::Merged });
        }
        let out: Vec<Output> = co.flush(&mut bufs).collect();
        prop_assert_eq!(out.len(), 1);
        let Output::Buffer { slot, len, segments: n } = out[0] else {
            panic!("expected one superpacket, got {out:?}");
        };
        assert_is_superpacket(&spec, seg_payload, &bufs[slot][..len], n);
        prop_assert_eq!(n, segments.len());
    }

    #[test]
    fn ipv4_with_options_is_split_but_never_coalesced(spec in spec(true, false, true)) {
        let max = spec.headers() + usize::from(spec.gso_size);
        let segments = split_checked(&spec, max);
        let (mut co, mut bufs) = coalescer(4);
        for (i, s) in segments.iter().enumerate() {
            prop_assert_eq!(co.push(s, i as u64, &mut bufs).unwrap(), Pushed::Alone);
        }
        let tags: Vec<Output> = co.flush(&mut bufs).collect();
        let want: Vec<Output> = (0..segments.len() as u64).map(|tag| Output::Input { tag }).collect();
        prop_assert_eq!(tags, want);
    }

    #[test]
    fn interleaved_flows_each_come_back_whole(
        specs in proptest::collection::vec(any_spec(), 2..5),
        seed in any::<u64>(),
        icmp_every in 2usize..40,
    ) {
        // Distinct flows: give each its own source port.
        let specs: Vec<Spec> = specs.into_iter().enumerate().map(|(i, mut s)| {
            s.sport = 1000 + i as u16;
            s
        }).collect();
        let per_flow: Vec<Vec<Vec<u8>>> = specs
            .iter()
            .map(|s| split_checked(s, s.headers() + usize::from(s.gso_size)))
            .collect();
        let icmp = icmp_echo();
        let (mut co, mut bufs) = coalescer(specs.len());
        let mut next = vec![0usize; specs.len()];
        let mut rng = fill(seed, 70_000).into_iter();
        let mut tag = 0u64;
        let mut icmp_tags = Vec::new();
        let mut first_push = vec![None; specs.len()];
        loop {
            let live: Vec<usize> = (0..specs.len()).filter(|&f| next[f] < per_flow[f].len()).collect();
            if live.is_empty() {
                break;
            }
            let f = live[usize::from(rng.next().unwrap_or(0)) % live.len()];
            first_push[f].get_or_insert(tag);
            co.push(&per_flow[f][next[f]], tag, &mut bufs).unwrap();
            next[f] += 1;
            tag += 1;
            if (tag as usize).is_multiple_of(icmp_every) {
                prop_assert_eq!(co.push(&icmp, tag, &mut bufs).unwrap(), Pushed::Alone);
                icmp_tags.push(tag);
                tag += 1;
            }
        }
        let out: Vec<Output> = co.flush(&mut bufs).collect();
        // Every flow is one superpacket; ICMP packets are written alone, in order, each
        // where it arrived relative to the runs.
        let mut seen_icmp = Vec::new();
        let mut positions = Vec::new();
        for o in &out {
            match *o {
                Output::Input { tag } => {
                    seen_icmp.push(tag);
                    positions.push(tag);
                }
                Output::Buffer { slot, len, segments } => {
                    let p = &bufs[slot][VNET_HDR_LEN..len];
                    let f = (0..specs.len()).find(|&f| {
                        let s = &specs[f];
                        let proto = if s.tcp { 6 } else { 17 };
                        let (version, at) = if s.v6 { (6, 6) } else { (4, 9) };
                        p[0] >> 4 == version && p[at] == proto && p[s.ip_len()..][..2] == s.sport.to_be_bytes()
                    }).expect("a known flow");
                    assert_is_superpacket(&specs[f], usize::from(specs[f].gso_size), &bufs[slot][..len], segments);
                    positions.push(first_push[f].unwrap());
                }
            }
        }
        prop_assert_eq!(seen_icmp, icmp_tags);
        let superpackets = out.iter().filter(|o| matches!(o, Output::Buffer { .. })).count();
        prop_assert_eq!(superpackets, specs.len());
        prop_assert!(positions.windows(2).all(|w| w[0] < w[1]), "outputs out of arrival order: {:?}", positions);
    }

    #[test]
    fn out_of_order_segments_are_never_merged_wrongly(
        spec in prop_oneof![spec(true, false, false), spec(true, true, false)],
        perm_seed in any::<u64>(),
        swaps in 1usize..6,
    ) {
        let max = spec.headers() + usize::from(spec.gso_size);
        let segments = split_checked(&spec, max);
        // A few random swaps: mostly in order, some reordering, as a network does.
        let mut order: Vec<usize> = (0..segments.len()).collect();
        let r = fill(perm_seed, swaps * 2);
        for pair in r.chunks(2) {
            let (a, b) = (usize::from(pair[0]) % order.len(), usize::from(pair[1]) % order.len());
            order.swap(a, b);
        }
        let (mut co, mut bufs) = coalescer(8);
        for (push, &s) in order.iter().enumerate() {
            co.push(&segments[s], push as u64, &mut bufs).unwrap();
        }
        let out: Vec<Output> = co.flush(&mut bufs).collect();
        check_cover(&spec, &segments, &order, &out, &bufs);
    }

    #[test]
    fn a_bad_checksum_is_never_repaired(spec in spec(true, false, false), victim in any::<usize>(), at in any::<usize>(), flip in 1u8..) {
        let max = spec.headers() + usize::from(spec.gso_size);
        let mut segments = split_checked(&spec, max);
        let v = victim % segments.len();
        let p = &mut segments[v];
        let i = spec.headers() + at % (p.len() - spec.headers());
        p[i] ^= flip;
        let (mut co, mut bufs) = coalescer(8);
        for (tag, s) in segments.iter().enumerate() {
            co.push(s, tag as u64, &mut bufs).unwrap();
        }
        prop_assert_eq!(co.stats().bad_checksum, 1);
        let out: Vec<Output> = co.flush(&mut bufs).collect();
        prop_assert!(out.contains(&Output::Input { tag: v as u64 }), "the corrupted segment must be written alone: {:?}", out);
        // Everything else still arrives, merged where it can be.
        let order: Vec<usize> = (0..segments.len()).collect();
        check_cover(&spec, &segments, &order, &out, &bufs);
    }

    #[test]
    fn any_flags_split_as_linux_and_coalesce_without_losing_a_byte(
        spec in prop_oneof![spec(true, false, false), spec(true, true, false)],
        extra in 0u8..64,
    ) {
        // ACK plus any of PSH, FIN, URG, ECE, CWR (SYN and RST are refused for GSO).
        let mut spec = spec;
        spec.flags = ACK
            | ((extra & 0x01) * FIN)
            | (((extra >> 1) & 0x01) * PSH)
            | (((extra >> 2) & 0x07) << 5);
        let segments = split_checked(&spec, spec.headers() + usize::from(spec.gso_size));
        let (mut co, mut bufs) = coalescer(8);
        for (tag, s) in segments.iter().enumerate() {
            co.push(s, tag as u64, &mut bufs).unwrap();
        }
        let out: Vec<Output> = co.flush(&mut bufs).collect();
        let order: Vec<usize> = (0..segments.len()).collect();
        check_cover(&spec, &segments, &order, &out, &bufs);
    }

    #[test]
    fn udp_runs_break_on_size_changes(spec in spec(false, false, false), cut in any::<usize>()) {
        // Datagrams of one flow with a size change in the middle: two runs, both exact.
        let max = spec.headers() + usize::from(spec.gso_size);
        let mut segments = split_checked(&spec, max);
        prop_assume!(segments.len() >= 3);
        let c = 1 + cut % (segments.len() - 2);
        // Shrink datagram c by rebuilding it one byte shorter.
        let g = usize::from(spec.gso_size);
        prop_assume!(g > 1);
        let from = c * g;
        segments[c] = spec.packet(&spec.payload[from..from + g - 1], 0, 0, spec.ident.wrapping_add(c as u16), false);
        let (mut co, mut bufs) = coalescer(8);
        for (tag, s) in segments.iter().enumerate() {
            co.push(s, tag as u64, &mut bufs).unwrap();
        }
        let out: Vec<Output> = co.flush(&mut bufs).collect();
        // The short datagram ends the first run; the next starts a second one.
        let runs: Vec<usize> = out.iter().map(|o| match o {
            Output::Buffer { segments, .. } => *segments,
            Output::Input { .. } => 0,
        }).collect();
        prop_assert_eq!(runs[0], c + 1);
        prop_assert_eq!(runs.iter().sum::<usize>(), segments.len());
    }
}

/// Checks that the outputs tile the flow's payload exactly once, that each is valid, that
/// merged data is contiguous, and that outputs come in the order their first packet arrived.
fn check_cover(
    spec: &Spec,
    segments: &[Vec<u8>],
    order: &[usize],
    out: &[Output],
    bufs: &[Vec<u8>],
) {
    let seq_of = |p: &[u8]| common::be32(p, spec.ip_len() + 4);
    let push_of_seq = |seq: u32| {
        order
            .iter()
            .position(|&s| seq_of(&segments[s]) == seq)
            .expect("output starts at a pushed segment")
    };
    let mut covered: Vec<(usize, usize)> = Vec::new();
    let mut firsts = Vec::new();
    for o in out {
        let (packet, partial, n) = match *o {
            Output::Input { tag } => (&segments[order[tag as usize]][..], false, 1),
            Output::Buffer {
                slot,
                len,
                segments: n,
            } => {
                let b = &bufs[slot][..len];
                let hdr = VnetHdr::parse(&b[..VNET_HDR_LEN]).unwrap();
                if n > 1 {
                    assert!(matches!(hdr.gso, GsoType::TcpV4 | GsoType::TcpV6));
                    assert!(hdr.needs_csum);
                } else {
                    assert_eq!(hdr, VnetHdr::NONE);
                }
                (&b[VNET_HDR_LEN..], n > 1, n)
            }
        };
        let off = seq_of(packet).wrapping_sub(spec.seq) as usize;
        if partial || matches!(o, Output::Buffer { .. }) {
            let seen = check_packet(spec, packet, partial);
            assert_eq!(
                seen.payload,
                &spec.payload[off..off + seen.payload.len()],
                "merged bytes are not the stream's"
            );
            covered.push((off, seen.payload.len()));
            if n > 1 {
                assert!(seen.payload.len() > (n - 1) * usize::from(spec.gso_size));
            }
        } else {
            let len = packet.len() - spec.headers();
            covered.push((off, len));
        }
        firsts.push(push_of_seq(seq_of(packet)));
    }
    covered.sort_unstable();
    let mut at = 0;
    for (off, len) in covered {
        assert_eq!(off, at, "payload not covered exactly once");
        at += len;
    }
    assert_eq!(at, spec.payload.len());
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "outputs out of arrival order: {firsts:?}"
    );
}

fn icmp_echo() -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&[198, 18, 0, 9]);
    p[16..20].copy_from_slice(&[198, 18, 0, 1]);
    p[20] = 8;
    p
}
