//! The event loop, and the TUN and UDP paths through it.
//!
//! Ownership of kernel-shared memory: every buffer, `msghdr`, `iovec`, socket
//! address and timespec the kernel may touch lives in heap allocations owned
//! by this struct ([`Shared`], and the boxed TCP connections), created once
//! and never moved. A slot is marked busy when its request is queued and
//! released only by that request's completion, so nothing is reused or freed
//! while the kernel holds it. On shutdown every outstanding request is
//! cancelled and the loop waits for all completions before returning; if some
//! never arrive, the memory is leaked on drop rather than freed under the kernel.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use io_uring::{opcode, types, IoUring};
use ring::rand::{SecureRandom, SystemRandom};
use ringway_proto::wire::transport::TAG_LEN;
use ringway_proto::wire::STREAM_PREFIX_LEN;
use socket2::SockAddr;

use super::buffers::{BufId, BufferPool};
use super::tcp::{self, CloseReason, Conns, TcpLimits};
use super::tx::{
    queue_cancel, queue_tun_write, queue_udp_send, take_copy, MsgSlot, Queue, TxKind, TxTable,
};
use super::user_data::{next_generation, Path, UserData};
use crate::metrics::IoCounters;
use crate::sessions::{
    IdSource, InsideAction, Outside, OutsideAction, Sessions, TimerOutput, FRAME_OFFSET,
    PAYLOAD_OFFSET,
};

/// How often session timers and TCP deadlines run; both are whole seconds.
const TICK: Duration = Duration::from_secs(1);
/// How long shutdown waits for cancelled requests to complete.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);
/// Requests outside the slot tables: the timer, the signal read, the accept
/// and the TUN readiness poll.
const FIXED_REQUESTS: u32 = 4;
/// TUN reads re-armed per readiness event. A packet arriving wakes the poll
/// once; re-arming every parked read would have all but one fail with EAGAIN
/// (the storm a non-blocking TUN invites), so only a few go, and each read that
/// gets a packet re-arms at once: the TUN is read until it is empty.
const TUN_WAKE_BURST: usize = 4;

/// Per-path in-flight request counts and ring settings.
#[derive(Debug, Clone)]
pub struct Tunables {
    /// Submission queue entries.
    pub ring_entries: u32,
    /// TUN reads in flight.
    pub tun_rx_slots: u32,
    /// UDP receives in flight.
    pub udp_rx_slots: u32,
    /// Sends in flight.
    pub tx_slots: u32,
    /// SQPOLL idle time in ms; 0 disables SQPOLL.
    pub sqpoll_idle_ms: u32,
}

impl Tunables {
    /// The smallest ring that can hold every slot's request at once.
    pub fn min_ring_entries(&self) -> u32 {
        (self.tun_rx_slots + self.udp_rx_slots + self.tx_slots + FIXED_REQUESTS).next_power_of_two()
    }

    /// Refuses settings the ring cannot carry.
    pub fn check(&self) -> Result<()> {
        let min = self.min_ring_entries();
        if self.ring_entries < min {
            bail!(
                "uring.ring_entries = {} is too small for {} TUN rx + {} UDP rx + {} tx slots: use at least {min}",
                self.ring_entries,
                self.tun_rx_slots,
                self.udp_rx_slots,
                self.tx_slots
            );
        }
        Ok(())
    }

    /// Completion queue size: room for every request that can be in flight at
    /// once, TCP connections (a receive and a send each) included.
    fn cq_entries(&self, max_tcp: u32) -> u32 {
        let inflight =
            self.tun_rx_slots + self.udp_rx_slots + self.tx_slots + FIXED_REQUESTS + 2 * max_tcp;
        (2 * inflight)
            .next_power_of_two()
            .clamp(2 * self.ring_entries, 65536)
    }
}

/// The descriptors the loop drives; the caller owns them and must keep them
/// open until the driver is dropped.
#[derive(Debug, Clone, Copy)]
pub struct Fds {
    /// The TUN device.
    pub tun: RawFd,
    /// The UDP socket, if UDP is on.
    pub udp: Option<RawFd>,
    /// The TCP listener, if TCP is on.
    pub tcp_listener: Option<RawFd>,
    /// Becomes readable when the server should stop: the signalfd for
    /// SIGINT/SIGTERM in production, any socket or pipe in tests.
    pub signal: RawFd,
}

/// A receive slot: one request in flight at a time, with the buffer it fills.
#[derive(Debug)]
struct RxSlot {
    buf: BufId,
    generation: u32,
    armed: bool,
}

struct UdpRxSlot {
    rx: RxSlot,
    msg: MsgSlot,
}

pub(super) struct OsRandom(SystemRandom);

impl IdSource for OsRandom {
    fn next_id(&mut self) -> u32 {
        let mut b = [0u8; 4];
        // A failing system RNG leaves zero, which the session layer rejects
        // and asks again for; the kernel's getrandom does not fail after boot.
        let _ = self.0.fill(&mut b);
        u32::from_ne_bytes(b)
    }
}

/// Kernel-shared memory of the fixed slots, boxed so it can be leaked as a
/// unit if the kernel never returns some of it.
pub(super) struct Shared {
    pub bufs: BufferPool,
    tun_rx: Vec<RxSlot>,
    udp_rx: Vec<UdpRxSlot>,
    pub tx: TxTable,
    timespec: types::Timespec,
    siginfo: libc::signalfd_siginfo,
}

/// The server's event loop. Field order matters: the ring is dropped (closed)
/// before the memory its requests point into.
pub struct Driver {
    ring: IoUring,
    pub(super) shared: Box<Shared>,
    pub(super) conns: Conns,
    pub(super) queue: Queue,
    cqes: Vec<(u64, i32, u32)>,
    pub(super) sessions: Sessions,
    pub(super) io: IoCounters,
    pub(super) ids: OsRandom,
    pub(super) tun_fd: RawFd,
    udp_fd: Option<RawFd>,
    signal_fd: RawFd,
    timer_generation: u32,
    /// TUN read slots that hit EAGAIN and wait for the readiness poll.
    tun_parked: Vec<usize>,
    tun_poll_armed: bool,
    tun_poll_generation: u32,
    ended: Vec<Outside>,
    shutdown_deadline: Option<Instant>,
    stats_at: Instant,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("inflight", &self.queue.inflight)
            .finish_non_exhaustive()
    }
}

fn is_transient(res: i32) -> bool {
    res == -libc::EAGAIN || res == -libc::EINTR || res == -libc::ECANCELED || res == -libc::ENOBUFS
}

/// Where control frames (handshake replies, keepalives, disconnects) go out:
/// bundles the fields a send needs so it can run inside a session callback.
struct Sinks<'a> {
    shared: &'a mut Shared,
    conns: &'a mut Conns,
    queue: &'a mut Queue,
    io: &'a mut IoCounters,
    udp_fd: Option<RawFd>,
}

impl Sinks<'_> {
    /// Sends a frame that does not sit in a slot buffer: copied once, into a
    /// tx buffer (UDP) or the connection's send queue (TCP).
    fn send(&mut self, to: Outside, frame: &[u8]) {
        match to {
            Outside::Udp(addr) => {
                let Some(fd) = self.udp_fd else { return };
                let s = &mut *self.shared;
                match take_copy(&mut s.bufs, &mut s.tx, FRAME_OFFSET, frame) {
                    Some((t, buf, n)) => {
                        queue_udp_send(&mut s.bufs, &mut s.tx, self.queue, fd, t, buf, n, addr)
                    }
                    None => self.io.drop_tx_full += 1,
                }
            }
            Outside::Tcp(id) => tcp::queue_unprefixed(self.conns, id, frame, self.queue, self.io),
        }
    }
}

impl Driver {
    /// Builds the ring and the slot tables.
    pub fn new(
        t: &Tunables,
        limits: TcpLimits,
        mtu: u16,
        fds: Fds,
        sessions: Sessions,
    ) -> Result<Self> {
        t.check()?;
        let max_tcp = if fds.tcp_listener.is_some() {
            limits.max_connections
        } else {
            0
        };
        let mut builder = IoUring::builder();
        builder.setup_cqsize(t.cq_entries(max_tcp));
        if t.sqpoll_idle_ms > 0 {
            builder.setup_sqpoll(t.sqpoll_idle_ms);
        } else {
            // One thread submits and reaps: let the kernel run completion work
            // only when we ask for events, in batches.
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        let ring = match builder.build(t.ring_entries) {
            Ok(r) => r,
            // Older kernels lack DEFER_TASKRUN; fall back to a plain ring.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && t.sqpoll_idle_ms == 0 => {
                IoUring::builder()
                    .setup_cqsize(t.cq_entries(max_tcp))
                    .build(t.ring_entries)
                    .context("cannot create io_uring")?
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                bail!("io_uring is not permitted here (kernel.io_uring_disabled or a seccomp policy): allow io_uring for ringway-server")
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot create io_uring")),
        };

        // Payload room: the MTU plus headroom and tag, rounded to a cache line.
        // Reading 64 KiB offloaded packets later only changes this size.
        let buf_size = (PAYLOAD_OFFSET + usize::from(mtu) + TAG_LEN + 63) & !63;
        let udp_rx_slots = if fds.udp.is_some() { t.udp_rx_slots } else { 0 };
        let rx_count = (t.tun_rx_slots + udp_rx_slots) as usize;
        let mut bufs = BufferPool::new(rx_count + t.tx_slots as usize, buf_size);
        let mut take = || {
            bufs.take()
                .context("buffer pool smaller than the slot count")
        };
        let tun_rx = (0..t.tun_rx_slots)
            .map(|_| {
                Ok(RxSlot {
                    buf: take()?,
                    generation: 0,
                    armed: false,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let udp_rx = (0..udp_rx_slots)
            .map(|_| {
                Ok(UdpRxSlot {
                    rx: RxSlot {
                        buf: take()?,
                        generation: 0,
                        armed: false,
                    },
                    msg: MsgSlot::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // SAFETY: signalfd_siginfo is a plain C struct; all-zero is valid.
        let siginfo = unsafe { std::mem::zeroed() };
        let shared = Box::new(Shared {
            bufs,
            tun_rx,
            udp_rx,
            tx: TxTable::new(t.tx_slots),
            timespec: types::Timespec::from(TICK),
            siginfo,
        });
        let total = (t.tun_rx_slots + udp_rx_slots + t.tx_slots + FIXED_REQUESTS) as usize;
        Ok(Driver {
            ring,
            shared,
            conns: Conns::new(limits, fds.tcp_listener),
            queue: Queue {
                pending: VecDeque::with_capacity(total * 2),
                inflight: 0,
            },
            cqes: Vec::with_capacity(t.cq_entries(max_tcp) as usize),
            sessions,
            io: IoCounters::default(),
            ids: OsRandom(SystemRandom::new()),
            tun_fd: fds.tun,
            udp_fd: fds.udp,
            signal_fd: fds.signal,
            timer_generation: 0,
            tun_parked: Vec::with_capacity(t.tun_rx_slots as usize),
            tun_poll_armed: false,
            tun_poll_generation: 0,
            ended: Vec::new(),
            shutdown_deadline: None,
            stats_at: Instant::now(),
        })
    }

    /// The session layer, for inspection after the loop ends.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// I/O counters, for inspection after the loop ends.
    pub fn io_counters(&self) -> &IoCounters {
        &self.io
    }

    /// Runs until SIGINT/SIGTERM, then cancels everything and waits for the
    /// kernel to hand every buffer back.
    pub fn run(&mut self) -> Result<()> {
        for slot in 0..self.shared.tun_rx.len() {
            self.arm_tun_rx(slot);
        }
        for slot in 0..self.shared.udp_rx.len() {
            self.arm_udp_rx(slot);
        }
        self.arm_accept();
        self.arm_timer();
        self.arm_signal();
        loop {
            self.flush();
            let res = match self.shutdown_deadline {
                None => {
                    let want = usize::from(self.queue.pending.is_empty());
                    self.ring.submit_and_wait(want)
                }
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tracing::warn!(
                            inflight = self.queue.inflight,
                            "requests still in flight after the shutdown grace period"
                        );
                        break;
                    }
                    let ts = types::Timespec::from(left);
                    let args = types::SubmitArgs::new().timespec(&ts);
                    self.ring.submitter().submit_with_args(1, &args)
                }
            };
            if let Err(e) = res {
                match e.raw_os_error() {
                    // Interrupted, timed out, or completions waiting to be reaped first.
                    Some(libc::EINTR) | Some(libc::ETIME) | Some(libc::EBUSY)
                    | Some(libc::EAGAIN) => {}
                    _ => return Err(anyhow::Error::new(e).context("io_uring_enter failed")),
                }
            }
            self.reap();
            if self.shutdown_deadline.is_some() && self.queue.inflight == 0 {
                break;
            }
        }
        tracing::info!(counters = %self.sessions.counters, io = %self.io, "stopped");
        Ok(())
    }

    /// Moves queued entries into the submission queue as space allows; what
    /// does not fit waits for the next round (never dropped, never a panic).
    fn flush(&mut self) {
        let mut sq = self.ring.submission();
        while let Some(e) = self.queue.pending.front() {
            // SAFETY: every queued entry points only into `self.shared` or a
            // boxed TCP connection, whose memory is not moved, reused or freed
            // until the entry's completion has been reaped (see the module doc).
            if unsafe { sq.push(e) }.is_err() {
                break;
            }
            self.queue.pending.pop_front();
        }
        sq.sync();
    }

    fn reap(&mut self) {
        self.cqes.clear();
        for cqe in self.ring.completion() {
            self.cqes.push((cqe.user_data(), cqe.result(), cqe.flags()));
        }
        if self.cqes.is_empty() {
            return;
        }
        let now = Instant::now();
        for i in 0..self.cqes.len() {
            let (ud, res, flags) = self.cqes[i];
            let Some(ud) = UserData::decode(ud) else {
                tracing::error!(user_data = ud, "completion with unknown user_data");
                continue;
            };
            // A multishot request keeps its place (and its count) while "more" is set.
            let multishot = matches!(ud.path, Path::Accept | Path::TunPoll);
            if !(multishot && io_uring::cqueue::more(flags)) {
                self.queue.inflight = self.queue.inflight.saturating_sub(1);
            }
            match ud.path {
                Path::TunRx => self.on_tun_rx(ud, res, now),
                Path::TunPoll => self.on_tun_poll(ud, flags),
                Path::UdpRx => self.on_udp_rx(ud, res, now),
                Path::Tx => self.on_tx(ud, res),
                Path::Timer => self.on_timer(ud, now),
                Path::Signal => self.on_signal(res, now),
                Path::Accept => self.on_accept(ud, res, flags, now),
                Path::TcpRx => self.on_tcp_rx(ud, res, now),
                Path::TcpTx => self.on_tcp_tx(ud, res),
                Path::Cancel => {}
            }
        }
        if now.duration_since(self.stats_at) >= Duration::from_secs(30) {
            self.stats_at = now;
            tracing::debug!(sessions = self.sessions.len(), tcp = self.conns.live(), counters = %self.sessions.counters, io = %self.io, "stats");
        }
    }

    pub(super) fn shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    fn sinks(&mut self) -> (&mut Sessions, Sinks<'_>) {
        (
            &mut self.sessions,
            Sinks {
                shared: &mut self.shared,
                conns: &mut self.conns,
                queue: &mut self.queue,
                io: &mut self.io,
                udp_fd: self.udp_fd,
            },
        )
    }

    fn arm_tun_rx(&mut self, slot: usize) {
        let s = &mut self.shared.tun_rx[slot];
        s.generation = next_generation(s.generation);
        s.armed = true;
        let ud = UserData {
            path: Path::TunRx,
            slot: slot as u32,
            generation: s.generation,
        };
        let buf = s.buf;
        let len = self.shared.bufs.buf_size() - PAYLOAD_OFFSET - TAG_LEN;
        let ptr = self.shared.bufs.ptr(buf, PAYLOAD_OFFSET);
        let e = opcode::Read::new(types::Fd(self.tun_fd), ptr, len as u32)
            .build()
            .user_data(ud.encode());
        self.queue.push(e);
    }

    /// One multishot poll stands for every parked TUN read: it completes each
    /// time the TUN becomes readable, without being re-armed.
    fn arm_tun_poll(&mut self) {
        if self.tun_poll_armed {
            return;
        }
        self.tun_poll_generation = next_generation(self.tun_poll_generation);
        self.tun_poll_armed = true;
        let ud = UserData {
            path: Path::TunPoll,
            slot: 0,
            generation: self.tun_poll_generation,
        };
        let e = opcode::PollAdd::new(types::Fd(self.tun_fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(ud.encode());
        self.queue.push(e);
    }

    fn arm_udp_rx(&mut self, slot: usize) {
        let Some(udp_fd) = self.udp_fd else { return };
        let shared = &mut *self.shared;
        let s = &mut shared.udp_rx[slot];
        s.rx.generation = next_generation(s.rx.generation);
        s.rx.armed = true;
        let len = shared.bufs.buf_size() - FRAME_OFFSET;
        let m = &mut s.msg;
        m.point_for_recv(shared.bufs.ptr(s.rx.buf, FRAME_OFFSET), len);
        let ud = UserData {
            path: Path::UdpRx,
            slot: slot as u32,
            generation: s.rx.generation,
        };
        let e = opcode::RecvMsg::new(types::Fd(udp_fd), &mut m.hdr)
            .build()
            .user_data(ud.encode());
        self.queue.push(e);
    }

    fn arm_timer(&mut self) {
        self.timer_generation = next_generation(self.timer_generation);
        let ud = UserData {
            path: Path::Timer,
            slot: 0,
            generation: self.timer_generation,
        };
        let e = opcode::Timeout::new(&self.shared.timespec)
            .build()
            .user_data(ud.encode());
        self.queue.push(e);
    }

    fn arm_signal(&mut self) {
        let ud = UserData {
            path: Path::Signal,
            slot: 0,
            generation: 0,
        };
        let ptr: *mut u8 = (&mut self.shared.siginfo as *mut libc::signalfd_siginfo).cast();
        let e = opcode::Read::new(
            types::Fd(self.signal_fd),
            ptr,
            std::mem::size_of::<libc::signalfd_siginfo>() as u32,
        )
        .build()
        .user_data(ud.encode());
        self.queue.push(e);
    }

    fn on_tun_rx(&mut self, ud: UserData, res: i32, now: Instant) {
        let slot = ud.slot as usize;
        let Some(s) = self.shared.tun_rx.get_mut(slot) else {
            return;
        };
        if !s.armed || s.generation != ud.generation {
            return;
        }
        s.armed = false;
        if self.shutting_down() {
            return;
        }
        if res == -libc::EAGAIN {
            // Nothing to read: park the slot until the TUN says it is readable.
            self.io.eagain += 1;
            self.tun_parked.push(slot);
            self.arm_tun_poll();
            return;
        }
        if res <= 0 {
            if !is_transient(res) && res != 0 {
                self.io.io_errors += 1;
                tracing::debug!(error = %io::Error::from_raw_os_error(-res), "TUN read failed");
            }
            self.arm_tun_rx(slot);
            return;
        }
        let n = res as usize;
        let shared = &mut *self.shared;
        let buf = shared.tun_rx[slot].buf;
        let frame = &mut shared.bufs.get_mut(buf)[FRAME_OFFSET..];
        match self.sessions.handle_inside(frame, n, now) {
            InsideAction::Drop => {}
            InsideAction::Send {
                to: Outside::Udp(addr),
                len,
            } => {
                let Some((udp_fd, t)) =
                    self.udp_fd.and_then(|fd| Some((fd, shared.tx.free.pop()?)))
                else {
                    self.io.drop_tx_full += 1;
                    self.arm_tun_rx(slot);
                    return;
                };
                queue_udp_send(
                    &mut shared.bufs,
                    &mut shared.tx,
                    &mut self.queue,
                    udp_fd,
                    t,
                    buf,
                    len,
                    addr,
                );
                // The filled buffer now belongs to the send; read into a fresh one.
                match shared.bufs.take() {
                    Some(fresh) => shared.tun_rx[slot].buf = fresh,
                    None => {
                        tracing::error!(
                            "buffer pool empty with a tx slot free: TUN slot left idle"
                        );
                        return;
                    }
                }
            }
            InsideAction::Send {
                to: Outside::Tcp(id),
                len,
            } => {
                // The length prefix goes in the headroom in front of the frame,
                // then the connection's queue takes its one copy.
                let b = shared.bufs.get_mut(buf);
                let start = FRAME_OFFSET - STREAM_PREFIX_LEN;
                b[start..FRAME_OFFSET].copy_from_slice(&(len as u16).to_be_bytes());
                tcp::queue_frame(
                    &mut self.conns,
                    id,
                    &[&b[start..FRAME_OFFSET + len]],
                    &mut self.queue,
                    &mut self.io,
                );
            }
        }
        self.arm_tun_rx(slot);
    }

    fn on_tun_poll(&mut self, ud: UserData, flags: u32) {
        if ud.generation != self.tun_poll_generation {
            return;
        }
        if !io_uring::cqueue::more(flags) {
            self.tun_poll_armed = false;
        }
        if self.shutting_down() {
            return;
        }
        for _ in 0..TUN_WAKE_BURST {
            let Some(slot) = self.tun_parked.pop() else {
                break;
            };
            self.arm_tun_rx(slot);
        }
        if !self.tun_poll_armed && !self.tun_parked.is_empty() {
            self.arm_tun_poll();
        }
    }

    fn on_udp_rx(&mut self, ud: UserData, res: i32, now: Instant) {
        let slot = ud.slot as usize;
        let Some(s) = self.shared.udp_rx.get_mut(slot) else {
            return;
        };
        if !s.rx.armed || s.rx.generation != ud.generation {
            return;
        }
        s.rx.armed = false;
        if self.shutdown_deadline.is_some() {
            return;
        }
        if res <= 0 {
            if !is_transient(res) && res != 0 {
                self.io.io_errors += 1;
                tracing::debug!(error = %io::Error::from_raw_os_error(-res), "UDP receive failed");
            }
            self.arm_udp_rx(slot);
            return;
        }
        if s.msg.hdr.msg_flags & libc::MSG_TRUNC != 0 {
            self.io.drop_truncated += 1;
            self.arm_udp_rx(slot);
            return;
        }
        // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes into
        // `from`, which is a sockaddr_storage and so large enough for any family.
        let from = unsafe { SockAddr::new(s.msg.from, s.msg.hdr.msg_namelen) }.as_socket();
        let Some(from) = from else {
            self.sessions.counters.drop_malformed += 1;
            self.arm_udp_rx(slot);
            return;
        };
        let n = (res as usize).min(self.shared.bufs.buf_size() - FRAME_OFFSET);
        let (udp_fd, tun_fd) = (self.udp_fd, self.tun_fd);
        let shared = &mut *self.shared;
        let buf = shared.udp_rx[slot].rx.buf;
        let frame = &mut shared.bufs.get_mut(buf)[FRAME_OFFSET..FRAME_OFFSET + n];
        match self
            .sessions
            .handle_outside(frame, Outside::Udp(from), now, &mut self.ids)
        {
            OutsideAction::None => {}
            OutsideAction::ToInside(range) => match shared.tx.free.pop() {
                Some(t) => {
                    let offset = FRAME_OFFSET + range.start;
                    queue_tun_write(
                        &mut shared.bufs,
                        &mut shared.tx,
                        &mut self.queue,
                        tun_fd,
                        t,
                        buf,
                        offset,
                        range.len(),
                    );
                    match shared.bufs.take() {
                        Some(fresh) => shared.udp_rx[slot].rx.buf = fresh,
                        None => {
                            tracing::error!(
                                "buffer pool empty with a tx slot free: UDP slot left idle"
                            );
                            return;
                        }
                    }
                }
                None => self.io.drop_tx_full += 1,
            },
            OutsideAction::Reply(Outside::Udp(to), bytes) => match (
                udp_fd,
                take_copy(&mut shared.bufs, &mut shared.tx, FRAME_OFFSET, &bytes),
            ) {
                (Some(fd), Some((t, b, len))) => queue_udp_send(
                    &mut shared.bufs,
                    &mut shared.tx,
                    &mut self.queue,
                    fd,
                    t,
                    b,
                    len,
                    to,
                ),
                (_, Some((t, b, _))) => {
                    shared.tx.free.push(t);
                    shared.bufs.put(b);
                }
                (_, None) => self.io.drop_tx_full += 1,
            },
            // A datagram is only ever answered over UDP.
            OutsideAction::Reply(Outside::Tcp(_), _) => {}
        }
        self.arm_udp_rx(slot);
    }

    fn on_tx(&mut self, ud: UserData, res: i32) {
        let tx = &mut self.shared.tx;
        let Some(s) = tx.slots.get_mut(ud.slot as usize) else {
            return;
        };
        if !s.busy || s.generation != ud.generation {
            return;
        }
        s.busy = false;
        self.shared.bufs.put(s.buf);
        tx.free.push(ud.slot);
        if res < 0 {
            if !is_transient(res) {
                tracing::debug!(kind = ?s.kind, error = %io::Error::from_raw_os_error(-res), "send failed");
            }
            self.io.io_errors += 1;
        } else if s.kind == TxKind::Udp {
            self.io.udp_tx_frames += 1;
        }
    }

    fn on_timer(&mut self, ud: UserData, now: Instant) {
        if ud.generation != self.timer_generation || self.shutting_down() {
            return;
        }
        let mut ended = std::mem::take(&mut self.ended);
        let (sessions, mut sinks) = self.sinks();
        sessions.handle_timers(now, |out| match out {
            TimerOutput::Send(to, frame) => sinks.send(to, frame),
            TimerOutput::Ended(to) => ended.push(to),
        });
        for to in ended.drain(..) {
            if let Outside::Tcp(id) = to {
                self.close_conn(id, CloseReason::SessionEnd);
            }
        }
        self.ended = ended;
        self.tcp_tick(now);
        self.arm_timer();
    }

    fn on_signal(&mut self, res: i32, now: Instant) {
        if self.shutting_down() {
            return;
        }
        if res < 0 {
            self.arm_signal();
            return;
        }
        // A signal, or (res == 0) the stop trigger was closed: either way, stop.
        tracing::info!(signal = self.shared.siginfo.ssi_signo, "shutting down");
        self.shutdown_deadline = Some(now + SHUTDOWN_GRACE);
        // UDP peers get a Disconnect; TCP peers see their connection close.
        let (sessions, mut sinks) = self.sinks();
        sessions.disconnect_all(now, |out| {
            if let TimerOutput::Send(to @ Outside::Udp(_), frame) = out {
                sinks.send(to, frame);
            }
        });
        // Requests queued but never submitted need no cancel: forget them.
        self.drop_unsubmitted();
        // Cancel every receive, poll and the timer; sends finish on their own.
        let mut targets: Vec<UserData> = Vec::new();
        for (i, s) in self.shared.tun_rx.iter().enumerate() {
            if s.armed {
                targets.push(UserData {
                    path: Path::TunRx,
                    slot: i as u32,
                    generation: s.generation,
                });
            }
        }
        if self.tun_poll_armed {
            targets.push(UserData {
                path: Path::TunPoll,
                slot: 0,
                generation: self.tun_poll_generation,
            });
        }
        for (i, s) in self.shared.udp_rx.iter().enumerate() {
            if s.rx.armed {
                targets.push(UserData {
                    path: Path::UdpRx,
                    slot: i as u32,
                    generation: s.rx.generation,
                });
            }
        }
        targets.push(UserData {
            path: Path::Timer,
            slot: 0,
            generation: self.timer_generation,
        });
        for t in targets {
            queue_cancel(&mut self.queue, t);
        }
        self.tcp_shutdown();
    }

    /// Forgets queued-but-unsubmitted receives and polls (their slots are left
    /// unarmed, so nothing waits for them); keeps sends.
    fn drop_unsubmitted(&mut self) {
        let before = self.queue.pending.len();
        let mut dropped_tun = Vec::new();
        let mut dropped_udp = Vec::new();
        self.queue
            .pending
            .retain(|e| match UserData::decode(e.get_user_data()) {
                Some(u) if u.path == Path::TunRx => {
                    dropped_tun.push(u.slot as usize);
                    false
                }
                Some(u) if u.path == Path::UdpRx => {
                    dropped_udp.push(u.slot as usize);
                    false
                }
                Some(u) => !matches!(u.path, Path::TunPoll | Path::Timer | Path::Signal),
                None => false,
            });
        for i in dropped_tun {
            self.shared.tun_rx[i].armed = false;
        }
        for i in dropped_udp {
            self.shared.udp_rx[i].rx.armed = false;
        }
        self.queue.inflight -= before - self.queue.pending.len();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.queue.inflight > self.queue.pending.len() {
            // The kernel may still write into this memory: never free it.
            let empty = Box::new(Shared {
                bufs: BufferPool::new(0, 0),
                tun_rx: Vec::new(),
                udp_rx: Vec::new(),
                tx: TxTable::new(0),
                timespec: types::Timespec::new(),
                // SAFETY: all-zero is a valid signalfd_siginfo.
                siginfo: unsafe { std::mem::zeroed() },
            });
            std::mem::forget(std::mem::replace(&mut self.shared, empty));
            self.conns.leak();
        }
    }
}
