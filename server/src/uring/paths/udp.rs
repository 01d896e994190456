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

use super::super::buffers::{BufferPool, PacketBuf};
use super::super::context::{Context, Io};
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
        if let Some(buf) = io.fresh_buffer() {
            self.arm(io, slot, buf);
        }
    }

    fn arm(&mut self, io: &mut Io, slot: u32, buf: PacketBuf) {
        debug_assert!(!self.recvs.is_armed(slot));
        let len = io.bufs.buf_size() - FRAME_OFFSET;
        let ptr = io.bufs.ptr(&buf, FRAME_OFFSET, len);
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
        let b = io.bufs.bytes_mut(&mut buf);
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
                    io.write_tun(permit, buf, packet);
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

    /// The requests in flight, to cancel at shutdown.
    pub fn in_flight(&self) -> impl Iterator<Item = UserData> + '_ {
        self.recvs.in_flight()
    }

    /// Forgets a request taken back from the backlog unsubmitted.
    pub fn forget(&mut self, bufs: &mut BufferPool, ud: UserData) -> bool {
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
