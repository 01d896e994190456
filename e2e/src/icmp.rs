//! ICMP echo packets built by hand, for driving the client library without a TUN device.
//!
//! A test that plays the host's IP stack (the in-memory inside of `ringway_client`) needs
//! packets that the real kernel at the far end answers: an IPv4 echo request addressed to the
//! server's inside address comes back as an echo reply. Both checksums must be right, or that
//! kernel drops the request silently.
//!
//! ```text
//!  0        4        8               16               24              32
//!  +--------+--------+----------------+--------------------------------+
//!  |version |  IHL   |      TOS       |          total length          |  IPv4, 20 bytes
//!  |             identification      |flags|     fragment offset      |
//!  |      TTL        |  protocol (1)  |        header checksum         |
//!  |                         source address                             |
//!  |                       destination address                          |
//!  +-----------------+----------------+--------------------------------+
//!  |  type (8 / 0)   |    code (0)    |           checksum             |  ICMP, 8 bytes
//!  |           identifier             |        sequence number         |
//!  |                        payload ...                                 |
//!  +---------------------------------------------------------------------+
//! ```

use std::net::Ipv4Addr;

/// IPv4 header length without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// ICMP echo header length.
pub const ICMP_HEADER_LEN: usize = 8;
const PROTO_ICMP: u8 = 1;
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

/// The Internet checksum (RFC 1071) of `data`: one's complement of the one's complement sum of
/// its 16-bit big-endian words, an odd last byte padded with zero.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // After folding, `sum` fits in 16 bits.
    !(sum as u16)
}

/// An IPv4 ICMP echo request from `src` to `dst` with the given identifier, sequence number
/// and payload; both checksums filled in.
pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let total = IPV4_HEADER_LEN + ICMP_HEADER_LEN + payload.len();
    let total16 = u16::try_from(total).expect("echo payload fits in one IPv4 packet");
    let mut p = vec![0u8; total];
    p[0] = 0x45; // version 4, 5 words of header
    p[2..4].copy_from_slice(&total16.to_be_bytes());
    p[4..6].copy_from_slice(&seq.to_be_bytes()); // identification: unique enough per packet
    p[6] = 0x40; // don't fragment
    p[8] = 64; // TTL
    p[9] = PROTO_ICMP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum(&p[..IPV4_HEADER_LEN]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let icmp = &mut p[IPV4_HEADER_LEN..];
    icmp[0] = ECHO_REQUEST;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(payload);
    let icmp_sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&icmp_sum.to_be_bytes());
    p
}

/// The parts of an echo reply a test checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReply<'a> {
    /// Who answered.
    pub src: Ipv4Addr,
    /// Whom it is for.
    pub dst: Ipv4Addr,
    /// The request's identifier.
    pub id: u16,
    /// The request's sequence number.
    pub seq: u16,
    /// The echoed payload.
    pub payload: &'a [u8],
}

/// Why a packet is not a valid echo reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAReply {
    /// Shorter than its headers or its length field says, or not IPv4 without options.
    Malformed,
    /// The IPv4 header checksum is wrong.
    IpChecksum,
    /// Not ICMP, or ICMP but not an echo reply (e.g. an error message).
    NotEchoReply,
    /// The ICMP checksum is wrong.
    IcmpChecksum,
}

/// Parses an IPv4 ICMP echo reply, checking both checksums.
pub fn parse_echo_reply(packet: &[u8]) -> Result<EchoReply<'_>, NotAReply> {
    if packet.len() < IPV4_HEADER_LEN + ICMP_HEADER_LEN || packet[0] != 0x45 {
        return Err(NotAReply::Malformed);
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total != packet.len() {
        return Err(NotAReply::Malformed);
    }
    if checksum(&packet[..IPV4_HEADER_LEN]) != 0 {
        return Err(NotAReply::IpChecksum);
    }
    let icmp = &packet[IPV4_HEADER_LEN..];
    if packet[9] != PROTO_ICMP || icmp[0] != ECHO_REPLY || icmp[1] != 0 {
        return Err(NotAReply::NotEchoReply);
    }
    if checksum(icmp) != 0 {
        return Err(NotAReply::IcmpChecksum);
    }
    let addr =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    Ok(EchoReply {
        src: addr(12),
        dst: addr(16),
        id: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        payload: &icmp[ICMP_HEADER_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2; checksum is !ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        // Odd length: the last byte is the high half of a word.
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn known_ipv4_header() {
        // A widely quoted example header (Wikipedia, "IPv4 header checksum").
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
    }

    #[test]
    fn request_checksums_verify() {
        let p = echo_request(A, B, 0x1234, 7, b"hello, tunnel");
        assert_eq!(p.len(), 20 + 8 + 13);
        assert_eq!(checksum(&p[..20]), 0);
        assert_eq!(checksum(&p[20..]), 0);
        assert_eq!(p[20], ECHO_REQUEST);
    }

    /// Turns a request into the reply a kernel would send: swap addresses, type 0, fix sums.
    fn answer(mut p: Vec<u8>) -> Vec<u8> {
        let (src, dst) = (p[12..16].to_vec(), p[16..20].to_vec());
        p[12..16].copy_from_slice(&dst);
        p[16..20].copy_from_slice(&src);
        p[10..12].fill(0);
        let s = checksum(&p[..20]);
        p[10..12].copy_from_slice(&s.to_be_bytes());
        p[20] = ECHO_REPLY;
        p[22..24].fill(0);
        let s = checksum(&p[20..]);
        p[22..24].copy_from_slice(&s.to_be_bytes());
        p
    }

    #[test]
    fn parses_a_reply_and_rejects_damage() {
        let reply = answer(echo_request(A, B, 9, 65535, b"xyz"));
        let r = parse_echo_reply(&reply).unwrap();
        assert_eq!(
            (r.src, r.dst, r.id, r.seq, r.payload),
            (B, A, 9, 65535, &b"xyz"[..])
        );

        let request = echo_request(A, B, 9, 1, b"xyz");
        assert_eq!(parse_echo_reply(&request), Err(NotAReply::NotEchoReply));
        let mut bad = reply.clone();
        bad[8] ^= 1;
        assert_eq!(parse_echo_reply(&bad), Err(NotAReply::IpChecksum));
        let mut bad = reply.clone();
        bad[30] ^= 1;
        assert_eq!(parse_echo_reply(&bad), Err(NotAReply::IcmpChecksum));
        assert_eq!(parse_echo_reply(&reply[..27]), Err(NotAReply::Malformed));
    }
}
