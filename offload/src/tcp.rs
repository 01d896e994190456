//! A zero-copy view over a TCP segment (header, options, payload).
//!
//! ```text
//!  0               1               2               3
//! +-------------------------------+-------------------------------+
//! |          source port          |       destination port        |
//! +-------------------------------+-------------------------------+
//! |                        sequence number                        |
//! +---------------------------------------------------------------+
//! |                    acknowledgment number                      |
//! +-------+-----+-+---------------+-------------------------------+
//! | offset| res |N| C E U A P R S F|            window            |
//! +-------+-----+-+---------------+-------------------------------+
//! |           checksum            |        urgent pointer         |
//! +-------------------------------+-------------------------------+
//! |              options (offset*4 - 20 bytes)                    |
//! +---------------------------------------------------------------+
//! ```

use crate::checksum::Checksum;
use crate::Error;

/// Bytes of a TCP header without options.
pub const MIN_HDR_LEN: usize = 20;
/// Offset of the checksum field in the header (`csum_offset` for TCP).
pub const CHECKSUM_OFFSET: usize = 16;

/// FIN.
pub const FIN: u8 = 0x01;
/// SYN.
pub const SYN: u8 = 0x02;
/// RST.
pub const RST: u8 = 0x04;
/// PSH.
pub const PSH: u8 = 0x08;
/// ACK.
pub const ACK: u8 = 0x10;
/// URG.
pub const URG: u8 = 0x20;
/// ECE.
pub const ECE: u8 = 0x40;
/// CWR.
pub const CWR: u8 = 0x80;

/// A TCP segment: header, options and payload.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T> {
    buf: T,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buf` without checks.
    pub fn new_unchecked(buf: T) -> Self {
        TcpPacket { buf }
    }

    /// Checks that the header, with its options, fits in `buf` (everything after it is
    /// payload: the IP layer already fixed the segment's length).
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < MIN_HDR_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[12] >> 4) * 4;
        if hl < MIN_HDR_LEN || hl > b.len() {
            return Err(Error::BadTransportHeader);
        }
        Ok(TcpPacket { buf })
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }
    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(self.buf.as_ref(), 8)
    }
    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[12] >> 4) * 4
    }
    /// The flags byte (CWR ECE URG ACK PSH RST SYN FIN; the NS bit lives in byte 12).
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }
    /// Window.
    pub fn window(&self) -> u16 {
        be16(self.buf.as_ref(), 14)
    }
    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), CHECKSUM_OFFSET)
    }
    /// The header including options.
    pub fn header(&self) -> &[u8] {
        &self.buf.as_ref()[..self.header_len()]
    }
    /// Option bytes.
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[MIN_HDR_LEN..self.header_len()]
    }
    /// Payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    /// Whether the checksum verifies given the pseudo-header sum.
    pub fn verify_checksum(&self, pseudo: Checksum) -> bool {
        pseudo.add_bytes(self.buf.as_ref()).is_valid()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, seq: u32) {
        self.buf.as_mut()[4..8].copy_from_slice(&seq.to_be_bytes());
    }
    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.buf.as_mut()[13] = flags;
    }
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, check: u16) {
        self.buf.as_mut()[CHECKSUM_OFFSET..CHECKSUM_OFFSET + 2]
            .copy_from_slice(&check.to_be_bytes());
    }
    /// Computes and stores the full checksum (pseudo-header sum given).
    pub fn fill_checksum(&mut self, pseudo: Checksum) {
        self.set_checksum(0);
        let c = pseudo.add_bytes(self.buf.as_ref()).finish();
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::pseudo_header_v4;

    #[test]
    fn fields_options_payload() {
        let mut s = [0u8; 32 + 5];
        s[0..2].copy_from_slice(&443u16.to_be_bytes());
        s[2..4].copy_from_slice(&50000u16.to_be_bytes());
        s[4..8].copy_from_slice(&7u32.to_be_bytes());
        s[8..12].copy_from_slice(&9u32.to_be_bytes());
        s[12] = 8 << 4;
        s[13] = ACK | PSH;
        s[14..16].copy_from_slice(&512u16.to_be_bytes());
        s[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        let mut t = TcpPacket::new_checked(&mut s[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (443, 50000));
        assert_eq!((t.seq_number(), t.ack_number()), (7, 9));
        assert_eq!(t.header_len(), 32);
        assert_eq!(t.flags(), ACK | PSH);
        assert_eq!(t.window(), 512);
        assert_eq!(t.options().len(), 12);
        assert_eq!(t.payload().len(), 5);
        let pseudo = pseudo_header_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 37);
        t.fill_checksum(pseudo);
        assert!(t.verify_checksum(pseudo));
        t.set_seq_number(8);
        assert!(!t.verify_checksum(pseudo));
    }

    #[test]
    fn rejects_bad_offsets() {
        let mut s = [0u8; 20];
        s[12] = 4 << 4;
        assert_eq!(
            TcpPacket::new_checked(&s[..]).unwrap_err(),
            Error::BadTransportHeader
        );
        s[12] = 6 << 4;
        assert_eq!(
            TcpPacket::new_checked(&s[..]).unwrap_err(),
            Error::BadTransportHeader
        );
        assert_eq!(
            TcpPacket::new_checked(&s[..19]).unwrap_err(),
            Error::Truncated
        );
    }
}
