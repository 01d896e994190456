//! Send slots: UDP datagrams and TUN writes.
//!
//! A slot is claimed only through [`TxTable::reserve`], which hands out a
//! [`Permit`]; [`TxTable::submit`] spends the permit and the buffer token, and
//! only the send's completion ([`TxTable::complete`]) frees the slot and gives
//! the token back. While the send is in flight the slot holds the token, so
//! nothing else can touch the buffer, and its `msghdr` lives in a
//! [`KernelBox`], so nothing else can move or free it.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;

use io_uring::{opcode, types};

use super::buffers::{PacketBuf, Pools};
use super::kernel_box::KernelBox;
use super::msg::MsgBuf;
use super::queue::Queue;
use super::slots::{Completion, SlotTable};
use super::user_data::Path;

/// The claim on one free tx slot, from [`TxTable::reserve`]: spent by
/// [`TxTable::submit`] or handed back with [`TxTable::release`]. Not `Copy`:
/// one claim, one send.
#[derive(Debug)]
#[must_use = "a permit holds a tx slot until it is submitted or released"]
pub(super) struct Permit {
    slot: u32,
}

/// One send, with the buffer it sends from.
#[derive(Debug)]
pub(super) enum Send {
    /// One `sendmsg` to a UDP peer: bytes `frames` of `buf`, one datagram, or with `segment`
    /// (`UDP_SEGMENT`) `datagrams` datagrams of `segment` bytes, the last possibly shorter.
    Udp {
        /// The UDP socket.
        fd: RawFd,
        /// The buffer holding the frames.
        buf: PacketBuf,
        /// Where the frames lie in it, back to back.
        frames: Range<usize>,
        /// The peer.
        to: SocketAddr,
        /// Datagram size for a multi-datagram send.
        segment: Option<u16>,
        /// Datagrams in the send (1 without `segment`).
        datagrams: u32,
    },
    /// One TUN write: the IP packet (or superpacket, behind its virtio_net_hdr) at `packet`
    /// in `buf`.
    Tun {
        /// The TUN device.
        fd: RawFd,
        /// The buffer holding the packet.
        buf: PacketBuf,
        /// Where the packet lies in it.
        packet: Range<usize>,
        /// Inner packets it carries (a coalesced superpacket's segments; else 1).
        packets: u32,
    },
}

/// Which kind of send a slot carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxKind {
    /// A UDP datagram.
    Udp,
    /// A TUN write.
    Tun,
}

/// What a tx slot owns while its send is in flight, and what the send carries.
#[derive(Debug)]
struct InFlight {
    buf: PacketBuf,
    kind: TxKind,
    packets: u32,
    segmented: bool,
}

/// A finished send: what it was and the buffer it gives back.
#[derive(Debug)]
pub(super) struct Sent {
    /// What was sent.
    pub kind: TxKind,
    /// The buffer, free again.
    pub buf: PacketBuf,
    /// Datagrams (UDP) or inner packets (TUN) the send carried.
    pub packets: u32,
    /// A multi-datagram (`UDP_SEGMENT`) send.
    pub segmented: bool,
}

/// Slots for sends.
#[derive(Debug)]
pub(super) struct TxTable {
    slots: SlotTable<InFlight>,
    msgs: KernelBox<[MsgBuf<1>]>,
    free: Vec<u32>,
}

impl TxTable {
    /// `n` free slots.
    pub fn new(n: u32) -> Self {
        TxTable {
            slots: SlotTable::new(Path::Tx, n),
            msgs: MsgBuf::table(n as usize),
            free: (0..n).rev().collect(),
        }
    }

    /// Slots in all.
    pub fn len(&self) -> u32 {
        self.slots.len()
    }

    /// Slots neither in flight nor reserved.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Claims a free slot.
    pub fn reserve(&mut self) -> Option<Permit> {
        self.free.pop().map(|slot| Permit { slot })
    }

    /// Hands back a permit that will not be used.
    pub fn release(&mut self, permit: Permit) {
        self.free.push(permit.slot);
    }

    /// Queues `send` in the permit's slot, which owns its buffer until the
    /// completion.
    pub fn submit(&mut self, queue: &mut Queue, bufs: &Pools, permit: Permit, send: Send) {
        let Permit { slot } = permit;
        debug_assert!(
            !self.slots.is_armed(slot),
            "tx slot {slot} reserved while in flight"
        );
        let msg = &self.msgs.get()[slot as usize];
        let (entry, owned) = match send {
            Send::Udp {
                fd,
                buf,
                frames,
                to,
                segment,
                datagrams,
            } => {
                let ptr = bufs.of(&buf).ptr(&buf, frames.start, frames.len());
                // SAFETY: the permit proves slot `slot` free: no request using
                // its header is in flight.
                unsafe { msg.prepare_send(ptr, frames.len(), to, segment) };
                let e = opcode::SendMsg::new(types::Fd(fd), msg.header()).build();
                (
                    e,
                    InFlight {
                        buf,
                        kind: TxKind::Udp,
                        packets: datagrams,
                        segmented: segment.is_some(),
                    },
                )
            }
            Send::Tun {
                fd,
                buf,
                packet,
                packets,
            } => {
                let ptr = bufs.of(&buf).ptr(&buf, packet.start, packet.len());
                let e = opcode::Write::new(types::Fd(fd), ptr, packet.len() as u32).build();
                (
                    e,
                    InFlight {
                        buf,
                        kind: TxKind::Tun,
                        packets,
                        segmented: false,
                    },
                )
            }
        };
        let ud = self.slots.arm(slot, owned);
        // SAFETY: the entry points at the bytes of the buffer whose token now
        // sits in armed slot `slot`, and (for sendmsg) at `msgs[slot]` in a
        // KernelBox. The token leaves the slot, and the slot becomes free,
        // only through this send's completion (`complete` below); the pool's
        // and the table's memory is freed only once the ring holds no
        // request, and leaked otherwise (`Driver::drop`).
        unsafe { queue.push(entry.user_data(ud.encode())) };
    }

    /// The send `c` belongs to is over: frees its slot and returns its buffer.
    /// `None` for a late or foreign completion.
    pub fn complete(&mut self, c: &Completion) -> Option<Sent> {
        let (
            slot,
            InFlight {
                buf,
                kind,
                packets,
                segmented,
            },
        ) = self.slots.complete(c)?;
        self.free.push(slot);
        Some(Sent {
            kind,
            buf,
            packets,
            segmented,
        })
    }

    /// Never free the headers: the kernel may still read them.
    pub fn leak(&mut self) {
        self.msgs.leak();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_free_again_only_after_its_completion() {
        let mut bufs = Pools {
            small: crate::uring::buffers::BufferPool::new(2, 64),
            large: crate::uring::buffers::BufferPool::new(0, 0),
        };
        let mut tx = TxTable::new(1);
        let mut queue = Queue::with_capacity(2);
        let p = tx.reserve().expect("one slot");
        assert!(tx.reserve().is_none());
        let buf = bufs.small.take().unwrap();
        let send = Send::Tun {
            fd: -1,
            buf,
            packet: 16..48,
            packets: 1,
        };
        tx.submit(&mut queue, &bufs, p, send);
        assert_eq!(tx.free_slots(), 0);
        assert_eq!(queue.inflight(), 1);
        let ud = crate::uring::user_data::UserData {
            path: Path::Tx,
            slot: 0,
            generation: 1,
        };
        let stale = Completion {
            ud: crate::uring::user_data::UserData {
                generation: 7,
                ..ud
            },
            res: 32,
            flags: 0,
        };
        assert!(tx.complete(&stale).is_none());
        assert_eq!(tx.free_slots(), 0);
        let sent = tx
            .complete(&Completion {
                ud,
                res: 32,
                flags: 0,
            })
            .expect("the send's own completion");
        assert_eq!((sent.kind, sent.packets), (TxKind::Tun, 1));
        bufs.put(sent.buf);
        assert_eq!((tx.free_slots(), bufs.small.available()), (1, 2));
        let p = tx.reserve().unwrap();
        tx.release(p);
        assert_eq!(tx.free_slots(), 1);
    }
}
