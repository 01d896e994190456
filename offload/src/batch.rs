//! Drivers' halves of offload, with their own buffers: what a driver does with a TUN read
//! and with a receive batch when the TUN speaks `virtio_net_hdr`. Shared by the tokio client
//! and the server's tokio backend (the io_uring server keeps its buffers in kernel-shared
//! pools and drives [`Coalescer`] and [`split_part`](crate::split_part) itself).
//!
//! Reading, a [`Segmenter`]: a read is `[header][packet]`. A plain header (the common case for
//! small traffic) costs two compares and the packet is sealed where it lies; a partial
//! checksum is finished in place; a superpacket is cut into packets at a fixed stride in the
//! segmenter's buffer, laid out as the sender asks (transport header in front of each
//! packet, tag behind), so the whole batch is sealed at once and sent with one
//! `UDP_SEGMENT` sendmsg or one TCP write.
//!
//! Writing, a [`Gro`]: the packets of a receive batch (opened in place in the receive buffer)
//! are offered to a [`Coalescer`]; consecutive segments of a flow are copied into one of its
//! superpacket buffers, and the writes come out in an order that keeps every flow in order.
//! A packet that joins nothing is written where it lies ([`lone_packet`]): the transport
//! header in front of it is scratch once the frame opened, so the 10-byte zero header goes
//! there and the write starts at it, without a copy. UDP is coalesced only into a device
//! that takes UDP superpackets (USO).
//!
//! Buffers are allocated once per batch owner; nothing per packet. Bad input (a header or
//! superpacket the segmenter refuses) is the caller's to drop and count.

use std::ops::Range;

use crate::{
    prepare, split, CoalesceConfig, Coalescer, Error, Layout, Output, Prepared, Segments, VnetHdr,
    VNET_HDR_LEN,
};

/// The segmenter's buffer to start with: a 64 KiB superpacket cut into 1380-byte segments
/// (48 of them, 1452-byte stride with 32 bytes of frame overhead and the prefix) needs 70 KB.
const SPLIT_BUF: usize = 160 << 10;

/// The most the segmenter's buffer grows to, for superpackets with tiny segments (a 64 KiB
/// one cut into 64-byte segments needs about 4 MiB); larger plans are refused.
const MAX_SPLIT_BUF: usize = 4 << 20;

/// Superpackets in progress per write batch, each with a 64 KiB buffer.
pub const GRO_RUNS: usize = 16;

/// Bytes of a coalesced superpacket's buffer: its header and the largest IP packet.
pub const GRO_BUF_LEN: usize = VNET_HDR_LEN + u16::MAX as usize;

/// Segments per coalesced superpacket: Linux's `UDP_MAX_SEGMENTS` floor, and a bound on
/// the work the kernel does resegmenting a superpacket it forwards.
const GRO_MAX_SEGMENTS: usize = 64;

/// What a read turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// One packet, complete where it lies behind the header: seal it in place.
    Ready,
    /// A superpacket, cut into the segmenter's buffer ([`Segmenter::out`]).
    Split(Segments),
}

/// Cuts superpackets read from the inside into packets for the tunnel; one per outbound task.
#[derive(Debug)]
pub struct Segmenter {
    out: Vec<u8>,
}

impl Default for Segmenter {
    fn default() -> Self {
        Self::new()
    }
}

impl Segmenter {
    /// A segmenter with its buffer.
    pub fn new() -> Self {
        Segmenter {
            out: vec![0u8; SPLIT_BUF],
        }
    }

    /// Looks at one read, `[header][packet]`, and makes it ready to seal: in place
    /// ([`Outbound::Ready`]: the packet is `read[VNET_HDR_LEN..]`, its checksum finished if
    /// the header asked) or cut into [`out`](Self::out) per `layout`.
    ///
    /// An `Err` is a read to drop and count (a header or packet the segmenter cannot
    /// handle), or, if [`Error::is_misuse`], a bug in the layout.
    pub fn prepare(&mut self, read: &mut [u8], layout: &Layout) -> Result<Outbound, Error> {
        if read.len() < VNET_HDR_LEN {
            return Err(Error::Truncated);
        }
        let (hdr, packet) = read.split_at_mut(VNET_HDR_LEN);
        if crate::virtio::is_plain(hdr) {
            return Ok(Outbound::Ready);
        }
        let hdr = VnetHdr::parse(hdr)?;
        match prepare(&hdr, packet, layout)? {
            Prepared::Ready => Ok(Outbound::Ready),
            Prepared::Split(plan) => {
                let needed = plan.out_len(layout);
                if needed > self.out.len() {
                    if needed > MAX_SPLIT_BUF {
                        return Err(Error::TooLarge {
                            len: packet.len(),
                            max: layout.max_packet_len,
                        });
                    }
                    // Rare (segments far below the MTU) and kept: at most once per size.
                    self.out.resize(needed, 0);
                }
                let segs = split(&hdr, packet, &mut self.out[..needed], layout)?;
                Ok(Outbound::Split(segs))
            }
        }
    }

    /// The buffer the last split wrote into.
    pub fn out(&mut self) -> &mut [u8] {
        &mut self.out
    }
}

/// Coalesces a receive batch's packets into superpackets for the inside; one per inbound
/// task.
#[derive(Debug)]
pub struct Gro {
    coalescer: Coalescer,
    bufs: Vec<Box<[u8]>>,
    writes: Vec<Output>,
}

impl Gro {
    /// A coalescer for batches of at most `max_outputs` packets, into [`GRO_RUNS`]
    /// superpacket buffers; `udp` coalesces UDP too (for a device with USO).
    pub fn new(max_outputs: usize, udp: bool) -> Gro {
        let coalescer = Coalescer::new(CoalesceConfig {
            max_runs: GRO_RUNS,
            max_outputs,
            max_segments: GRO_MAX_SEGMENTS,
            udp,
            verify_checksums: true,
        });
        let runs = coalescer.config().max_runs;
        let max_outputs = coalescer.config().max_outputs;
        Gro {
            coalescer,
            bufs: (0..runs)
                .map(|_| vec![0u8; GRO_BUF_LEN].into_boxed_slice())
                .collect(),
            writes: Vec::with_capacity(max_outputs),
        }
    }

    /// Offers `packets` (ranges into `buf`, tagged from `first_tag` on) until the batch is
    /// full; how many it took. A packet left alone must stay where it is until
    /// [`flush`](Self::flush)'s writes are done.
    pub fn push(&mut self, buf: &[u8], packets: &[Range<usize>], first_tag: usize) -> usize {
        for (i, packet) in packets.iter().enumerate() {
            let Some(bytes) = buf.get(packet.clone()) else {
                continue;
            };
            let tag = (first_tag + i) as u64;
            if self.coalescer.push(bytes, tag, &mut self.bufs).is_err() {
                return i;
            }
        }
        packets.len()
    }

    /// Ends the batch: finishes every superpacket's headers and lists the writes to make,
    /// in order ([`writes`](Self::writes)).
    pub fn flush(&mut self) {
        self.writes.clear();
        self.writes.extend(self.coalescer.flush(&mut self.bufs));
    }

    /// The writes of the last flush, in order: [`Output::Buffer`] is
    /// [`buffer`](Self::buffer)`(slot, len)`, [`Output::Input`] the packet tagged so, to be
    /// written with [`lone_packet`].
    pub fn writes(&self) -> &[Output] {
        &self.writes
    }

    /// Trades output buffer `slot` (a superpacket of the last flush) for `other`, an
    /// empty one of the same size ([`GRO_BUF_LEN`]): the caller keeps the superpacket
    /// without a copy, and the coalescer fills `other` next time.
    pub fn swap_buffer(&mut self, slot: usize, other: &mut Box<[u8]>) {
        if let Some(b) = self.bufs.get_mut(slot) {
            debug_assert_eq!(b.len(), other.len(), "GRO buffers are all one size");
            std::mem::swap(b, other);
        }
    }

    /// A superpacket (its header included) to write.
    pub fn buffer(&self, slot: usize, len: usize) -> &[u8] {
        self.bufs
            .get(slot)
            .and_then(|b| b.get(..len))
            .unwrap_or_default()
    }
}

/// The write for a packet at `packet` in `buf` that joined no superpacket: a zero header
/// written into the scratch bytes in front of it, and the header and packet as one slice.
/// `None` if there is no room in front (a caller's bug: batches guarantee it).
pub fn lone_packet(buf: &mut [u8], packet: Range<usize>) -> Option<&[u8]> {
    let start = packet.start.checked_sub(VNET_HDR_LEN)?;
    let bytes = buf.get_mut(start..packet.end)?;
    VnetHdr::NONE.emit(bytes).ok()?;
    Some(bytes)
}

/// Test packets for this module's tests and its users'.
#[doc(hidden)]
pub mod test_packets {
    /// A TCP/IPv4 packet from 198.18.0.1:5201 to 198.18.0.2:40000 with `payload`, sequence
    /// `seq`, flags ACK, valid checksums.
    pub fn tcp_packet(seq: u32, payload: &[u8]) -> Vec<u8> {
        tcp_packet_from(40000, seq, payload)
    }

    /// The same to destination port `dport`: another flow.
    pub fn tcp_packet_from(dport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = 40 + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 0, 1]);
        p[16..20].copy_from_slice(&[198, 18, 0, 2]);
        let ip_sum = crate::Checksum::new().add_bytes(&p[..20]).finish();
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        p[20..22].copy_from_slice(&5201u16.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[28..32].copy_from_slice(&1u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x10; // ACK
        p[34..36].copy_from_slice(&1000u16.to_be_bytes());
        p[40..].copy_from_slice(payload);
        let sum = crate::checksum::pseudo_header_v4(
            [198, 18, 0, 1],
            [198, 18, 0, 2],
            6,
            (len - 20) as u16,
        )
        .add_bytes(&p[20..])
        .finish();
        p[36..38].copy_from_slice(&sum.to_be_bytes());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::test_packets::tcp_packet;
    use super::*;
    use crate::GsoType;

    #[test]
    fn a_plain_read_is_sealed_in_place() {
        let mut seg = Segmenter::new();
        let mut read = vec![0u8; VNET_HDR_LEN];
        read.extend(tcp_packet(1, b"hello"));
        let layout = Layout {
            headroom: 16,
            tailroom: 16,
            max_packet_len: 1420,
        };
        assert_eq!(seg.prepare(&mut read, &layout), Ok(Outbound::Ready));
        assert_eq!(seg.prepare(&mut read[..5], &layout), Err(Error::Truncated));
    }

    #[test]
    fn a_superpacket_is_cut_at_the_layouts_stride() {
        let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let mut packet = tcp_packet(1000, &payload);
        let hdr = VnetHdr {
            needs_csum: true,
            data_valid: false,
            gso: GsoType::TcpV4,
            ecn: false,
            hdr_len: 40,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut read = vec![0u8; VNET_HDR_LEN];
        hdr.emit(&mut read).unwrap();
        read.append(&mut packet);
        let mut seg = Segmenter::new();
        let layout = Layout {
            headroom: 18,
            tailroom: 16,
            max_packet_len: 1420,
        };
        let Ok(Outbound::Split(segs)) = seg.prepare(&mut read, &layout) else {
            panic!("a 4000-byte TCP superpacket with gso_size 1000 is split");
        };
        assert_eq!(segs.count(), 4);
        assert_eq!(segs.stride(), 18 + 1040 + 16);
        let out = seg.out();
        for (i, r) in segs.packets().enumerate() {
            assert_eq!(r.start, i * segs.stride() + 18);
            let p = &out[r.clone()];
            assert_eq!(&p[40..], &payload[i * 1000..(i + 1) * 1000]);
            let seq = u32::from_be_bytes(p[24..28].try_into().unwrap());
            assert_eq!(seq, 1000 + 1000 * i as u32);
        }
    }

    #[test]
    fn consecutive_segments_become_one_write_and_strays_go_out_in_place() {
        let mut gro = Gro::new(512, false);
        // Three frames as a receive leaves them: 16-byte header, packet, 16-byte tag.
        let packets = [
            tcp_packet(1, &[1; 100]),
            tcp_packet(101, &[2; 100]),
            // Not TCP/UDP: joins nothing, written where it lies.
            vec![
                0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 1, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
            ],
        ];
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        for p in &packets {
            buf.extend([0xaa; 16]);
            ranges.push(buf.len()..buf.len() + p.len());
            buf.extend(p);
            buf.extend([0xbb; 16]);
        }
        assert_eq!(gro.push(&buf, &ranges, 0), 3);
        gro.flush();
        let writes = gro.writes().to_vec();
        assert_eq!(writes.len(), 2, "{writes:?}");
        let Output::Buffer {
            slot,
            len,
            segments,
        } = writes[0]
        else {
            panic!("the TCP run comes first: {writes:?}");
        };
        assert_eq!((segments, len), (2, VNET_HDR_LEN + 40 + 200));
        let merged = gro.buffer(slot, len);
        let hdr = VnetHdr::parse(merged).unwrap();
        assert_eq!((hdr.gso, hdr.gso_size), (GsoType::TcpV4, 100));
        assert_eq!(writes[1], Output::Input { tag: 2 });
        let lone = lone_packet(&mut buf, ranges[2].clone()).unwrap();
        assert_eq!(&lone[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
        assert_eq!(&lone[VNET_HDR_LEN..], &packets[2][..]);
        assert_eq!(lone_packet(&mut buf, 4..30), None);
    }
}
