//! The flow queues, with `server.fair_queue = "on"`: one in front of the TUN writes
//! (packets from peers, bound for the inside) and one in front of the sends to peers
//! (packets read from the TUN), UDP and TCP alike.
//!
//! Why in front of the TUN: the TUN write is the expensive step of the upload direction
//! (the kernel runs the inner TCP receive inside it). Written as soon as they were
//! opened, a bulk upload's packets made the loop alternate receives and long rows of
//! writes, and the backlog stood, FIFO, in the UDP socket's receive buffer, where a ping
//! waited behind megabytes of it. With [`InsideQueue`] every opened packet (or coalesced
//! superpacket) is queued, at most `tun_writes_in_flight` writes are in flight, and the
//! receives keep draining the socket: the backlog stands here instead, where a sparse
//! flow (ping, ACKs) goes first and CoDel drops (or CE-marks) from the head of the bulk
//! flow that built it.
//!
//! Why in front of the sends: reading the TUN is cheap and sealing is not, so the TUN is
//! read eagerly into [`OutsideQueue`] (routed, not sealed), and packets are sealed and
//! sent when they leave it, while a tx slot is free: a ping reply overtakes a download's
//! backlog, and what CoDel drops costs no AEAD work.
//!
//! Why peers on TCP too: their connection's send queue (`tcp.send_queue_bytes`) is a FIFO
//! that tail-drops when full. A bulk download through a TCP tunnel filled it and lost
//! ~8 % of its inner packets there, and a ping beside it waited behind the whole queue.
//! So a packet for a TCP peer waits here too ([`PeerSend::tcp`] names its connection)
//! and leaves only while that connection's send queue is under a fraction of its limit
//! with room for what the packet becomes (`TcpPath::has_room`): the standing queue
//! stands here, where the ping overtakes it and CoDel drops from its head.
//!
//! How a full connection neither spins the pump nor starves the others: the pump asks
//! `FlowQueue::dequeue_ready`, which passes over a flow whose head packet cannot leave
//! (its connection is full, or, for a UDP peer, no tx slot is free) without popping it,
//! and answers `None` once every flow is passed over. The pump then stops for the round;
//! the connection's send completing is a completion, and every round ends with the pump,
//! so the packets go on as soon as there is room. Nothing is held aside, so there is no
//! second queue to bound, flush or keep in order. A connection that closes while packets
//! for it wait counts as having room: they leave, find no session (counted unroutable)
//! and their buffers go back.
//!
//! ```text
//!  UDP/TCP receive ─▶ open ─▶ coalesce (gro) ─▶ Io::write_tun ─▶ InsideQueue ─┐
//!  TUN write completes ─▶ on_written ─────────────────────────────────────────┤ end of round:
//!                                              TUN write ◀─ mark CE? ◀─ DRR+CoDel ◀┘ pump_inside
//!
//!  TUN read ─▶ route ─▶ OutsideQueue ─┐ end of round, flows whose outlet has room
//!                                     │ (UDP: a free tx slot; TCP: its send queue):
//!   UDP send / TCP send queue ◀─ seal ◀─ route again ◀─ mark CE? ◀─ DRR+CoDel ◀┘ send_queued
//! ```
//!
//! Ownership: a queued packet holds its buffer's token, so nothing else can touch the
//! bytes while it waits; dropped and flushed packets give their tokens back to the
//! pools. A queued packet holds **no** tx slot (a standing queue would otherwise starve
//! every send): the slot is reserved when it leaves. The driver gives the small pool one
//! extra buffer per queue slot of each queue (`limit_items`), so a free tx slot still
//! always finds a free small buffer, and (with offload) each queue some large buffers for
//! queued superpackets.

use std::ops::Range;
use std::time::Instant;

use ringway_fq::{inner, Config, ConfigError, FlowQueue, Stats};
use ringway_offload::{Layout, Plan, VnetHdr};

use super::buffers::{PacketBuf, Pools};
use crate::sessions::ConnId;

/// A queued packet: a buffer token and where the IP packet lies in the buffer.
pub(super) trait Queued {
    /// The buffer, and the range of its IP packet (header and all).
    fn ip(&mut self) -> (&mut PacketBuf, Range<usize>);
    /// The buffer, given back.
    fn into_buf(self) -> PacketBuf;
}

/// One TUN write waiting for its turn: what `Send::Tun` will carry.
#[derive(Debug)]
pub(super) struct TunWrite {
    /// The buffer holding the packet.
    pub buf: PacketBuf,
    /// Where the write lies in it (its virtio_net_hdr first, with offload).
    pub packet: Range<usize>,
    /// Inner packets it carries (a coalesced superpacket's segments; else 1).
    pub packets: u32,
    /// Bytes in front of the IP header: the virtio_net_hdr with offload.
    pub header: usize,
}

impl Queued for TunWrite {
    fn ip(&mut self) -> (&mut PacketBuf, Range<usize>) {
        let start = self.packet.start.saturating_add(self.header);
        (&mut self.buf, start..self.packet.end)
    }
    fn into_buf(self) -> PacketBuf {
        self.buf
    }
}

/// A packet read from the TUN, routed to a UDP peer, waiting to be sealed and sent.
#[derive(Debug)]
pub(super) struct PeerSend {
    /// The buffer: a small one holding a plain packet, or the large read buffer of a
    /// superpacket.
    pub buf: PacketBuf,
    /// The IP packet in it, at `PAYLOAD_OFFSET`, with room for a tag behind it.
    pub packet: Range<usize>,
    /// A superpacket: its header and how it is cut, as `prepare` found them at the read.
    pub split: Option<(VnetHdr, Plan)>,
    /// The TCP connection it was routed to at the read (`None`: a UDP peer): it leaves
    /// only while that connection's send queue has room (`TcpPath::has_room`).
    pub tcp: Option<ConnId>,
}

impl PeerSend {
    /// Bytes it takes in a TCP connection's send queue, cut and framed as `layout` says
    /// (every segment behind its length prefix and transport header, with its tag).
    pub fn framed_len(&self, layout: &Layout) -> usize {
        match &self.split {
            Some((_, plan)) => plan.out_len(layout),
            None => self.packet.len() + layout.headroom + layout.tailroom,
        }
    }
}

impl Queued for PeerSend {
    fn ip(&mut self) -> (&mut PacketBuf, Range<usize>) {
        (&mut self.buf, self.packet.clone())
    }
    fn into_buf(self) -> PacketBuf {
        self.buf
    }
}

/// A flow queue of packets in pool buffers: dropped packets' buffers go back to the
/// pools, and a dequeued packet comes out CE-marked if CoDel asked.
#[derive(Debug)]
pub(super) struct PacketQueue<T> {
    queue: FlowQueue<T>,
    seed: inner::FlowSeed,
}

impl<T: Queued> PacketQueue<T> {
    /// A queue with all its memory.
    pub fn new(config: Config, seed: inner::FlowSeed) -> Result<Self, ConfigError> {
        Ok(PacketQueue {
            queue: FlowQueue::new(config)?,
            seed,
        })
    }

    /// Queues `item` at the tail of its inner flow (dropping from the fattest flow's
    /// head if the queue is full). Returns the large buffers dropped on the way.
    pub fn enqueue(&mut self, now: Instant, bufs: &mut Pools, mut item: T) -> usize {
        let meta = {
            let (buf, range) = item.ip();
            let bytes = bufs.of(buf).bytes_mut(buf);
            inner::meta(bytes.get(range).unwrap_or_default(), &self.seed)
        };
        let mut large = 0;
        self.queue.enqueue(now, item, meta, |dropped, _why| {
            large += usize::from(put(bufs, dropped.into_buf()));
        });
        large
    }

    /// The next packet by DRR, CE-marked if CoDel asked, and the large buffers CoDel
    /// dropped on the way.
    pub fn dequeue(&mut self, now: Instant, bufs: &mut Pools) -> (Option<T>, usize) {
        self.dequeue_ready(now, bufs, |_| true)
    }

    /// The next packet by DRR among the flows whose head packet is `ready` to leave (see
    /// `FlowQueue::dequeue_ready`), CE-marked if CoDel asked, and the large buffers CoDel
    /// dropped on the way.
    pub fn dequeue_ready(
        &mut self,
        now: Instant,
        bufs: &mut Pools,
        ready: impl FnMut(&T) -> bool,
    ) -> (Option<T>, usize) {
        let mut large = 0;
        let d = self.queue.dequeue_ready(now, ready, |dropped, _why| {
            large += usize::from(put(bufs, dropped.into_buf()));
        });
        let item = d.map(|mut d| {
            if d.mark_ce {
                let (buf, range) = d.item.ip();
                let bytes = bufs.of(buf).bytes_mut(buf);
                if let Some(ip) = bytes.get_mut(range) {
                    inner::mark_ce(ip);
                }
            }
            d.item
        });
        (item, large)
    }

    /// Packets queued now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Gives every queued buffer back (the loop is over).
    pub fn clear(&mut self, bufs: &mut Pools) {
        self.queue.clear(|item| {
            put(bufs, item.into_buf());
        });
    }

    /// What the queue did.
    pub fn stats(&self) -> &Stats {
        self.queue.stats()
    }
}

/// Returns `buf` to its pool; whether it was a large one.
fn put(bufs: &mut Pools, buf: PacketBuf) -> bool {
    let large = bufs.large.owns(&buf);
    bufs.put(buf);
    large
}

/// The flow queue in front of the TUN, and how many of its writes are in flight.
#[derive(Debug)]
pub(super) struct InsideQueue {
    queue: PacketQueue<TunWrite>,
    in_flight: u32,
    max_in_flight: u32,
}

impl InsideQueue {
    /// A queue with all its memory, letting `max_in_flight` writes out at once.
    pub fn new(
        config: Config,
        max_in_flight: u32,
        seed: inner::FlowSeed,
    ) -> Result<Self, ConfigError> {
        Ok(InsideQueue {
            queue: PacketQueue::new(config, seed)?,
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
        })
    }

    /// Queues `w` at the tail of its inner flow (dropping from the fattest flow's head
    /// if the queue is full; dropped buffers go back to `bufs`).
    pub fn enqueue(&mut self, now: Instant, bufs: &mut Pools, w: TunWrite) {
        self.queue.enqueue(now, bufs, w);
    }

    /// Whether a write may start now (fewer than the limit are in flight).
    pub fn can_write(&self) -> bool {
        self.in_flight < self.max_in_flight && !self.queue.is_empty()
    }

    /// The next write to start, CE-marked if CoDel asked; counted in flight until
    /// [`InsideQueue::on_written`]. The caller must submit it.
    pub fn dequeue(&mut self, now: Instant, bufs: &mut Pools) -> Option<TunWrite> {
        if self.in_flight >= self.max_in_flight {
            return None;
        }
        let w = self.queue.dequeue(now, bufs).0?;
        self.in_flight += 1;
        Some(w)
    }

    /// A TUN write completed (or failed): another may start.
    pub fn on_written(&mut self) {
        debug_assert!(
            self.in_flight > 0,
            "a TUN write completed that never started"
        );
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Writes in flight now.
    #[cfg(test)]
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Packets queued now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Gives every queued buffer back (the loop is over).
    pub fn clear(&mut self, bufs: &mut Pools) {
        self.queue.clear(bufs);
    }

    /// What the queue did.
    pub fn stats(&self) -> &Stats {
        self.queue.stats()
    }
}

/// The flow queue in front of the sends to UDP peers, and the large buffers it holds.
///
/// A plain packet waits in a small buffer (copied out of its read, as it would be to be
/// sealed), a superpacket in its own large read buffer, whose place in the read's
/// buffer ring a fresh one takes. Large buffers held are capped (`max_large`, the ones
/// the driver added for this queue), so reads and the other direction never run short:
/// past the cap a superpacket is sent at once, as without the queue.
#[derive(Debug)]
pub(super) struct OutsideQueue {
    queue: PacketQueue<PeerSend>,
    large: usize,
    max_large: usize,
}

impl OutsideQueue {
    /// A queue with all its memory, holding at most `max_large` large buffers.
    pub fn new(
        config: Config,
        max_large: usize,
        seed: inner::FlowSeed,
    ) -> Result<Self, ConfigError> {
        Ok(OutsideQueue {
            queue: PacketQueue::new(config, seed)?,
            large: 0,
            max_large,
        })
    }

    /// Whether a superpacket may wait here in its large buffer.
    pub fn has_large_room(&self) -> bool {
        self.large < self.max_large
    }

    /// Queues `p` at the tail of its inner flow.
    pub fn enqueue(&mut self, now: Instant, bufs: &mut Pools, p: PeerSend) {
        if bufs.large.owns(&p.buf) {
            self.large += 1;
        }
        let dropped = self.queue.enqueue(now, bufs, p);
        self.large -= dropped;
    }

    /// The next packet to seal and send, CE-marked if CoDel asked.
    #[cfg(test)]
    pub fn dequeue(&mut self, now: Instant, bufs: &mut Pools) -> Option<PeerSend> {
        self.dequeue_ready(now, bufs, |_| true)
    }

    /// The next packet to seal and send among the flows whose head packet is `ready` to
    /// leave (its outlet has room), CE-marked if CoDel asked; `None` when nothing is
    /// queued or nothing queued is ready.
    pub fn dequeue_ready(
        &mut self,
        now: Instant,
        bufs: &mut Pools,
        ready: impl FnMut(&PeerSend) -> bool,
    ) -> Option<PeerSend> {
        let (p, dropped) = self.queue.dequeue_ready(now, bufs, ready);
        self.large -= dropped;
        if let Some(p) = &p {
            if bufs.large.owns(&p.buf) {
                self.large -= 1;
            }
        }
        p
    }

    /// Nothing queued.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Packets queued now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Gives every queued buffer back (the loop is over).
    pub fn clear(&mut self, bufs: &mut Pools) {
        self.queue.clear(bufs);
        self.large = 0;
    }

    /// What the queue did.
    pub fn stats(&self) -> &Stats {
        self.queue.stats()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::uring::buffers::BufferPool;

    fn pools() -> Pools {
        Pools {
            small: BufferPool::new(64, 2048),
            large: BufferPool::new(0, 0),
        }
    }

    /// A 1400-byte IPv4/UDP packet from port `sport` with ECN bits `ecn`, in a fresh
    /// buffer.
    fn packet(bufs: &mut Pools, sport: u16, ecn: u8) -> TunWrite {
        let mut buf = bufs.small.take().unwrap();
        let bytes = bufs.small.bytes_mut(&mut buf);
        let p = &mut bytes[16..16 + 1400];
        p.fill(0);
        p[0] = 0x45;
        p[1] = ecn;
        p[2..4].copy_from_slice(&1400u16.to_be_bytes());
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        TunWrite {
            buf,
            packet: 16..1416,
            packets: 1,
            header: 0,
        }
    }

    fn sport(bufs: &mut Pools, w: &mut TunWrite) -> u16 {
        let b = bufs.small.bytes_mut(&mut w.buf);
        u16::from_be_bytes([b[36], b[37]])
    }

    #[test]
    fn writes_in_flight_are_bounded_and_a_sparse_flow_goes_first() {
        let mut bufs = pools();
        let seed = inner::FlowSeed::from_bytes([9; 16]);
        let mut q = InsideQueue::new(Config::default(), 3, seed).unwrap();
        let t = Instant::now();
        for _ in 0..20 {
            let w = packet(&mut bufs, 1000, 0);
            q.enqueue(t, &mut bufs, w);
        }
        // The bulk flow's first quantum goes out...
        let mut started = Vec::new();
        for _ in 0..2 {
            let mut w = q.dequeue(t, &mut bufs).unwrap();
            assert_eq!(sport(&mut bufs, &mut w), 1000);
            started.push(w);
        }
        let w = packet(&mut bufs, 2000, 0);
        q.enqueue(t, &mut bufs, w);
        // ...and the ping arriving behind 18 bulk packets is next.
        let mut ping = q.dequeue(t, &mut bufs).unwrap();
        assert_eq!(sport(&mut bufs, &mut ping), 2000);
        started.push(ping);
        // Three in flight: nothing more until one completes.
        assert!(!q.can_write());
        assert!(q.dequeue(t, &mut bufs).is_none());
        q.on_written();
        assert!(q.can_write());
        started.push(q.dequeue(t, &mut bufs).unwrap());
        assert_eq!(q.in_flight(), 3);
        assert_eq!(q.len(), 17);
        for w in started {
            bufs.put(w.buf);
        }
        q.clear(&mut bufs);
        assert_eq!(bufs.small.available(), 64);
        assert_eq!(q.stats().flushed, 17);
    }

    #[test]
    fn a_standing_queue_is_marked_ce_in_the_packet() {
        let mut bufs = pools();
        let seed = inner::FlowSeed::from_bytes([9; 16]);
        let config = Config {
            target: Duration::from_millis(1),
            interval: Duration::from_millis(10),
            ..Config::default()
        };
        let mut q = InsideQueue::new(config, 64, seed).unwrap();
        let t0 = Instant::now();
        for _ in 0..60 {
            let w = packet(&mut bufs, 1000, 0b10);
            q.enqueue(t0, &mut bufs, w);
        }
        let mut marked = 0;
        let mut t = t0 + Duration::from_millis(5);
        while let Some(mut w) = q.dequeue(t, &mut bufs) {
            let b = bufs.small.bytes_mut(&mut w.buf);
            if b[17] & 0b11 == 0b11 {
                marked += 1;
            }
            bufs.put(w.buf);
            q.on_written();
            t += Duration::from_millis(1);
        }
        assert!(marked > 0, "nothing marked");
        assert_eq!(q.stats().marked_ce, marked);
        assert_eq!(q.stats().dropped_codel, 0);
        assert_eq!(bufs.small.available(), 64);
    }

    #[test]
    fn the_outside_queue_holds_no_more_large_buffers_than_it_was_given() {
        let mut bufs = Pools {
            small: BufferPool::new(8, 2048),
            large: BufferPool::new(4, 4096),
        };
        let seed = inner::FlowSeed::from_bytes([9; 16]);
        let config = Config {
            limit_items: 3,
            ..Config::default()
        };
        let mut q = OutsideQueue::new(config, 2, seed).unwrap();
        let t = Instant::now();
        let large = |bufs: &mut Pools| {
            let mut buf = bufs.large.take().unwrap();
            bufs.large.bytes_mut(&mut buf)[..20].copy_from_slice(&[
                0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ]);
            PeerSend {
                buf,
                packet: 0..3000,
                split: None,
                tcp: None,
            }
        };
        assert!(q.has_large_room());
        let p = large(&mut bufs);
        q.enqueue(t, &mut bufs, p);
        let p = large(&mut bufs);
        q.enqueue(t, &mut bufs, p);
        assert!(!q.has_large_room());
        // Small ones still fit; at the item limit the fattest flow pays, large buffer
        // and all.
        for _ in 0..2 {
            let w = packet(&mut bufs, 7, 0);
            let p = PeerSend {
                buf: w.buf,
                packet: w.packet,
                split: None,
                tcp: None,
            };
            q.enqueue(t, &mut bufs, p);
        }
        assert_eq!(q.len(), 3);
        assert!(q.has_large_room(), "a dropped large buffer still counted");
        while let Some(p) = q.dequeue(t, &mut bufs) {
            bufs.put(p.buf);
        }
        assert!(q.is_empty());
        assert!(q.has_large_room());
        assert_eq!((bufs.small.available(), bufs.large.available()), (8, 4));
    }
}
