//! The TUN path: IP packets read from the TUN, sealed in place and sent to
//! the peer that owns their destination.
//!
//! A read lands at [`PAYLOAD_OFFSET`] in its slot's buffer; the session layer
//! writes the transport header in front and seals in place; the **same
//! buffer** then moves to a tx slot (UDP) and the read re-arms with a fresh
//! one, or the frame is copied once into the connection's send queue (TCP) and
//! the read re-arms with the buffer it had.
//!
//! With offload (the TUN opened with `IFF_VNET_HDR` and TSO), a read lands in a
//! large buffer, its 10-byte `virtio_net_hdr` just in front of [`PAYLOAD_OFFSET`],
//! and may be a superpacket of up to 64 KiB. A plain packet (or one whose
//! checksum only needed finishing) is copied once into a small buffer and sealed
//! there. A superpacket is cut (`ringway_offload::split_part`, the one copy) into
//! MTU-sized packets laid out at a fixed stride in a large send buffer, each
//! sealed in place, and all of them go to the peer in one `sendmsg` carrying
//! `UDP_SEGMENT` (as many sends as the kernel's 64-segment and 64 KiB limits
//! need); without GSO, each packet is cut into a small buffer of its own and sent
//! alone. Over TCP the frames are cut, sealed and length-prefixed straight into
//! the connection's send memory, and go out in one gathered send. Either way the
//! read re-arms at once with the buffer it had.
//!
//! A non-blocking TUN read with nothing to read completes with EAGAIN. Such a
//! slot gives its buffer back and parks behind one multishot readiness poll,
//! which re-arms a few parked reads each time the TUN becomes readable.
//!
//! With offload, where the kernel has multishot reads (6.7+), reading is one
//! multishot read over a provided-buffer ring instead: it stays armed, each
//! completion names the large buffer the kernel filled (read at
//! [`READ_OFFSET`]), and the buffer goes back to the ring once its packet is
//! sent. A row of single reads is woken together by every packet and all but
//! one re-arm their poll, a tenth of the server's CPU at one packet per read.
//!
//! With the flow queue (`fair_queue` on), a routed packet is not sealed at the read: it
//! waits in `Io::outside_queue` (a plain packet in its small read buffer, or copied into
//! one with offload; a superpacket in its large read buffer, the read going on with a
//! fresh one), and [`send_queued`] seals and sends what the queue lets out at the end of
//! each round: to a UDP peer while a tx slot is free, to a TCP peer while its
//! connection's send queue has room (see `fq`). Without the queue, the direct path above.
#![allow(unsafe_code)]

use std::ops::Range;
use std::os::fd::RawFd;
use std::time::Instant;

use io_uring::{cqueue, opcode, types};
use ringway_offload::VNET_HDR_LEN;
use ringway_offload::{prepare, split, split_part, virtio, Layout, Plan, Prepared, VnetHdr};
use ringway_proto::wire::transport::{HEADER_LEN, TAG_LEN};
use ringway_proto::wire::STREAM_PREFIX_LEN;

use super::super::buf_ring::{BufRing, Region};
use super::super::buffers::{PacketBuf, Pools};
use super::super::context::{fresh_small, reserve, Context, Io};
use super::super::fq::PeerSend;
use super::super::slots::{Completion, Request, SlotTable};
use super::super::user_data::{Path, UserData};
use super::tcp::TcpPath;
use crate::sessions::{ConnId, InsideAction, InsideRoute, Outside, FRAME_OFFSET, PAYLOAD_OFFSET};

/// TUN reads re-armed per readiness event. A packet arriving wakes the poll
/// once; re-arming every parked read would have all but one fail with EAGAIN
/// (the storm a non-blocking TUN invites), so only a few go, and each read that
/// gets a packet re-arms at once: the TUN is read until it is empty.
const WAKE_BURST: usize = 4;

/// Where an offloading read lands: its virtio_net_hdr right in front of the packet,
/// which is where a plain read puts it.
pub(in crate::uring) const READ_OFFSET: usize = PAYLOAD_OFFSET - VNET_HDR_LEN;

/// Where in a large buffer a multishot read may write: from [`READ_OFFSET`], leaving
/// room for the tag sealing appends to a packet sealed in place.
pub(in crate::uring) fn multishot_region(buf_size: usize) -> Region {
    Region {
        offset: READ_OFFSET,
        len: buf_size - READ_OFFSET - TAG_LEN,
    }
}

/// `UDP_MAX_SEGMENTS` before Linux 6.9 (128 since): the most datagrams one
/// `UDP_SEGMENT` send may carry everywhere.
pub(in crate::uring) const MAX_GSO_SEGMENTS: usize = 64;

/// The most bytes of datagrams one `UDP_SEGMENT` send may carry: a 65 535-byte IPv4
/// packet less its 20-byte header and the 8-byte UDP header.
pub(in crate::uring) const MAX_GSO_BYTES: usize = 65535 - 20 - 8;

/// How many frames of `frame_len` bytes one `UDP_SEGMENT` send carries.
pub(in crate::uring) fn frames_per_send(frame_len: usize) -> usize {
    (MAX_GSO_BYTES / frame_len.max(1)).clamp(1, MAX_GSO_SEGMENTS)
}

/// TUN reads and the readiness poll behind the parked ones, or one multishot read.
#[derive(Debug)]
pub(in crate::uring) struct TunPath {
    fd: RawFd,
    reads: SlotTable<PacketBuf>,
    /// Read slots that hit EAGAIN and wait for the poll; they hold no buffer.
    parked: Vec<u32>,
    poll: Request,
    multi: Option<Multishot>,
}

/// The multishot read and the ring it takes buffers from.
#[derive(Debug)]
struct Multishot {
    ring: BufRing,
    request: Request,
    /// Buffers kept provided.
    buffers: u32,
}

impl TunPath {
    /// `slots` idle reads on `fd`.
    pub fn new(fd: RawFd, slots: u32) -> Self {
        TunPath {
            fd,
            reads: SlotTable::new(Path::TunRx, slots),
            parked: Vec::with_capacity(slots as usize),
            poll: Request::default(),
            multi: None,
        }
    }

    /// One multishot read on `fd` (offload only), into `buffers` large buffers
    /// provided through `ring` (registered, with [`multishot_region`]).
    pub fn multishot(fd: RawFd, buffers: u32, ring: BufRing) -> Self {
        TunPath {
            multi: Some(Multishot {
                ring,
                request: Request::default(),
                buffers,
            }),
            ..TunPath::new(fd, 0)
        }
    }

    /// Arms every read (or provides the ring's buffers and arms the multishot read).
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
        for slot in 0..self.reads.len() {
            self.arm_with_fresh(io, slot);
        }
    }

    /// The provided-buffer ring, to unregister and empty once the loop is over.
    pub fn buf_ring(&mut self) -> Option<&mut BufRing> {
        self.multi.as_mut().map(|m| &mut m.ring)
    }

    /// A completion of the multishot read: seal and send what it read, provide a
    /// buffer back, and re-arm if the read ended.
    pub fn on_read_multi(
        &mut self,
        ctx: &mut Context,
        tcp: &mut TcpPath,
        c: &Completion,
        now: Instant,
    ) {
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
                ctx.io.counters.tun_rx_reads += 1;
                let back = offloaded(ctx, tcp, buf, n, now);
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
                // ENOBUFS (the ring was empty) ends the read; anything else is counted.
                if let Some(e) = c.error().filter(|_| !c.is_retry_or_cancel()) {
                    ctx.io.counters.io_errors += 1;
                    tracing::debug!(error = %e, "TUN multishot read failed");
                }
            }
            (Some(_), None) => ctx.io.counters.stale_completions += 1,
        }
        if device_gone(c) {
            ctx.fatal = Some(TUN_GONE);
            return;
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
        // Room for the packet (and its virtio_net_hdr in front with offload) and the
        // tag sealing appends after it.
        let offset = if io.path.vnet_hdr {
            READ_OFFSET
        } else {
            PAYLOAD_OFFSET
        };
        let pool = io.bufs.of(&buf);
        let len = pool.buf_size() - offset - TAG_LEN;
        let ptr = pool.ptr(&buf, offset, len);
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
        if io.path.vnet_hdr {
            if let Some(n) = c.bytes() {
                io.counters.tun_rx_reads += 1;
                let buf = offloaded(ctx, tcp, buf, n, now);
                self.arm(&mut ctx.io, slot, buf);
                return;
            }
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
            if device_gone(c) {
                io.bufs.put(buf);
                ctx.fatal = Some(TUN_GONE);
                return;
            }
            self.arm(io, slot, buf);
            return;
        };
        io.counters.tun_rx_reads += 1;
        io.counters.tun_rx_packets += 1;
        if let Some(q) = &mut io.outside_queue {
            let packet = PAYLOAD_OFFSET..PAYLOAD_OFFSET + n;
            let bytes = io.bufs.small.bytes_mut(&mut buf);
            let to = bytes
                .get(packet.clone())
                .and_then(|p| ctx.sessions.route_inside(p))
                .map(|route| route.to());
            match to {
                None => {
                    // Unroutable (counted) or longer than a buffer holds.
                    self.arm(io, slot, buf);
                    return;
                }
                Some(to) => {
                    // Sealed when its turn comes; read into a fresh buffer meanwhile.
                    let p = PeerSend {
                        buf,
                        packet,
                        split: None,
                        tcp: tcp_conn(to),
                    };
                    q.enqueue(now, &mut io.bufs, p);
                    self.arm_with_fresh(io, slot);
                    return;
                }
            }
        }
        let frame = &mut io.bufs.small.bytes_mut(&mut buf)[FRAME_OFFSET..];
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
                let bytes = io.bufs.small.bytes_mut(&mut buf);
                bytes[start..FRAME_OFFSET].copy_from_slice(&(len as u16).to_be_bytes());
                tcp.send_bytes(
                    &mut io.queue,
                    &mut io.counters,
                    id,
                    &bytes[start..FRAME_OFFSET + len],
                    1,
                );
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
        let multi = self
            .multi
            .as_ref()
            .and_then(|m| m.request.in_flight(Path::TunRxMulti, 0));
        self.reads
            .in_flight()
            .chain(self.poll.in_flight(Path::TunPoll, 0))
            .chain(multi)
    }

    /// Forgets a request taken back from the backlog unsubmitted; false if it
    /// is not one of ours.
    /// Never free the buffer ring: the kernel may still read it.
    pub fn leak(&mut self) {
        if let Some(m) = &mut self.multi {
            m.ring.leak();
        }
    }

    /// Forgets a request taken back from the backlog unsubmitted; false if it
    /// is not one of ours.
    pub fn forget(&mut self, bufs: &mut Pools, ud: UserData) -> bool {
        match ud.path {
            Path::TunRx => match self.reads.forget(ud) {
                Some(buf) => {
                    bufs.put(buf);
                    true
                }
                None => false,
            },
            Path::TunPoll => self.poll.forget(ud),
            Path::TunRxMulti => self.multi.as_mut().is_some_and(|m| m.request.forget(ud)),
            _ => false,
        }
    }
}

/// An offloading read of `n` bytes (header and packet) in large buffer `buf`: seal
/// and send what it carries. Returns the buffer, for the read to re-arm with.
fn offloaded(
    ctx: &mut Context,
    tcp: &mut TcpPath,
    mut buf: PacketBuf,
    n: usize,
    now: Instant,
) -> PacketBuf {
    let io = &mut ctx.io;
    let mtu = usize::from(io.path.mtu);
    let layout = udp_layout(mtu);
    let Some(len) = n.checked_sub(VNET_HDR_LEN) else {
        io.counters.drop_offload += 1;
        return buf;
    };
    // Finish what the kernel left (a partial checksum) and see whether it must be
    // cut; the header is parsed only when it is not the all-zero plain one.
    let shape = {
        let bytes = io.bufs.large.bytes_mut(&mut buf);
        let (hdr, packet) = bytes[READ_OFFSET..READ_OFFSET + n].split_at_mut(VNET_HDR_LEN);
        if virtio::is_plain(hdr) {
            Ok(None)
        } else {
            VnetHdr::parse(hdr).and_then(|hdr| match prepare(&hdr, packet, &layout)? {
                Prepared::Ready => Ok(None),
                Prepared::Split(plan) => Ok(Some((hdr, plan))),
            })
        }
    };
    let split = match shape {
        Ok(split) => split,
        Err(e) => {
            if e.is_misuse() {
                tracing::error!(error = %e, "superpacket layout misuse");
            } else {
                tracing::debug!(error = %e, "TUN read refused by the segmenter");
            }
            io.counters.drop_offload += 1;
            return buf;
        }
    };
    let packet = PAYLOAD_OFFSET..PAYLOAD_OFFSET + len;
    let Some(route) = ctx
        .sessions
        .route_inside(&io.bufs.large.bytes_mut(&mut buf)[packet.clone()])
    else {
        return buf;
    };
    if io.outside_queue.is_some() {
        let segments = split.as_ref().map_or(1, |(_, plan)| plan.segments);
        let to = tcp_conn(route.to());
        match queue_read(io, buf, packet.clone(), split, to, now) {
            Ok(back) => {
                io.counters.tun_rx_packets += segments as u64;
                io.counters.tun_rx_superpackets += u64::from(split.is_some());
                return back;
            }
            Err(read) => buf = read,
        }
    }
    let sp = Superpacket {
        read: &mut buf,
        packet,
        now,
    };
    match split {
        None => {
            io.counters.tun_rx_packets += 1;
            sp.send_plain(io, tcp, route);
        }
        Some((hdr, plan)) => {
            io.counters.tun_rx_packets += plan.segments as u64;
            io.counters.tun_rx_superpackets += 1;
            sp.send_split(io, tcp, route, &hdr, &plan);
        }
    }
    buf
}

/// The connection a packet routed to `to` goes out on, if it goes over TCP.
fn tcp_conn(to: Outside) -> Option<ConnId> {
    match to {
        Outside::Tcp(id) => Some(id),
        Outside::Udp(_) => None,
    }
}

/// With the flow queue, an offloading read routed to a peer: a plain packet is copied
/// into a small buffer (the copy sealing it would make anyway) and its read buffer comes
/// straight back; a superpacket waits in its own read buffer, and a fresh one comes back
/// for the read. `Ok`: queued, with the buffer the read goes on with; `Err`: no room (or
/// no buffer) to queue it, so the caller sends it at once as without the queue.
fn queue_read(
    io: &mut Io,
    mut read: PacketBuf,
    packet: Range<usize>,
    split: Option<(VnetHdr, Plan)>,
    tcp: Option<ConnId>,
    now: Instant,
) -> Result<PacketBuf, PacketBuf> {
    let Some(q) = &mut io.outside_queue else {
        return Err(read);
    };
    if split.is_some() {
        if !q.has_large_room() {
            return Err(read);
        }
        let Some(fresh) = io.bufs.large.take() else {
            return Err(read);
        };
        let p = PeerSend {
            buf: read,
            packet,
            split,
            tcp,
        };
        q.enqueue(now, &mut io.bufs, p);
        return Ok(fresh);
    }
    let len = packet.len();
    let Some(mut small) = io.bufs.small.take() else {
        return Err(read);
    };
    let copied = {
        let src = &io.bufs.large.bytes_mut(&mut read)[packet];
        let dst = io.bufs.small.bytes_mut(&mut small);
        // Room for the tag sealing appends, as a read leaves.
        match dst.get_mut(PAYLOAD_OFFSET..PAYLOAD_OFFSET + len + TAG_LEN) {
            Some(d) => {
                d[..len].copy_from_slice(src);
                true
            }
            None => false,
        }
    };
    if !copied {
        io.bufs.small.put(small);
        return Err(read);
    }
    let p = PeerSend {
        buf: small,
        packet: PAYLOAD_OFFSET..PAYLOAD_OFFSET + len,
        split: None,
        tcp,
    };
    q.enqueue(now, &mut io.bufs, p);
    Ok(read)
}

/// Seals and sends what the flow queue lets out: called once a round's completions are
/// all handled, so everything the round read is queued and a sparse flow's packet goes
/// first. A packet for a UDP peer leaves while a tx slot is free, one for a TCP peer while
/// its connection's send queue has room for what it becomes (`TcpPath::has_room`); a flow
/// whose outlet is full is passed over, so it holds up no one else, and waits for a later
/// round (a TCP send completing is a completion, so its round ends here again). A packet
/// whose session ended while it waited is dropped (counted as unroutable).
pub(in crate::uring) fn send_queued(ctx: &mut Context, tcp: &mut TcpPath) {
    // Out of `Io` while it drains: sending a packet needs all of `Io`.
    let Some(mut q) = ctx.io.outside_queue.take() else {
        return;
    };
    let now = ctx.io.now;
    let layout = tcp_layout(usize::from(ctx.io.path.mtu));
    loop {
        let io = &mut ctx.io;
        let tx_free = io.tx.free_slots() > 0;
        let ready = |p: &PeerSend| match p.tcp {
            Some(id) => tcp.has_room(id, p.framed_len(&layout)),
            None => tx_free,
        };
        let Some(mut p) = q.dequeue_ready(now, &mut io.bufs, ready) else {
            break;
        };
        let route = {
            let bytes = io.bufs.of(&p.buf).bytes_mut(&mut p.buf);
            bytes
                .get(p.packet.clone())
                .and_then(|ip| ctx.sessions.route_inside(ip))
        };
        match route {
            Some(route) => send_one(io, tcp, route, p, now),
            None => io.bufs.put(p.buf),
        }
    }
    ctx.io.counters.fq_outside.update(q.stats());
    ctx.io.outside_queue = Some(q);
}

/// Seals and sends one packet the flow queue let out: to a UDP peer, a plain one in place
/// in its small buffer, a superpacket cut into send buffers as at a read; to a TCP peer,
/// framed into its connection's send queue as at a read.
fn send_one(io: &mut Io, tcp: &mut TcpPath, mut route: InsideRoute<'_>, p: PeerSend, now: Instant) {
    let PeerSend {
        mut buf,
        packet,
        split,
        tcp: _,
    } = p;
    let addr = match route.to() {
        Outside::Udp(addr) => addr,
        Outside::Tcp(id) => {
            match split {
                Some((hdr, plan)) => {
                    let sp = Superpacket {
                        read: &mut buf,
                        packet,
                        now,
                    };
                    sp.send_split(io, tcp, route, &hdr, &plan);
                }
                None => {
                    let bytes = io.bufs.of(&buf).bytes_mut(&mut buf);
                    if let Some(n) = route.seal(&mut bytes[FRAME_OFFSET..], packet.len(), now) {
                        // The length prefix goes in the headroom in front of the frame.
                        let start = FRAME_OFFSET - STREAM_PREFIX_LEN;
                        bytes[start..FRAME_OFFSET].copy_from_slice(&(n as u16).to_be_bytes());
                        let frame = &bytes[start..FRAME_OFFSET + n];
                        tcp.send_bytes(&mut io.queue, &mut io.counters, id, frame, 1);
                    }
                }
            }
            io.bufs.put(buf);
            return;
        }
    };
    if let Some((hdr, plan)) = split {
        let sp = Superpacket {
            read: &mut buf,
            packet,
            now,
        };
        sp.send_split_udp(io, route, &hdr, &plan, addr);
        io.bufs.put(buf);
        return;
    }
    let Some(permit) = io.reserve() else {
        io.bufs.put(buf);
        return;
    };
    let frame = &mut io.bufs.of(&buf).bytes_mut(&mut buf)[FRAME_OFFSET..];
    match route.seal(frame, packet.len(), now) {
        Some(n) => io.send_udp(permit, buf, FRAME_OFFSET..FRAME_OFFSET + n, addr),
        None => {
            io.tx.release(permit);
            io.bufs.put(buf);
        }
    }
}

/// Arms the multishot read: buffers come from `m.ring`, each read lands at
/// [`READ_OFFSET`] in one.
fn arm_multishot(fd: RawFd, m: &mut Multishot, io: &mut Io) {
    let ud = m.request.arm(Path::TunRxMulti, 0);
    io.counters.tun_rx_multishot_arms += 1;
    let e = opcode::ReadMulti::new(types::Fd(fd), 0, m.ring.bgid())
        .build()
        .user_data(ud.encode());
    // SAFETY: the read writes only into buffers of the registered ring, each of which
    // this path's `BufRing` holds the token of until a completion names it; the ring's
    // page and the buffers outlive the request (freed only once the io_uring holds no
    // request and the ring is unregistered, or leaked).
    unsafe { io.queue.push(e) };
}

/// What the server says when its TUN goes away under it.
const TUN_GONE: &str = "the TUN device went away (deleted or its interface removed)";

/// Whether a TUN read failed because the device is gone (`EBADFD`): re-reading would fail
/// the same way at once, forever.
fn device_gone(c: &Completion) -> bool {
    c.res == -libc::EBADFD
}

/// A superpacket's segments as the UDP transport carries them: each packet between its
/// transport header and its tag, so sealed frames lie back to back.
fn udp_layout(mtu: usize) -> Layout {
    Layout {
        headroom: HEADER_LEN,
        tailroom: TAG_LEN,
        max_packet_len: mtu,
    }
}

/// The same over TCP: each frame also behind its length prefix.
fn tcp_layout(mtu: usize) -> Layout {
    Layout {
        headroom: STREAM_PREFIX_LEN + HEADER_LEN,
        tailroom: TAG_LEN,
        max_packet_len: mtu,
    }
}

/// One offloading read, routed, to be sealed and sent.
struct Superpacket<'a> {
    /// The read buffer (large), holding the IP packet at `packet`.
    read: &'a mut PacketBuf,
    packet: std::ops::Range<usize>,
    now: Instant,
}

impl Superpacket<'_> {
    /// A packet that needs no cutting: copied once into a small buffer and sealed there
    /// (UDP), or sealed in place and copied into the connection's queue (TCP).
    fn send_plain(self, io: &mut Io, tcp: &mut TcpPath, mut route: InsideRoute<'_>) {
        let len = self.packet.len();
        match route.to() {
            Outside::Udp(addr) => {
                let Some(permit) = io.reserve() else {
                    return;
                };
                let Some(mut out) = fresh_small(&mut io.bufs.small) else {
                    io.tx.release(permit);
                    return;
                };
                let sealed = {
                    let src = &io.bufs.large.bytes_mut(&mut *self.read)[self.packet];
                    let dst = io.bufs.small.bytes_mut(&mut out);
                    match dst.get_mut(PAYLOAD_OFFSET..PAYLOAD_OFFSET + len) {
                        Some(d) => {
                            d.copy_from_slice(src);
                            route.seal(&mut dst[FRAME_OFFSET..], len, self.now)
                        }
                        None => None,
                    }
                };
                match sealed {
                    Some(n) => io.send_udp(permit, out, FRAME_OFFSET..FRAME_OFFSET + n, addr),
                    None => {
                        io.tx.release(permit);
                        io.bufs.put(out);
                    }
                }
            }
            Outside::Tcp(id) => {
                let bytes = io.bufs.large.bytes_mut(&mut *self.read);
                if let Some(n) = route.seal(&mut bytes[FRAME_OFFSET..], len, self.now) {
                    let start = FRAME_OFFSET - STREAM_PREFIX_LEN;
                    bytes[start..FRAME_OFFSET].copy_from_slice(&(n as u16).to_be_bytes());
                    let frame = &bytes[start..FRAME_OFFSET + n];
                    tcp.send_bytes(&mut io.queue, &mut io.counters, id, frame, 1);
                }
            }
        }
    }

    /// A superpacket: cut into `plan.segments` packets, each sealed in place, sent in
    /// as few system calls as the transport allows.
    fn send_split(
        self,
        io: &mut Io,
        tcp: &mut TcpPath,
        mut route: InsideRoute<'_>,
        hdr: &VnetHdr,
        plan: &Plan,
    ) {
        let mtu = usize::from(io.path.mtu);
        let now = self.now;
        match route.to() {
            Outside::Udp(addr) => self.send_split_udp(io, route, hdr, plan, addr),
            Outside::Tcp(id) => {
                // Every frame, prefix and all, back to back in the connection's send
                // memory: the whole superpacket is one entry of its queue.
                let layout = tcp_layout(mtu);
                let packet = &io.bufs.large.bytes_mut(&mut *self.read)[self.packet];
                tcp.send_built(
                    &mut io.queue,
                    &mut io.counters,
                    id,
                    plan.out_len(&layout),
                    plan.segments,
                    |out| {
                        let Ok(segs) = split(hdr, packet, out, &layout) else {
                            return false;
                        };
                        let sealed = segs.packets().all(|r| {
                            let frame = r.start - HEADER_LEN;
                            match route.seal(&mut out[frame..], r.len(), now) {
                                Some(n) => {
                                    out[frame - STREAM_PREFIX_LEN..frame]
                                        .copy_from_slice(&(n as u16).to_be_bytes());
                                    true
                                }
                                None => false,
                            }
                        });
                        sealed
                    },
                );
            }
        }
    }

    /// The UDP half of [`Superpacket::send_split`]: parts of up to
    /// [`frames_per_send`] packets, each cut into a large buffer and sent with
    /// `UDP_SEGMENT`; a packet at a time into small buffers without GSO (or without a
    /// large buffer to spare).
    fn send_split_udp(
        self,
        io: &mut Io,
        mut route: InsideRoute<'_>,
        hdr: &VnetHdr,
        plan: &Plan,
        addr: std::net::SocketAddr,
    ) {
        let layout = udp_layout(usize::from(io.path.mtu));
        let stride = plan.stride(&layout);
        let per_send = if io.gso { frames_per_send(stride) } else { 1 };
        let mut first = 0;
        while first < plan.segments {
            let want = per_send.min(plan.segments - first);
            let Some(permit) = reserve(&mut io.tx, &mut io.counters) else {
                // Counted once above; the rest of the superpacket goes too.
                io.counters.drop_tx_full += (plan.segments - first - 1) as u64;
                return;
            };
            let large = if want > 1 { io.bufs.large.take() } else { None };
            let (mut out, count) = match large {
                Some(b) => (b, want),
                None => match fresh_small(&mut io.bufs.small) {
                    Some(b) => (b, 1),
                    None => {
                        io.tx.release(permit);
                        return;
                    }
                },
            };
            let sealed = {
                let packet = &io.bufs.large.bytes_mut(&mut *self.read)[self.packet.clone()];
                let dst = &mut io.bufs.of(&out).bytes_mut(&mut out)[FRAME_OFFSET..];
                match split_part(hdr, packet, dst, &layout, first..first + count) {
                    Ok(segs) => segs.packets().try_fold(0, |_, r| {
                        let frame = r.start - HEADER_LEN;
                        route
                            .seal(&mut dst[frame..], r.len(), self.now)
                            .map(|n| frame + n)
                    }),
                    Err(e) => {
                        tracing::error!(error = %e, "cutting a superpacket failed");
                        None
                    }
                }
            };
            let Some(end) = sealed else {
                io.tx.release(permit);
                io.bufs.put(out);
                return;
            };
            let frames = FRAME_OFFSET..FRAME_OFFSET + end;
            let segments = (count > 1).then_some((stride as u16, count as u32));
            io.send_udp_segments(permit, out, frames, addr, segments);
            first += count;
        }
    }
}
