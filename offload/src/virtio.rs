//! The `struct virtio_net_hdr` a TUN opened with `IFF_VNET_HDR` puts in front of each packet.
//!
//! ```text
//!  0       1       2               4               6               8              10
//! +-------+-------+-------+-------+-------+-------+-------+-------+-------+-------+
//! | flags |gso_typ|    hdr_len    |   gso_size    |  csum_start   |  csum_offset  |
//! +-------+-------+-------+-------+-------+-------+-------+-------+-------+-------+
//!   flags:    NEEDS_CSUM (1): the transport checksum is partial: the field at
//!             csum_start + csum_offset holds the pseudo-header sum; sum from csum_start
//!             to the end and store the complement there.
//!             DATA_VALID (2): the checksum is known good (reads; ignored here).
//!   gso_type: NONE (0), TCPV4 (1), UDP (3, legacy UFO: refused), TCPV6 (4), UDP_L4 (5),
//!             | ECN (0x80) on TCP: the flow uses ECN, CWR may appear on the first segment.
//!   hdr_len:  a hint only: on reads the kernel may put the whole linear part here, so the
//!             segmenter recomputes the header length from the packet itself.
//!   gso_size: payload bytes per segment (TCP MSS / UDP datagram payload).
//! ```
//!
//! **Byte order.** The u16 fields are in the *host's native* byte order. That is what a TUN
//! uses unless someone called `TUNSETVNETLE`/`TUNSETVNETBE`: legacy virtio headers are
//! native-endian, so on the little-endian machines Ringway runs on they are little-endian.
//! A driver that sets `TUNSETVNETBE` on a little-endian host must not use this module.
//!
//! The header is the same size with or without `IFF_MULTI_QUEUE`; the 12-byte
//! `virtio_net_hdr_mrg_rxbuf` is *not* used (the TUN's `TUNSETVNETHDRSZ` stays at 10).

use crate::Error;

/// Bytes of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_F_RSC_INFO` (never set by a TUN; accepted and ignored).
pub const F_RSC_INFO: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into the GSO type.
pub const GSO_ECN: u8 = 0x80;

const KNOWN_FLAGS: u8 = F_NEEDS_CSUM | F_DATA_VALID | F_RSC_INFO;

/// The GSO types we segment and emit (legacy UFO, type 3, is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum GsoType {
    /// Not a superpacket.
    None = 0,
    /// TCP over IPv4.
    TcpV4 = 1,
    /// TCP over IPv6.
    TcpV6 = 4,
    /// UDP segmentation (`UDP_SEGMENT`/USO): each segment is a full UDP datagram.
    UdpL4 = 5,
}

/// A zero-copy view over the 10 header bytes (smoltcp style: check once, then read freely).
#[derive(Debug, Clone, Copy)]
pub struct VirtioNetHdr<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> VirtioNetHdr<T> {
    /// Wraps `buf` without checking its length (accessors may then panic).
    pub fn new_unchecked(buf: T) -> Self {
        VirtioNetHdr { buf }
    }

    /// Wraps `buf`, which must hold at least [`VNET_HDR_LEN`] bytes.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        if buf.as_ref().len() < VNET_HDR_LEN {
            return Err(Error::Truncated);
        }
        Ok(VirtioNetHdr { buf })
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = self.buf.as_ref();
        u16::from_ne_bytes([b[at], b[at + 1]])
    }

    /// The raw flags byte.
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    /// The raw GSO type byte (including the ECN bit).
    pub fn gso_type(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    /// `hdr_len` (native order).
    pub fn hdr_len(&self) -> u16 {
        self.u16_at(2)
    }
    /// `gso_size` (native order).
    pub fn gso_size(&self) -> u16 {
        self.u16_at(4)
    }
    /// `csum_start` (native order).
    pub fn csum_start(&self) -> u16 {
        self.u16_at(6)
    }
    /// `csum_offset` (native order).
    pub fn csum_offset(&self) -> u16 {
        self.u16_at(8)
    }
    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

/// A parsed virtio-net header: what the packet behind it needs done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    /// `NEEDS_CSUM`: the transport checksum is partial (see the module doc).
    pub needs_csum: bool,
    /// `DATA_VALID`: the checksum is known good. Informational on reads; never emitted
    /// here (a TUN write does not act on it).
    pub data_valid: bool,
    /// What kind of superpacket this is.
    pub gso: GsoType,
    /// The ECN bit of the GSO type (TCP only).
    pub ecn: bool,
    /// IP + transport header length (a hint on reads, see the module doc).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the transport header's offset in the IP packet).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start` (16 for TCP, 6 for UDP).
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The all-zero header: a complete packet, nothing to do. Written in front of every
    /// packet that is not a superpacket.
    pub const NONE: VnetHdr = VnetHdr {
        needs_csum: false,
        data_valid: false,
        gso: GsoType::None,
        ecn: false,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Parses the first [`VNET_HDR_LEN`] bytes of `buf`.
    ///
    /// Checks what can be checked without the packet: known flags, a GSO type we handle, the
    /// ECN bit only on TCP, a non-zero `gso_size` on superpackets. Consistency with the
    /// packet is [`crate::segment::prepare`]'s job.
    pub fn parse(buf: &[u8]) -> Result<VnetHdr, Error> {
        let v = VirtioNetHdr::new_checked(buf)?;
        let flags = v.flags();
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Error::UnknownFlags(flags));
        }
        let raw = v.gso_type();
        let ecn = raw & GSO_ECN != 0;
        let gso = match raw & !GSO_ECN {
            0 => GsoType::None,
            1 => GsoType::TcpV4,
            4 => GsoType::TcpV6,
            5 => GsoType::UdpL4,
            _ => return Err(Error::UnsupportedGso(raw)),
        };
        if ecn && !matches!(gso, GsoType::TcpV4 | GsoType::TcpV6) {
            return Err(Error::UnsupportedGso(raw));
        }
        let hdr = VnetHdr {
            needs_csum: flags & F_NEEDS_CSUM != 0,
            data_valid: flags & F_DATA_VALID != 0,
            gso,
            ecn,
            hdr_len: v.hdr_len(),
            gso_size: v.gso_size(),
            csum_start: v.csum_start(),
            csum_offset: v.csum_offset(),
        };
        if gso != GsoType::None && hdr.gso_size == 0 {
            return Err(Error::ZeroGsoSize);
        }
        Ok(hdr)
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let b = buf.get_mut(..VNET_HDR_LEN).ok_or(Error::Truncated)?;
        let mut flags = 0;
        if self.needs_csum {
            flags |= F_NEEDS_CSUM;
        }
        if self.data_valid {
            flags |= F_DATA_VALID;
        }
        b[0] = flags;
        b[1] = self.gso as u8 | if self.ecn { GSO_ECN } else { 0 };
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        Ok(())
    }

    /// A complete packet with nothing to finish: seal it where it lies.
    pub fn is_plain(&self) -> bool {
        self.gso == GsoType::None && !self.needs_csum
    }
}

/// The cheapest test a TUN reader can make: `true` if the header in front of a packet says
/// "complete packet, no GSO, no partial checksum" (only DATA_VALID may be set), so it can be
/// sealed in place without parsing anything. `false` for a short buffer.
pub fn is_plain(hdr: &[u8]) -> bool {
    match hdr {
        [flags, gso, ..] if hdr.len() >= VNET_HDR_LEN => flags & F_NEEDS_CSUM == 0 && *gso == 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emit_parse_round_trip() {
        let h = VnetHdr {
            needs_csum: true,
            data_valid: false,
            gso: GsoType::TcpV4,
            ecn: true,
            hdr_len: 52,
            gso_size: 1380,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut b = [0u8; VNET_HDR_LEN];
        h.emit(&mut b).unwrap();
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 0x81);
        assert_eq!(&b[4..6], &1380u16.to_ne_bytes());
        assert_eq!(VnetHdr::parse(&b).unwrap(), h);
        assert!(!is_plain(&b));
        assert!(!h.is_plain());
    }

    #[test]
    fn zero_header_is_plain() {
        let mut b = [0xffu8; VNET_HDR_LEN];
        VnetHdr::NONE.emit(&mut b).unwrap();
        assert_eq!(b, [0; VNET_HDR_LEN]);
        assert!(is_plain(&b));
        assert!(VnetHdr::parse(&b).unwrap().is_plain());
        b[0] = F_DATA_VALID;
        assert!(is_plain(&b));
        assert!(!is_plain(&b[..9]));
    }

    #[test]
    fn refuses_what_we_do_not_handle() {
        let mut b = [0u8; VNET_HDR_LEN];
        b[1] = 3; // legacy UFO
        b[4] = 1;
        assert_eq!(VnetHdr::parse(&b), Err(Error::UnsupportedGso(3)));
        b[1] = 5 | GSO_ECN; // ECN on UDP
        assert_eq!(VnetHdr::parse(&b), Err(Error::UnsupportedGso(0x85)));
        b[1] = 1;
        b[4] = 0;
        b[5] = 0;
        assert_eq!(VnetHdr::parse(&b), Err(Error::ZeroGsoSize));
        b[1] = 0;
        b[0] = 8;
        assert_eq!(VnetHdr::parse(&b), Err(Error::UnknownFlags(8)));
        assert_eq!(VnetHdr::parse(&b[..9]), Err(Error::Truncated));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_refuse(b in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(h) = VnetHdr::parse(&b) {
                let mut out = [0u8; VNET_HDR_LEN];
                h.emit(&mut out).unwrap();
                // Everything but the ignored RSC_INFO flag survives the round trip.
                prop_assert_eq!(out[0], b[0] & !F_RSC_INFO);
                prop_assert_eq!(&out[1..], &b[1..VNET_HDR_LEN]);
            }
        }
    }
}
