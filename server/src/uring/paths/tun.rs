//! The TUN path: IP packets read from the TUN, sealed in place and sent to
//! the peer that owns their destination.
//!
//! A read lands at [`PAYLOAD_OFFSET`] in its slot's buffer; the session layer
//! writes the transport header in front and seals in place; the **same
//! buffer** then moves to a tx slot (UDP) and the read re-arms with a fresh
//! one, or the frame is copied once into the connection's send queue (TCP) and
//! the read re-arms with the buffer it had.
//!
//! A non-blocking TUN read with nothing to read completes with EAGAIN. Such a
//! slot gives its buffer back and parks behind one multishot readiness poll,
//! which re-arms a few parked reads each time the TUN becomes readable.
#![allow(unsafe_code)]

use std::os::fd::RawFd;
use std::time::Instant;

use io_uring::{opcode, types};
use ringway_proto::wire::transport::TAG_LEN;
use ringway_proto::wire::STREAM_PREFIX_LEN;

use super::super::buffers::{BufferPool, PacketBuf};
use super::super::context::{Context, Io};
use super::super::slots::{Completion, Request, SlotTable};
use super::super::user_data::{Path, UserData};
use super::tcp::TcpPath;
use crate::sessions::{InsideAction, Outside, FRAME_OFFSET, PAYLOAD_OFFSET};

/// TUN reads re-armed per readiness event. A packet arriving wakes the poll
/// once; re-arming every parked read would have all but one fail with EAGAIN
/// (the storm a non-blocking TUN invites), so only a few go, and each read that
/// gets a packet re-arms at once: the TUN is read until it is empty.
const WAKE_BURST: usize = 4;

/// TUN reads and the readiness poll behind the parked ones.
#[derive(Debug)]
pub(in crate::uring) struct TunPath {
    fd: RawFd,
    reads: SlotTable<PacketBuf>,
    /// Read slots that hit EAGAIN and wait for the poll; they hold no buffer.
    parked: Vec<u32>,
    poll: Request,
}

impl TunPath {
    /// `slots` idle reads on `fd`.
    pub fn new(fd: RawFd, slots: u32) -> Self {
        TunPath {
            fd,
            reads: SlotTable::new(Path::TunRx, slots),
            parked: Vec::with_capacity(slots as usize),
            poll: Request::default(),
        }
    }

    /// Arms every read.
    pub fn start(&mut self, io: &mut Io) {
        for slot in 0..self.reads.len() {
            self.arm_with_fresh(io, slot);
        }
    }

    fn arm_with_fresh(&mut self, io: &mut Io, slot: u32) {
        if let Some(buf) = io.fresh_buffer() {
            self.arm(io, slot, buf);
        }
    }

    fn arm(&mut self, io: &mut Io, slot: u32, buf: PacketBuf) {
        // Room for the packet and the tag sealing appends after it.
        let len = io.bufs.buf_size() - PAYLOAD_OFFSET - TAG_LEN;
        let ptr = io.bufs.ptr(&buf, PAYLOAD_OFFSET, len);
        let ud = self.reads.arm(slot, buf);
        let e = opcode::Read::new(types::Fd(self.fd), ptr, len as u32)
            .build()
            .user_data(ud.encode());
        // SAFETY: `ptr..ptr + len` lies in the buffer whose token now sits in
        // armed read slot `slot`; the token leaves the slot only through this
        // read's completion (`SlotTable::complete`) or with the entry taken
        // back unsubmitted (`forget`), so nothing touches those bytes until
        // then. The pool is freed only once the ring holds no request.
        unsafe { io.queue.push(e) };
    }

    /// One multishot poll stands for every parked read: it completes each time
    /// the TUN becomes readable, without being re-armed.
    fn arm_poll(&mut self, io: &mut Io) {
        if self.poll.is_armed() {
            return;
        }
        let ud = self.poll.arm(Path::TunPoll, 0);
        let e = opcode::PollAdd::new(types::Fd(self.fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(ud.encode());
        // SAFETY: a poll carries no pointer into our memory.
        unsafe { io.queue.push(e) };
    }

    /// A read completed: seal what it read and send it, or re-arm.
    pub fn on_read(&mut self, ctx: &mut Context, tcp: &mut TcpPath, c: &Completion, now: Instant) {
        let Some((slot, mut buf)) = self.reads.complete(c) else {
            ctx.io.counters.stale_completions += 1;
            return;
        };
        let io = &mut ctx.io;
        if ctx.stopping {
            io.bufs.put(buf);
            return;
        }
        let Some(n) = c.bytes() else {
            if c.res == -libc::EAGAIN {
                // Nothing to read: park until the TUN says it is readable.
                io.counters.eagain += 1;
                io.bufs.put(buf);
                self.parked.push(slot);
                self.arm_poll(io);
                return;
            }
            if let Some(e) = c.error().filter(|_| !c.is_retry_or_cancel()) {
                io.counters.io_errors += 1;
                tracing::debug!(error = %e, "TUN read failed");
            }
            self.arm(io, slot, buf);
            return;
        };
        let frame = &mut io.bufs.bytes_mut(&mut buf)[FRAME_OFFSET..];
        match ctx.sessions.handle_inside(frame, n, now) {
            InsideAction::Drop => self.arm(io, slot, buf),
            InsideAction::Send {
                to: Outside::Udp(addr),
                len,
            } => match io.reserve() {
                Some(permit) => {
                    // The filled buffer now belongs to the send; read into a fresh one.
                    io.send_udp(permit, buf, FRAME_OFFSET..FRAME_OFFSET + len, addr);
                    self.arm_with_fresh(io, slot);
                }
                None => self.arm(io, slot, buf),
            },
            InsideAction::Send {
                to: Outside::Tcp(id),
                len,
            } => {
                // The length prefix goes in the headroom in front of the frame,
                // then the connection's queue takes its one copy.
                let start = FRAME_OFFSET - STREAM_PREFIX_LEN;
                io.bufs.bytes_mut(&mut buf)[start..FRAME_OFFSET]
                    .copy_from_slice(&(len as u16).to_be_bytes());
                tcp.send_prefixed(io, id, &mut buf, start..FRAME_OFFSET + len);
                self.arm(io, slot, buf);
            }
        }
    }

    /// The TUN became readable (or the poll ended): re-arm a few parked reads.
    pub fn on_poll(&mut self, ctx: &mut Context, c: &Completion) {
        if !self.poll.complete(c) {
            ctx.io.counters.stale_completions += 1;
            return;
        }
        if ctx.stopping {
            return;
        }
        for _ in 0..WAKE_BURST {
            let Some(slot) = self.parked.pop() else {
                break;
            };
            self.arm_with_fresh(&mut ctx.io, slot);
        }
        if !self.parked.is_empty() {
            self.arm_poll(&mut ctx.io);
        }
    }

    /// The requests in flight, to cancel at shutdown.
    pub fn in_flight(&self) -> impl Iterator<Item = UserData> + '_ {
        self.reads
            .in_flight()
            .chain(self.poll.in_flight(Path::TunPoll, 0))
    }

    /// Forgets a request taken back from the backlog unsubmitted; false if it
    /// is not one of ours.
    pub fn forget(&mut self, bufs: &mut BufferPool, ud: UserData) -> bool {
        match ud.path {
            Path::TunRx => match self.reads.forget(ud) {
                Some(buf) => {
                    bufs.put(buf);
                    true
                }
                None => false,
            },
            Path::TunPoll => self.poll.forget(ud),
            _ => false,
        }
    }
}
