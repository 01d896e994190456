//! Frozen vectors, computed independently (a few lines of Python doing RFC 791/793 by the
//! book, not this crate): a 3-segment TCP/IPv4 split with known checksums, and the same
//! three segments coalesced back. A change here is a behaviour change: say why in review.
//!
//! Flow 198.18.0.1:40000 -> 198.18.0.2:5201, IPv4 id 0x1c46 with DF, TTL 64; TCP seq
//! 0x01020304, ack 0x0a0b0c0d, window 501, timestamps option (12 bytes), ACK|PSH on the
//! superpacket; payload "ringway-offload" (15 bytes) at gso_size 6: segments of 6, 6, 3.

use ringway_offload::{
    prepare, split, CoalesceConfig, Coalescer, GsoType, Layout, Output, Prepared, VnetHdr,
    VNET_HDR_LEN,
};

/// The superpacket as the TUN hands it over: IPv4 header checksum valid, TCP checksum field
/// holding the pseudo-header sum over 47 bytes (CHECKSUM_PARTIAL).
const SUPERPACKET: &str = "450000431c46400040069247c6120001c61200029c401451010203040a0b0c0d\
                           801801f58c5d00000101080a000000010000000272696e677761792d6f66666c6f6164";
/// Segment 0: id 0x1c46, seq ..04, ACK only, "ringwa", TCP checksum 0xc5b5.
const SEG0: &str = "4500003a1c46400040069250c6120001c61200029c401451010203040a0b0c0d\
                    801001f5c5b500000101080a000000010000000272696e677761";
/// Segment 1: id 0x1c47, seq ..0a, ACK only, "y-offl", TCP checksum 0xcee1.
const SEG1: &str = "4500003a1c4740004006924fc6120001c61200029c4014510102030a0a0b0c0d\
                    801001f5cee100000101080a0000000100000002792d6f66666c";
/// Segment 2: id 0x1c48, seq ..10, ACK|PSH, "oad", TCP checksum 0x4a75.
const SEG2: &str = "450000371c48400040069251c6120001c61200029c401451010203100a0b0c0d\
                    801801f54a7500000101080a00000001000000026f6164";
/// Segment 0 with its TCP checksum left partial (the pseudo-header sum 0x8c54).
const SEG0_PARTIAL: &str = "4500003a1c46400040069250c6120001c61200029c401451010203040a0b0c0d\
                            801001f58c5400000101080a000000010000000272696e677761";
/// The virtio header in front of the superpacket, little-endian fields.
#[cfg(target_endian = "little")]
const VNET: &str = "01013400060014001000";

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vnet() -> VnetHdr {
    VnetHdr {
        needs_csum: true,
        data_valid: false,
        gso: GsoType::TcpV4,
        ecn: false,
        hdr_len: 52,
        gso_size: 6,
        csum_start: 20,
        csum_offset: 16,
    }
}

#[test]
fn split_tcp4_into_three() {
    let layout = Layout {
        headroom: 2,
        tailroom: 1,
        max_packet_len: 58,
    };
    let mut packet = hex(SUPERPACKET);
    assert_eq!(
        prepare(&vnet(), &mut packet, &layout),
        Ok(Prepared::Split(ringway_offload::Plan {
            segments: 3,
            segment_len: 58,
            last_len: 55
        }))
    );
    let mut out = vec![0xaa; 200];
    let segs = split(&vnet(), &packet, &mut out, &layout).unwrap();
    assert_eq!((segs.count(), segs.stride(), segs.last_len()), (3, 61, 55));
    let want = [hex(SEG0), hex(SEG1), hex(SEG2)];
    for (i, r) in segs.packets().enumerate() {
        assert_eq!(r.start, 2 + 61 * i);
        assert_eq!(out[r], want[i][..], "segment {i}");
    }
    // Gaps untouched: headroom 2, tailroom 1 around each packet.
    for gap in [0..2, 60..63, 121..124, 179..200] {
        assert!(out[gap.clone()].iter().all(|&b| b == 0xaa), "{gap:?}");
    }
}

#[test]
fn coalesce_three_back_into_the_superpacket() {
    let mut co = Coalescer::new(CoalesceConfig::default());
    let mut bufs = vec![vec![0u8; VNET_HDR_LEN + 65535]; 1];
    for (tag, s) in [SEG0, SEG1, SEG2].iter().enumerate() {
        co.push(&hex(s), tag as u64, &mut bufs).unwrap();
    }
    let out: Vec<Output> = co.flush(&mut bufs).collect();
    assert_eq!(
        out,
        [Output::Buffer {
            slot: 0,
            len: VNET_HDR_LEN + 67,
            segments: 3
        }]
    );
    assert_eq!(VnetHdr::parse(&bufs[0]).unwrap(), vnet());
    #[cfg(target_endian = "little")]
    assert_eq!(bufs[0][..VNET_HDR_LEN], hex(VNET)[..]);
    assert_eq!(
        bufs[0][VNET_HDR_LEN..VNET_HDR_LEN + 67],
        hex(SUPERPACKET)[..]
    );
}

#[test]
fn finish_a_partial_checksum_in_place() {
    let hdr = VnetHdr {
        gso: GsoType::None,
        gso_size: 0,
        ..vnet()
    };
    let mut p = hex(SEG0_PARTIAL);
    let layout = Layout {
        headroom: 0,
        tailroom: 0,
        max_packet_len: 1420,
    };
    assert_eq!(prepare(&hdr, &mut p, &layout), Ok(Prepared::Ready));
    assert_eq!(p, hex(SEG0));
}
