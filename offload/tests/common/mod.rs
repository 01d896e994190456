//! Test support: superpacket builders and an *independent* checker (its own checksum code,
//! written the textbook way, sharing nothing with the crate's fast path).
#![allow(dead_code)]

use ringway_offload::{GsoType, VnetHdr};

/// RFC 1071 one word at a time, folded, not complemented.
pub fn naive_sum(chunks: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for c in chunks {
        bytes.extend_from_slice(c);
    }
    let mut s: u64 = 0;
    for pair in bytes.chunks(2) {
        s += u64::from(pair[0]) << 8 | pair.get(1).copied().map_or(0, u64::from);
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Deterministic filler so large payloads cost no proptest generation time.
pub fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One flow's superpacket, as the kernel would hand it to a TUN reader.
#[derive(Debug, Clone)]
pub struct Spec {
    pub v6: bool,
    pub tcp: bool,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub flags: u8,
    /// TCP options (multiple of 4, at most 40 bytes).
    pub tcp_options: Vec<u8>,
    /// IPv4 options (multiple of 4, at most 40 bytes): never coalesced.
    pub ip_options: Vec<u8>,
    pub ident: u16,
    pub dont_frag: bool,
    pub tos: u8,
    pub ttl: u8,
    pub flow_label: u32,
    pub gso_size: u16,
    pub payload: Vec<u8>,
}

impl Spec {
    pub fn ip_len(&self) -> usize {
        if self.v6 {
            40
        } else {
            20 + self.ip_options.len()
        }
    }
    pub fn l4_hdr_len(&self) -> usize {
        if self.tcp {
            20 + self.tcp_options.len()
        } else {
            8
        }
    }
    pub fn headers(&self) -> usize {
        self.ip_len() + self.l4_hdr_len()
    }
    fn proto(&self) -> u8 {
        if self.tcp {
            6
        } else {
            17
        }
    }

    fn pseudo(&self, l4_len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        if self.v6 {
            p.extend_from_slice(&self.src);
            p.extend_from_slice(&self.dst);
            p.extend_from_slice(&(l4_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, self.proto()]);
        } else {
            p.extend_from_slice(&self.src[..4]);
            p.extend_from_slice(&self.dst[..4]);
            p.extend_from_slice(&[0, self.proto()]);
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        }
        p
    }

    /// Builds a packet with this spec's headers around `payload`. `partial`: the transport
    /// checksum field holds the pseudo-header sum (CHECKSUM_PARTIAL), else the full checksum.
    pub fn packet(
        &self,
        payload: &[u8],
        seq: u32,
        flags: u8,
        ident: u16,
        partial: bool,
    ) -> Vec<u8> {
        let l4_len = self.l4_hdr_len() + payload.len();
        let total = self.ip_len() + l4_len;
        let mut p = Vec::with_capacity(total);
        if self.v6 {
            let w = 6u32 << 28 | u32::from(self.tos) << 20 | (self.flow_label & 0xfffff);
            p.extend_from_slice(&w.to_be_bytes());
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
            p.push(self.proto());
            p.push(self.ttl);
            p.extend_from_slice(&self.src);
            p.extend_from_slice(&self.dst);
        } else {
            p.push(0x40 | (self.ip_len() / 4) as u8);
            p.push(self.tos);
            p.extend_from_slice(&(total as u16).to_be_bytes());
            p.extend_from_slice(&ident.to_be_bytes());
            p.extend_from_slice(&(if self.dont_frag { 0x4000u16 } else { 0 }).to_be_bytes());
            p.push(self.ttl);
            p.push(self.proto());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&self.src[..4]);
            p.extend_from_slice(&self.dst[..4]);
            p.extend_from_slice(&self.ip_options);
            let c = !naive_sum(&[&p[..self.ip_len()]]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = p.len();
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&self.dport.to_be_bytes());
        if self.tcp {
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&self.ack.to_be_bytes());
            p.push(((self.l4_hdr_len() / 4) as u8) << 4);
            p.push(flags);
            p.extend_from_slice(&self.window.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0]);
            p.extend_from_slice(&self.tcp_options);
        } else {
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
            p.extend_from_slice(&[0, 0]);
        }
        p.extend_from_slice(payload);
        let field = l4 + if self.tcp { 16 } else { 6 };
        let pseudo = self.pseudo(l4_len);
        let c = if partial {
            naive_sum(&[&pseudo])
        } else {
            let c = !naive_sum(&[&pseudo, &p[l4..]]);
            if c == 0 && !self.tcp {
                0xffff
            } else {
                c
            }
        };
        p[field..field + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The superpacket and the virtio header the kernel would put in front of it.
    pub fn superpacket(&self) -> (VnetHdr, Vec<u8>) {
        let p = self.packet(&self.payload, self.seq, self.flags, self.ident, true);
        (self.vnet(self.gso_size), p)
    }

    pub fn vnet(&self, gso_size: u16) -> VnetHdr {
        VnetHdr {
            needs_csum: true,
            data_valid: false,
            gso: match (self.tcp, self.v6) {
                (true, false) => GsoType::TcpV4,
                (true, true) => GsoType::TcpV6,
                (false, _) => GsoType::UdpL4,
            },
            ecn: false,
            hdr_len: self.headers() as u16,
            gso_size,
            csum_start: self.ip_len() as u16,
            csum_offset: if self.tcp { 16 } else { 6 },
        }
    }
}

/// What an independent reading of one output packet found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub seq: u32,
    pub flags: u8,
    pub ident: u16,
    pub payload: Vec<u8>,
}

/// Checks one complete packet of `spec`'s flow the textbook way: IP lengths, IPv4 header
/// checksum, transport length and full checksum (or, for `partial`, the pseudo-header sum
/// a CHECKSUM_PARTIAL superpacket carries), every header field GSO must keep.
pub fn check_packet(spec: &Spec, p: &[u8], partial: bool) -> Seen {
    let ip_len = spec.ip_len();
    assert!(p.len() >= spec.headers(), "packet shorter than its headers");
    let ident = if spec.v6 {
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(usize::from(be16(p, 4)) + 40, p.len(), "IPv6 payload length");
        assert_eq!(p[7], spec.ttl, "hop limit");
        0
    } else {
        assert_eq!(usize::from(p[0] & 0xf) * 4, ip_len, "IHL");
        assert_eq!(usize::from(be16(p, 2)), p.len(), "IPv4 total length");
        assert_eq!(naive_sum(&[&p[..ip_len]]), 0xffff, "IPv4 header checksum");
        assert_eq!(p[1], spec.tos);
        assert_eq!(p[8], spec.ttl);
        assert_eq!(&p[20..ip_len], &spec.ip_options[..], "IPv4 options");
        be16(p, 4)
    };
    let l4 = &p[ip_len..];
    let pseudo = spec.pseudo(l4.len());
    if partial {
        let field = if spec.tcp { 16 } else { 6 };
        assert_eq!(be16(l4, field), naive_sum(&[&pseudo]), "partial checksum");
    } else {
        assert_eq!(naive_sum(&[&pseudo, l4]), 0xffff, "transport checksum");
    }
    assert_eq!(be16(l4, 0), spec.sport);
    assert_eq!(be16(l4, 2), spec.dport);
    if spec.tcp {
        assert_eq!(be32(l4, 8), spec.ack, "ACK number");
        assert_eq!(be16(l4, 14), spec.window, "window");
        assert_eq!(
            &l4[20..spec.l4_hdr_len()],
            &spec.tcp_options[..],
            "TCP options"
        );
        Seen {
            seq: be32(l4, 4),
            flags: l4[13],
            ident,
            payload: l4[spec.l4_hdr_len()..].to_vec(),
        }
    } else {
        assert_eq!(usize::from(be16(l4, 4)), l4.len(), "UDP length");
        Seen {
            seq: 0,
            flags: 0,
            ident,
            payload: l4[8..].to_vec(),
        }
    }
}
