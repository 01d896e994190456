//! What every path shares: the session layer, and [`Io`], everything a
//! request needs to be queued (the submission queue, packet buffers, send
//! slots, counters and the descriptors sends go to).
//!
//! The driver owns one [`Context`] and lends it to one path at a time, for one
//! completion. The halves are separate fields so that a session callback
//! (keepalives from the timers, disconnects at shutdown) can send through
//! `io` while the session layer is borrowed, and a path can seal with the
//! session layer while it fills buffers from `io`.

use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;
use std::time::Instant;

use ringway_offload::VNET_HDR_LEN;

use super::buffers::{BufferPool, PacketBuf, Pools};
use super::driver::DataPath;
use super::fq::{InsideQueue, OutsideQueue, TunWrite};
use super::gro::Gro;
use super::queue::Queue;
use super::slots::Completion;
use super::tx::{Permit, Send, TxKind, TxTable};
use crate::metrics::IoCounters;
pub(super) use crate::sessions::OsRandom;
use crate::sessions::{Sessions, FRAME_OFFSET, PAYLOAD_OFFSET};

/// The shared state every path works on.
#[derive(Debug)]
pub(super) struct Context {
    /// Who may connect and where each packet goes.
    pub sessions: Sessions,
    /// Randomness for session ids.
    pub ids: OsRandom,
    /// Submissions, buffers, send slots, counters.
    pub io: Io,
    /// With offload: the packets bound for the TUN in this round, coalesced where
    /// they continue a flow and written when the round's completions are all handled.
    pub gro: Option<Gro>,
    /// Set once shutdown began: completions are absorbed, nothing re-arms.
    pub stopping: bool,
    /// Set by a path that cannot go on (the TUN device was deleted): the driver shuts
    /// down and returns this as its error.
    pub fatal: Option<&'static str>,
}

/// Everything a request needs to be queued.
#[derive(Debug)]
pub(super) struct Io {
    /// Submissions and the in-flight count.
    pub queue: Queue,
    /// Packet buffers: small ones, and large ones with offload.
    pub bufs: Pools,
    /// Send slots.
    pub tx: TxTable,
    /// What the I/O saw.
    pub counters: IoCounters,
    /// Where TUN writes go.
    pub tun_fd: RawFd,
    /// Where UDP sends go, if UDP is on.
    pub udp_fd: Option<RawFd>,
    /// What the TUN and the UDP socket do for us, as detected at start.
    pub path: DataPath,
    /// Multi-datagram UDP sends: on while the socket and the route accept them (a
    /// refused one turns this off for good).
    pub gso: bool,
    /// With `fair_queue` on: where TUN writes wait for their turn (see `fq`).
    pub inside_queue: Option<InsideQueue>,
    /// With `fair_queue` on: where packets read from the TUN for UDP peers wait to be
    /// sealed and sent (see `fq`).
    pub outside_queue: Option<OutsideQueue>,
    /// When this round's completions were reaped: the arrival time of what the round
    /// queues.
    pub now: Instant,
}

/// Claims a tx slot, or counts a drop when every one is busy. A free function over
/// the two fields it needs, for callers that hold a buffer's bytes meanwhile.
pub(super) fn reserve(tx: &mut TxTable, counters: &mut IoCounters) -> Option<Permit> {
    let permit = tx.reserve();
    if permit.is_none() {
        counters.drop_tx_full += 1;
    }
    permit
}

/// A free small buffer for whoever holds a tx permit (or a small receive slot that
/// gave its own away); the pool's sizing guarantees one (see [`Io::check_pool`]).
pub(super) fn fresh_small(small: &mut BufferPool) -> Option<PacketBuf> {
    let buf = small.take();
    debug_assert!(
        buf.is_some(),
        "small buffer pool empty with a receive slot or a tx permit to serve"
    );
    if buf.is_none() {
        tracing::error!("small buffer pool empty with a receive slot or a tx permit to serve");
    }
    buf
}

impl Io {
    /// Claims a tx slot, or counts a drop when every one is busy.
    pub fn reserve(&mut self) -> Option<Permit> {
        let permit = reserve(&mut self.tx, &mut self.counters);
        self.check_pool();
        permit
    }

    /// The small pool holds `small rx slots + tx slots` buffers (no rx slots with
    /// offload, whose receives use large buffers), a receive slot holds at most one,
    /// and a send at most one: so whenever a tx slot is free (or just reserved), a small
    /// buffer is free for it or for the receive slot that gave its buffer away.
    fn check_pool(&self) {
        debug_assert!(
            self.bufs.small.available() >= self.tx.free_slots(),
            "{} buffers free for {} free tx slots",
            self.bufs.small.available(),
            self.tx.free_slots()
        );
    }

    /// The pool receive slots (TUN reads, UDP receives) take their buffers from:
    /// large ones with offload (a read may be a 64 KiB superpacket, a receive many
    /// datagrams), small ones without.
    pub fn rx_pool(&mut self) -> &mut BufferPool {
        if self.path.vnet_hdr {
            &mut self.bufs.large
        } else {
            &mut self.bufs.small
        }
    }

    /// A buffer for a receive slot that gave its own away (or never had one); the
    /// pools' sizing guarantees one.
    pub fn fresh_rx_buffer(&mut self) -> Option<PacketBuf> {
        let buf = self.rx_pool().take();
        debug_assert!(
            buf.is_some(),
            "receive buffer pool empty with a slot to serve"
        );
        if buf.is_none() {
            tracing::error!("receive buffer pool empty with a slot to serve");
        }
        buf
    }

    /// Sends bytes `frame` of `buf` as one UDP datagram to `to`.
    pub fn send_udp(
        &mut self,
        permit: Permit,
        buf: PacketBuf,
        frame: Range<usize>,
        to: SocketAddr,
    ) {
        self.send_udp_segments(permit, buf, frame, to, None);
    }

    /// Sends bytes `frames` of `buf` to `to`: one datagram, or with `segments`
    /// (`(size, count)`) `count` datagrams of `size` bytes each, the last possibly
    /// shorter, in one `sendmsg` (`UDP_SEGMENT`).
    pub fn send_udp_segments(
        &mut self,
        permit: Permit,
        buf: PacketBuf,
        frames: Range<usize>,
        to: SocketAddr,
        segments: Option<(u16, u32)>,
    ) {
        let Some(fd) = self.udp_fd else {
            self.tx.release(permit);
            self.bufs.put(buf);
            return;
        };
        let send = Send::Udp {
            fd,
            buf,
            frames,
            to,
            segment: segments.map(|(size, _)| size),
            datagrams: segments.map_or(1, |(_, count)| count),
        };
        self.tx.submit(&mut self.queue, &self.bufs, permit, send);
    }

    /// Writes the IP packet at `packet` in `buf` to the TUN (with offload, the
    /// packet starts with its virtio_net_hdr and may be a superpacket of `packets`
    /// segments). With the flow queue, the packet is queued instead and written by
    /// [`Io::pump_inside`] when its turn comes.
    pub fn write_tun(
        &mut self,
        permit: Permit,
        buf: PacketBuf,
        packet: Range<usize>,
        packets: u32,
    ) {
        let header = if self.path.vnet_hdr { VNET_HDR_LEN } else { 0 };
        let w = TunWrite {
            buf,
            packet,
            packets,
            header,
        };
        match &mut self.inside_queue {
            Some(q) => {
                // A queued packet holds no tx slot: the pump reserves one at dequeue.
                self.tx.release(permit);
                q.enqueue(self.now, &mut self.bufs, w);
            }
            None => self.submit_tun(permit, w),
        }
    }

    fn submit_tun(&mut self, permit: Permit, w: TunWrite) {
        let send = Send::Tun {
            fd: self.tun_fd,
            buf: w.buf,
            packet: w.packet,
            packets: w.packets,
        };
        self.tx.submit(&mut self.queue, &self.bufs, permit, send);
    }

    /// Starts queued TUN writes while fewer than the limit are in flight and a tx slot
    /// is free: called once a round's completions are all handled, so the round's
    /// receives were all drained into the queue first.
    pub fn pump_inside(&mut self) {
        // Out of `self` while it drains: a write is submitted through all of `Io`.
        let Some(mut q) = self.inside_queue.take() else {
            return;
        };
        while q.can_write() {
            let Some(permit) = self.tx.reserve() else {
                break;
            };
            match q.dequeue(self.now, &mut self.bufs) {
                Some(w) => self.submit_tun(permit, w),
                None => {
                    self.tx.release(permit);
                    break;
                }
            }
        }
        self.counters.fq_inside.update(q.stats());
        self.inside_queue = Some(q);
        self.check_pool();
    }

    /// Copies `parts` back to back from `offset` in a fresh small buffer under a
    /// fresh permit: for what does not already sit in a slot buffer (handshake
    /// replies, keepalives, packets from a TCP stream). Counts a drop if no slot is
    /// free.
    fn copy_out(
        &mut self,
        offset: usize,
        parts: &[&[u8]],
    ) -> Option<(Permit, PacketBuf, Range<usize>)> {
        let permit = self.reserve()?;
        let Some(mut buf) = fresh_small(&mut self.bufs.small) else {
            self.tx.release(permit);
            return None;
        };
        let dst = &mut self.bufs.small.bytes_mut(&mut buf)[offset..];
        let mut n = 0;
        for part in parts {
            let take = part.len().min(dst.len() - n);
            dst[n..n + take].copy_from_slice(&part[..take]);
            n += take;
        }
        Some((permit, buf, offset..offset + n))
    }

    /// Sends `frame` to a UDP peer from a copy.
    pub fn send_udp_copy(&mut self, to: SocketAddr, frame: &[u8]) {
        if self.udp_fd.is_none() {
            return;
        }
        if let Some((permit, buf, range)) = self.copy_out(FRAME_OFFSET, &[frame]) {
            self.send_udp(permit, buf, range, to);
        }
    }

    /// Writes `packet` to the TUN from a copy (without offload: no virtio_net_hdr).
    pub fn write_tun_copy(&mut self, packet: &[u8]) {
        if let Some((permit, buf, range)) = self.copy_out(PAYLOAD_OFFSET, &[packet]) {
            self.write_tun(permit, buf, range, 1);
        }
    }

    /// A send completed: its slot and buffer are free again.
    pub fn on_sent(&mut self, c: &Completion) {
        let Some(sent) = self.tx.complete(c) else {
            self.counters.stale_completions += 1;
            return;
        };
        self.bufs.put(sent.buf);
        if sent.kind == TxKind::Tun {
            if let Some(q) = &mut self.inside_queue {
                q.on_written();
            }
        }
        self.check_pool();
        let packets = u64::from(sent.packets);
        match c.error() {
            Some(e) => {
                let refused = matches!(-c.res, libc::EIO | libc::EINVAL | libc::EMSGSIZE);
                if sent.segmented && refused && self.gso {
                    // The outgoing device cannot checksum (EIO) or the kernel refuses
                    // this segmentation: send datagram by datagram from now on. This
                    // send's datagrams are lost; the inner flows retransmit.
                    self.gso = false;
                    self.counters.gso_refused += 1;
                    tracing::warn!(error = %e, "the kernel refused a UDP_SEGMENT send: sending one datagram per call from now on");
                } else if !c.is_retry_or_cancel() {
                    tracing::debug!(kind = ?sent.kind, error = %e, "send failed");
                }
                self.counters.io_errors += 1;
            }
            None if sent.kind == TxKind::Udp => {
                self.counters.udp_tx_sends += 1;
                self.counters.udp_tx_datagrams += packets;
            }
            None => {
                self.counters.tun_tx_writes += 1;
                self.counters.tun_tx_packets += packets;
                if packets > 1 {
                    self.counters.tun_tx_superpackets += 1;
                }
            }
        }
    }

    /// Never free kernel-shared memory: the kernel may still use it.
    pub fn leak(&mut self) {
        self.bufs.leak();
        self.tx.leak();
    }
}
