//! The synthetic inner packets the load sessions send: IPv4 UDP datagrams from the session's
//! inner address to a target behind the server's TUN (by default the server's own inner
//! address, port 9, "discard").
//!
//! ```text
//!  0                   8                  16                  24                 32
//!  +-------------------+------------------+--------------------------------------+
//!  | version 4, IHL 5  |     TOS 0        |            total length              |  IPv4
//!  |            identification            | DF |        fragment offset 0        |
//!  |      TTL 64       |   protocol 17    |           header checksum            |
//!  |                            source: the session's inner address              |
//!  |                            destination: the target                          |
//!  +--------------------------------------+--------------------------------------+
//!  |            source port               |          destination port            |  UDP
//!  |            length                    |          checksum                    |
//!  |                        payload (a fixed byte pattern)                       |
//!  +-----------------------------------------------------------------------------+
//! ```
//!
//! Both checksums are right, so the server's kernel takes the packet as a real one. Each
//! session's packet is built once and copied into the send buffer for every send (sealing
//! encrypts it in place).

use std::net::{Ipv4Addr, SocketAddrV4};

use ringway_e2e::icmp::checksum;

/// IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// The smallest packet: both headers and no payload.
pub const MIN_LEN: usize = IPV4_HEADER_LEN + UDP_HEADER_LEN;
const PROTO_UDP: u8 = 17;

/// An IPv4 UDP packet of `len` bytes in all (at least [`MIN_LEN`], at most 65 535) from
/// `src` to `dst`.
pub fn udp_packet(src: SocketAddrV4, dst: SocketAddrV4, len: usize) -> Vec<u8> {
    let len = len.clamp(MIN_LEN, usize::from(u16::MAX));
    let total = u16::try_from(len).expect("clamped to u16");
    let udp_len = total - IPV4_HEADER_LEN as u16;
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[6] = 0x40; // don't fragment
    p[8] = 64;
    p[9] = PROTO_UDP;
    p[12..16].copy_from_slice(&src.ip().octets());
    p[16..20].copy_from_slice(&dst.ip().octets());
    let ip_sum = checksum(&p[..IPV4_HEADER_LEN]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    for (i, b) in p[MIN_LEN..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let udp = &mut p[IPV4_HEADER_LEN..];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let sum = udp_checksum(*src.ip(), *dst.ip(), &p[IPV4_HEADER_LEN..]);
    p[IPV4_HEADER_LEN + 6..IPV4_HEADER_LEN + 8].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The UDP checksum of `segment` (header with a zero checksum field, and payload) under the
/// IPv4 pseudo-header; 0 comes out as 0xffff, since 0 means "no checksum".
fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, PROTO_UDP]);
    let len = u16::try_from(segment.len()).expect("a UDP segment fits in 16 bits");
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(segment);
    match checksum(&pseudo) {
        0 => 0xffff,
        sum => sum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn headers_and_checksums_verify() {
        let p = udp_packet(addr("198.18.0.2:40000"), addr("198.18.0.1:9"), 128);
        assert_eq!(p.len(), 128);
        assert_eq!(p[0], 0x45);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 128);
        assert_eq!(p[9], PROTO_UDP);
        // A header whose checksum is right sums to zero.
        assert_eq!(checksum(&p[..IPV4_HEADER_LEN]), 0);
        let udp = &p[IPV4_HEADER_LEN..];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 40000);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 9);
        assert_eq!(usize::from(u16::from_be_bytes([udp[4], udp[5]])), 108);
        // So does a segment with its pseudo-header.
        let mut pseudo = vec![198, 18, 0, 2, 198, 18, 0, 1, 0, PROTO_UDP, 0, 108];
        pseudo.extend_from_slice(udp);
        assert_eq!(checksum(&pseudo), 0);
    }

    #[test]
    fn sizes_are_clamped() {
        let a = addr("198.18.0.2:1");
        let b = addr("198.18.0.1:9");
        assert_eq!(udp_packet(a, b, 0).len(), MIN_LEN);
        assert_eq!(udp_packet(a, b, 1_000_000).len(), 65_535);
    }
}
