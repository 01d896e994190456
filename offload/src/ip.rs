//! Zero-copy views over IPv4 and IPv6 headers, just enough for offload.
//!
//! ```text
//! IPv4 (RFC 791), 20 bytes + options (IHL > 5):
//!  0               1               2               3
//! +-------+-------+---------------+-------------------------------+
//! |version|  IHL  |   DSCP    |ECN|         total length          |
//! +-------+-------+-----------+---+-----+-------------------------+
//! |        identification         |flags|    fragment offset      |
//! +---------------+---------------+-----+-------------------------+
//! |      TTL      |   protocol    |        header checksum        |
//! +---------------+---------------+-------------------------------+
//! |                        source address                         |
//! |                      destination address                      |
//! |                    options (IHL*4 - 20 bytes)                 |
//! +---------------------------------------------------------------+
//!
//! IPv6 (RFC 8200), 40 bytes; extension headers are not parsed:
//! +-------+---------------+---------------------------------------+
//! |version| traffic class |              flow label               |
//! +-------+-------+-------+---------------+-----------------------+
//! |        payload length         |  next header  |   hop limit   |
//! +-------------------------------+---------------+---------------+
//! |                  source address (16 bytes)                    |
//! |               destination address (16 bytes)                  |
//! +---------------------------------------------------------------+
//! ```
//!
//! `new_checked` insists that the packet is exactly as long as its header says (TUN reads
//! and decrypted inner packets are one packet each: trailing bytes would be garbage), so the
//! accessors after it cannot panic.

use crate::checksum::{self, Checksum};
use crate::Error;

/// IP protocol / next header number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol / next header number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Bytes of an IPv4 header without options.
pub const IPV4_MIN_HDR_LEN: usize = 20;
/// Bytes of the fixed IPv6 header.
pub const IPV6_HDR_LEN: usize = 40;

/// The largest IP packet whose length fits the IPv4 total length field, and the largest
/// this crate builds in either family (IPv6 jumbograms are not supported).
pub const MAX_PACKET_LEN: usize = u16::MAX as usize;

/// IPv4 "don't fragment".
pub const V4_DF: u16 = 0x4000;
/// IPv4 "more fragments".
pub const V4_MF: u16 = 0x2000;
const V4_OFFSET_MASK: u16 = 0x1fff;

/// The IP version nibble of a packet, if it has a first byte.
pub fn version(packet: &[u8]) -> Option<u8> {
    packet.first().map(|b| b >> 4)
}

/// Whether an IPv6 next-header value is an extension header (RFC 8200 §4, IANA list), as
/// opposed to an upper-layer protocol.
pub fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// An IPv4 packet (header, options and payload).
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buf` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buf: T) -> Self {
        Ipv4Packet { buf }
    }

    /// Checks version 4, `IHL >= 5`, the header inside the buffer and `total length` equal
    /// to the buffer's length.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < IPV4_MIN_HDR_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Error::NotIp);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if ihl < IPV4_MIN_HDR_LEN || ihl > b.len() || usize::from(be16(b, 2)) != b.len() {
            return Err(Error::BadIpHeader);
        }
        Ok(Ipv4Packet { buf })
    }

    /// Header length in bytes (20 plus options).
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[0] & 0x0f) * 4
    }
    /// The TOS byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    /// Total length field.
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// Identification field.
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    /// The flags and fragment offset word.
    pub fn frag_word(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    /// DF set.
    pub fn dont_frag(&self) -> bool {
        self.frag_word() & V4_DF != 0
    }
    /// MF set or a non-zero fragment offset.
    pub fn is_fragment(&self) -> bool {
        self.frag_word() & (V4_MF | V4_OFFSET_MASK) != 0
    }
    /// A fragment other than the first (no transport header in it).
    pub fn is_later_fragment(&self) -> bool {
        self.frag_word() & V4_OFFSET_MASK != 0
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[8]
    }
    /// Transport protocol.
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[9]
    }
    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 10)
    }
    /// Source address.
    pub fn src_addr(&self) -> [u8; 4] {
        let b = self.buf.as_ref();
        [b[12], b[13], b[14], b[15]]
    }
    /// Destination address.
    pub fn dst_addr(&self) -> [u8; 4] {
        let b = self.buf.as_ref();
        [b[16], b[17], b[18], b[19]]
    }
    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        Checksum::new()
            .add_bytes(&self.buf.as_ref()[..self.header_len()])
            .is_valid()
    }
    /// The pseudo-header sum for a transport segment of `len` bytes.
    pub fn pseudo_header(&self, len: u16) -> Checksum {
        checksum::pseudo_header_v4(self.src_addr(), self.dst_addr(), self.protocol(), len)
    }
    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.buf.as_mut()[2..4].copy_from_slice(&len.to_be_bytes());
    }
    /// Sets the identification field.
    pub fn set_ident(&mut self, id: u16) {
        self.buf.as_mut()[4..6].copy_from_slice(&id.to_be_bytes());
    }
    /// Recomputes the header checksum over the header (options included).
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        b[10..12].fill(0);
        let c = Checksum::new().add_bytes(&b[..hl]).finish();
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }
    /// The bytes after the header, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buf.as_mut()[hl..]
    }
}

/// An IPv6 packet (fixed header and payload; extension headers are payload to this view).
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buf` without checks.
    pub fn new_unchecked(buf: T) -> Self {
        Ipv6Packet { buf }
    }

    /// Checks version 6 and `payload length + 40` equal to the buffer's length
    /// (so jumbograms, payload length 0 with more bytes behind, are refused).
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < IPV6_HDR_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::NotIp);
        }
        if usize::from(be16(b, 4)) + IPV6_HDR_LEN != b.len() {
            return Err(Error::BadIpHeader);
        }
        Ok(Ipv6Packet { buf })
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = self.buf.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }
    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }
    /// Payload length field.
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    /// Next header.
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[6]
    }
    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[7]
    }
    /// Source address.
    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[8..24]);
        a
    }
    /// Destination address.
    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buf.as_ref()[24..40]);
        a
    }
    /// The pseudo-header sum for an upper-layer segment of `len` bytes.
    pub fn pseudo_header(&self, len: u32) -> Checksum {
        checksum::pseudo_header_v6(&self.src_addr(), &self.dst_addr(), self.next_header(), len)
    }
    /// The bytes after the fixed header.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[IPV6_HDR_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buf.as_mut()[4..6].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[1] = 0xb8;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = PROTO_UDP;
        p[12..16].copy_from_slice(&[198, 18, 0, 1]);
        p[16..20].copy_from_slice(&[198, 18, 0, 2]);
        p
    }

    #[test]
    fn ipv4_fields_and_checksum() {
        let mut p = v4();
        let mut ip = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.tos(), 0xb8);
        assert_eq!(ip.ident(), 0x1234);
        assert!(ip.dont_frag());
        assert!(!ip.is_fragment());
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), PROTO_UDP);
        assert_eq!(ip.src_addr(), [198, 18, 0, 1]);
        assert!(!ip.verify_checksum());
        ip.fill_checksum();
        assert!(ip.verify_checksum());
        assert_eq!(ip.payload().len(), 8);
    }

    #[test]
    fn ipv4_rejects_inconsistent_lengths() {
        let mut p = v4();
        assert!(Ipv4Packet::new_checked(&p[..27]).is_err());
        p.push(0);
        assert_eq!(
            Ipv4Packet::new_checked(&p[..]).unwrap_err(),
            Error::BadIpHeader
        );
        let mut p = v4();
        p[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&p[..]).unwrap_err(),
            Error::BadIpHeader
        );
        p[0] = 0x48; // 32-byte header in a 28-byte packet
        assert_eq!(
            Ipv4Packet::new_checked(&p[..]).unwrap_err(),
            Error::BadIpHeader
        );
        p[0] = 0x65;
        assert_eq!(Ipv4Packet::new_checked(&p[..]).unwrap_err(), Error::NotIp);
    }

    #[test]
    fn ipv6_fields() {
        let mut p = [0u8; 48];
        p[0] = 0x6a;
        p[1] = 0xb1;
        p[2] = 0x23;
        p[3] = 0x45;
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
        p[6] = PROTO_TCP;
        p[7] = 33;
        let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.traffic_class(), 0xab);
        assert_eq!(ip.flow_label(), 0x12345);
        assert_eq!(ip.next_header(), PROTO_TCP);
        assert_eq!(ip.hop_limit(), 33);
        assert_eq!(ip.payload().len(), 8);
        assert!(Ipv6Packet::new_checked(&p[..47]).is_err());
        assert!(is_ipv6_extension(0) && is_ipv6_extension(44) && !is_ipv6_extension(PROTO_TCP));
    }
}
