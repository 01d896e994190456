//! The flow queue in front of the TUN writes: where packets from peers wait for the
//! inside, with `server.fair_queue = "on"`.
//!
//! Why here: the TUN write is the expensive step of the upload direction (the kernel runs
//! the inner TCP receive inside it). Written as soon as they are opened, a bulk upload's
//! packets made the loop alternate receives and long rows of writes, and the backlog
//! stood, FIFO, in the UDP socket's receive buffer, where a ping waited behind megabytes
//! of it. With this queue every opened packet (or coalesced superpacket) is queued, at
//! most `tun_writes_in_flight` writes are in flight, and the receives keep draining the
//! socket: the backlog stands here instead, where a sparse flow (ping, ACKs) goes first
//! and CoDel drops (or CE-marks) from the head of the bulk flow that built it.
//!
//! ```text
//!  receive ─▶ open ─▶ coalesce (gro) ─▶ Io::write_tun ─▶ InsideQueue ─┐
//!                                                                     │ end of each round:
//!  TUN write completes ─▶ on_written ─────────────────────────────────┤ Io::pump_inside,
//!                                                                     ▼ while < max in flight
//!                                              dequeue (DRR + CoDel) ─▶ mark CE? ─▶ TUN write
//! ```
//!
//! Ownership: a queued packet is a [`TunWrite`] holding its buffer's token, so nothing else
//! can touch the bytes while it waits; dropped and flushed packets give their tokens back
//! to the pools. A queued packet holds **no** tx slot (a standing queue would otherwise
//! starve the sends to peers): its permit goes back at enqueue and the pump reserves one
//! at dequeue. The driver gives the small pool one extra buffer per queue slot
//! (`limit_items`), so a free tx slot still always finds a free small buffer.

use std::ops::Range;
use std::time::Instant;

use ringway_fq::{inner, Config, ConfigError, FlowQueue, Stats};

use super::buffers::{PacketBuf, Pools};

/// One TUN write waiting for its turn: what `Send::Tun` will carry.
#[derive(Debug)]
pub(super) struct TunWrite {
    /// The buffer holding the packet.
    pub buf: PacketBuf,
    /// Where the write lies in it (its virtio_net_hdr first, with offload).
    pub packet: Range<usize>,
    /// Inner packets it carries (a coalesced superpacket's segments; else 1).
    pub packets: u32,
}

/// The flow queue in front of the TUN, and how many of its writes are in flight.
#[derive(Debug)]
pub(super) struct InsideQueue {
    queue: FlowQueue<TunWrite>,
    seed: inner::FlowSeed,
    /// Bytes in front of the IP header in a write: the virtio_net_hdr with offload.
    header: usize,
    in_flight: u32,
    max_in_flight: u32,
}

impl InsideQueue {
    /// A queue with all its memory, letting `max_in_flight` writes out at once; each
    /// write's IP header starts `header` bytes into it.
    pub fn new(
        config: Config,
        max_in_flight: u32,
        header: usize,
        seed: inner::FlowSeed,
    ) -> Result<Self, ConfigError> {
        Ok(InsideQueue {
            queue: FlowQueue::new(config)?,
            seed,
            header,
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
        })
    }

    /// Queues `w` at the tail of its inner flow (dropping from the fattest flow's head
    /// if the queue is full; dropped buffers go back to `bufs`).
    pub fn enqueue(&mut self, now: Instant, bufs: &mut Pools, mut w: TunWrite) {
        let meta = {
            let bytes = bufs.of(&w.buf).bytes_mut(&mut w.buf);
            inner::meta(ip(bytes, &w.packet, self.header), &self.seed)
        };
        self.queue
            .enqueue(now, w, meta, |dropped, _why| bufs.put(dropped.buf));
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
        let mut d = self
            .queue
            .dequeue(now, |dropped, _why| bufs.put(dropped.buf))?;
        if d.mark_ce {
            let bytes = bufs.of(&d.item.buf).bytes_mut(&mut d.item.buf);
            inner::mark_ce(ip_mut(bytes, &d.item.packet, self.header));
        }
        self.in_flight += 1;
        Some(d.item)
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
        self.queue.clear(|w| bufs.put(w.buf));
    }

    /// What the queue did.
    pub fn stats(&self) -> &Stats {
        self.queue.stats()
    }
}

/// The IP packet of a write: `packet` past its `header` bytes (empty if too short, which
/// the queue treats as a flow of its own).
fn ip<'a>(bytes: &'a [u8], packet: &Range<usize>, header: usize) -> &'a [u8] {
    bytes
        .get(packet.start.saturating_add(header)..packet.end)
        .unwrap_or(&[])
}

/// The same, to set CE in.
fn ip_mut<'a>(bytes: &'a mut [u8], packet: &Range<usize>, header: usize) -> &'a mut [u8] {
    bytes
        .get_mut(packet.start.saturating_add(header)..packet.end)
        .unwrap_or(&mut [])
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
        let mut q = InsideQueue::new(Config::default(), 3, 0, seed).unwrap();
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
        let mut q = InsideQueue::new(config, 64, 0, seed).unwrap();
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
}
