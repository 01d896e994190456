//! Inner IP packets as the queue sees them: which flow, whether ECN-capable, and setting
//! CE. Zero-copy reads (and one two-bit write) on a byte slice that may be anything: a
//! plain IPv4/IPv6 packet, a GSO superpacket (its IP header is a normal header; marking
//! it marks every segment cut from it), or garbage. Nothing here panics or allocates.
//!
//! ```text
//!  IPv4   0      1      2  3   4  5   6  7    8     9     10  11   12..16 16..20
//!        +------+------+------+------+------+-----+-----+--------+------+------+
//!        |ver|ihl| DSCP|ECN| len | ident|flg|frag| ttl |proto|checksum| src  | dst  |
//!  IPv6   0         1         2  3   4  5   6     7     8..24  24..40
//!        +----+----+----+----+------+------+-----+-----+------+------+
//!        |ver| traffic class | flow | plen |next | hop | src  | dst  |
//!        |   |  DSCP  | ECN  | label|      |     |     |      |      |
//!  ECN (RFC 3168): 00 Not-ECT, 01 ECT(1), 10 ECT(0), 11 CE
//! ```

mod siphash;

use crate::queue::Meta;

/// The key of the flow hash: drawn once per process from a system random source, so
/// that someone who knows the code but not the key cannot craft flows that collide into
/// one bucket (and so share, and starve in, one queue).
#[derive(Clone)]
pub struct FlowSeed {
    k0: u64,
    k1: u64,
}

impl FlowSeed {
    /// A seed from 16 random bytes.
    pub const fn from_bytes(key: [u8; 16]) -> Self {
        let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7] = key;
        FlowSeed {
            k0: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
            k1: u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
        }
    }
}

impl std::fmt::Debug for FlowSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowSeed(..)") // a key: not for logs
    }
}

/// An IP packet's ECN codepoint (RFC 3168 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ecn {
    /// 00: the sender does not understand ECN; congestion must be signalled by a drop.
    NotEct,
    /// 01: ECN-capable transport (also L4S).
    Ect1,
    /// 10: ECN-capable transport.
    Ect0,
    /// 11: congestion experienced.
    Ce,
}

impl Ecn {
    /// From the two ECN bits (the low two of `bits`).
    pub const fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0b00 => Ecn::NotEct,
            0b01 => Ecn::Ect1,
            0b10 => Ecn::Ect0,
            _ => Ecn::Ce,
        }
    }

    /// ECT(0) or ECT(1): a CE mark will be understood, so it may replace a drop.
    pub const fn is_ect(self) -> bool {
        matches!(self, Ecn::Ect0 | Ecn::Ect1)
    }
}

const IPV4_MIN: usize = 20;
const IPV6_LEN: usize = 40;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_DCCP: u8 = 33;
const PROTO_SCTP: u8 = 132;
const PROTO_UDPLITE: u8 = 136;

const V6_HOP_BY_HOP: u8 = 0;
const V6_ROUTING: u8 = 43;
const V6_FRAGMENT: u8 = 44;
const V6_AH: u8 = 51;
const V6_DEST_OPTS: u8 = 60;
/// Extension headers followed at most, so a chain of them costs a bounded walk.
const V6_MAX_EXT: usize = 8;

/// What kind of IP packet a slice holds, checked just enough to read the fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ip {
    /// IPv4 with this header length (20..=60, within the slice).
    V4 {
        ihl: usize,
    },
    V6,
    Other,
}

fn ip(packet: &[u8]) -> Ip {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= IPV4_MIN => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if ihl >= IPV4_MIN && ihl <= packet.len() {
                Ip::V4 { ihl }
            } else {
                Ip::Other
            }
        }
        Some(6) if packet.len() >= IPV6_LEN => Ip::V6,
        _ => Ip::Other,
    }
}

/// Transport protocols whose first four bytes are the source and destination ports.
fn has_ports(proto: u8) -> bool {
    matches!(
        proto,
        PROTO_TCP | PROTO_UDP | PROTO_DCCP | PROTO_SCTP | PROTO_UDPLITE
    )
}

/// The bytes the flow hash covers: protocol, ports (zero when there are none or the
/// packet is a fragment), source, destination. 13 bytes for IPv4, 37 for IPv6, none for
/// anything else; the lengths differ, so an IPv4 key never equals an IPv6 one.
#[derive(Clone)]
struct FlowKey {
    buf: [u8; 37],
    len: usize,
}

impl std::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowKey(..)") // addresses: not for logs
    }
}

impl FlowKey {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn hash(&self, seed: &FlowSeed) -> u32 {
        let h = siphash::siphash::<1, 3>(seed.k0, seed.k1, self.bytes());
        (h ^ (h >> 32)) as u32
    }

    fn of(packet: &[u8]) -> FlowKey {
        let mut key = FlowKey {
            buf: [0; 37],
            len: 0,
        };
        let (proto, l4, fragment, addrs) = match ip(packet) {
            Ip::V4 { ihl } => {
                let frag = u16::from_be_bytes([packet[6], packet[7]]);
                // More-fragments set or a non-zero offset: every fragment of a datagram
                // must hash alike, and only the first carries the ports.
                (packet[9], ihl, frag & 0x3fff != 0, &packet[12..20])
            }
            Ip::V6 => {
                let (proto, l4, fragment) = v6_upper_layer(packet);
                (proto, l4, fragment, &packet[8..40])
            }
            Ip::Other => return key,
        };
        key.buf[0] = proto;
        if !fragment && has_ports(proto) {
            if let Some(ports) = packet.get(l4..l4 + 4) {
                key.buf[1..5].copy_from_slice(ports);
            }
        }
        key.buf[5..5 + addrs.len()].copy_from_slice(addrs);
        key.len = 5 + addrs.len();
        key
    }
}

/// Walks IPv6 extension headers: the upper-layer protocol, its offset, and whether the
/// packet is a fragment. A truncated chain stops where it breaks (deterministically, so
/// a flow's packets still agree).
fn v6_upper_layer(packet: &[u8]) -> (u8, usize, bool) {
    let mut next = packet[6];
    let mut off = IPV6_LEN;
    for _ in 0..V6_MAX_EXT {
        let len = match next {
            V6_HOP_BY_HOP | V6_ROUTING | V6_DEST_OPTS => {
                packet.get(off + 1).map(|&l| (usize::from(l) + 1) * 8)
            }
            V6_AH => packet.get(off + 1).map(|&l| (usize::from(l) + 2) * 4),
            V6_FRAGMENT => {
                return match packet.get(off) {
                    Some(&proto) => (proto, off + 8, true),
                    None => (next, off, true),
                };
            }
            _ => return (next, off, false),
        };
        let (Some(len), Some(&after)) = (len, packet.get(off)) else {
            return (next, off, false);
        };
        next = after;
        off += len;
    }
    (next, off, false)
}

/// The packet's flow as a 32-bit hash of its 5-tuple (protocol, addresses and, for TCP,
/// UDP, UDP-Lite, SCTP and DCCP, ports), keyed with SipHash-1-3. Fragments hash by
/// protocol and addresses only, as do protocols without ports (ICMP: all pings between
/// two hosts are one flow). Anything that is not IPv4/IPv6 hashes to one value per seed.
///
/// Reads the IP header and the first four bytes after it (after IPv6 extension headers,
/// up to eight of them), so it works on a GSO superpacket as on a plain packet.
pub fn flow_hash(packet: &[u8], seed: &FlowSeed) -> u32 {
    FlowKey::of(packet).hash(seed)
}

/// The packet's ECN codepoint; `NotEct` for anything that is not an IPv4/IPv6 packet.
pub fn ecn(packet: &[u8]) -> Ecn {
    match ip(packet) {
        Ip::V4 { .. } => Ecn::from_bits(packet[1]),
        Ip::V6 => Ecn::from_bits(packet[1] >> 4),
        Ip::Other => Ecn::NotEct,
    }
}

/// Sets CE on an ECN-capable packet, updating the IPv4 header checksum incrementally
/// (RFC 1624 eq. 3, which keeps a correct checksum correct, and a wrong one wrong, without
/// reading the rest of the header). IPv6 has no header checksum. The transport checksum
/// does not cover the IP ECN bits, so nothing else changes.
///
/// Returns whether the packet now carries CE: `true` for ECT(0)/ECT(1) (now marked) and
/// for CE (already marked, left as is), `false` for Not-ECT and non-IP bytes, which are
/// left untouched: such a packet must be dropped instead.
pub fn mark_ce(packet: &mut [u8]) -> bool {
    match ip(packet) {
        Ip::V4 { .. } => match Ecn::from_bits(packet[1]) {
            Ecn::NotEct => false,
            Ecn::Ce => true,
            Ecn::Ect0 | Ecn::Ect1 => {
                let old = u16::from_be_bytes([packet[0], packet[1]]);
                packet[1] |= 0b11;
                let new = u16::from_be_bytes([packet[0], packet[1]]);
                let check = u16::from_be_bytes([packet[10], packet[11]]);
                // HC' = ~(~HC + ~m + m')
                let mut sum = u32::from(!check) + u32::from(!old) + u32::from(new);
                sum = (sum & 0xffff) + (sum >> 16);
                sum = (sum & 0xffff) + (sum >> 16);
                packet[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
                true
            }
        },
        Ip::V6 => match Ecn::from_bits(packet[1] >> 4) {
            Ecn::NotEct => false,
            Ecn::Ce => true,
            Ecn::Ect0 | Ecn::Ect1 => {
                packet[1] |= 0b11 << 4;
                true
            }
        },
        Ip::Other => false,
    }
}

/// [`meta`] with a one-entry memo: a packet of the same flow as the one before (as most
/// of a receive batch or a bulk upload's reads are) reuses its hash, so a run of one flow
/// costs the 5-tuple's extraction and a compare per packet instead of a SipHash.
#[derive(Debug, Clone)]
pub struct FlowHasher {
    seed: FlowSeed,
    last: Option<(FlowKey, u32)>,
}

impl FlowHasher {
    /// A hasher keyed with `seed`.
    pub fn new(seed: FlowSeed) -> Self {
        FlowHasher { seed, last: None }
    }

    /// The same as [`meta`]`(packet, seed)`.
    pub fn meta(&mut self, packet: &[u8]) -> Meta {
        let key = FlowKey::of(packet);
        let flow = match &self.last {
            Some((k, h)) if k.bytes() == key.bytes() => *h,
            _ => {
                let h = key.hash(&self.seed);
                self.last = Some((key, h));
                h
            }
        };
        Meta {
            flow,
            len: packet.len(),
            ect: ecn(packet).is_ect(),
        }
    }
}

/// What the queue needs to know about an inner packet: its flow, its length, and
/// whether it is ECN-capable.
pub fn meta(packet: &[u8], seed: &FlowSeed) -> Meta {
    Meta {
        flow: flow_hash(packet, seed),
        len: packet.len(),
        ect: ecn(packet).is_ect(),
    }
}
