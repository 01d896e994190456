//! Coalescing (GRO): consecutive segments of one flow become one superpacket for the TUN.
//!
//! The receive side opens each datagram in place and [`Coalescer::push`]es the inner packet.
//! A packet that continues a flow's *run* has its payload appended to that run's output
//! buffer; one that could start a run is copied into a fresh buffer; anything else is left
//! where it is, to be written on its own. At the end of a receive batch
//! [`Coalescer::flush`] finishes every run's headers and yields the writes to make, in an
//! order that keeps each flow's packets in their arrival order:
//!
//! ```text
//!  output buffer (one per run, caller-owned, allocated once):
//!  +----------------+----------------------------------------------------------+
//!  | virtio_net_hdr |  IP header | TCP/UDP header | payload 0 | payload 1 | ... |
//!  |   (10 bytes)   |  (from the first packet, lengths and checksums fixed)    |
//!  +----------------+----------------------------------------------------------+
//! ```
//!
//! # What merges (as Linux GRO and wireguard-go's `tcpGRO` decide)
//! Same flow (addresses, protocol, ports); IPv4 without options, not a fragment, same
//! TOS, TTL and DF, identification consecutive unless DF is set (RFC 6864: then it means
//! nothing), a valid header checksum; IPv6 without extension headers, same traffic class,
//! flow label and hop limit. TCP: the next sequence number, same ACK number, window, data
//! offset, urgent pointer and option bytes (timestamps included), flags exactly ACK (PSH
//! allowed on the segment that ends a run, which the merged header then carries), no
//! SYN/FIN/RST/URG/ECE/CWR, non-empty payload. Every segment but the last carries the
//! run's first payload size (`gso_size`); a shorter one ends the run. UDP (only with
//! [`CoalesceConfig::udp`], for kernels with `TUN_F_USO4/6`): same-flow datagrams of equal
//! payload, the last possibly shorter, non-zero checksum. A run stops at 65 535 bytes, at
//! its buffer's size, or at [`CoalesceConfig::max_segments`].
//!
//! A merged superpacket goes out with `NEEDS_CSUM`, `gso_type` TCPV4/TCPV6/UDP_L4,
//! `gso_size`, `hdr_len`, `csum_start`/`csum_offset`, and the transport checksum field
//! holding the pseudo-header sum over the merged length, as the kernel expects of a
//! `CHECKSUM_PARTIAL` packet; IPv4 total length and header checksum are fixed, IPv6 payload
//! length set, the UDP length set. A run that never grew is written as the plain packet it
//! was, behind a zero header.
//!
//! # Order
//! Each push that does not extend a run takes the next place in the batch's output order:
//! a run is written where it started, a lone packet where it arrived. A packet of a flow
//! that cannot extend that flow's open run *closes* the run, so nothing of that flow
//! arriving later can be written before it. Flows may interleave with each other in the
//! output (as GRO reorders flows), never with themselves. (A packet that cannot be tied to
//! a flow without parsing further, an IPv6 packet with extension headers or a later IPv4
//! fragment, closes nothing: it is written where it arrived.)
//!
//! # Checksums
//! A merged superpacket is marked `NEEDS_CSUM`, and the kernel does not verify such a
//! packet's payload: merging a segment with a bad checksum would turn it into a valid one.
//! The peer is authenticated, so corruption is not expected, but it is possible (bad memory
//! or a buggy stack on the sending side, a bug of ours). With
//! [`CoalesceConfig::verify_checksums`] (the default) each packet's transport checksum is
//! verified before it joins or starts a run; one that fails is written alone, untouched,
//! for the kernel to drop and count. The cost is one pass over the payload, done right after
//! the copy the merge makes anyway (the bytes are summed while in L1): the `offload` bench
//! measures coalescing with and without it. A run that stays a single packet is written
//! behind a zero header, so the kernel verifies it again as it would any packet. IPv4
//! header checksums are always checked (20 bytes), since the merged header gets a fresh one.
//!
//! # Memory
//! No allocation after [`Coalescer::new`]: the run table, flow index and output order have
//! fixed capacities. The output buffers are the caller's (`&mut [B]` with `B: AsMut<[u8]>`:
//! `Vec<u8>`, slices, or a driver's slot handles), the same ones for every push and the
//! flush of a batch; buffer *i* holds run *i*. Each should hold
//! `VNET_HDR_LEN + 65535` bytes to let runs reach the limit. A run whose buffer is smaller
//! just stops growing sooner.

use crate::checksum::{copy_and_sum, Checksum};
use crate::ip::{
    self, Ipv4Packet, Ipv6Packet, IPV4_MIN_HDR_LEN, IPV6_HDR_LEN, MAX_PACKET_LEN, PROTO_TCP,
    PROTO_UDP,
};
use crate::tcp::{self, TcpPacket};
use crate::udp::{self, UdpPacket};
use crate::virtio::{GsoType, VnetHdr, VNET_HDR_LEN};

/// The coalescer's fixed capacities and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// Runs (superpackets in progress) per batch: the number of output buffers used
    /// (at most 65 534).
    pub max_runs: usize,
    /// Writes per batch (runs started plus packets left alone; merged packets take no
    /// place) before [`Coalescer::push`] reports [`Full`] (at least 1).
    pub max_outputs: usize,
    /// Most segments one superpacket may hold. Linux's `UDP_MAX_SEGMENTS` is at least 64;
    /// 64 also bounds the work the kernel does resegmenting a forwarded superpacket.
    pub max_segments: usize,
    /// Coalesce UDP too (`gso_type` UDP_L4). Only for a TUN that accepted `TUN_F_USO4 |
    /// TUN_F_USO6` in `TUNSETOFFLOAD` (Linux 6.2+).
    pub udp: bool,
    /// Verify each packet's transport checksum before merging it (see the module doc).
    pub verify_checksums: bool,
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig {
            max_runs: 16,
            max_outputs: 1024,
            max_segments: 64,
            udp: false,
            verify_checksums: true,
        }
    }
}

/// What [`Coalescer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Appended to an open run: the input buffer may be reused.
    Merged,
    /// Copied into a new run: the input buffer may be reused.
    Started,
    /// Not coalescible: [`Output::Input`] with its tag will ask for it at the flush, so the
    /// input must stay intact until then.
    Alone,
}

/// The batch holds [`CoalesceConfig::max_outputs`] writes: flush before pushing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("coalescer batch full: flush before pushing more")]
pub struct Full;

/// One write to make at the flush, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Write `out[slot][..len]` (virtio-net header included) to the TUN.
    Buffer {
        /// Index of the caller's output buffer.
        slot: usize,
        /// Bytes to write from the buffer's start.
        len: usize,
        /// Inner packets merged into it (1: a plain packet).
        segments: usize,
    },
    /// Write the input pushed with this tag on its own, behind a zero virtio-net header
    /// ([`VnetHdr::NONE`]).
    Input {
        /// The caller's tag from [`Coalescer::push`].
        tag: u64,
    },
}

/// Counters since construction (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets pushed.
    pub pushed: u64,
    /// Packets appended to a run.
    pub merged: u64,
    /// Runs started.
    pub started: u64,
    /// Packets left to be written alone.
    pub alone: u64,
    /// Candidates refused because a checksum did not verify.
    pub bad_checksum: u64,
    /// Superpackets (runs of two or more) flushed.
    pub superpackets: u64,
}

/// The GRO table for one receive batch at a time.
#[derive(Debug)]
pub struct Coalescer {
    config: CoalesceConfig,
    runs: Vec<Run>,
    index: FlowIndex,
    order: Vec<Output>,
    stats: Stats,
}

impl Coalescer {
    /// Allocates the fixed tables (the only allocation this type makes).
    pub fn new(config: CoalesceConfig) -> Self {
        // The flow index stores run numbers in a u16; a batch always has room for a write.
        let max_runs = config.max_runs.min(usize::from(u16::MAX) - 1);
        let max_outputs = config.max_outputs.max(1);
        Coalescer {
            config: CoalesceConfig {
                max_runs,
                max_outputs,
                ..config
            },
            runs: Vec::with_capacity(max_runs),
            index: FlowIndex::new(max_runs),
            order: Vec::with_capacity(max_outputs),
            stats: Stats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoalesceConfig {
        &self.config
    }

    /// Counters since construction.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the batch is empty (nothing to flush).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether the next push would report [`Full`].
    pub fn is_full(&self) -> bool {
        self.order.len() >= self.config.max_outputs
    }

    /// Offers one inner packet (decrypted, in the caller's buffer) to the batch.
    ///
    /// `tag` names the input in [`Output::Input`] if it has to be written alone; `out` are
    /// the batch's output buffers (the same for every push and the flush). Never fails on
    /// a packet's content: anything not coalescible is [`Pushed::Alone`].
    pub fn push<B: AsMut<[u8]>>(
        &mut self,
        packet: &[u8],
        tag: u64,
        out: &mut [B],
    ) -> Result<Pushed, Full> {
        if self.is_full() {
            return Err(Full);
        }
        self.stats.pushed += 1;
        let cand = match classify(packet, self.config.udp) {
            Class::Candidate(c) => c,
            Class::Flow(key) => {
                if let Some(r) = self.index.get(&key, &self.runs) {
                    self.runs[r].open = false;
                }
                return Ok(self.alone(tag));
            }
            Class::Other => return Ok(self.alone(tag)),
        };

        let found = self.index.find(&cand.key, &self.runs);
        if let Ok((_, r)) = found {
            if self.runs[r].open {
                match self.append(r, &cand, packet, out) {
                    Append::Done => {
                        self.stats.merged += 1;
                        return Ok(Pushed::Merged);
                    }
                    Append::BadChecksum => {
                        self.runs[r].open = false;
                        return Ok(self.alone(tag));
                    }
                    // Linux GRO flushes the held packet and holds the new one instead.
                    Append::Mismatch => self.runs[r].open = false,
                }
            }
        }
        if cand.ends_run {
            return Ok(self.alone(tag));
        }
        let pos = match found {
            Ok((pos, _)) | Err(pos) => pos,
        };
        match self.start(&cand, packet, out) {
            Start::Started(r) => {
                self.index.set(pos, r);
                self.order.push(Output::Buffer {
                    slot: r,
                    len: 0,
                    segments: 1,
                });
                self.stats.started += 1;
                Ok(Pushed::Started)
            }
            Start::Refused => Ok(self.alone(tag)),
        }
    }

    /// Finishes every run's headers and yields the batch's writes in order; the table is
    /// empty again once the iterator is dropped (even if not run to the end, though then
    /// writes are lost).
    pub fn flush<B: AsMut<[u8]>>(&mut self, out: &mut [B]) -> std::vec::Drain<'_, Output> {
        for (slot, run) in self.runs.iter().enumerate() {
            debug_assert!(slot < out.len(), "output buffers changed within a batch");
            if let Some(buf) = out.get_mut(slot) {
                run.finish(buf.as_mut());
            }
            if run.segments > 1 {
                self.stats.superpackets += 1;
            }
        }
        for item in &mut self.order {
            if let Output::Buffer {
                slot,
                len,
                segments,
            } = item
            {
                let run = &self.runs[*slot];
                *len = VNET_HDR_LEN + run.len;
                *segments = run.segments;
            }
        }
        self.runs.clear();
        self.index.clear();
        self.order.drain(..)
    }

    fn alone(&mut self, tag: u64) -> Pushed {
        self.order.push(Output::Input { tag });
        self.stats.alone += 1;
        Pushed::Alone
    }

    fn append<B: AsMut<[u8]>>(
        &mut self,
        r: usize,
        c: &Candidate,
        packet: &[u8],
        out: &mut [B],
    ) -> Append {
        let run = &self.runs[r];
        let Some(buf) = out.get_mut(r) else {
            return Append::Mismatch;
        };
        let buf = buf.as_mut();
        let payload = &packet[c.headers()..];
        let fits = c.tcp == run.tcp
            && c.l4_hdr_len == run.l4_hdr_len
            && payload.len() <= run.gso_size
            && run.segments < self.config.max_segments
            && run.len + payload.len() <= run.cap
            && buf.len() >= VNET_HDR_LEN + run.len + payload.len()
            && (!c.tcp || c.seq == run.next_seq)
            && (c.v6 || c.dont_frag || c.ident == run.next_ident);
        if !fits {
            return Append::Mismatch;
        }
        let first = &buf[VNET_HDR_LEN..VNET_HDR_LEN + run.headers()];
        if !same_headers(first, packet, c) {
            return Append::Mismatch;
        }
        let at = VNET_HDR_LEN + run.len;
        let dst = &mut buf[at..at + payload.len()];
        if self.config.verify_checksums {
            let sum = copy_and_sum(dst, payload);
            if !c.verify(packet, sum) {
                self.stats.bad_checksum += 1;
                return Append::BadChecksum;
            }
        } else {
            dst.copy_from_slice(payload);
        }
        let max_segments = self.config.max_segments;
        let run = &mut self.runs[r];
        run.len += payload.len();
        run.segments += 1;
        run.next_seq = run.next_seq.wrapping_add(payload.len() as u32);
        run.next_ident = run.next_ident.wrapping_add(1);
        run.psh |= c.ends_run;
        if c.ends_run || payload.len() < run.gso_size || run.segments >= max_segments {
            run.open = false;
        }
        Append::Done
    }

    fn start<B: AsMut<[u8]>>(&mut self, c: &Candidate, packet: &[u8], out: &mut [B]) -> Start {
        let r = self.runs.len();
        if r >= self.config.max_runs {
            return Start::Refused;
        }
        let Some(buf) = out.get_mut(r) else {
            return Start::Refused;
        };
        let buf = buf.as_mut();
        let Some(dst) = buf.get_mut(VNET_HDR_LEN..VNET_HDR_LEN + packet.len()) else {
            return Start::Refused;
        };
        let (dst_ip, dst_l4) = dst.split_at_mut(c.ip_len);
        dst_ip.copy_from_slice(&packet[..c.ip_len]);
        if self.config.verify_checksums {
            let sum = copy_and_sum(dst_l4, &packet[c.ip_len..]);
            if !c.verify_whole(packet, sum) {
                self.stats.bad_checksum += 1;
                return Start::Refused;
            }
        } else {
            dst_l4.copy_from_slice(&packet[c.ip_len..]);
        }
        let cap = (buf.len() - VNET_HDR_LEN).min(MAX_PACKET_LEN);
        let gso_size = packet.len() - c.headers();
        self.runs.push(Run {
            len: packet.len(),
            cap,
            ip_len: c.ip_len,
            l4_hdr_len: c.l4_hdr_len,
            tcp: c.tcp,
            v6: c.v6,
            gso_size,
            segments: 1,
            next_seq: c.seq.wrapping_add(gso_size as u32),
            next_ident: c.ident.wrapping_add(1),
            open: self.config.max_segments > 1,
            psh: false,
            key: c.key,
        });
        Start::Started(r)
    }
}

enum Append {
    Done,
    Mismatch,
    BadChecksum,
}

enum Start {
    Started(usize),
    /// No free run, no room in its buffer, or a bad checksum: the packet goes alone.
    Refused,
}

/// A superpacket being built in output buffer `slot` (= its index in the run table).
#[derive(Debug, Clone, Copy)]
struct Run {
    key: FlowKey,
    /// Bytes of IP packet so far (after the virtio header).
    len: usize,
    /// Most bytes of IP packet the buffer and the length fields allow.
    cap: usize,
    ip_len: usize,
    l4_hdr_len: usize,
    tcp: bool,
    v6: bool,
    gso_size: usize,
    segments: usize,
    next_seq: u32,
    next_ident: u16,
    /// Can still grow. A closed run stays in the table until the flush.
    open: bool,
    /// The last merged segment carried PSH.
    psh: bool,
}

impl Run {
    fn headers(&self) -> usize {
        self.ip_len + self.l4_hdr_len
    }

    /// Writes the virtio header and fixes the merged packet's headers in `buf`.
    fn finish(&self, buf: &mut [u8]) {
        let Some(buf) = buf.get_mut(..VNET_HDR_LEN + self.len) else {
            debug_assert!(false, "output buffer shrank within a batch");
            return;
        };
        let (vnet, packet) = buf.split_at_mut(VNET_HDR_LEN);
        if self.segments == 1 {
            let _ = VnetHdr::NONE.emit(vnet);
            return;
        }
        let l4_len = self.len - self.ip_len;
        // Lengths fit: `cap` kept the packet within 65 535 bytes.
        let pseudo = if self.v6 {
            let mut ip = Ipv6Packet::new_unchecked(&mut *packet);
            ip.set_payload_len((self.len - IPV6_HDR_LEN) as u16);
            ip.pseudo_header(l4_len as u32)
        } else {
            let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
            ip.set_total_len(self.len as u16);
            ip.fill_checksum();
            ip.pseudo_header(l4_len as u16)
        };
        let l4 = &mut packet[self.ip_len..];
        let (gso, csum_offset) = if self.tcp {
            let mut t = TcpPacket::new_unchecked(l4);
            if self.psh {
                t.set_flags(t.flags() | tcp::PSH);
            }
            t.set_checksum(pseudo.fold());
            let gso = if self.v6 {
                GsoType::TcpV6
            } else {
                GsoType::TcpV4
            };
            (gso, tcp::CHECKSUM_OFFSET)
        } else {
            let mut u = UdpPacket::new_unchecked(l4);
            u.set_len(l4_len as u16);
            u.set_checksum(pseudo.fold());
            (GsoType::UdpL4, udp::CHECKSUM_OFFSET)
        };
        let hdr = VnetHdr {
            needs_csum: true,
            data_valid: false,
            gso,
            ecn: false,
            hdr_len: self.headers() as u16,
            gso_size: self.gso_size as u16,
            csum_start: self.ip_len as u16,
            csum_offset: csum_offset as u16,
        };
        let _ = hdr.emit(vnet);
    }
}

/// Addresses, protocol and ports: what makes packets one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    /// Source then destination; IPv4 uses the first 8 bytes.
    addrs: [u8; 32],
    ports: [u8; 4],
    proto: u8,
    v6: bool,
}

impl FlowKey {
    fn hash(&self) -> usize {
        // Multiplicative hashing over the key's words. Not keyed: the packets come from an
        // authenticated peer, and the worst a crafted collision can do is make lookups
        // walk the (at most 2 × max_runs) index linearly.
        let mut h: u64 = u64::from(self.proto) | u64::from(self.v6) << 8;
        let words = if self.v6 { 4 } else { 1 };
        for w in self.addrs.chunks_exact(8).take(words) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h.rotate_left(23) ^ u64::from_ne_bytes(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        h = (h.rotate_left(23) ^ u64::from(u32::from_ne_bytes(self.ports)))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize
    }
}

/// Open-addressing index from flow to its latest run. At most one entry per run, in a table
/// at least twice the run count, and never deleted from within a batch (a flow's entry is
/// repointed when it starts a new run), so probes always end at a free entry.
#[derive(Debug)]
struct FlowIndex {
    /// Run index + 1; 0 is free.
    entries: Vec<u16>,
    mask: usize,
}

impl FlowIndex {
    fn new(max_runs: usize) -> Self {
        let size = (max_runs * 2).next_power_of_two().max(8);
        FlowIndex {
            entries: vec![0; size],
            mask: size - 1,
        }
    }

    /// `Ok((position, run))` of the key's entry, or `Err(position)` of the free entry to
    /// put it in.
    fn find(&self, key: &FlowKey, runs: &[Run]) -> Result<(usize, usize), usize> {
        let mut pos = key.hash() & self.mask;
        for _ in 0..self.entries.len() {
            let e = usize::from(self.entries[pos]);
            if e == 0 {
                return Err(pos);
            }
            if runs.get(e - 1).is_some_and(|r| r.key == *key) {
                return Ok((pos, e - 1));
            }
            pos = (pos + 1) & self.mask;
        }
        // Unreachable with the load factor above; a full table just means "not found".
        Err(pos)
    }

    /// The run the key's entry points at.
    fn get(&self, key: &FlowKey, runs: &[Run]) -> Option<usize> {
        self.find(key, runs).ok().map(|(_, r)| r)
    }

    /// Points entry `pos` (from [`FlowIndex::find`]) at run `r`.
    fn set(&mut self, pos: usize, r: usize) {
        self.entries[pos] = (r + 1) as u16;
    }

    fn clear(&mut self) {
        self.entries.fill(0);
    }
}

/// A packet that may join or start a run.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    key: FlowKey,
    v6: bool,
    tcp: bool,
    ip_len: usize,
    l4_hdr_len: usize,
    seq: u32,
    ident: u16,
    dont_frag: bool,
    /// TCP PSH: may end a run, never start one.
    ends_run: bool,
}

impl Candidate {
    fn headers(&self) -> usize {
        self.ip_len + self.l4_hdr_len
    }

    fn pseudo(&self, packet: &[u8]) -> Checksum {
        // Candidates passed `new_checked`, so lengths fit their fields.
        let l4_len = packet.len() - self.ip_len;
        if self.v6 {
            Ipv6Packet::new_unchecked(packet).pseudo_header(l4_len as u32)
        } else {
            Ipv4Packet::new_unchecked(packet).pseudo_header(l4_len as u16)
        }
    }

    /// Transport checksum of `packet`, given the sum of its payload.
    fn verify(&self, packet: &[u8], payload_sum: Checksum) -> bool {
        self.pseudo(packet)
            .add_bytes(&packet[self.ip_len..self.headers()])
            .add_sum(payload_sum)
            .is_valid()
    }

    /// Transport checksum of `packet`, given the sum of its whole transport segment.
    fn verify_whole(&self, packet: &[u8], l4_sum: Checksum) -> bool {
        self.pseudo(packet).add_sum(l4_sum).is_valid()
    }
}

enum Class {
    Candidate(Candidate),
    /// A TCP/UDP packet that cannot be merged: it closes its flow's run.
    Flow(FlowKey),
    /// Anything else (ICMP, later fragments, extension headers, garbage).
    Other,
}

fn classify(packet: &[u8], udp_enabled: bool) -> Class {
    let (key, ip_len, ident, dont_frag, mergeable_ip) = match ip::version(packet) {
        Some(4) => {
            let Ok(ip) = Ipv4Packet::new_checked(packet) else {
                return Class::Other;
            };
            let hl = ip.header_len();
            if ip.is_later_fragment() || packet.len() < hl + 4 {
                return Class::Other;
            }
            let mut addrs = [0u8; 32];
            addrs[..4].copy_from_slice(&ip.src_addr());
            addrs[4..8].copy_from_slice(&ip.dst_addr());
            let Some(key) = flow_key(addrs, &packet[hl..], ip.protocol(), false, udp_enabled)
            else {
                return Class::Other;
            };
            let mergeable = hl == IPV4_MIN_HDR_LEN && !ip.is_fragment() && ip.verify_checksum();
            (key, hl, ip.ident(), ip.dont_frag(), mergeable)
        }
        Some(6) => {
            let Ok(ip) = Ipv6Packet::new_checked(packet) else {
                return Class::Other;
            };
            if packet.len() < IPV6_HDR_LEN + 4 {
                return Class::Other;
            }
            let mut addrs = [0u8; 32];
            addrs[..16].copy_from_slice(&ip.src_addr());
            addrs[16..].copy_from_slice(&ip.dst_addr());
            let Some(key) = flow_key(
                addrs,
                &packet[IPV6_HDR_LEN..],
                ip.next_header(),
                true,
                udp_enabled,
            ) else {
                return Class::Other;
            };
            (key, IPV6_HDR_LEN, 0, false, true)
        }
        _ => return Class::Other,
    };
    if !mergeable_ip {
        return Class::Flow(key);
    }
    let l4 = &packet[ip_len..];
    let (tcp, l4_hdr_len, seq, ends_run) = if key.proto == PROTO_TCP {
        let Ok(t) = TcpPacket::new_checked(l4) else {
            return Class::Flow(key);
        };
        let flags = t.flags();
        if (flags != tcp::ACK && flags != tcp::ACK | tcp::PSH) || t.payload().is_empty() {
            return Class::Flow(key);
        }
        (true, t.header_len(), t.seq_number(), flags & tcp::PSH != 0)
    } else {
        let Ok(u) = UdpPacket::new_checked(l4) else {
            return Class::Flow(key);
        };
        if u.checksum() == 0 || u.payload().is_empty() {
            return Class::Flow(key);
        }
        (false, udp::HDR_LEN, 0, false)
    };
    Class::Candidate(Candidate {
        key,
        v6: key.v6,
        tcp,
        ip_len,
        l4_hdr_len,
        seq,
        ident,
        dont_frag,
        ends_run,
    })
}

/// The flow of a TCP packet, or a UDP one when UDP coalescing is on (otherwise UDP never
/// has runs to close, so it need not be looked up).
fn flow_key(addrs: [u8; 32], l4: &[u8], proto: u8, v6: bool, udp: bool) -> Option<FlowKey> {
    if !(proto == PROTO_TCP || (udp && proto == PROTO_UDP)) {
        return None;
    }
    let ports = [*l4.first()?, *l4.get(1)?, *l4.get(2)?, *l4.get(3)?];
    Some(FlowKey {
        addrs,
        ports,
        proto,
        v6,
    })
}

/// Whether `packet`'s headers match the run's first packet's in every field merging keeps
/// from the first (addresses and ports already matched through the flow key).
fn same_headers(first: &[u8], packet: &[u8], c: &Candidate) -> bool {
    let ip_same = if c.v6 {
        // Version, traffic class, flow label; next header, hop limit.
        first[0..4] == packet[0..4] && first[6..8] == packet[6..8]
    } else {
        // Version/IHL, TOS; flags, fragment offset, TTL, protocol.
        first[0..2] == packet[0..2] && first[6..10] == packet[6..10]
    };
    if !ip_same {
        return false;
    }
    if !c.tcp {
        return true;
    }
    let (a, b) = (&first[c.ip_len..], &packet[c.ip_len..c.headers()]);
    // ACK number and data offset byte; window; urgent pointer and options.
    a[8..13] == b[8..13] && a[14..16] == b[14..16] && a[18..c.l4_hdr_len] == b[18..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::V4_DF;

    /// A TCP/IPv4 segment of flow 198.18.0.1:40000 -> 198.18.0.2:5201 with valid checksums.
    #[derive(Clone)]
    struct Seg {
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        urgent: u16,
        options: Vec<u8>,
        ident: u16,
        frag: u16,
        tos: u8,
        ttl: u8,
        sport: u16,
        payload: usize,
    }

    impl Seg {
        fn new(seq: u32) -> Seg {
            Seg {
                seq,
                ack: 99,
                flags: tcp::ACK,
                window: 1000,
                urgent: 0,
                options: vec![1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6],
                ident: 7,
                frag: 0,
                tos: 0,
                ttl: 64,
                sport: 40000,
                payload: 100,
            }
        }

        fn build(&self) -> Vec<u8> {
            let thl = 20 + self.options.len();
            let len = 20 + thl + self.payload;
            let mut p = vec![0u8; len];
            p[0] = 0x45;
            p[1] = self.tos;
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[4..6].copy_from_slice(&self.ident.to_be_bytes());
            p[6..8].copy_from_slice(&self.frag.to_be_bytes());
            p[8] = self.ttl;
            p[9] = PROTO_TCP;
            p[12..16].copy_from_slice(&[198, 18, 0, 1]);
            p[16..20].copy_from_slice(&[198, 18, 0, 2]);
            let t = &mut p[20..];
            t[0..2].copy_from_slice(&self.sport.to_be_bytes());
            t[2..4].copy_from_slice(&5201u16.to_be_bytes());
            t[4..8].copy_from_slice(&self.seq.to_be_bytes());
            t[8..12].copy_from_slice(&self.ack.to_be_bytes());
            t[12] = ((thl / 4) as u8) << 4;
            t[13] = self.flags;
            t[14..16].copy_from_slice(&self.window.to_be_bytes());
            t[18..20].copy_from_slice(&self.urgent.to_be_bytes());
            t[20..thl].copy_from_slice(&self.options);
            for (i, b) in t[thl..].iter_mut().enumerate() {
                *b = (self.seq as usize + i) as u8;
            }
            let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
            ip.fill_checksum();
            let pseudo = ip.pseudo_header((len - 20) as u16);
            TcpPacket::new_unchecked(&mut p[20..]).fill_checksum(pseudo);
            p
        }

        /// The segment that follows this one.
        fn next(&self) -> Seg {
            Seg {
                seq: self.seq.wrapping_add(self.payload as u32),
                ident: self.ident.wrapping_add(1),
                ..self.clone()
            }
        }
    }

    fn setup(config: CoalesceConfig) -> (Coalescer, Vec<Vec<u8>>) {
        let bufs = vec![vec![0u8; VNET_HDR_LEN + 65535]; config.max_runs];
        (Coalescer::new(config), bufs)
    }

    fn outputs(co: &mut Coalescer, bufs: &mut [Vec<u8>]) -> Vec<Output> {
        co.flush(bufs).collect()
    }

    #[test]
    fn two_segments_merge_behind_a_kernel_style_header() {
        let (mut co, mut bufs) = setup(CoalesceConfig::default());
        let a = Seg::new(1000);
        let mut b = a.next();
        b.flags |= tcp::PSH;
        b.payload = 60;
        assert_eq!(co.push(&a.build(), 0, &mut bufs), Ok(Pushed::Started));
        assert_eq!(co.push(&b.build(), 1, &mut bufs), Ok(Pushed::Merged));
        let out = outputs(&mut co, &mut bufs);
        let len = VNET_HDR_LEN + 20 + 32 + 160;
        assert_eq!(
            out,
            [Output::Buffer {
                slot: 0,
                len,
                segments: 2
            }]
        );
        let hdr = VnetHdr::parse(&bufs[0][..VNET_HDR_LEN]).unwrap();
        assert_eq!(
            hdr,
            VnetHdr {
                needs_csum: true,
                data_valid: false,
                gso: GsoType::TcpV4,
                ecn: false,
                hdr_len: 52,
                gso_size: 100,
                csum_start: 20,
                csum_offset: 16,
            }
        );
        let p = &bufs[0][VNET_HDR_LEN..len];
        let ip = Ipv4Packet::new_checked(p).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.ident(), 7);
        let t = TcpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            t.flags(),
            tcp::ACK | tcp::PSH,
            "PSH of the last segment carried"
        );
        assert_eq!(t.seq_number(), 1000);
        assert_eq!(t.checksum(), ip.pseudo_header(32 + 160).fold());
        assert_eq!(&t.payload()[100..], &b.build()[52..]);
        let s = co.stats();
        assert_eq!(
            (s.pushed, s.started, s.merged, s.superpackets),
            (2, 1, 1, 1)
        );
    }

    #[test]
    fn every_rule_breaks_a_run() {
        type Change = fn(&mut Seg);
        let changes: &[(&str, Change)] = &[
            ("ack", |s| s.ack += 1),
            ("window", |s| s.window += 1),
            ("urgent pointer", |s| s.urgent = 1),
            ("option bytes", |s| s.options[7] += 1),
            ("option length", |s| s.options.truncate(8)),
            ("tos", |s| s.tos = 4),
            ("ttl", |s| s.ttl = 63),
            ("df", |s| s.frag = V4_DF),
            ("ident gap without DF", |s| s.ident += 1),
            ("seq gap", |s| s.seq += 1),
            ("seq repeat", |s| s.seq -= 100),
            ("longer payload", |s| s.payload = 101),
            ("FIN", |s| s.flags |= tcp::FIN),
            ("SYN", |s| s.flags |= tcp::SYN),
            ("RST", |s| s.flags |= tcp::RST),
            ("URG", |s| s.flags |= tcp::URG),
            ("ECE", |s| s.flags |= tcp::ECE),
            ("CWR", |s| s.flags |= tcp::CWR),
            ("no ACK", |s| s.flags = tcp::PSH),
            ("MF", |s| s.frag = crate::ip::V4_MF),
            ("empty payload", |s| s.payload = 0),
        ];
        for (what, change) in changes {
            let (mut co, mut bufs) = setup(CoalesceConfig::default());
            let a = Seg::new(5000);
            let mut b = a.next();
            change(&mut b);
            co.push(&a.build(), 0, &mut bufs).unwrap();
            let pushed = co.push(&b.build(), 1, &mut bufs).unwrap();
            assert_ne!(pushed, Pushed::Merged, "{what} must not merge");
            // And the run it broke is closed: the true next segment does not join it.
            let c = a.next();
            assert_ne!(
                co.push(&c.build(), 2, &mut bufs).unwrap(),
                Pushed::Merged,
                "{what}: a later segment jumped over it"
            );
        }
    }

    #[test]
    fn ident_does_not_matter_with_df() {
        let (mut co, mut bufs) = setup(CoalesceConfig::default());
        let mut a = Seg::new(1);
        a.frag = V4_DF;
        let mut b = a.next();
        b.ident = 12345;
        co.push(&a.build(), 0, &mut bufs).unwrap();
        assert_eq!(co.push(&b.build(), 1, &mut bufs), Ok(Pushed::Merged));
    }

    #[test]
    fn short_or_psh_segment_ends_the_run() {
        for end in ["short", "psh"] {
            let (mut co, mut bufs) = setup(CoalesceConfig::default());
            let a = Seg::new(1);
            let mut b = a.next();
            if end == "short" {
                b.payload = 50;
            } else {
                b.flags |= tcp::PSH;
            }
            let mut c = b.next();
            c.flags = tcp::ACK;
            co.push(&a.build(), 0, &mut bufs).unwrap();
            assert_eq!(co.push(&b.build(), 1, &mut bufs), Ok(Pushed::Merged));
            assert_eq!(
                co.push(&c.build(), 2, &mut bufs),
                Ok(Pushed::Started),
                "{end}"
            );
        }
    }

    #[test]
    fn a_packet_that_cannot_join_keeps_its_flow_in_order() {
        let (mut co, mut bufs) = setup(CoalesceConfig::default());
        let a = Seg::new(1);
        let b = a.next();
        let mut fin = b.next();
        fin.flags |= tcp::FIN;
        let mut after = fin.next();
        after.seq += 1; // FIN takes a sequence number
        after.flags = tcp::ACK;
        let psh_alone = {
            let mut s = Seg::new(777);
            s.sport = 1;
            s.flags |= tcp::PSH;
            s
        };
        co.push(&a.build(), 10, &mut bufs).unwrap();
        co.push(&b.build(), 11, &mut bufs).unwrap();
        assert_eq!(
            co.push(&psh_alone.build(), 12, &mut bufs),
            Ok(Pushed::Alone)
        );
        assert_eq!(co.push(&fin.build(), 13, &mut bufs), Ok(Pushed::Alone));
        assert_eq!(co.push(&after.build(), 14, &mut bufs), Ok(Pushed::Started));
        let out = outputs(&mut co, &mut bufs);
        assert_eq!(
            out,
            [
                Output::Buffer {
                    slot: 0,
                    len: VNET_HDR_LEN + 52 + 200,
                    segments: 2
                },
                Output::Input { tag: 12 },
                Output::Input { tag: 13 },
                Output::Buffer {
                    slot: 1,
                    len: VNET_HDR_LEN + 152,
                    segments: 1
                },
            ]
        );
        // A run that never grew is the plain packet behind a zero header.
        assert_eq!(
            &bufs[1][VNET_HDR_LEN..VNET_HDR_LEN + 152],
            &after.build()[..]
        );
        assert_eq!(bufs[1][..VNET_HDR_LEN], [0; VNET_HDR_LEN]);
        assert!(co.is_empty());
    }

    #[test]
    fn options_fragments_and_bad_headers_are_written_alone() {
        let (mut co, mut bufs) = setup(CoalesceConfig::default());
        let a = Seg::new(1);
        let mut with_options = a.build();
        // Rebuild as IHL 6 with a NOP-padded option word (still a valid packet).
        with_options.splice(20..20, [1u8, 1, 1, 0]);
        with_options[0] = 0x46;
        let len = with_options.len() as u16;
        with_options[2..4].copy_from_slice(&len.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut with_options[..]).fill_checksum();
        let mut bad_ip_sum = a.next().build();
        bad_ip_sum[10] ^= 1;
        let mut later_fragment = a.next().build();
        later_fragment[7] = 1;
        Ipv4Packet::new_unchecked(&mut later_fragment[..]).fill_checksum();
        for (tag, p) in [with_options, bad_ip_sum, later_fragment]
            .iter()
            .enumerate()
        {
            assert_eq!(
                co.push(p, tag as u64, &mut bufs),
                Ok(Pushed::Alone),
                "{tag}"
            );
        }
        assert_eq!(co.push(&[0x45, 0, 0], 9, &mut bufs), Ok(Pushed::Alone));
        assert_eq!(co.push(&[], 9, &mut bufs), Ok(Pushed::Alone));
    }

    #[test]
    fn udp_only_when_enabled() {
        let mut d = vec![0u8; 20 + 8 + 64];
        d[0] = 0x45;
        d[2..4].copy_from_slice(&92u16.to_be_bytes());
        d[8] = 64;
        d[9] = PROTO_UDP;
        d[12..16].copy_from_slice(&[198, 18, 0, 1]);
        d[16..20].copy_from_slice(&[198, 18, 0, 2]);
        d[24..26].copy_from_slice(&72u16.to_be_bytes());
        let mut second = d.clone();
        second[5] = 1;
        for p in [&mut d, &mut second] {
            let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
            ip.fill_checksum();
            let pseudo = ip.pseudo_header(72);
            UdpPacket::new_unchecked(&mut p[20..]).fill_checksum(pseudo);
        }
        let (mut co, mut bufs) = setup(CoalesceConfig::default());
        assert_eq!(co.push(&d, 0, &mut bufs), Ok(Pushed::Alone));
        let (mut co, mut bufs) = setup(CoalesceConfig {
            udp: true,
            ..CoalesceConfig::default()
        });
        assert_eq!(co.push(&d, 0, &mut bufs), Ok(Pushed::Started));
        assert_eq!(co.push(&second, 1, &mut bufs), Ok(Pushed::Merged));
        outputs(&mut co, &mut bufs);
        let hdr = VnetHdr::parse(&bufs[0]).unwrap();
        assert_eq!(
            (hdr.gso, hdr.gso_size, hdr.csum_offset),
            (GsoType::UdpL4, 64, 6)
        );
        let u = UdpPacket::new_checked(&bufs[0][VNET_HDR_LEN + 20..VNET_HDR_LEN + 20 + 136]);
        assert_eq!(u.unwrap().len(), 136);
    }

    #[test]
    fn capacities_are_fixed_and_reported() {
        let (mut co, mut bufs) = setup(CoalesceConfig {
            max_runs: 2,
            max_outputs: 3,
            max_segments: 3,
            ..CoalesceConfig::default()
        });
        let a = Seg::new(1);
        let segs = [a.clone(), a.next(), a.next().next(), a.next().next().next()];
        let other = |port| {
            let mut s = Seg::new(1);
            s.sport = port;
            s.build()
        };
        for (i, s) in segs.iter().enumerate() {
            co.push(&s.build(), i as u64, &mut bufs).unwrap();
        }
        // The fourth segment found its run full (max_segments) and started the second run;
        // a third flow finds no free run and goes alone.
        assert_eq!(co.push(&other(2), 4, &mut bufs), Ok(Pushed::Alone));
        assert!(co.is_full());
        assert_eq!(co.push(&other(3), 5, &mut bufs), Err(Full));
        let out = outputs(&mut co, &mut bufs);
        let segments: Vec<usize> = out
            .iter()
            .map(|o| match o {
                Output::Buffer { segments, .. } => *segments,
                Output::Input { .. } => 0,
            })
            .collect();
        assert_eq!(segments, [3, 1, 0]);
        assert!(!co.is_full());
        assert_eq!(co.push(&other(3), 5, &mut bufs), Ok(Pushed::Started));
    }

    #[test]
    fn small_output_buffers_just_stop_runs_sooner() {
        let mut bufs = vec![vec![0u8; VNET_HDR_LEN + 400]; 2];
        let mut co = Coalescer::new(CoalesceConfig {
            max_runs: 2,
            ..CoalesceConfig::default()
        });
        let mut s = Seg::new(1);
        let mut pushed = Vec::new();
        for i in 0..4 {
            pushed.push(co.push(&s.build(), i, &mut bufs).unwrap());
            s = s.next();
        }
        // 152 + 100 + 100 = 352 fits 400; the fourth would not.
        assert_eq!(
            pushed,
            [
                Pushed::Started,
                Pushed::Merged,
                Pushed::Merged,
                Pushed::Started
            ]
        );
        // A short last segment that still fits joins the run even though a full one would
        // not have (the run stays open until something does not fit).
        let (mut co, mut bufs) = (
            Coalescer::new(CoalesceConfig {
                max_runs: 1,
                ..CoalesceConfig::default()
            }),
            vec![vec![0u8; VNET_HDR_LEN + 400]; 1],
        );
        let mut s = Seg::new(1);
        for i in 0..3 {
            co.push(&s.build(), i, &mut bufs).unwrap();
            s = s.next();
        }
        s.payload = 48;
        assert_eq!(co.push(&s.build(), 3, &mut bufs), Ok(Pushed::Merged));
        // A packet larger than any buffer is written alone.
        let mut big = Seg::new(9);
        big.sport = 9;
        big.payload = 1000;
        assert_eq!(co.push(&big.build(), 9, &mut bufs), Ok(Pushed::Alone));
    }

    #[test]
    fn verification_can_be_turned_off() {
        for verify in [true, false] {
            let (mut co, mut bufs) = setup(CoalesceConfig {
                verify_checksums: verify,
                ..CoalesceConfig::default()
            });
            let a = Seg::new(1);
            let mut b = a.next().build();
            let last = b.len() - 1;
            b[last] ^= 0x40;
            co.push(&a.build(), 0, &mut bufs).unwrap();
            let pushed = co.push(&b, 1, &mut bufs).unwrap();
            if verify {
                assert_eq!(pushed, Pushed::Alone);
                assert_eq!(co.stats().bad_checksum, 1);
            } else {
                assert_eq!(
                    pushed,
                    Pushed::Merged,
                    "unverified merge is the documented cost"
                );
            }
        }
    }

    #[test]
    fn flow_index_survives_many_flows() {
        let (mut co, mut bufs) = setup(CoalesceConfig {
            max_runs: 64,
            ..CoalesceConfig::default()
        });
        let flows: Vec<Seg> = (0..64)
            .map(|p| {
                let mut s = Seg::new(p * 1000);
                s.sport = p as u16;
                s
            })
            .collect();
        for (i, s) in flows.iter().enumerate() {
            assert_eq!(
                co.push(&s.build(), i as u64, &mut bufs),
                Ok(Pushed::Started)
            );
        }
        for (i, s) in flows.iter().enumerate() {
            assert_eq!(
                co.push(&s.next().build(), 100 + i as u64, &mut bufs),
                Ok(Pushed::Merged),
                "flow {i}"
            );
        }
        let out = outputs(&mut co, &mut bufs);
        assert_eq!(out.len(), 64);
        assert!(out
            .iter()
            .all(|o| matches!(o, Output::Buffer { segments: 2, .. })));
    }
}
