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

use io_uring::{cqueue, opcode, types};

use super::super::buf_ring::BufRing;
use super::super::buffers::{PacketBuf, Pools};
use super::super::context::{Context, Io};
use super::super::gro::Parts;
use super::super::kernel_box::KernelBox;
use super::super::msg::{MsgBuf, MultishotLayout};
use super::super::slots::{Completion, Request, SlotTable};
use super::super::user_data::{Path, UserData};
use crate::sessions::{Outside, OutsideAction, FRAME_OFFSET};

/// UDP receives: single ones in slots, or one multishot receive.
#[derive(Debug)]
pub(in crate::uring) struct UdpPath {
    fd: RawFd,
    recvs: SlotTable<PacketBuf>,
    msgs: KernelBox<[MsgBuf<1>]>,
    multi: Option<Multishot>,
}

/// The multishot receive and the ring it takes buffers from.
#[derive(Debug)]
struct Multishot {
    ring: BufRing,
    /// Its template header (name and control sizes), read by the kernel when armed.
    msg: KernelBox<MsgBuf<1>>,
    request: Request,
    /// Buffers kept provided.
    buffers: u32,
}

impl UdpPath {
    /// `slots` idle receives on `fd`.
    pub fn new(fd: RawFd, slots: u32) -> Self {
        UdpPath {
            fd,
            recvs: SlotTable::new(Path::UdpRx, slots),
            msgs: MsgBuf::table(slots as usize),
            multi: None,
        }
    }

    /// One multishot receive on `fd`, into `buffers` large buffers provided through
    /// `ring` (already registered with the io_uring).
    pub fn multishot(fd: RawFd, buffers: u32, ring: BufRing) -> Self {
        UdpPath {
            fd,
            recvs: SlotTable::new(Path::UdpRx, 0),
            msgs: MsgBuf::table(0),
            multi: Some(Multishot {
                ring,
                msg: MsgBuf::boxed(),
                request: Request::default(),
                buffers,
            }),
        }
    }

    /// Arms every receive (or provides the ring's buffers and arms the multishot one).
    pub fn start(&mut self, io: &mut Io) {
        if let Some(m) = &mut self.multi {
            for _ in 0..m.buffers {
                let Some(buf) = io.fresh_rx_buffer() else {
                    break;
                };
                if let Err(buf) = m.ring.provide(&io.bufs.large, buf) {
                    io.bufs.put(buf);
                }
            }
            arm_multishot(self.fd, m, io);
        }
        for slot in 0..self.recvs.len() {
            self.arm_with_fresh(io, slot);
        }
    }

    /// The provided-buffer ring, to unregister and empty once the loop is over.
    pub fn buf_ring(&mut self) -> Option<&mut BufRing> {
        self.multi.as_mut().map(|m| &mut m.ring)
    }

    /// A completion of the multishot receive: process the datagrams in the buffer it
    /// names, provide a buffer back, and re-arm if the receive ended.
    pub fn on_recv_multi(&mut self, ctx: &mut Context, c: &Completion, now: Instant) {
        let Some(m) = &mut self.multi else {
            ctx.io.counters.stale_completions += 1;
            return;
        };
        if !m.request.complete(c) {
            ctx.io.counters.stale_completions += 1;
            return;
        }
        let buf = cqueue::buffer_select(c.flags).and_then(|bid| m.ring.take(bid));
        if ctx.stopping {
            if let Some(buf) = buf {
                ctx.io.bufs.put(buf);
            }
            return;
        }
        match (c.bytes(), buf) {
            (Some(n), Some(buf)) => {
                let back = received_multi(ctx, buf, n, now);
                if let Err(buf) = m.ring.provide(&ctx.io.bufs.large, back) {
                    ctx.io.bufs.put(buf);
                }
            }
            (_, Some(buf)) => {
                if let Err(buf) = m.ring.provide(&ctx.io.bufs.large, buf) {
                    ctx.io.bufs.put(buf);
                }
            }
            (None, None) => {
                // ENOBUFS: the kernel found the ring empty and ended the receive;
                // the buffers this round processed are back now.
                if let Some(e) = c.error().filter(|_| !c.is_retry_or_cancel()) {
                    ctx.io.counters.io_errors += 1;
                    tracing::debug!(error = %e, "UDP multishot receive failed");
                }
            }
            (Some(_), None) => ctx.io.counters.stale_completions += 1,
        }
        if !c.more() {
            arm_multishot(self.fd, m, &mut ctx.io);
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
                one(ctx, buf, FRAME_OFFSET, n, from, now)
            } else {
                batch(ctx, buf, FRAME_OFFSET, n, size, from, now)
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

    /// The requests in flight, to cancel at shutdown.
    pub fn in_flight(&self) -> impl Iterator<Item = UserData> + '_ {
        let multi = self
            .multi
            .as_ref()
            .and_then(|m| m.request.in_flight(Path::UdpRxMulti, 0));
        self.recvs.in_flight().chain(multi)
    }

    /// Forgets a request taken back from the backlog unsubmitted.
    pub fn forget(&mut self, bufs: &mut Pools, ud: UserData) -> bool {
        if ud.path == Path::UdpRxMulti {
            return self.multi.as_mut().is_some_and(|m| m.request.forget(ud));
        }
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
        if let Some(m) = &mut self.multi {
            m.msg.leak();
            m.ring.leak();
        }
    }
}

/// Arms the multishot receive: buffers come from `m.ring`, the name and control sizes
/// from its template header.
fn arm_multishot(fd: RawFd, m: &mut Multishot, io: &mut Io) {
    let msg = m.msg.get();
    // SAFETY: the multishot request is not armed (it just ended, or never ran), so no
    // request uses this header.
    unsafe { msg.prepare_multishot_recv(MultishotLayout::NAME as libc::socklen_t) };
    let ud = m.request.arm(Path::UdpRxMulti, 0);
    io.counters.udp_rx_multishot_arms += 1;
    let e = opcode::RecvMsgMulti::new(types::Fd(fd), msg.header(), m.ring.bgid())
        .build()
        .user_data(ud.encode());
    // SAFETY: the header, its name and control space are in a KernelBox (fixed
    // address, freed only once the ring holds no request, or leaked); the data goes
    // into buffers of the registered ring, each of which this path's `BufRing` holds
    // the token of until a completion names it.
    unsafe { io.queue.push(e) };
}

/// A multishot completion of `n` bytes in `buf`: the sender and datagram layout from
/// the header the kernel wrote, then the datagrams. Returns the buffer to provide back.
fn received_multi(ctx: &mut Context, mut buf: PacketBuf, n: usize, now: Instant) -> PacketBuf {
    let io = &mut ctx.io;
    let got = {
        let bytes = io.bufs.large.bytes_mut(&mut buf);
        MultishotLayout::parse(&bytes[..n.min(bytes.len())])
    };
    let Some(got) = got else {
        ctx.sessions.counters.drop_malformed += 1;
        return buf;
    };
    if got.truncated {
        io.counters.drop_truncated += 1;
        return buf;
    }
    let Some(from) = got.from else {
        ctx.sessions.counters.drop_malformed += 1;
        return buf;
    };
    let at = MultishotLayout::PAYLOAD;
    let n = got.payload_len.min(io.bufs.large.buf_size() - at);
    if n == 0 {
        return buf;
    }
    io.counters.udp_rx_recvs += 1;
    let size = got.gro_size.filter(|&s| s < n).unwrap_or(n);
    let count = n.div_ceil(size);
    io.counters.udp_rx_datagrams += count as u64;
    if count == 1 {
        one(ctx, buf, at, n, from, now)
    } else {
        batch(ctx, buf, at, n, size, from, now)
    }
}

/// With offload: one datagram of `n` bytes at `at` in large buffer `buf`. Returns the
/// buffer to re-arm with (a fresh one if this one now carries a TUN write).
fn one(
    ctx: &mut Context,
    mut buf: PacketBuf,
    at: usize,
    n: usize,
    from: std::net::SocketAddr,
    now: Instant,
) -> PacketBuf {
    let io = &mut ctx.io;
    let frame = &mut io.bufs.large.bytes_mut(&mut buf)[at..at + n];
    match ctx
        .sessions
        .handle_outside(frame, Outside::Udp(from), now, &mut ctx.ids)
    {
        OutsideAction::None | OutsideAction::Reply(Outside::Tcp(_), _) => buf,
        OutsideAction::ToInside(range) => {
            let packet = at + range.start..at + range.end;
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

/// With offload: `n` bytes (at `at`) of datagrams of `size` bytes each (the last possibly
/// shorter) from one peer, in large buffer `buf`: each opened in place and offered
/// to the coalescing batch. Returns the buffer, to re-arm with.
fn batch(
    ctx: &mut Context,
    mut buf: PacketBuf,
    at: usize,
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
        let from_at = at + start;
        let frame = &mut io.bufs.large.bytes_mut(&mut buf)[from_at..from_at + size.min(n - start)];
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
