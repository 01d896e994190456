//! The inner-packet helpers: the flow hash follows the 5-tuple and nothing else, ECN is
//! read from the right bits, and CE marking keeps the IPv4 checksum valid (checked by a
//! textbook checksum written separately) and never touches a Not-ECT packet.

mod common;

use common::{ipv4, ipv6, ports, textbook_checksum};
use proptest::prelude::*;
use ringway_fq::inner::{ecn, flow_hash, mark_ce, meta, Ecn, FlowHasher, FlowSeed};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const A: [u8; 4] = [198, 18, 0, 2];
const B: [u8; 4] = [198, 51, 100, 7];
const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

fn seed() -> FlowSeed {
    FlowSeed::from_bytes(*b"0123456789abcdef")
}

#[test]
fn the_hash_follows_the_five_tuple_and_only_it() {
    let s = seed();
    let h = |p: &[u8]| flow_hash(p, &s);
    let base = ipv4(0, TCP, A, B, &ports(40000, 443, 16));
    // Same flow, different everything else (TOS/ECN, length, payload, checksum).
    let mut other = ipv4(0x02, TCP, A, B, &ports(40000, 443, 1400));
    other[30] = 0xff;
    assert_eq!(h(&base), h(&other), "same 5-tuple");
    // Each field of the 5-tuple moves it.
    for (what, p) in [
        (
            "source",
            ipv4(0, TCP, [198, 18, 0, 3], B, &ports(40000, 443, 16)),
        ),
        (
            "destination",
            ipv4(0, TCP, A, [198, 51, 100, 8], &ports(40000, 443, 16)),
        ),
        ("source port", ipv4(0, TCP, A, B, &ports(40001, 443, 16))),
        (
            "destination port",
            ipv4(0, TCP, A, B, &ports(40000, 444, 16)),
        ),
        ("protocol", ipv4(0, UDP, A, B, &ports(40000, 443, 16))),
        ("direction", ipv4(0, TCP, B, A, &ports(443, 40000, 16))),
    ] {
        assert_ne!(h(&base), h(&p), "{what} should change the hash");
    }
    // The key matters: another seed, another hash.
    let t = FlowSeed::from_bytes(*b"fedcba9876543210");
    assert_ne!(flow_hash(&base, &s), flow_hash(&base, &t));
}

#[test]
fn ipv6_hashes_by_five_tuple_past_extension_headers() {
    let s = seed();
    let h = |p: &[u8]| flow_hash(p, &s);
    let plain = ipv6(0, TCP, A6, B6, &[], &ports(40000, 443, 16));
    // Hop-by-hop (8 bytes) then destination options (16 bytes), then TCP.
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0];
    ext.extend_from_slice(&[TCP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let with_ext = ipv6(0, 0, A6, B6, &ext, &ports(40000, 443, 16));
    assert_eq!(h(&plain), h(&with_ext), "extension headers are skipped");
    assert_ne!(
        h(&plain),
        h(&ipv6(0, TCP, A6, B6, &[], &ports(40001, 443, 16)))
    );
    assert_ne!(
        h(&plain),
        h(&ipv6(0, TCP, B6, A6, &[], &ports(40000, 443, 16)))
    );
    assert_ne!(
        h(&plain),
        h(&ipv6(0, UDP, A6, B6, &[], &ports(40000, 443, 16)))
    );
    // Traffic class and flow label are not part of the flow.
    assert_eq!(
        h(&plain),
        h(&ipv6(0xb9, TCP, A6, B6, &[], &ports(40000, 443, 900)))
    );
    // Same addresses and ports in IPv4 and IPv6 clothing are different flows.
    assert_ne!(h(&plain), h(&ipv4(0, TCP, A, B, &ports(40000, 443, 16))));
}

#[test]
fn fragments_hash_by_addresses_and_protocol_so_they_stay_together() {
    let s = seed();
    let h = |p: &[u8]| flow_hash(p, &s);
    // IPv4: the first fragment (MF set, ports present) and a later one (offset, payload
    // bytes where ports would be) are one flow.
    let mut first = ipv4(0, UDP, A, B, &ports(5353, 53, 1000));
    first[6] = 0x20; // MF
    let mut later = ipv4(0, UDP, A, B, &[0xde; 500]);
    later[6] = 0x00;
    later[7] = 0x7d; // offset 125 * 8
    assert_eq!(h(&first), h(&later));
    let mut elsewhere = later.clone();
    elsewhere[19] = 99;
    assert_ne!(h(&later), h(&elsewhere), "other destination");

    // IPv6: a fragment header (next header UDP), first and later fragment alike.
    let frag = |offset_hi: u8, more: u8| vec![UDP, 0, offset_hi, more, 0, 0, 0, 42];
    let f1 = ipv6(0, 44, A6, B6, &frag(0, 1), &ports(5353, 53, 1000));
    let f2 = ipv6(0, 44, A6, B6, &frag(0x10, 0), &[0xab; 300]);
    assert_eq!(h(&f1), h(&f2));
}

#[test]
fn protocols_without_ports_hash_by_addresses() {
    let s = seed();
    let ping = |id: u8, seq: u8| ipv4(0, ICMP, A, B, &[8, 0, 0, 0, 0, id, 0, seq]);
    assert_eq!(flow_hash(&ping(1, 1), &s), flow_hash(&ping(2, 9), &s));
    assert_ne!(
        flow_hash(&ping(1, 1), &s),
        flow_hash(&ipv4(0, ICMP, A, [198, 51, 100, 8], &[8, 0, 0, 0]), &s)
    );
    // Too short to hold the ports: still a flow, by addresses.
    let short = ipv4(0, TCP, A, B, &[0x9c]);
    assert_eq!(flow_hash(&short, &s), flow_hash(&short.clone(), &s));
}

#[test]
fn flows_spread_over_buckets() {
    // 10 240 flows differing only in source port into 1024 buckets: ~10 per bucket.
    let s = seed();
    let mut buckets = vec![0u32; 1024];
    for port in 0..10_240u16 {
        let p = ipv4(0, TCP, A, B, &ports(port, 443, 16));
        buckets[(flow_hash(&p, &s) % 1024) as usize] += 1;
    }
    let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
    assert!(*min >= 1 && *max <= 30, "bucket loads {min}..{max}");
}

#[test]
fn ecn_reads_the_codepoint_of_either_version() {
    for (bits, want) in [
        (0, Ecn::NotEct),
        (1, Ecn::Ect1),
        (2, Ecn::Ect0),
        (3, Ecn::Ce),
    ] {
        let v4 = ipv4(0xb8 | bits, TCP, A, B, &ports(1, 2, 0)); // DSCP EF around it
        assert_eq!(ecn(&v4), want);
        let v6 = ipv6(0xb8 | bits, TCP, A6, B6, &[], &ports(1, 2, 0));
        assert_eq!(ecn(&v6), want);
    }
    assert_eq!(ecn(&[]), Ecn::NotEct);
    assert_eq!(ecn(&[0x43; 19]), Ecn::NotEct, "too short for IPv4");
    assert_eq!(
        ecn(&[0x46, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        Ecn::NotEct,
        "IHL past the end"
    );
    assert!(Ecn::Ect0.is_ect() && Ecn::Ect1.is_ect());
    assert!(!Ecn::NotEct.is_ect() && !Ecn::Ce.is_ect());
}

#[test]
fn mark_ce_sets_ce_on_ect_with_a_valid_ipv4_checksum() {
    for bits in [1u8, 2] {
        for dscp in [0u8, 0x28, 0xb8, 0xfc] {
            let mut p = ipv4(dscp | bits, TCP, A, B, &ports(40000, 443, 64));
            let before = p.clone();
            assert!(mark_ce(&mut p));
            assert_eq!(ecn(&p), Ecn::Ce);
            assert_eq!(p[1], dscp | 3, "DSCP kept");
            assert_eq!(
                textbook_checksum(&p[..20]),
                0,
                "header checksum still valid"
            );
            let changed: Vec<usize> = (0..p.len()).filter(|&i| p[i] != before[i]).collect();
            assert!(
                changed.iter().all(|i| [1, 10, 11].contains(i)),
                "{changed:?}"
            );
        }
    }
}

#[test]
fn mark_ce_leaves_not_ect_and_ce_and_garbage_alone() {
    let mut not_ect = ipv4(0xb8, TCP, A, B, &ports(1, 2, 8));
    let copy = not_ect.clone();
    assert!(
        !mark_ce(&mut not_ect),
        "Not-ECT cannot be marked: drop it instead"
    );
    assert_eq!(not_ect, copy);

    let mut ce = ipv4(0x03, UDP, A, B, &ports(1, 2, 8));
    let copy = ce.clone();
    assert!(mark_ce(&mut ce), "already CE");
    assert_eq!(ce, copy);

    let mut v6 = ipv6(0x00, TCP, A6, B6, &[], &ports(1, 2, 8));
    let copy = v6.clone();
    assert!(!mark_ce(&mut v6));
    assert_eq!(v6, copy);

    for mut garbage in [vec![], vec![0x45], vec![0x12; 60], vec![0x62; 39]] {
        let copy = garbage.clone();
        assert!(!mark_ce(&mut garbage));
        assert_eq!(garbage, copy);
    }
}

#[test]
fn mark_ce_on_ipv6_sets_the_traffic_class_bits_only() {
    for bits in [1u8, 2] {
        let mut p = ipv6(0xb8 | bits, UDP, A6, B6, &[], &ports(1, 2, 8));
        let before = p.clone();
        assert!(mark_ce(&mut p));
        assert_eq!(ecn(&p), Ecn::Ce);
        assert_eq!(p[0], before[0], "version and DSCP high bits");
        assert_eq!(
            p[1] & 0xcf,
            before[1] & 0xcf,
            "DSCP low bits and flow label"
        );
        assert_eq!(&p[2..], &before[2..]);
    }
}

#[test]
fn a_superpacket_is_the_same_flow_and_marks_the_same_way() {
    let s = seed();
    let small = ipv4(0x02, TCP, A, B, &ports(40000, 443, 1380));
    let mut big = ipv4(0x02, TCP, A, B, &ports(40000, 443, 65_000));
    assert_eq!(flow_hash(&small, &s), flow_hash(&big, &s));
    let m = meta(&big, &s);
    assert_eq!((m.len, m.ect), (20 + 4 + 65_000, true));
    assert!(mark_ce(&mut big));
    assert_eq!(textbook_checksum(&big[..20]), 0);
}

proptest! {
    #[test]
    fn any_bytes_are_handled_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let s = seed();
        let _ = flow_hash(&bytes, &s);
        let before = ecn(&bytes);
        let mut p = bytes.clone();
        let marked = mark_ce(&mut p);
        prop_assert_eq!(marked, before.is_ect() || before == Ecn::Ce);
        if !before.is_ect() {
            prop_assert_eq!(&p, &bytes, "only ECT packets change");
        } else {
            prop_assert_eq!(ecn(&p), Ecn::Ce);
            let changed: Vec<usize> = (0..p.len()).filter(|&i| p[i] != bytes[i]).collect();
            prop_assert!(changed.iter().all(|i| [1, 10, 11].contains(i)), "{:?}", changed);
        }
    }

    #[test]
    fn marking_any_valid_ipv4_header_keeps_its_checksum_valid(
        header in proptest::array::uniform20(any::<u8>()),
        bits in 1u8..3,
    ) {
        let mut p = header.to_vec();
        p[0] = 0x45;
        p[1] = (p[1] & !3) | bits;
        p[10] = 0;
        p[11] = 0;
        let c = textbook_checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        prop_assert_eq!(textbook_checksum(&p), 0);
        prop_assert!(mark_ce(&mut p));
        prop_assert_eq!(textbook_checksum(&p), 0, "after marking {:02x?}", p);
    }

    #[test]
    fn the_hash_is_a_function_of_the_tuple(
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
        sport in any::<u16>(), dport in any::<u16>(),
        tail_a in 0usize..64, tail_b in 0usize..64, tos in any::<u8>(),
    ) {
        let s = seed();
        let a = ipv4(0, UDP, src, dst, &ports(sport, dport, tail_a));
        let b = ipv4(tos, UDP, src, dst, &ports(sport, dport, tail_b));
        prop_assert_eq!(flow_hash(&a, &s), flow_hash(&b, &s));
    }
}

#[test]
fn the_memoised_hasher_agrees_with_meta_across_flow_changes() {
    let s = seed();
    let mut hasher = FlowHasher::new(s.clone());
    let packets = [
        ipv4(0, TCP, A, B, &ports(40000, 443, 1400)),
        ipv4(0x02, TCP, A, B, &ports(40000, 443, 100)),
        ipv4(0, TCP, A, B, &ports(40001, 443, 100)),
        ipv4(0, TCP, A, B, &ports(40000, 443, 100)),
        ipv6(0, UDP, A6, B6, &[], &ports(53, 5353, 40)),
        ipv4(0, ICMP, A, B, &[8, 0, 0, 0]),
        vec![0xff; 3],
    ];
    for p in packets.iter().chain(packets.iter().rev()) {
        assert_eq!(hasher.meta(p), meta(p, &s));
    }
}
