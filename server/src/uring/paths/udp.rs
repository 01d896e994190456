//! The UDP path: datagrams from peers, opened in place and written to the TUN
//! from the buffer they arrived in; handshake replies go back as copies.
//!
//! Each receive slot has a buffer token and a `msghdr` (in a [`KernelBox`])
//! that the kernel fills with the sender's address. A datagram that opens to
//! an IP packet moves, buffer and all, to a tx slot for the TUN write, and the
//! receive re-arms with a fresh buffer.
#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::time::Instant;

use io_uring::{opcode, types};

use super::super::buffers::{PacketBuf, Pools};
use super::super::context::{Context, Io};
use super::super::gro::Parts;
use super::super::kernel_box::KernelBox;
use super::super::msg::MsgBuf;
use super::super::slots::{Completion, SlotTable};
use super::super::user_data::{Path, UserData};
use crate::sessions::{Outside, OutsideAction, FRAME_OFFSET};

/// UDP receives.
#[derive(Debug)]
pub(in crate::uring) struct UdpPath {
    fd: RawFd,
    recvs: SlotTable<PacketBuf>,
    msgs: KernelBox<[MsgBuf<1>]>,
}

impl UdpPath {
    /// `slots` idle receives on `fd`.
    pub fn new(fd: RawFd, slots: u32) -> Self {
        UdpPath {
            fd,
            recvs: SlotTable::new(Path::UdpRx, slots),
            msgs: MsgBuf::table(slots as usize),
        }
    }

    /// Arms every receive.
    pub fn start(&mut self, io: &mut Io) {
        for slot in 0..self.recvs.len() {
            self.arm_with_fresh(io, slot);
        }
    }

    fn arm_with_fresh(&mut self, io: &mut Io, slot: u32) {
        if let Some(buf) = io.fresh_rx_buffer() {
            self.arm(io, slot, buf);
        }
    }

    fn arm(&mut self, io: &mut Io, slot: u32, buf: PacketBuf) {
        debug_assert!(!self.recvs.is_armed(slot));
        let pool = io.bufs.of(&buf);
        let len = pool.buf_size() - FRAME_OFFSET;
        let ptr = pool.ptr(&buf, FRAME_OFFSET, len);
        let msg = &self.msgs.get()[slot as usize];
        // SAFETY: slot `slot` is idle (its last receive completed, or it never
        // ran), so no request using its header is in flight.
        unsafe { msg.prepare_recv(ptr, len) };
        let ud = self.recvs.arm(slot, buf);
        let e = opcode::RecvMsg::new(types::Fd(self.fd), msg.header())
            .build()
            .user_data(ud.encode());
        // SAFETY: the header, its iovec, name and control space are
        // `msgs[slot]`, in a KernelBox (fixed address, freed only once the ring
        // holds no request); the data pointer lies in the buffer whose token
        // now sits in armed slot `slot`. The token leaves the slot, and the
        // header is read or rewritten, only after this receive's completion
        // (`SlotTable::complete`) or with the entry taken back unsubmitted.
        unsafe { io.queue.push(e) };
    }

    /// A datagram arrived: open it and write it to the TUN, or answer it.
    pub fn on_recv(&mut self, ctx: &mut Context, c: &Completion, now: Instant) {
        let Some((slot, mut buf)) = self.recvs.complete(c) else {
            ctx.io.counters.stale_completions += 1;
            return;
        };
        let io = &mut ctx.io;
        if ctx.stopping {
            io.bufs.put(buf);
            return;
        }
        let Some(n) = c.bytes() else {
            if let Some(e) = c.error().filter(|_| !c.is_retry_or_cancel()) {
                io.counters.io_errors += 1;
                tracing::debug!(error = %e, "UDP receive failed");
            }
            self.arm(io, slot, buf);
            return;
        };
        // SAFETY: this slot's receive just completed (`complete` above
        // disarmed it) and no other request uses its header.
        let got = unsafe { self.msgs.get()[slot as usize].received() };
        if got.flags & libc::MSG_TRUNC != 0 {
            io.counters.drop_truncated += 1;
            self.arm(io, slot, buf);
            return;
        }
        let Some(from) = got.from else {
            ctx.sessions.counters.drop_malformed += 1;
            self.arm(io, slot, buf);
            return;
        };
        io.counters.udp_rx_recvs += 1;
        if ctx.gro.is_some() {
            // Datagrams of `size` bytes, the last possibly shorter.
            let size = got.gro_size.filter(|&s| s < n).unwrap_or(n);
            let count = n.div_ceil(size);
            io.counters.udp_rx_datagrams += count as u64;
            let buf = if count == 1 {
                self.one(ctx, buf, n, from, now)
            } else {
                self.batch(ctx, buf, n, size, from, now)
            };
            self.arm(&mut ctx.io, slot, buf);
            return;
        }
        io.counters.udp_rx_datagrams += 1;
        let b = io.bufs.small.bytes_mut(&mut buf);
        let end = (FRAME_OFFSET + n).min(b.len());
        let frame = &mut b[FRAME_OFFSET..end];
        match ctx
            .sessions
            .handle_outside(frame, Outside::Udp(from), now, &mut ctx.ids)
        {
            OutsideAction::None => self.arm(io, slot, buf),
            OutsideAction::ToInside(range) => match io.reserve() {
                Some(permit) => {
                    let packet = FRAME_OFFSET + range.start..FRAME_OFFSET + range.end;
                    io.write_tun(permit, buf, packet, 1);
                    self.arm_with_fresh(io, slot);
                }
                None => self.arm(io, slot, buf),
            },
            OutsideAction::Reply(Outside::Udp(to), bytes) => {
                io.send_udp_copy(to, &bytes);
                self.arm(io, slot, buf);
            }
            // A datagram is only ever answered over UDP.
            OutsideAction::Reply(Outside::Tcp(_), _) => self.arm(io, slot, buf),
        }
    }

    /// With offload: one datagram of `n` bytes in large buffer `buf`. Returns the
    /// buffer to re-arm with (a fresh one if this one now carries a TUN write).
    fn one(
        &mut self,
        ctx: &mut Context,
        mut buf: PacketBuf,
        n: usize,
        from: std::net::SocketAddr,
        now: Instant,
    ) -> PacketBuf {
        let io = &mut ctx.io;
        let frame = &mut io.bufs.large.bytes_mut(&mut buf)[FRAME_OFFSET..FRAME_OFFSET + n];
        match ctx
            .sessions
            .handle_outside(frame, Outside::Udp(from), now, &mut ctx.ids)
        {
            OutsideAction::None | OutsideAction::Reply(Outside::Tcp(_), _) => buf,
            OutsideAction::ToInside(range) => {
                let packet = FRAME_OFFSET + range.start..FRAME_OFFSET + range.end;
                match &mut ctx.gro {
                    Some(gro) => gro.push_owned(io, buf, packet),
                    None => buf,
                }
            }
            OutsideAction::Reply(Outside::Udp(to), bytes) => {
                io.send_udp_copy(to, &bytes);
                buf
            }
        }
    }

    /// With offload: `n` bytes of datagrams of `size` bytes each (the last possibly
    /// shorter) from one peer, in large buffer `buf`: each opened in place and offered
    /// to the coalescing batch. Returns the buffer, to re-arm with.
    fn batch(
        &mut self,
        ctx: &mut Context,
        mut buf: PacketBuf,
        n: usize,
        size: usize,
        from: std::net::SocketAddr,
        now: Instant,
    ) -> PacketBuf {
        let Some(gro) = &mut ctx.gro else {
            return buf;
        };
        let io = &mut ctx.io;
        for start in (0..n).step_by(size) {
            if gro.is_full() {
                gro.flush(io);
            }
            let at = FRAME_OFFSET + start;
            let frame = &mut io.bufs.large.bytes_mut(&mut buf)[at..at + size.min(n - start)];
            match ctx
                .sessions
                .handle_outside(frame, Outside::Udp(from), now, &mut ctx.ids)
            {
                OutsideAction::ToInside(range) => {
                    let parts = Parts {
                        tx: &mut io.tx,
                        small: &mut io.bufs.small,
                        large: &io.bufs.large,
                        counters: &mut io.counters,
                    };
                    gro.push_copy(parts, &frame[range]);
                }
                OutsideAction::Reply(Outside::Udp(to), bytes) => io.send_udp_copy(to, &bytes),
                OutsideAction::None | OutsideAction::Reply(Outside::Tcp(_), _) => {}
            }
        }
        buf
    }

    /// The requests in flight, to cancel at shutdown.
    pub fn in_flight(&self) -> impl Iterator<Item = UserData> + '_ {
        self.recvs.in_flight()
    }

    /// Forgets a request taken back from the backlog unsubmitted.
    pub fn forget(&mut self, bufs: &mut Pools, ud: UserData) -> bool {
        match self.recvs.forget(ud) {
            Some(buf) => {
                bufs.put(buf);
                true
            }
            None => false,
        }
    }

    /// Never free the headers: the kernel may still write them.
    pub fn leak(&mut self) {
        self.msgs.leak();
    }
}
