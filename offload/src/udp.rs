//! A zero-copy view over a UDP datagram.
//!
//! ```text
//!  0               1               2               3
//! +-------------------------------+-------------------------------+
//! |          source port          |       destination port        |
//! +-------------------------------+-------------------------------+
//! |            length             |           checksum            |
//! +-------------------------------+-------------------------------+
//! |                            payload                            |
//! +---------------------------------------------------------------+
//! ```

use crate::checksum::Checksum;
use crate::Error;

/// Bytes of a UDP header.
pub const HDR_LEN: usize = 8;
/// Offset of the checksum field (`csum_offset` for UDP).
pub const CHECKSUM_OFFSET: usize = 6;

/// A UDP datagram: header and payload.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T> {
    buf: T,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks the header fits and the length field equals the buffer's length.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < HDR_LEN {
            return Err(Error::Truncated);
        }
        if usize::from(be16(b, 4)) != b.len() {
            return Err(Error::BadTransportHeader);
        }
        Ok(UdpPacket { buf })
    }

    /// Wraps `buf` without checks.
    pub fn new_unchecked(buf: T) -> Self {
        UdpPacket { buf }
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// Length field (header plus payload).
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    /// Never true for a checked datagram.
    pub fn is_empty(&self) -> bool {
        self.buf.as_ref().is_empty()
    }
    /// Checksum field (0 over IPv4 means "none").
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), CHECKSUM_OFFSET)
    }
    /// Payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HDR_LEN..]
    }
    /// Whether the (non-zero) checksum verifies given the pseudo-header sum.
    pub fn verify_checksum(&self, pseudo: Checksum) -> bool {
        self.checksum() != 0 && pseudo.add_bytes(self.buf.as_ref()).is_valid()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        self.buf.as_mut()[4..6].copy_from_slice(&len.to_be_bytes());
    }
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, check: u16) {
        self.buf.as_mut()[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2]
            .copy_from_slice(&check.to_be_bytes());
    }
    /// Computes and stores the full checksum; a computed 0 is sent as `0xffff`
    /// (RFC 768: 0 means "no checksum").
    pub fn fill_checksum(&mut self, pseudo: Checksum) {
        self.set_checksum(0);
        let c = pseudo.add_bytes(self.buf.as_ref()).finish();
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::pseudo_header_v4;

    #[test]
    fn fields_and_checksum() {
        let mut d = [0u8; 13];
        d[0..2].copy_from_slice(&53u16.to_be_bytes());
        d[2..4].copy_from_slice(&5353u16.to_be_bytes());
        d[4..6].copy_from_slice(&13u16.to_be_bytes());
        d[8..].copy_from_slice(b"hello");
        let mut u = UdpPacket::new_checked(&mut d[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (53, 5353, 13));
        assert_eq!(u.payload(), b"hello");
        let pseudo = pseudo_header_v4([1, 2, 3, 4], [5, 6, 7, 8], 17, 13);
        assert!(!u.verify_checksum(pseudo));
        u.fill_checksum(pseudo);
        assert!(u.verify_checksum(pseudo));
        assert!(UdpPacket::new_checked(&d[..12]).is_err());
    }
}
