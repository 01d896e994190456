//! Packets bound for the TUN, with offload: coalesced where they continue a flow, and
//! written once per round.
//!
//! Every inner packet the UDP and TCP paths open in a round (the completions one
//! `io_uring_enter` returned) is offered here. The [`Coalescer`] appends a packet that
//! continues a flow's run to that run's superpacket, copying it into a large buffer
//! this batch owns; anything else (ICMP, a pure ACK, a PSH segment that starts nothing,
//! an IPv4 packet with options) is written alone, behind a zero `virtio_net_hdr`. When
//! the round's completions are all handled, the driver calls [`Gro::flush`]: one TUN
//! write per superpacket and per lone packet, in an order that keeps every flow's
//! packets in their arrival order.
//!
//! Ownership, in types:
//! - a run's buffer is a large [`PacketBuf`] this batch holds from one flush to the
//!   next; at the flush it moves, with the permit reserved when the run started, into
//!   the tx slot of its write, and the batch takes a fresh one from the pool;
//! - a lone packet must stay intact until the flush. If it arrived alone in a receive
//!   buffer (the common single-datagram receive), that **buffer itself** moves here,
//!   behind a zero header written into the transport header's bytes in front of the
//!   plaintext, and the receive re-arms with a fresh one: no copy. Otherwise (one of
//!   many datagrams in a receive, a frame in a TCP stream buffer, or no fresh buffer to
//!   spare) it is copied into a small buffer of its own;
//! - every output is written under a tx [`Permit`] reserved when the packet was offered,
//!   so a flush never runs out of slots; a packet offered while none is free is dropped
//!   and counted (`tx_full`), as a packet without offload is.
use std::ops::Range;

use ringway_offload::{CoalesceConfig, Coalescer, Output, Pushed, VNET_HDR_LEN};

use super::buffers::{BufferPool, PacketBuf, Pools};
use super::context::{fresh_small, reserve, Io};
use super::tx::{Permit, TxTable};
use crate::metrics::IoCounters;
use crate::sessions::PAYLOAD_OFFSET;

/// Most superpackets built at once (one per flow in a round).
pub(super) const MAX_RUNS: usize = 16;

/// The most segments one coalesced superpacket holds: what the kernel resegments when
/// it forwards one, as Linux GRO limits itself.
const MAX_SEGMENTS: usize = 64;

/// Lone packets shorter than this are copied out of a single-datagram receive rather
/// than taking its buffer along.
const COPY_BELOW: usize = 256;

/// Where a copied lone packet starts in its small buffer: its header then sits where a
/// frame's transport header would, so the packet lies where a TUN read puts one.
const COPY_OFFSET: usize = PAYLOAD_OFFSET - VNET_HDR_LEN;

/// A lone packet waiting for the flush, in a buffer this batch owns.
#[derive(Debug)]
struct Pending {
    permit: Permit,
    buf: PacketBuf,
    /// The zero virtio_net_hdr and the packet.
    write: Range<usize>,
}

/// The parts of [`Io`] an offer needs, borrowed apart so that the packet offered may lie
/// in a large buffer (a UDP receive's) at the same time.
pub(super) struct Parts<'a> {
    /// Tx slots: one permit per output.
    pub tx: &'a mut TxTable,
    /// Small buffers, for copies of lone packets.
    pub small: &'a mut BufferPool,
    /// Large buffers, holding the runs (and maybe the packet).
    pub large: &'a BufferPool,
    /// Drops are counted here.
    pub counters: &'a mut IoCounters,
}

impl<'a> Parts<'a> {
    /// Every part of `io`.
    pub fn of(io: &'a mut Io) -> Self {
        Parts {
            tx: &mut io.tx,
            small: &mut io.bufs.small,
            large: &io.bufs.large,
            counters: &mut io.counters,
        }
    }
}

/// A run's output buffer as the coalescer sees it.
struct RunBytes<'a>(&'a mut [u8]);

impl AsMut<[u8]> for RunBytes<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0
    }
}

/// The bytes of every run buffer, for one call into the coalescer: the buffers this batch
/// holds, then empty ones (a run the coalescer starts there is refused, and its packet
/// goes alone).
fn run_bytes<'a>(large: &'a BufferPool, runs: &'a mut [PacketBuf]) -> [RunBytes<'a>; MAX_RUNS] {
    let mut held = runs.iter_mut();
    std::array::from_fn(|_| {
        RunBytes(match held.next() {
            Some(buf) => large.bytes_mut(buf),
            None => &mut [],
        })
    })
}

/// What an offer did.
enum Offer {
    /// Merged or started a run, or dropped: the caller's buffer is free.
    Done,
    /// To be written alone: the caller must store it under the tag it was offered with.
    Alone(Permit),
}

/// The coalescing batch of one round.
#[derive(Debug)]
pub(super) struct Gro {
    coalescer: Coalescer,
    /// Buffers for runs, run `i` in `runs[i]`; refilled at each flush.
    runs: Vec<PacketBuf>,
    /// How many run buffers the batch keeps.
    max_runs: usize,
    /// Large buffers a lone packet's receive buffer may not take the last of: they are
    /// for superpacket sends.
    reserve: usize,
    /// The permit of each run started in this batch, in order.
    run_permits: Vec<Permit>,
    /// Lone packets by tag (`None`: dropped after the coalescer counted it).
    pending: Vec<Option<Pending>>,
    /// The flush's writes, collected before they are made.
    outputs: Vec<Output>,
}

impl Gro {
    /// A batch of at most `max_runs` runs (at most [`MAX_RUNS`]) and `max_outputs`
    /// writes, coalescing UDP too if the TUN takes UDP superpackets; a lone packet takes
    /// its receive buffer along only while more than `reserve` large buffers are free.
    pub fn new(max_runs: usize, max_outputs: usize, udp: bool, reserve: usize) -> Self {
        let max_runs = max_runs.min(MAX_RUNS);
        let config = CoalesceConfig {
            max_runs,
            max_outputs: max_outputs.max(1),
            max_segments: MAX_SEGMENTS,
            udp,
            verify_checksums: true,
        };
        Gro {
            coalescer: Coalescer::new(config),
            runs: Vec::with_capacity(max_runs),
            max_runs,
            reserve,
            run_permits: Vec::with_capacity(max_runs),
            pending: Vec::with_capacity(config.max_outputs),
            outputs: Vec::with_capacity(config.max_outputs),
        }
    }

    /// Takes run buffers from the pool until the batch has its share (or the pool is
    /// empty: then fewer flows coalesce until buffers come back).
    pub fn refill(&mut self, large: &mut BufferPool) {
        while self.runs.len() < self.max_runs {
            match large.take() {
                Some(buf) => self.runs.push(buf),
                None => break,
            }
        }
    }

    /// Whether the batch is full: flush before offering more.
    pub fn is_full(&self) -> bool {
        self.coalescer.is_full()
    }

    /// Offers `packet` (which the caller keeps): merged into a run, or copied to be
    /// written alone. The batch must not be full ([`Gro::is_full`]).
    pub fn push_copy(&mut self, io: Parts<'_>, packet: &[u8]) {
        let Parts {
            tx,
            small,
            large,
            counters,
        } = io;
        if let Offer::Alone(permit) = self.offer(tx, counters, large, packet) {
            match copy_alone(small, packet) {
                Some((buf, write)) => self.pending.push(Some(Pending { permit, buf, write })),
                None => {
                    tx.release(permit);
                    counters.drop_truncated += 1;
                    self.pending.push(None);
                }
            }
        }
    }

    /// Offers a packet that arrived alone in receive buffer `buf`, at `packet`. Returns
    /// the buffer the receive re-arms with: its own, or (when the packet is written alone
    /// from it) a fresh one.
    pub fn push_owned(
        &mut self,
        io: &mut Io,
        mut buf: PacketBuf,
        packet: Range<usize>,
    ) -> PacketBuf {
        if self.is_full() {
            self.flush(io);
        }
        // The replacement is taken before the packet's bytes are borrowed: taking needs
        // the pool mutably. A small packet (a pure ACK, most interactive traffic) is
        // cheaper to copy than a 64 KiB buffer is to swap, and the pool's spare buffers
        // are kept for superpacket sends, which have no other way to go out whole.
        let fresh = if packet.len() > COPY_BELOW && io.bufs.large.available() > self.reserve {
            io.bufs.large.take()
        } else {
            None
        };
        let tag = self.pending.len();
        let offer = {
            let bytes = io.bufs.large.bytes_mut(&mut buf);
            self.offer(
                &mut io.tx,
                &mut io.counters,
                &io.bufs.large,
                &bytes[packet.clone()],
            )
        };
        let Offer::Alone(permit) = offer else {
            if let Some(f) = fresh {
                io.bufs.large.put(f);
            }
            return buf;
        };
        match fresh {
            Some(fresh) if packet.start >= VNET_HDR_LEN => {
                // The bytes in front of the plaintext held the frame's transport header,
                // which is no longer needed: the zero header goes there.
                let hdr = packet.start - VNET_HDR_LEN;
                io.bufs.large.bytes_mut(&mut buf)[hdr..packet.start].fill(0);
                self.pending.push(Some(Pending {
                    permit,
                    buf,
                    write: hdr..packet.end,
                }));
                fresh
            }
            fresh => {
                if let Some(f) = fresh {
                    io.bufs.large.put(f);
                }
                let copied = {
                    let bytes = io.bufs.large.bytes_mut(&mut buf);
                    copy_alone(&mut io.bufs.small, &bytes[packet])
                };
                match copied {
                    Some((copy, write)) => self.pending.push(Some(Pending {
                        permit,
                        buf: copy,
                        write,
                    })),
                    None => {
                        io.tx.release(permit);
                        io.counters.drop_truncated += 1;
                        self.pending.push(None);
                    }
                }
                debug_assert_eq!(self.pending.len(), tag + 1);
                buf
            }
        }
    }

    /// Pushes `packet` into the coalescer under tag `pending.len()`, with a permit for
    /// its output reserved first. On [`Offer::Alone`] the caller pushes exactly one
    /// `pending` entry.
    fn offer(
        &mut self,
        tx: &mut TxTable,
        counters: &mut IoCounters,
        large: &BufferPool,
        packet: &[u8],
    ) -> Offer {
        let Some(permit) = reserve(tx, counters) else {
            return Offer::Done;
        };
        let tag = self.pending.len() as u64;
        let pushed = {
            let mut out = run_bytes(large, &mut self.runs);
            self.coalescer.push(packet, tag, &mut out)
        };
        match pushed {
            Ok(Pushed::Merged) => {
                tx.release(permit);
                Offer::Done
            }
            Ok(Pushed::Started) => {
                self.run_permits.push(permit);
                Offer::Done
            }
            Ok(Pushed::Alone) => Offer::Alone(permit),
            Err(_full) => {
                // Callers flush a full batch before offering; a packet offered anyway is
                // dropped, not queued.
                debug_assert!(false, "offered to a full coalescing batch");
                tx.release(permit);
                counters.drop_tx_full += 1;
                Offer::Done
            }
        }
    }

    /// Writes every superpacket and lone packet of the batch to the TUN, in order, and
    /// takes fresh run buffers.
    pub fn flush(&mut self, io: &mut Io) {
        if !self.coalescer.is_empty() {
            {
                let mut out = run_bytes(&io.bufs.large, &mut self.runs);
                self.outputs.extend(self.coalescer.flush(&mut out));
            }
            // Runs were started in order, each taking the next buffer and permit, and
            // the coalescer lists them in that order.
            let started = self.run_permits.len();
            let mut runs = self.runs.drain(..started);
            let mut permits = self.run_permits.drain(..);
            for output in self.outputs.drain(..) {
                match output {
                    Output::Buffer { len, segments, .. } => {
                        let (Some(buf), Some(permit)) = (runs.next(), permits.next()) else {
                            debug_assert!(false, "a run without its buffer or permit");
                            continue;
                        };
                        io.write_tun(permit, buf, 0..len, segments as u32);
                    }
                    Output::Input { tag } => {
                        let lone = usize::try_from(tag)
                            .ok()
                            .and_then(|t| self.pending.get_mut(t))
                            .and_then(Option::take);
                        if let Some(p) = lone {
                            io.write_tun(p.permit, p.buf, p.write, 1);
                        }
                    }
                }
            }
            debug_assert!(runs.next().is_none() && permits.next().is_none());
        }
        debug_assert!(self.pending.iter().all(Option::is_none));
        self.pending.clear();
        self.refill(&mut io.bufs.large);
    }

    /// Gives the run buffers back (the loop is over).
    pub fn release(&mut self, bufs: &mut Pools) {
        debug_assert!(self.coalescer.is_empty(), "released with packets unwritten");
        for buf in self.runs.drain(..) {
            bufs.put(buf);
        }
    }
}

/// Copies `packet` behind a zero virtio_net_hdr into a fresh small buffer; `None` if it
/// does not fit one (a peer's oversized packet).
fn copy_alone(small: &mut BufferPool, packet: &[u8]) -> Option<(PacketBuf, Range<usize>)> {
    let end = COPY_OFFSET + VNET_HDR_LEN + packet.len();
    if end > small.buf_size() {
        return None;
    }
    let mut buf = fresh_small(small)?;
    let bytes = small.bytes_mut(&mut buf);
    bytes[COPY_OFFSET..COPY_OFFSET + VNET_HDR_LEN].fill(0);
    bytes[COPY_OFFSET + VNET_HDR_LEN..end].copy_from_slice(packet);
    Some((buf, COPY_OFFSET..end))
}
