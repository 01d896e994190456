//! Segmentation (GSO): one TUN read becomes the packets the tunnel carries.
//!
//! A read from an offloading TUN is a [`VnetHdr`] and one IP packet. Three cases, cheapest
//! first, all decided by [`prepare`]:
//! - **plain** (no GSO, no partial checksum, the common case for small traffic): nothing to
//!   do, not even parsing. Seal the packet where it lies.
//! - **partial checksum, or a superpacket that fits in one packet**: finished in place (the
//!   checksum computed and stored, IPv4 header checksum refreshed). Seal where it lies.
//! - **a superpacket to cut**: [`prepare`] returns a [`Plan`]; [`split`] writes the segments
//!   into one output buffer at a fixed stride, so frame *i* starts at `i * stride`:
//!
//! ```text
//!  out: | headroom | packet 0 | tailroom | headroom | packet 1 | tailroom | ... | headroom | last | tailroom |
//!       |<----------- stride ----------->|
//! ```
//!
//! With `headroom` = the 16-byte transport header and `tailroom` = the 16-byte tag, each
//! packet is sealed in place and the sealed frames lie back to back, every one but the last
//! `stride` bytes long: exactly what one `sendmsg` with `UDP_SEGMENT = stride` sends as
//! separate datagrams. Over TCP, reserve two more bytes of headroom for the length prefix.
//!
//! Each segment's headers are fixed as Linux's `tcp_gso_segment`/`__udp_gso_segment` and
//! `inet_gso_segment` fix them: IPv4 total length, identification incremented per segment
//! (from the superpacket's), header checksum; IPv6 payload length; TCP sequence number
//! advanced by the payload before it, FIN and PSH only on the last segment, CWR only on the
//! first; UDP length per datagram; a full transport checksum per segment (computed from
//! scratch while copying the payload, so the partial sum the kernel left does not matter).
//! IPv4 options are copied to every segment, as GSO (unlike fragmentation) does.
//!
//! **Segment size.** Every segment carries `gso_size` payload bytes (the last one the
//! rest), unless that would make packets longer than the caller's `max_packet_len`: then a
//! TCP superpacket is cut at `max_packet_len - headers` instead (a byte stream may be cut
//! anywhere), and a UDP one is refused with [`Error::TooLarge`] (its datagram boundaries
//! are the application's). A TUN whose MTU is the tunnel's never produces either.
//!
//! **What is trusted.** The kernel's `hdr_len` is ignored (on reads it may be the whole
//! linear part, not the headers); header lengths come from the packet. `csum_start` and
//! `csum_offset`, when `NEEDS_CSUM` is set, must point at the transport checksum. IPv6
//! packets with extension headers are refused for segmentation
//! ([`Error::Ipv6ExtensionHeaders`]) rather than cut wrongly; without GSO they only need
//! their checksum finished, which works at any `csum_start`.

use std::ops::Range;

use crate::checksum::{copy_and_sum, Checksum};
use crate::ip::{self, Ipv4Packet, Ipv6Packet, IPV6_HDR_LEN, PROTO_TCP, PROTO_UDP};
use crate::tcp::{self, TcpPacket};
use crate::udp::{self, UdpPacket};
use crate::virtio::{GsoType, VnetHdr};
use crate::Error;

/// How the caller's output buffer is laid out, and how large a packet may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Free bytes before each packet (the transport header, plus any stream length prefix).
    pub headroom: usize,
    /// Free bytes after each packet (the AEAD tag).
    pub tailroom: usize,
    /// The largest inner packet the tunnel carries (the TUN's MTU).
    pub max_packet_len: usize,
}

/// What a superpacket will be cut into: enough to size (or pick) an output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Number of packets.
    pub segments: usize,
    /// Length of every packet but the last (IP headers included).
    pub segment_len: usize,
    /// Length of the last packet (`<= segment_len`).
    pub last_len: usize,
}

impl Plan {
    /// Distance from one packet to the next in the output.
    pub fn stride(&self, layout: &Layout) -> usize {
        layout.headroom + self.segment_len + layout.tailroom
    }

    /// Output bytes [`split`] needs: every stride but the last, then the last packet with
    /// its headroom and tailroom.
    pub fn out_len(&self, layout: &Layout) -> usize {
        if self.segments == 0 {
            return 0;
        }
        (self.segments - 1) * self.stride(layout)
            + layout.headroom
            + self.last_len
            + layout.tailroom
    }
}

/// What [`prepare`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// The packet is complete where it lies: seal it in place.
    Ready,
    /// A superpacket that must be [`split`] into `Plan::segments` packets.
    Split(Plan),
}

/// Where [`split`] put the packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    plan: Plan,
    stride: usize,
    headroom: usize,
}

impl Segments {
    /// Number of packets written.
    pub fn count(&self) -> usize {
        self.plan.segments
    }
    /// Distance between consecutive packets (and, once sealed, the `UDP_SEGMENT` size when
    /// headroom and tailroom are exactly the frame overhead).
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// Length of every packet but the last.
    pub fn segment_len(&self) -> usize {
        self.plan.segment_len
    }
    /// Length of the last packet.
    pub fn last_len(&self) -> usize {
        self.plan.last_len
    }
    /// Where packet `i` lies in the output buffer.
    pub fn packet(&self, i: usize) -> Option<Range<usize>> {
        if i >= self.plan.segments {
            return None;
        }
        let start = i * self.stride + self.headroom;
        let len = if i + 1 == self.plan.segments {
            self.plan.last_len
        } else {
            self.plan.segment_len
        };
        Some(start..start + len)
    }
    /// Every packet's range, in order.
    pub fn packets(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.plan.segments).filter_map(|i| self.packet(i))
    }
}

/// Looks at a TUN read and does whatever can be done in place.
///
/// `packet` is the IP packet after the header. Returns [`Prepared::Ready`] when the packet
/// can be sealed where it is (after finishing its checksum if the header asked), or
/// [`Prepared::Split`] with the plan for [`split`]. A plain header costs two compares and
/// a length check; the packet is not parsed.
pub fn prepare(hdr: &VnetHdr, packet: &mut [u8], layout: &Layout) -> Result<Prepared, Error> {
    if hdr.gso == GsoType::None {
        if packet.len() > layout.max_packet_len {
            return Err(Error::TooLarge {
                len: packet.len(),
                max: layout.max_packet_len,
            });
        }
        if hdr.needs_csum {
            complete_checksum(hdr, packet)?;
        }
        return Ok(Prepared::Ready);
    }
    let shape = Shape::parse(hdr, packet, layout.max_packet_len)?;
    if shape.plan.segments > 1 {
        return Ok(Prepared::Split(shape.plan));
    }
    let base = Base::read(packet, &shape);
    let payload_sum = Checksum::new().add_bytes(&packet[shape.headers()..]);
    fix_segment(packet, &shape, &base, 0, payload_sum);
    Ok(Prepared::Ready)
}

/// Cuts `packet` into the packets the tunnel carries, written into `out` per `layout`.
///
/// Works for any header [`prepare`] accepts (a plain or checksum-only packet becomes one
/// segment, copied), so a caller may also use it unconditionally. `out` must hold
/// [`Plan::out_len`] bytes; bytes in the headroom and tailroom gaps are left untouched.
pub fn split(
    hdr: &VnetHdr,
    packet: &[u8],
    out: &mut [u8],
    layout: &Layout,
) -> Result<Segments, Error> {
    split_part(hdr, packet, out, layout, 0..usize::MAX)
}

/// Like [`split`], but writes only the packets numbered `part` (clamped to the plan), the
/// first of them at the start of `out`; the returned [`Segments`] describe those packets.
///
/// For a sender that cannot take a whole superpacket at once: one `UDP_SEGMENT` send carries
/// at most 64 segments (128 since Linux 6.9) and 65 507 bytes, and a sender without GSO sends
/// each packet from a buffer of its own. Each packet's headers are exactly what [`split`]
/// would have written for it (sequence number, IPv4 identification, FIN/PSH only on the very
/// last packet of the superpacket, CWR only on the very first). An empty part writes nothing
/// and reports no packets. `out` must hold [`Plan::out_len`] of the part's packets:
/// `(part.len() - 1)` strides plus the last packet with its headroom and tailroom.
pub fn split_part(
    hdr: &VnetHdr,
    packet: &[u8],
    out: &mut [u8],
    layout: &Layout,
    part: Range<usize>,
) -> Result<Segments, Error> {
    if hdr.gso == GsoType::None {
        let len = packet.len();
        if len > layout.max_packet_len {
            return Err(Error::TooLarge {
                len,
                max: layout.max_packet_len,
            });
        }
        let plan = Plan {
            segments: usize::from(part.contains(&0)),
            segment_len: len,
            last_len: len,
        };
        let seg = output(out, &plan, layout)?;
        if plan.segments == 1 {
            let dst = &mut out[seg.headroom..seg.headroom + len];
            dst.copy_from_slice(packet);
            if hdr.needs_csum {
                complete_checksum(hdr, dst)?;
            }
        }
        return Ok(seg);
    }

    let shape = Shape::parse(hdr, packet, layout.max_packet_len)?;
    let whole = shape.plan;
    let first = part.start.min(whole.segments);
    let end = part.end.clamp(first, whole.segments);
    let plan = Plan {
        segments: end - first,
        segment_len: whole.segment_len,
        last_len: if end == whole.segments {
            whole.last_len
        } else {
            whole.segment_len
        },
    };
    let seg = output(out, &plan, layout)?;
    let base = Base::read(packet, &shape);
    let hl = shape.headers();
    let (headers, payload) = packet.split_at(hl);
    for (j, range) in seg.packets().enumerate() {
        let i = first + j;
        let dst = &mut out[range];
        let (dst_headers, dst_payload) = dst.split_at_mut(hl);
        dst_headers.copy_from_slice(headers);
        let from = i * shape.seg_payload;
        let payload_sum = copy_and_sum(dst_payload, &payload[from..from + dst_payload.len()]);
        fix_segment(dst, &shape, &base, i, payload_sum);
    }
    Ok(seg)
}

/// Checks `out` against the plan and returns where the packets will go.
fn output(out: &[u8], plan: &Plan, layout: &Layout) -> Result<Segments, Error> {
    let needed = plan.out_len(layout);
    if out.len() < needed {
        return Err(Error::OutputTooSmall {
            needed,
            room: out.len(),
        });
    }
    Ok(Segments {
        plan: *plan,
        stride: plan.stride(layout),
        headroom: layout.headroom,
    })
}

/// Finishes a partial checksum as the kernel's `skb_checksum_help` does: sum from
/// `csum_start` to the end (the field holds the pseudo-header sum), store the complement,
/// a computed 0 sent as `0xffff`. Protocol-agnostic, so extension headers do not matter.
fn complete_checksum(hdr: &VnetHdr, packet: &mut [u8]) -> Result<(), Error> {
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > packet.len() {
        return Err(Error::BadChecksumOffsets);
    }
    let c = Checksum::new().add_bytes(&packet[start..]).finish();
    let c = if c == 0 { 0xffff } else { c };
    packet[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// A superpacket's validated geometry.
#[derive(Debug, Clone, Copy)]
struct Shape {
    v6: bool,
    tcp: bool,
    ip_len: usize,
    l4_hdr_len: usize,
    seg_payload: usize,
    plan: Plan,
}

impl Shape {
    fn headers(&self) -> usize {
        self.ip_len + self.l4_hdr_len
    }

    fn parse(hdr: &VnetHdr, packet: &[u8], max_packet_len: usize) -> Result<Shape, Error> {
        let (v6, ip_len, proto) = match ip::version(packet) {
            Some(4) => {
                let ip = Ipv4Packet::new_checked(packet)?;
                if ip.is_fragment() {
                    return Err(Error::Fragment);
                }
                (false, ip.header_len(), ip.protocol())
            }
            Some(6) => {
                let ip = Ipv6Packet::new_checked(packet)?;
                if ip::is_ipv6_extension(ip.next_header()) {
                    return Err(Error::Ipv6ExtensionHeaders);
                }
                (true, IPV6_HDR_LEN, ip.next_header())
            }
            Some(_) => return Err(Error::NotIp),
            None => return Err(Error::Truncated),
        };
        let tcp = match (hdr.gso, v6, proto) {
            (GsoType::TcpV4, false, PROTO_TCP) | (GsoType::TcpV6, true, PROTO_TCP) => true,
            (GsoType::UdpL4, _, PROTO_UDP) => false,
            (GsoType::None, ..) => return Err(Error::UnsupportedGso(0)),
            (_, _, p) => return Err(Error::ProtocolMismatch(p)),
        };
        if hdr.ecn && !tcp {
            return Err(Error::UnsupportedGso(
                hdr.gso as u8 | crate::virtio::GSO_ECN,
            ));
        }
        let l4 = &packet[ip_len..];
        let (l4_hdr_len, csum_offset) = if tcp {
            let t = TcpPacket::new_checked(l4)?;
            if t.flags() & (tcp::SYN | tcp::RST) != 0 {
                return Err(Error::GsoFlags);
            }
            (t.header_len(), tcp::CHECKSUM_OFFSET)
        } else {
            UdpPacket::new_checked(l4)?;
            (udp::HDR_LEN, udp::CHECKSUM_OFFSET)
        };
        if hdr.needs_csum
            && (usize::from(hdr.csum_start) != ip_len
                || usize::from(hdr.csum_offset) != csum_offset)
        {
            return Err(Error::BadChecksumOffsets);
        }
        let headers = ip_len + l4_hdr_len;
        if max_packet_len <= headers {
            return Err(Error::MaxPacketTooSmall {
                max: max_packet_len,
                headers,
            });
        }
        let room = max_packet_len - headers;
        let gso_size = usize::from(hdr.gso_size);
        if gso_size == 0 {
            return Err(Error::ZeroGsoSize);
        }
        let seg_payload = if tcp {
            gso_size.min(room)
        } else if gso_size > room {
            return Err(Error::TooLarge {
                len: headers + gso_size,
                max: max_packet_len,
            });
        } else {
            gso_size
        };
        let payload = packet.len() - headers;
        let segments = payload.div_ceil(seg_payload).max(1);
        let last_payload = payload - (segments - 1) * seg_payload;
        let plan = Plan {
            segments,
            segment_len: headers
                + if segments == 1 {
                    last_payload
                } else {
                    seg_payload
                },
            last_len: headers + last_payload,
        };
        Ok(Shape {
            v6,
            tcp,
            ip_len,
            l4_hdr_len,
            seg_payload,
            plan,
        })
    }
}

/// The superpacket's per-segment starting values.
#[derive(Debug, Clone, Copy)]
struct Base {
    ident: u16,
    seq: u32,
    flags: u8,
}

impl Base {
    /// Reads from a packet [`Shape::parse`] accepted.
    fn read(packet: &[u8], shape: &Shape) -> Base {
        let ident = if shape.v6 {
            0
        } else {
            Ipv4Packet::new_unchecked(packet).ident()
        };
        let (seq, flags) = if shape.tcp {
            let t = TcpPacket::new_unchecked(&packet[shape.ip_len..]);
            (t.seq_number(), t.flags())
        } else {
            (0, 0)
        };
        Base { ident, seq, flags }
    }
}

/// Rewrites segment `i`'s headers (already copied from the superpacket) and stores its
/// transport checksum, given the sum of its payload.
fn fix_segment(seg: &mut [u8], shape: &Shape, base: &Base, i: usize, payload_sum: Checksum) {
    let len = seg.len();
    let l4_len = len - shape.ip_len;
    // Lengths fit their fields: a segment is no longer than the superpacket, whose own
    // length fields held them.
    let pseudo = if shape.v6 {
        let mut ip = Ipv6Packet::new_unchecked(&mut *seg);
        ip.set_payload_len((len - IPV6_HDR_LEN) as u16);
        ip.pseudo_header(l4_len as u32)
    } else {
        let mut ip = Ipv4Packet::new_unchecked(&mut *seg);
        ip.set_total_len(len as u16);
        ip.set_ident(base.ident.wrapping_add(i as u16));
        ip.fill_checksum();
        ip.pseudo_header(l4_len as u16)
    };
    let last = i + 1 == shape.plan.segments;
    let l4 = &mut seg[shape.ip_len..];
    if shape.tcp {
        let mut t = TcpPacket::new_unchecked(&mut *l4);
        t.set_seq_number(base.seq.wrapping_add((i * shape.seg_payload) as u32));
        let mut flags = base.flags;
        if !last {
            flags &= !(tcp::FIN | tcp::PSH);
        }
        if i > 0 {
            flags &= !tcp::CWR;
        }
        t.set_flags(flags);
        t.set_checksum(0);
        let c = pseudo
            .add_bytes(&l4[..shape.l4_hdr_len])
            .add_sum(payload_sum)
            .finish();
        TcpPacket::new_unchecked(l4).set_checksum(c);
    } else {
        let mut u = UdpPacket::new_unchecked(&mut *l4);
        u.set_len(l4_len as u16);
        u.set_checksum(0);
        let c = pseudo
            .add_bytes(&l4[..udp::HDR_LEN])
            .add_sum(payload_sum)
            .finish();
        UdpPacket::new_unchecked(l4).set_checksum(if c == 0 { 0xffff } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(payload: usize, gso: u16) -> (VnetHdr, Vec<u8>) {
        let len = 40 + payload;
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = PROTO_TCP;
        p[12..16].copy_from_slice(&[198, 18, 0, 1]);
        p[16..20].copy_from_slice(&[198, 18, 0, 2]);
        p[32] = 5 << 4;
        p[33] = tcp::ACK | tcp::PSH | tcp::FIN | tcp::CWR;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let hdr = VnetHdr {
            needs_csum: true,
            data_valid: false,
            gso: GsoType::TcpV4,
            ecn: true,
            hdr_len: 40,
            gso_size: gso,
            csum_start: 20,
            csum_offset: 16,
        };
        (hdr, p)
    }

    const LAYOUT: Layout = Layout {
        headroom: 16,
        tailroom: 16,
        max_packet_len: 1420,
    };

    #[test]
    fn plain_packet_is_ready_untouched() {
        let (_, mut p) = tcp4(100, 1380);
        let before = p.clone();
        assert_eq!(
            prepare(&VnetHdr::NONE, &mut p, &LAYOUT).unwrap(),
            Prepared::Ready
        );
        assert_eq!(p, before);
    }

    #[test]
    fn flags_split_as_linux_does() {
        let (hdr, p) = tcp4(2500, 1000);
        let mut out = vec![0u8; 4096];
        let seg = split(&hdr, &p, &mut out, &LAYOUT).unwrap();
        assert_eq!(
            (seg.count(), seg.segment_len(), seg.last_len()),
            (3, 1040, 540)
        );
        assert_eq!(seg.stride(), 1072);
        let flags: Vec<u8> = seg.packets().map(|r| out[r][33]).collect();
        assert_eq!(
            flags,
            [
                tcp::ACK | tcp::CWR,
                tcp::ACK,
                tcp::ACK | tcp::PSH | tcp::FIN
            ]
        );
    }

    #[test]
    fn parts_are_the_whole_split_piece_by_piece() {
        let (hdr, p) = tcp4(7000, 1000);
        let mut whole = vec![0u8; 16 * 1072];
        let all = split(&hdr, &p, &mut whole, &LAYOUT).unwrap();
        assert_eq!(all.count(), 7);
        for (start, end) in [(0, 3), (3, 6), (6, 7), (2, 3), (6, 99)] {
            let mut out = vec![0u8; 4 * 1072];
            let part = split_part(&hdr, &p, &mut out, &LAYOUT, start..end).unwrap();
            assert_eq!(part.count(), end.min(7) - start, "{start}..{end}");
            for (j, r) in part.packets().enumerate() {
                let want = all.packet(start + j).unwrap();
                assert_eq!(
                    out[r],
                    whole[want],
                    "packet {} of part {start}..{end}",
                    start + j
                );
            }
        }
        // FIN and PSH only where the superpacket ends, CWR only where it starts.
        let mut out = vec![0u8; 2 * 1072];
        let last = split_part(&hdr, &p, &mut out, &LAYOUT, 6..7).unwrap();
        assert_eq!(
            out[last.packet(0).unwrap()][33],
            tcp::ACK | tcp::PSH | tcp::FIN
        );
        let empty = split_part(&hdr, &p, &mut [], &LAYOUT, 7..9).unwrap();
        assert_eq!(empty.count(), 0);
        // A plain packet is its own only part.
        let plain = VnetHdr::NONE;
        let small = &p[..100];
        let mut out = vec![0u8; 200];
        assert_eq!(
            split_part(&plain, small, &mut out, &LAYOUT, 0..1)
                .unwrap()
                .count(),
            1
        );
        assert_eq!(
            split_part(&plain, small, &mut out, &LAYOUT, 1..2)
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn gso_size_larger_than_the_tunnel_is_cut_at_the_limit() {
        let (mut hdr, p) = tcp4(6000, 4000);
        hdr.gso_size = 4000;
        let mut out = vec![0u8; 8192];
        let seg = split(&hdr, &p, &mut out, &LAYOUT).unwrap();
        // 1420 - 40 = 1380 bytes of payload per packet.
        assert_eq!((seg.count(), seg.segment_len()), (5, 1420));
        assert_eq!(seg.last_len(), 40 + 6000 - 4 * 1380);
    }

    #[test]
    fn udp_gso_larger_than_the_tunnel_is_refused() {
        let mut p = vec![0u8; 28 + 3000];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&3028u16.to_be_bytes());
        p[9] = PROTO_UDP;
        p[24..26].copy_from_slice(&3008u16.to_be_bytes());
        let hdr = VnetHdr {
            needs_csum: true,
            data_valid: false,
            gso: GsoType::UdpL4,
            ecn: false,
            hdr_len: 28,
            gso_size: 1500,
            csum_start: 20,
            csum_offset: 6,
        };
        let mut out = vec![0u8; 8192];
        assert_eq!(
            split(&hdr, &p, &mut out, &LAYOUT).unwrap_err(),
            Error::TooLarge {
                len: 1528,
                max: 1420
            }
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let (hdr, p) = tcp4(2500, 1000);
        let mut out = vec![0u8; 100];
        assert_eq!(
            split(&hdr, &p, &mut out, &LAYOUT).unwrap_err(),
            Error::OutputTooSmall {
                needed: 2 * 1072 + 16 + 540 + 16,
                room: 100
            }
        );
        let tiny = Layout {
            max_packet_len: 40,
            ..LAYOUT
        };
        assert_eq!(
            split(&hdr, &p, &mut out, &tiny).unwrap_err(),
            Error::MaxPacketTooSmall {
                max: 40,
                headers: 40
            }
        );
        let mut six = hdr;
        six.gso = GsoType::TcpV6;
        assert_eq!(
            split(&six, &p, &mut out, &LAYOUT).unwrap_err(),
            Error::ProtocolMismatch(PROTO_TCP)
        );
        let mut bad = hdr;
        bad.csum_offset = 6;
        assert_eq!(
            split(&bad, &p, &mut out, &LAYOUT).unwrap_err(),
            Error::BadChecksumOffsets
        );
        let mut frag = p.clone();
        frag[6] = 0x20;
        assert_eq!(
            split(&hdr, &frag, &mut out, &LAYOUT).unwrap_err(),
            Error::Fragment
        );
        let mut syn = p.clone();
        syn[33] = tcp::SYN | tcp::ACK;
        assert_eq!(
            split(&hdr, &syn, &mut out, &LAYOUT).unwrap_err(),
            Error::GsoFlags
        );
    }

    #[test]
    fn ipv6_extension_headers_are_refused_not_misread() {
        let mut p = vec![0u8; 40 + 8 + 20 + 100];
        p[0] = 0x60;
        let payload_len = (p.len() - 40) as u16;
        p[4..6].copy_from_slice(&payload_len.to_be_bytes());
        p[6] = 0; // hop-by-hop
        p[40] = PROTO_TCP;
        p[48 + 12] = 5 << 4;
        let hdr = VnetHdr {
            needs_csum: true,
            data_valid: false,
            gso: GsoType::TcpV6,
            ecn: false,
            hdr_len: 68,
            gso_size: 50,
            csum_start: 48,
            csum_offset: 16,
        };
        let mut out = vec![0u8; 4096];
        assert_eq!(
            split(&hdr, &p, &mut out, &LAYOUT).unwrap_err(),
            Error::Ipv6ExtensionHeaders
        );
        // Without GSO only the checksum needs finishing, and csum_start finds it.
        let pseudo = {
            let ip = Ipv6Packet::new_checked(&p[..]).unwrap();
            crate::checksum::pseudo_header_v6(&ip.src_addr(), &ip.dst_addr(), PROTO_TCP, 120)
        };
        p[64..66].copy_from_slice(&pseudo.fold().to_be_bytes());
        let csum_only = VnetHdr {
            gso: GsoType::None,
            gso_size: 0,
            ..hdr
        };
        assert_eq!(
            prepare(&csum_only, &mut p, &LAYOUT).unwrap(),
            Prepared::Ready
        );
        assert!(pseudo.add_bytes(&p[48..]).is_valid());
    }
}
