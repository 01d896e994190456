//! The client's own queues: where packets wait when a direction cannot keep up, fairly
//! per inner flow, with CoDel (the [`ringway_fq`] crate).
//!
//! Why here: the kernel's queues in front of us are plain FIFOs. Outbound, that is the
//! TUN's transmit ring (500 packets, or 500 superpackets of up to 64 KiB with offload);
//! inbound, the UDP socket's receive buffer. A bulk upload or download fills them, and a
//! ping, a DNS query or an SSH keystroke waits behind megabytes of it. Each task therefore
//! takes what the kernel holds as soon as it can (reads and receives alternate with sends
//! and writes, [`DRAIN_BURST`]) into a [`FlowQueue`], and sends or
//! writes from that queue: sparse flows first, a bulk flow's standing queue held near
//! CoDel's target by dropping (or CE-marking) from its head.
//!
//! - [`OutBacklog`]: reads from the inside, one buffer per read (a 64 KiB superpacket
//!   with offload), swapped in so the read buffer is never copied.
//! - [`InBacklog`]: what the coalescer makes of a receive batch: superpackets, kept in
//!   the buffers it built them in (swapped for free ones), and lone packets, copied into
//!   small slots; each written with one TUN write.
//!
//! Memory is allocated once per task: buffers for `limit_items` items (outbound: as many
//! as `limit_bytes` of reads take). Nothing is allocated per packet.

use std::ops::Range;
use std::time::Instant;

use ring::rand::{SecureRandom, SystemRandom};
use ringway_fq::inner::{self, FlowHasher, FlowSeed};
use ringway_fq::{Config, ConfigError, DropReason, FlowQueue, Meta};
use ringway_offload::{Output, VnetHdr, VNET_HDR_LEN};

use crate::inside::offload::{Gro, GRO_BUF_LEN, GRO_RUNS};

use crate::stats::{QueueCounters, Stats};

/// Reads (or receives) taken in a row before a send (or write) must go, while both can.
/// One: they alternate, and whenever the kernel has nothing to read, the queue drains. A
/// read is cheap beside a send (cutting and sealing up to 45 packets), so even
/// alternating the kernel's FIFO stays short, and the queue is where a backlog waits.
/// Measured beside 8 in a row: 8 gave a ping beside an upload a lower p50 (1.4 against
/// 1.7 ms) but cost the upload 11 % of its throughput (a read that finds nothing after
/// each one that found something, and the reactor round trip that follows); 1 kept it
/// within 3 % of the queue switched off.
pub const DRAIN_BURST: u32 = 1;

/// The largest inner packet an inbound slot holds; a longer one (a server MTU above
/// Ethernet's) bypasses the queue.
const SLOT_PACKET_LEN: usize = 1600;

/// Inbound, `limit_bytes` of packets at least this long fit the item limit.
const MIN_COUNTED_PACKET: u32 = 1024;

/// How the client queues, from `ringway up --fair-queue ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// The queue's tunables; both directions get one of these.
    pub fq: Config,
}

/// Bytes each queue holds at most by default: 8 MiB, what the UDP socket's 4 MiB receive
/// buffer holds (the kernel doubles it). Bulk TCP senders such as BBR keep several MiB in
/// flight whatever the drops; at 4 MiB four streams met the limit and lost 3-6 % of their
/// packets to it. Buffers are allocated as the backlog first needs them.
pub const DEFAULT_LIMIT_BYTES: u32 = 8 << 20;

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            fq: Config {
                limit_bytes: DEFAULT_LIMIT_BYTES,
                ..Config::default()
            },
        }
    }
}

impl QueueOptions {
    /// Checks the tunables once, before anything runs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.fq.validate()
    }
}

/// A fresh flow-hash key from the system's random source (so flows cannot be crafted to
/// collide); a fixed one if it fails, which costs only that protection.
fn seed() -> FlowSeed {
    let mut key = [0u8; 16];
    if SystemRandom::new().fill(&mut key).is_err() {
        tracing::warn!("no system randomness for the flow hash key; using a fixed one");
    }
    FlowSeed::from_bytes(key)
}

/// Counts a drop in `c`.
fn count_drop(c: &QueueCounters, why: DropReason) {
    use crate::stats::inc;
    match why {
        DropReason::Overflow => inc(&c.dropped_overflow),
        DropReason::Codel => inc(&c.dropped_codel),
    }
}

/// Publishes what the queue's own statistics say that counters do not: the peak.
fn publish_peak<T>(q: &FlowQueue<T>, c: &QueueCounters) {
    use std::sync::atomic::Ordering::Relaxed;
    c.peak_items.store(q.stats().peak_items, Relaxed);
}

/// One queued outbound read: which buffer, how many bytes were read into it.
#[derive(Debug, Clone, Copy)]
struct Read {
    buf: u32,
    len: u32,
}

/// A read taken from the queue: process `buf(idx)[..]` as the read of `len` bytes, then
/// [`OutBacklog::release`] it.
#[derive(Debug, Clone, Copy)]
pub struct Popped {
    /// The buffer holding it.
    pub idx: usize,
    /// Bytes read.
    pub len: usize,
}

/// Outbound: reads from the inside wait here until the send path takes them.
///
/// A read lands in a buffer large enough for a superpacket. A short read (a lone packet:
/// an ACK, a ping, a DNS query) is copied into a small buffer, so many of them can wait
/// without each holding 64 KiB; a long one trades places with a free large buffer, uncopied.
#[derive(Debug)]
pub struct OutBacklog {
    fq: FlowQueue<Read>,
    /// Large buffers first (`0..large`), then small ones; each allocated the first time
    /// it is needed, so an idle tunnel holds only what its peak backlog needed.
    bufs: Vec<Vec<u8>>,
    large: usize,
    large_len: usize,
    small_len: usize,
    free_large: Vec<u32>,
    free_small: Vec<u32>,
    hasher: FlowHasher,
}

/// Bytes of a small outbound buffer past the read offset: a full-size packet, its
/// `virtio_net_hdr` and the tag sealing appends.
const SMALL_READ_LEN: usize = 2048;

impl OutBacklog {
    /// A queue for reads into buffers of `buf_len` bytes (the read buffer's size) at
    /// `read_at`. Large buffers: as many as `limit_bytes` of them take (at least 8);
    /// small ones: `limit_items`.
    pub fn new(opts: &QueueOptions, buf_len: usize, read_at: usize) -> Result<Self, ConfigError> {
        let mut config = opts.fq.clone();
        let large = (config.limit_bytes as usize / buf_len.max(1)).max(8);
        let small_len = (read_at + SMALL_READ_LEN).min(buf_len);
        let small = if small_len < buf_len {
            config.limit_items as usize
        } else {
            0
        };
        config.limit_items = (large + small) as u32;
        let fq = FlowQueue::new(config)?;
        Ok(OutBacklog {
            fq,
            bufs: (0..large + small).map(|_| Vec::new()).collect(),
            large,
            large_len: buf_len,
            small_len,
            free_large: (0..large as u32).rev().collect(),
            free_small: (large as u32..(large + small) as u32).rev().collect(),
            hasher: FlowHasher::new(seed()),
        })
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.fq.is_empty()
    }

    /// Whether a read can be queued whatever its length: a large buffer is free to take
    /// the read buffer's place. While none is, reads wait (the queue holds `limit_bytes`
    /// of superpackets) and sends go on.
    pub fn can_take(&self) -> bool {
        !self.free_large.is_empty()
    }

    /// Queues the read of `len` bytes at `read_at` in `read` (its IP packet at `packet`):
    /// copied into a small buffer if it fits one, else `read` is swapped for a free large
    /// buffer, so the caller reads on into that one.
    pub fn push(
        &mut self,
        read: &mut Vec<u8>,
        read_at: usize,
        len: usize,
        packet: Range<usize>,
        now: Instant,
        stats: &Stats,
    ) {
        let c = &stats.tx.queue;
        let meta = self.hasher.meta(read.get(packet).unwrap_or_default());
        let end = read_at + len;
        let fits_small = end + ringway_proto::wire::transport::TAG_LEN <= self.small_len;
        let small = self.free_small.last().filter(|_| fits_small).copied();
        let idx = if let Some(i) = small {
            self.free_small.pop();
            let buf = &mut self.bufs[i as usize];
            if buf.is_empty() {
                *buf = vec![0u8; self.small_len];
            }
            buf[read_at..end].copy_from_slice(&read[read_at..end]);
            i
        } else if let Some(i) = self.free_large.pop() {
            let buf = &mut self.bufs[i as usize];
            if buf.is_empty() {
                *buf = vec![0u8; self.large_len];
            }
            std::mem::swap(read, buf);
            i
        } else {
            // The caller checks `can_take` first.
            debug_assert!(false, "no large buffer behind a read");
            count_drop(c, DropReason::Overflow);
            return;
        };
        crate::stats::inc(&c.enqueued);
        let (large, free_large, free_small) =
            (self.large, &mut self.free_large, &mut self.free_small);
        let item = Read {
            buf: idx,
            len: len as u32,
        };
        self.fq.enqueue(now, item, meta, |r, why| {
            give_back(large, free_large, free_small, r.buf);
            count_drop(c, why);
            // A read that never reached the segmenter counts as one packet, as one
            // dropped for want of a session does.
            crate::stats::inc(&stats.tx.tun_packets);
        });
        publish_peak(&self.fq, c);
    }

    /// The next read to send (sparse flows first), CE-marked at `packet_at` if CoDel
    /// asks for it; `None` when nothing waits.
    pub fn pop(&mut self, now: Instant, packet_at: usize, stats: &Stats) -> Option<Popped> {
        let c = &stats.tx.queue;
        let (large, free_large, free_small) =
            (self.large, &mut self.free_large, &mut self.free_small);
        let d = self.fq.dequeue(now, |r, why| {
            give_back(large, free_large, free_small, r.buf);
            count_drop(c, why);
            // A read that never reached the segmenter counts as one packet, as one
            // dropped for want of a session does.
            crate::stats::inc(&stats.tx.tun_packets);
        })?;
        let idx = d.item.buf as usize;
        crate::stats::inc(&c.dequeued);
        if d.sparse {
            crate::stats::inc(&c.sparse);
        }
        if d.mark_ce {
            if let Some(packet) = self.bufs[idx].get_mut(packet_at..) {
                if inner::mark_ce(packet) {
                    crate::stats::inc(&c.marked_ce);
                }
            }
        }
        Some(Popped {
            idx,
            len: d.item.len as usize,
        })
    }

    /// The buffer of a popped read.
    pub fn buf(&mut self, idx: usize) -> &mut Vec<u8> {
        &mut self.bufs[idx]
    }

    /// Gives a popped read's buffer back.
    pub fn release(&mut self, idx: usize) {
        give_back(
            self.large,
            &mut self.free_large,
            &mut self.free_small,
            idx as u32,
        );
    }

    /// Drops everything queued (the session ended); counted as flushed.
    pub fn clear(&mut self, stats: &Stats) {
        let (large, free_large, free_small) =
            (self.large, &mut self.free_large, &mut self.free_small);
        self.fq.clear(|r| {
            give_back(large, free_large, free_small, r.buf);
            crate::stats::inc(&stats.tx.queue.flushed);
            crate::stats::inc(&stats.tx.tun_packets);
        });
    }
}

/// Returns buffer `idx` to the free list it came from.
fn give_back(large: usize, free_large: &mut Vec<u32>, free_small: &mut Vec<u32>, idx: u32) {
    if (idx as usize) < large {
        free_large.push(idx);
    } else {
        free_small.push(idx);
    }
}

/// Inbound: what a receive batch becomes, waiting here to be written.
///
/// With `virtio_net_hdr` the batch goes through the coalescer first, as it always did: a
/// superpacket it builds trades places with a free large buffer (no copy), and a packet
/// that joined nothing is copied into a small slot behind a zero header. Without it every
/// packet is copied into a small slot. Either way an item is one TUN write, so the queue
/// works per superpacket where the traffic allows, and costs little per packet.
#[derive(Debug)]
pub struct InBacklog {
    fq: FlowQueue<u32>,
    /// Superpacket buffers ([`GRO_BUF_LEN`] each), indices `0..large.len()`, then small
    /// slots of [`InBacklog::SLOT`] bytes (the header's room, then a packet). Each is
    /// allocated the first time it is needed, so an idle tunnel holds only what its
    /// peak backlog needed.
    bufs: Vec<Box<[u8]>>,
    large: usize,
    free_large: Vec<u32>,
    free_small: Vec<u32>,
    /// Per index: bytes to write (header included with `vnet`), and packets they hold.
    lens: Vec<u32>,
    segments: Vec<u16>,
    /// The inside takes a `virtio_net_hdr` in front of each write.
    vnet: bool,
    hasher: FlowHasher,
}

impl InBacklog {
    /// Bytes per small slot.
    const SLOT: usize = VNET_HDR_LEN + SLOT_PACKET_LEN;

    /// A queue with small slots for `limit_items` packets plus a whole receive batch of
    /// `batch`, and (with `vnet`) large buffers for as many superpackets as `limit_bytes`
    /// take.
    pub fn new(opts: &QueueOptions, batch: usize, vnet: bool) -> Result<Self, ConfigError> {
        let mut config = opts.fq.clone();
        // Items are often single packets here: let `limit_bytes` of full-size ones fit,
        // so a bulk flow's backlog is bounded by bytes (and CoDel), not cut off by a count.
        config.limit_items = config
            .limit_items
            .max(config.limit_bytes / MIN_COUNTED_PACKET);
        // A superpacket may hold only a few segments (flows interleaved in a batch): count
        // buffers by items too, or the buffers run out long before the bytes do (measured:
        // 127 buffers for 8 MiB ran out at 127 items holding ~2 MiB, and the drops that
        // made room cost four bulk streams 1-3 % of their packets). Allocated as needed.
        let large = if vnet {
            (config.limit_bytes as usize / GRO_BUF_LEN)
                .max(opts.fq.limit_items as usize / 4)
                .max(GRO_RUNS)
        } else {
            0
        };
        // With the header most items are superpackets; without it every item is a packet.
        let small = if vnet {
            opts.fq.limit_items as usize
        } else {
            config.limit_items as usize
        } + batch;
        let fq = FlowQueue::new(config)?;
        let n = large + small;
        Ok(InBacklog {
            fq,
            bufs: (0..n).map(|_| Box::default()).collect(),
            large,
            free_large: (0..large as u32).rev().collect(),
            free_small: (large as u32..n as u32).rev().collect(),
            lens: vec![0; n],
            segments: vec![0; n],
            vnet,
            hasher: FlowHasher::new(seed()),
        })
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.fq.is_empty()
    }

    /// Queues a receive batch's `packets` (ranges into `buf`, each with scratch room in
    /// front), coalesced through `gro` if the inside takes superpackets. If the queue's
    /// buffers run out before its limits do, the fattest flow pays, as at the limits.
    /// Returns how many items (writes to come) it queued.
    pub fn push_batch(
        &mut self,
        gro: Option<&mut Gro>,
        buf: &[u8],
        packets: &[Range<usize>],
        now: Instant,
        stats: &Stats,
    ) -> usize {
        let before = self.fq.stats().enqueued;
        let Some(gro) = gro else {
            for p in packets {
                if let Some(packet) = buf.get(p.clone()) {
                    self.push_small(packet, now, stats);
                }
            }
            return (self.fq.stats().enqueued - before) as usize;
        };
        let mut at = 0;
        while at < packets.len() {
            let taken = gro.push(buf, &packets[at..], at);
            gro.flush();
            for i in 0..gro.writes().len() {
                match gro.writes()[i] {
                    Output::Buffer {
                        slot,
                        len,
                        segments,
                    } => self.push_large(gro, slot, len, segments, now, stats),
                    Output::Input { tag } => {
                        let packet = usize::try_from(tag)
                            .ok()
                            .and_then(|t| packets.get(t))
                            .and_then(|p| buf.get(p.clone()));
                        match packet {
                            Some(packet) => self.push_small(packet, now, stats),
                            None => debug_assert!(false, "a tag we never gave: {tag}"),
                        }
                    }
                }
            }
            if taken == 0 {
                // A flushed batch takes at least one packet: cannot happen.
                debug_assert!(false, "the coalescer took nothing after a flush");
                break;
            }
            at += taken;
        }
        (self.fq.stats().enqueued - before) as usize
    }

    /// Drops from the fattest flow until `free` has a buffer; false if the queue emptied
    /// without one coming back (cannot happen: every buffer not free is queued).
    fn make_room(&mut self, large: bool, stats: &Stats) -> bool {
        let c = &stats.rx.queue;
        loop {
            let free = if large {
                &self.free_large
            } else {
                &self.free_small
            };
            if !free.is_empty() {
                return true;
            }
            let (n_large, free_large, free_small) =
                (self.large, &mut self.free_large, &mut self.free_small);
            let dropped = self.fq.drop_fattest(|i, why| {
                give_back(n_large, free_large, free_small, i);
                count_drop(c, why);
            });
            if dropped == 0 {
                debug_assert!(false, "no free buffer and nothing queued");
                return false;
            }
        }
    }

    /// Queues superpacket `slot` of the coalescer's last flush, trading buffers with it.
    fn push_large(
        &mut self,
        gro: &mut Gro,
        slot: usize,
        len: usize,
        segments: usize,
        now: Instant,
        stats: &Stats,
    ) {
        if !self.make_room(true, stats) {
            return;
        }
        let Some(idx) = self.free_large.pop() else {
            return;
        };
        let buf = &mut self.bufs[idx as usize];
        if buf.is_empty() {
            *buf = vec![0u8; GRO_BUF_LEN].into_boxed_slice();
        }
        gro.swap_buffer(slot, buf);
        let packet = buf.get(VNET_HDR_LEN..len).unwrap_or_default();
        let meta = self.hasher.meta(packet);
        self.lens[idx as usize] = len as u32;
        self.segments[idx as usize] = segments as u16;
        self.enqueue(idx, meta, now, stats);
    }

    /// Copies one packet into a small slot (behind a zero header with `vnet`) and queues
    /// it; a packet too long for a slot is dropped and counted.
    fn push_small(&mut self, packet: &[u8], now: Instant, stats: &Stats) {
        if packet.len() > SLOT_PACKET_LEN {
            // Only a server MTU above Ethernet's makes these; the slots would need to grow.
            count_drop(&stats.rx.queue, DropReason::Overflow);
            return;
        }
        if !self.make_room(false, stats) {
            return;
        }
        let Some(idx) = self.free_small.pop() else {
            return;
        };
        let slot = &mut self.bufs[idx as usize];
        if slot.is_empty() {
            *slot = vec![0u8; Self::SLOT].into_boxed_slice();
        }
        let len = if self.vnet {
            if VnetHdr::NONE.emit(&mut slot[..VNET_HDR_LEN]).is_err() {
                // Cannot happen (the slot has the header's room); the slot goes back.
                self.free_small.push(idx);
                return;
            }
            slot[VNET_HDR_LEN..VNET_HDR_LEN + packet.len()].copy_from_slice(packet);
            VNET_HDR_LEN + packet.len()
        } else {
            slot[..packet.len()].copy_from_slice(packet);
            packet.len()
        };
        let meta = self.hasher.meta(packet);
        self.lens[idx as usize] = len as u32;
        self.segments[idx as usize] = 1;
        self.enqueue(idx, meta, now, stats);
    }

    fn enqueue(&mut self, idx: u32, meta: Meta, now: Instant, stats: &Stats) {
        let c = &stats.rx.queue;
        crate::stats::inc(&c.enqueued);
        let (n_large, free_large, free_small) =
            (self.large, &mut self.free_large, &mut self.free_small);
        self.fq.enqueue(now, idx, meta, |i, why| {
            give_back(n_large, free_large, free_small, i);
            count_drop(c, why);
        });
        publish_peak(&self.fq, c);
    }

    /// The next write (sparse flows first): its index, for [`bytes`](Self::bytes) and
    /// [`release`](Self::release), and the packets it carries. CE-marked if CoDel asks.
    pub fn pop(&mut self, now: Instant, stats: &Stats) -> Option<(u32, usize)> {
        let c = &stats.rx.queue;
        let (n_large, free_large, free_small) =
            (self.large, &mut self.free_large, &mut self.free_small);
        let d = self.fq.dequeue(now, |i, why| {
            give_back(n_large, free_large, free_small, i);
            count_drop(c, why);
        })?;
        crate::stats::inc(&c.dequeued);
        if d.sparse {
            crate::stats::inc(&c.sparse);
        }
        if d.mark_ce {
            let header = if self.vnet { VNET_HDR_LEN } else { 0 };
            if let Some(packet) = self.bytes_mut(d.item).get_mut(header..) {
                if inner::mark_ce(packet) {
                    crate::stats::inc(&c.marked_ce);
                }
            }
        }
        Some((d.item, usize::from(self.segments[d.item as usize])))
    }

    /// What to write for a popped index.
    pub fn bytes(&self, idx: u32) -> &[u8] {
        let len = self.lens[idx as usize] as usize;
        &self.bufs[idx as usize][..len]
    }

    fn bytes_mut(&mut self, idx: u32) -> &mut [u8] {
        let len = self.lens[idx as usize] as usize;
        &mut self.bufs[idx as usize][..len]
    }

    /// Gives a popped index's buffer back once it is written.
    pub fn release(&mut self, idx: u32) {
        give_back(self.large, &mut self.free_large, &mut self.free_small, idx);
    }

    /// Drops everything queued (the session ended); counted as flushed.
    pub fn clear(&mut self, stats: &Stats) {
        let (n_large, free_large, free_small) =
            (self.large, &mut self.free_large, &mut self.free_small);
        self.fq.clear(|i| {
            give_back(n_large, free_large, free_small, i);
            crate::stats::inc(&stats.rx.queue.flushed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inside::offload::test_packets::{tcp_packet, tcp_packet_from};
    use ringway_offload::checksum::Checksum;
    use std::time::Duration;

    /// An IPv4/UDP packet of `len` bytes from port `sport`, ECT(0) if `ect`.
    fn udp(sport: u16, len: usize, ect: bool) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[1] = if ect { 0x02 } else { 0 };
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[198, 18, 0, 2]);
        p[16..20].copy_from_slice(&[198, 18, 0, 1]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&53u16.to_be_bytes());
        let sum = Checksum::new().add_bytes(&p[..20]).finish();
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    const AT: usize = 4;

    fn read_into(buf: &mut [u8], packet: &[u8]) -> usize {
        buf[AT..AT + packet.len()].copy_from_slice(packet);
        packet.len()
    }

    #[test]
    fn outbound_sparse_read_overtakes_a_bulk_backlog() {
        let stats = Stats::default();
        let mut q = OutBacklog::new(&QueueOptions::default(), 8 << 10, AT).unwrap();
        let mut buf = vec![0u8; 8 << 10];
        let now = Instant::now();
        for _ in 0..100 {
            let n = read_into(&mut buf, &udp(1000, 1400, false));
            q.push(&mut buf, AT, n, AT..AT + n, now, &stats);
        }
        let n = read_into(&mut buf, &udp(2000, 84, false));
        q.push(&mut buf, AT, n, AT..AT + n, now, &stats);
        // The bulk flow came first and spends its quantum (two reads, 1500 bytes a
        // round), then the sparse one goes, ahead of the other 98.
        for _ in 0..2 {
            let bulk = q.pop(now, AT, &stats).unwrap();
            assert_eq!(bulk.len, 1400);
            q.release(bulk.idx);
        }
        let second = q.pop(now, AT, &stats).unwrap();
        assert_eq!(second.len, 84);
        assert_eq!(&q.buf(second.idx)[AT + 20..AT + 22], &2000u16.to_be_bytes());
        q.release(second.idx);
        assert!(
            stats
                .tx
                .queue
                .sparse
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        );
    }

    #[test]
    fn outbound_memory_is_bounded_and_short_reads_do_not_hold_large_buffers() {
        let stats = Stats::default();
        let opts = QueueOptions {
            fq: Config {
                limit_items: 100,
                limit_bytes: 64 << 10,
                ..Config::default()
            },
        };
        let mut q = OutBacklog::new(&opts, 8 << 10, AT).unwrap();
        // 64 KiB of 8 KiB buffers, and one small buffer per item of the limit.
        assert_eq!((q.large, q.bufs.len()), (8, 108));
        let mut buf = vec![0u8; 8 << 10];
        let now = Instant::now();
        for i in 0..10_000u32 {
            let n = read_into(&mut buf, &udp(i as u16, 1400, false));
            q.push(&mut buf, AT, n, AT..AT + n, now, &stats);
            assert!(q.can_take(), "short reads took a large buffer (push {i})");
        }
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert!(load(&stats.tx.queue.dropped_overflow) >= 10_000 - 108);
        q.clear(&stats);
        // Long reads swap large buffers in until none is left; a send frees one.
        let mut taken = 0;
        while q.can_take() {
            let n = read_into(&mut buf, &udp(7, 6000, false));
            q.push(&mut buf, AT, n, AT..AT + n, now, &stats);
            taken += 1;
            assert!(taken <= 100, "large buffers never ran out");
        }
        assert!(taken >= 8);
        let p = q.pop(now, AT, &stats).unwrap();
        assert_eq!(p.len, 6000);
        assert!(p.idx < q.large);
        q.release(p.idx);
        assert!(q.can_take());
        q.clear(&stats);
        assert_eq!(q.free_large.len() + q.free_small.len(), q.bufs.len());
    }

    /// `packets` laid out as a receive batch does: each behind 16 bytes of scratch.
    fn batch(packets: &[Vec<u8>]) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut buf = Vec::new();
        let mut ranges = Vec::new();
        for p in packets {
            buf.extend_from_slice(&[0u8; 16]);
            ranges.push(buf.len()..buf.len() + p.len());
            buf.extend_from_slice(p);
        }
        (buf, ranges)
    }

    fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn inbound_codel_marks_ect_and_drops_the_rest_under_a_standing_queue() {
        let stats = Stats::default();
        let mut q = InBacklog::new(&QueueOptions::default(), 64, false).unwrap();
        let t0 = Instant::now();
        // A standing queue: 200 packets of each flow, written slowly over 800 ms.
        let (buf, ranges) = batch(&[udp(1, 1400, true), udp(2, 1400, false)]);
        for _ in 0..200 {
            q.push_batch(None, &buf, &ranges, t0, &stats);
        }
        let mut marked = 0;
        let mut now = t0;
        while let Some((idx, segments)) = q.pop(now, &stats) {
            now += Duration::from_millis(2);
            assert_eq!(segments, 1);
            let p = q.bytes(idx);
            assert_eq!(p.len(), 1400, "bare: the packet alone");
            if p[1] & 3 == 3 {
                marked += 1;
                assert_eq!(p[20..22], 1u16.to_be_bytes(), "only the ECT flow is marked");
                assert!(
                    Checksum::new().add_bytes(&p[..20]).is_valid(),
                    "the IPv4 checksum still adds up"
                );
            }
            q.release(idx);
        }
        assert!(marked > 0);
        assert_eq!(load(&stats.rx.queue.marked_ce), marked);
        assert!(
            load(&stats.rx.queue.dropped_codel) > 0,
            "the non-ECT flow loses packets"
        );
        assert_eq!(q.free_small.len(), q.lens.len());
    }

    #[test]
    fn inbound_coalesces_into_queued_superpackets_and_a_lone_ping_overtakes_them() {
        let stats = Stats::default();
        let offloads = crate::inside::Offloads {
            vnet_hdr: true,
            tso: true,
            uso: false,
            refused: None,
        };
        let mut gro = crate::inside::offload::gro(&offloads).unwrap();
        let mut q = InBacklog::new(&QueueOptions::default(), 64, true).unwrap();
        let now = Instant::now();
        let payload = [7u8; 1000];
        // Two batches of 20 segments of one TCP flow, then a ping (ICMP: joins nothing).
        for first in [0u32, 20] {
            let segs: Vec<Vec<u8>> = (first..first + 20)
                .map(|i| tcp_packet(1 + i * 1000, &payload))
                .collect();
            let (buf, ranges) = batch(&segs);
            q.push_batch(Some(&mut gro), &buf, &ranges, now, &stats);
        }
        let mut ping = udp(9, 84, false);
        ping[9] = 1;
        let (buf, ranges) = batch(&[ping.clone()]);
        q.push_batch(Some(&mut gro), &buf, &ranges, now, &stats);
        assert_eq!(
            load(&stats.rx.queue.enqueued),
            3,
            "two superpackets and a ping"
        );
        // The flow that came first writes one superpacket (more than its quantum), then
        // the ping goes ahead of its second.
        let order: Vec<(usize, usize)> = std::iter::from_fn(|| {
            let (idx, segments) = q.pop(now, &stats)?;
            let len = q.bytes(idx).len();
            if segments == 1 {
                assert!(
                    q.bytes(idx)[..VNET_HDR_LEN].iter().all(|&b| b == 0),
                    "zero header"
                );
                assert_eq!(&q.bytes(idx)[VNET_HDR_LEN..], &ping[..]);
            }
            q.release(idx);
            Some((segments, len))
        })
        .collect();
        let sp = VNET_HDR_LEN + 40 + 20 * 1000;
        assert_eq!(order, [(20, sp), (1, VNET_HDR_LEN + 84), (20, sp)]);
        assert_eq!(q.free_large.len() + q.free_small.len(), q.lens.len());
    }

    #[test]
    fn inbound_memory_is_bounded_when_its_own_buffers_run_out() {
        let stats = Stats::default();
        let opts = QueueOptions {
            fq: Config {
                limit_items: 64,
                limit_bytes: 64 << 10,
                ..Config::default()
            },
        };
        // 64 + 16 small slots; packets of distinct flows, far more than fit.
        let mut q = InBacklog::new(&opts, 16, false).unwrap();
        let now = Instant::now();
        for i in 0..1000u16 {
            let (buf, ranges) = batch(&[udp(i, 200, false)]);
            q.push_batch(None, &buf, &ranges, now, &stats);
        }
        assert!(q.fq.len() <= 80);
        assert!(load(&stats.rx.queue.dropped_overflow) >= 1000 - 80);
        // A packet too long for a slot is dropped and counted, not written past it.
        let before = load(&stats.rx.queue.dropped_overflow);
        let (buf, ranges) = batch(&[vec![0x45; SLOT_PACKET_LEN + 1]]);
        q.push_batch(None, &buf, &ranges, now, &stats);
        assert_eq!(load(&stats.rx.queue.dropped_overflow), before + 1);
        q.clear(&stats);
        assert_eq!(q.free_small.len(), q.lens.len());
    }

    /// Many interleaved flows through the coalescer and the queue, as a busy download is:
    /// a queue with room never drops (its superpackets of few segments must not run the
    /// large buffers out first).
    #[test]
    fn interleaved_flows_never_overflow_a_roomy_queue() {
        let stats = Stats::default();
        let offloads = crate::inside::Offloads {
            vnet_hdr: true,
            tso: true,
            uso: false,
            refused: None,
        };
        let mut gro = crate::inside::offload::gro(&offloads).unwrap();
        let mut q = InBacklog::new(&QueueOptions::default(), 512, true).unwrap();
        let now = Instant::now();
        let payload = [7u8; 1380];
        let mut seq = [1u32; 4];
        for round in 0..200 {
            // Runs of 7 segments of each of 4 flows, interleaved.
            let packets: Vec<Vec<u8>> = (0..360)
                .map(|i| {
                    let f = (i / 7) % 4;
                    let p = tcp_packet_from(40000 + f as u16, seq[f], &payload);
                    seq[f] += 1380;
                    p
                })
                .collect();
            let (buf, ranges) = batch(&packets);
            q.push_batch(Some(&mut gro), &buf, &ranges, now, &stats);
            for _ in 0..8 {
                if let Some((idx, _)) = q.pop(now, &stats) {
                    q.release(idx);
                }
            }
            assert_eq!(
                load(&stats.rx.queue.dropped_overflow),
                0,
                "round {round}: {} queued",
                q.fq.len()
            );
        }
    }
}
