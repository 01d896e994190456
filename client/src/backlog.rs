//! The client's own queues: where packets wait when a direction cannot keep up, fairly
//! per inner flow, with CoDel (the [`ringway_fq`] crate).
//!
//! Why here: the kernel's queues in front of us are plain FIFOs. Outbound, that is the
//! TUN's transmit ring (500 packets, or 500 superpackets of up to 64 KiB with offload);
//! inbound, the UDP socket's receive buffer. A bulk upload or download fills them, and a
//! ping, a DNS query or an SSH keystroke waits behind megabytes of it. Each task therefore
//! takes what the kernel holds as soon as it can (a read or receive goes before the next
//! send or write, up to [`DRAIN_BURST`] in a row) into a [`FlowQueue`], and sends or
//! writes from that queue: sparse flows first, a bulk flow's standing queue held near
//! CoDel's target by dropping (or CE-marking) from its head.
//!
//! - [`OutBacklog`]: reads from the inside, one buffer per read (a 64 KiB superpacket
//!   with offload), swapped in so the read buffer is never copied.
//! - [`InBacklog`]: opened packets from the outside, each copied once into a fixed slot
//!   of one arena, written out in bursts through the coalescer as before.
//!
//! Memory is allocated once per task: buffers for `limit_items` items (outbound: as many
//! as `limit_bytes` of reads take). Nothing is allocated per packet.

use std::ops::Range;
use std::time::Instant;

use ring::rand::{SecureRandom, SystemRandom};
use ringway_fq::inner::{self, FlowSeed};
use ringway_fq::{Config, ConfigError, DropReason, FlowQueue};
use ringway_offload::VNET_HDR_LEN;

use crate::stats::{QueueCounters, Stats};

/// Reads (or receives) taken in a row before a send (or write) must go: the queue drains
/// the kernel's FIFO promptly, and still sends while the FIFO never empties.
pub const DRAIN_BURST: u32 = 8;

/// Bytes one inbound write burst takes from the queue: one superpacket's worth, so a
/// sparse packet that arrives meanwhile waits for at most that.
const WRITE_BURST_BYTES: usize = 64 << 10;

/// The largest inner packet an inbound slot holds; a longer one (a server MTU above
/// Ethernet's) bypasses the queue.
const SLOT_PACKET_LEN: usize = 1600;

/// Inbound, `limit_bytes` of packets at least this long fit the item limit.
const MIN_COUNTED_PACKET: u32 = 1024;

/// How the client queues, from `ringway up --fair-queue ...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// The queue's tunables; both directions get one of these.
    pub fq: Config,
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
    /// Large buffers first (`0..large`), then small ones.
    bufs: Vec<Vec<u8>>,
    large: usize,
    free_large: Vec<u32>,
    free_small: Vec<u32>,
    seed: FlowSeed,
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
        let bufs = (0..large)
            .map(|_| vec![0u8; buf_len])
            .chain((0..small).map(|_| vec![0u8; small_len]))
            .collect();
        Ok(OutBacklog {
            fq,
            bufs,
            large,
            free_large: (0..large as u32).rev().collect(),
            free_small: (large as u32..(large + small) as u32).rev().collect(),
            seed: seed(),
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
        let meta = inner::meta(read.get(packet).unwrap_or_default(), &self.seed);
        let end = read_at + len;
        let small = self.free_small.last().filter(|&&i| {
            end + ringway_proto::wire::transport::TAG_LEN <= self.bufs[i as usize].len()
        });
        let idx = if let Some(&i) = small {
            self.free_small.pop();
            self.bufs[i as usize][read_at..end].copy_from_slice(&read[read_at..end]);
            i
        } else if let Some(i) = self.free_large.pop() {
            std::mem::swap(read, &mut self.bufs[i as usize]);
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

/// Inbound: opened packets wait here, each in a slot of one arena, until written.
#[derive(Debug)]
pub struct InBacklog {
    fq: FlowQueue<u32>,
    /// `slots` slots of [`InBacklog::SLOT`] bytes: a packet at [`VNET_HDR_LEN`] into its
    /// slot, the bytes in front scratch for the zero header a lone write puts there.
    arena: Vec<u8>,
    lens: Vec<u16>,
    free: Vec<u32>,
    seed: FlowSeed,
    /// The burst being written: ranges into the arena, and their slots.
    burst: Vec<Range<usize>>,
    burst_slots: Vec<u32>,
}

impl InBacklog {
    /// Bytes per slot.
    const SLOT: usize = VNET_HDR_LEN + SLOT_PACKET_LEN;

    /// A queue with room for a whole receive batch of `batch` packets beyond its limit,
    /// so a receive never lacks slots.
    pub fn new(opts: &QueueOptions, batch: usize) -> Result<Self, ConfigError> {
        // Items are single packets here: let `limit_bytes` of full-size ones fit, so a
        // bulk flow's backlog is bounded by bytes (and CoDel), not cut off by a count.
        let mut config = opts.fq.clone();
        config.limit_items = config
            .limit_items
            .max(config.limit_bytes / MIN_COUNTED_PACKET);
        let fq = FlowQueue::new(config)?;
        let n = fq.config().limit_items as usize + batch;
        Ok(InBacklog {
            fq,
            arena: vec![0u8; n * Self::SLOT],
            lens: vec![0; n],
            free: (0..n as u32).rev().collect(),
            seed: seed(),
            burst: Vec::with_capacity(batch),
            burst_slots: Vec::with_capacity(batch),
        })
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.fq.is_empty()
    }

    /// Copies `packet` into a slot and queues it; `false` if it is too long for a slot (the
    /// caller writes it straight away).
    pub fn push(&mut self, packet: &[u8], now: Instant, stats: &Stats) -> bool {
        let c = &stats.rx.queue;
        if packet.len() > SLOT_PACKET_LEN {
            return false;
        }
        let Some(slot) = self.free.pop() else {
            // Cannot happen: a batch's worth of slots is always free before a receive.
            count_drop(c, DropReason::Overflow);
            return true;
        };
        let start = slot as usize * Self::SLOT + VNET_HDR_LEN;
        self.arena[start..start + packet.len()].copy_from_slice(packet);
        self.lens[slot as usize] = packet.len() as u16;
        let meta = inner::meta(packet, &self.seed);
        crate::stats::inc(&c.enqueued);
        let free = &mut self.free;
        self.fq.enqueue(now, slot, meta, |s, why| {
            free.push(s);
            count_drop(c, why);
        });
        publish_peak(&self.fq, c);
        true
    }

    /// Takes the next burst to write (sparse flows first, up to [`WRITE_BURST_BYTES`] or
    /// `max` packets): the arena and the packets' ranges in it. Call
    /// [`release_burst`](Self::release_burst) once they are written.
    pub fn pop_burst(
        &mut self,
        now: Instant,
        max: usize,
        stats: &Stats,
    ) -> (&mut [u8], &[Range<usize>]) {
        let c = &stats.rx.queue;
        self.burst.clear();
        self.burst_slots.clear();
        let mut bytes = 0;
        while bytes < WRITE_BURST_BYTES && self.burst.len() < max {
            let free = &mut self.free;
            let Some(d) = self.fq.dequeue(now, |s, why| {
                free.push(s);
                count_drop(c, why);
            }) else {
                break;
            };
            crate::stats::inc(&c.dequeued);
            if d.sparse {
                crate::stats::inc(&c.sparse);
            }
            let slot = d.item as usize;
            let start = slot * Self::SLOT + VNET_HDR_LEN;
            let range = start..start + usize::from(self.lens[slot]);
            if d.mark_ce && inner::mark_ce(&mut self.arena[range.clone()]) {
                crate::stats::inc(&c.marked_ce);
            }
            bytes += range.len();
            self.burst.push(range);
            self.burst_slots.push(d.item);
        }
        (&mut self.arena, &self.burst)
    }

    /// Frees the slots of the burst just written.
    pub fn release_burst(&mut self) {
        self.free.append(&mut self.burst_slots);
        self.burst.clear();
    }

    /// Drops everything queued (the session ended); counted as flushed.
    pub fn clear(&mut self, stats: &Stats) {
        self.release_burst();
        let free = &mut self.free;
        self.fq.clear(|s| {
            free.push(s);
            crate::stats::inc(&stats.rx.queue.flushed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn inbound_codel_marks_ect_and_drops_the_rest_under_a_standing_queue() {
        let stats = Stats::default();
        let mut q = InBacklog::new(&QueueOptions::default(), 64).unwrap();
        let t0 = Instant::now();
        // A standing queue: 200 packets of each flow, dequeued slowly over 400 ms.
        for _ in 0..200 {
            assert!(q.push(&udp(1, 1400, true), t0, &stats));
            assert!(q.push(&udp(2, 1400, false), t0, &stats));
        }
        let mut marked = 0;
        let mut now = t0;
        while !q.is_empty() {
            now += Duration::from_millis(2);
            let (arena, burst) = q.pop_burst(now, 1, &stats);
            for r in burst {
                let p = &arena[r.clone()];
                if p[1] & 3 == 3 {
                    marked += 1;
                    assert_eq!(p[20..22], 1u16.to_be_bytes(), "only the ECT flow is marked");
                    assert!(
                        Checksum::new().add_bytes(&p[..20]).is_valid(),
                        "the IPv4 checksum still adds up"
                    );
                }
            }
            q.release_burst();
        }
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert!(marked > 0);
        assert_eq!(load(&stats.rx.queue.marked_ce), marked);
        assert!(
            load(&stats.rx.queue.dropped_codel) > 0,
            "the non-ECT flow loses packets"
        );
        assert_eq!(q.free.len(), q.lens.len());
    }

    #[test]
    fn inbound_burst_is_bounded_and_oversized_packets_bypass() {
        let stats = Stats::default();
        let mut q = InBacklog::new(&QueueOptions::default(), 64).unwrap();
        let now = Instant::now();
        assert!(!q.push(&vec![0x45; SLOT_PACKET_LEN + 1], now, &stats));
        for _ in 0..100 {
            q.push(&udp(7, 1400, false), now, &stats);
        }
        let (_, burst) = q.pop_burst(now, 512, &stats);
        let bytes: usize = burst.iter().map(|r| r.len()).sum();
        assert!((WRITE_BURST_BYTES..WRITE_BURST_BYTES + 1400).contains(&bytes));
        q.release_burst();
        q.clear(&stats);
        assert_eq!(q.free.len(), q.lens.len());
    }
}
