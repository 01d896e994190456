//! The event loop: setup, the loop, and dispatch of each completion to the
//! path that owns it.
//!
//! The driver owns the ring, the shared `Context` and one value per path;
//! a completion's `user_data` names its path, and that path's handler gets
//! the context (and, where a packet may go out over TCP, the TCP path). The
//! driver itself touches no kernel-shared memory: each path makes its own
//! pointers, next to the argument for why they stay valid.
//!
//! Teardown: on SIGINT/SIGTERM every outstanding receive, poll and timer is
//! cancelled, sends finish on their own, and the loop waits (up to
//! `SHUTDOWN_GRACE`) until the in-flight count is zero, which means every
//! buffer is back in the pool. If the kernel still holds requests when the
//! driver is dropped, their memory is leaked rather than freed under it.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::{cqueue, types, IoUring};
use ring::rand::{SecureRandom, SystemRandom};
use ringway_proto::wire::transport::TAG_LEN;

use super::buf_ring::{BufRing, Region, RING_ENTRIES};
use super::buffers::{BufferPool, Pools};
use super::context::{Context, Io, OsRandom};
use super::fq::{InsideQueue, OutsideQueue};
use super::gro::{Gro, MAX_RUNS};
use super::msg::MultishotLayout;
use super::paths::signal::SignalRead;
use super::paths::tcp::{TcpLimits, TcpPath};
use super::paths::timer::Timer;
use super::paths::tun::{frames_per_send, multishot_region, send_queued, TunPath};
use super::paths::udp::UdpPath;
use super::queue::Queue;
use super::slots::Completion;
use super::tx::TxTable;
use super::user_data::{Path, UserData};
use crate::config::{ConfigError, Tunables, FIXED_REQUESTS};
use crate::handshake_state::{save_if_changed, HandshakeState};
use crate::metrics::IoCounters;
use crate::sessions::{Outside, Sessions, TimerOutput, PAYLOAD_OFFSET};

/// Size of a large buffer: a 64 KiB superpacket read behind its virtio_net_hdr at the
/// payload offset with room for a tag, a receive of up to 64 KiB of datagrams, the
/// frames of one `UDP_SEGMENT` send, or a coalesced superpacket behind its header;
/// rounded to a cache line.
pub(super) const LARGE_BUF_SIZE: usize = (LARGE_HEADROOM + 65535 + TAG_LEN + 63) & !63;
/// Room in front of a large buffer's data: a frame's headroom, or what a multishot
/// receive writes before the datagrams.
const LARGE_HEADROOM: usize = if MultishotLayout::PAYLOAD > PAYLOAD_OFFSET {
    MultishotLayout::PAYLOAD
} else {
    PAYLOAD_OFFSET
};
/// The buffer group of the UDP receive's provided-buffer ring.
const UDP_BGID: u16 = 0;
/// The buffer group of the TUN read's.
const TUN_BGID: u16 = 1;

/// How long shutdown waits for cancelled requests to complete.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);
/// How often the loop logs its counters (at debug level).
const STATS_EVERY: Duration = Duration::from_secs(30);

/// The driver could not be set up or could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The tunables cannot work (the same check config validation makes).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kernel or a policy forbids io_uring.
    #[error("io_uring is not permitted here (kernel.io_uring_disabled or a seccomp policy): allow io_uring for ringway-server")]
    NotPermitted,
    /// The ring could not be created.
    #[error("cannot create io_uring: {0}")]
    Setup(io::Error),
    /// Submitting or waiting failed.
    #[error("io_uring_enter failed: {0}")]
    Enter(io::Error),
    /// A device the loop needs went away (the TUN was deleted under it).
    #[error("{0}")]
    Gone(&'static str),
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

/// What the data path does per system call, decided once at start from what the TUN
/// and the UDP socket accepted (see `inside::tun` and `outside::udp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPath {
    /// The tunnel MTU: the largest inner packet, and the size superpackets are cut to.
    pub mtu: u16,
    /// The TUN reads and writes a `virtio_net_hdr` in front of every packet, and a read
    /// may be a TCP superpacket (TSO) with a partial checksum. Off: one IP packet per
    /// read and write, exactly as without offload.
    pub vnet_hdr: bool,
    /// The TUN also takes and returns UDP superpackets (USO): coalesce UDP too.
    pub uso: bool,
    /// The UDP socket sends many datagrams per `sendmsg` (`UDP_SEGMENT`); without it a
    /// superpacket's segments go out one datagram per send.
    pub udp_gso: bool,
    /// The UDP socket returns many datagrams of one peer per receive (`UDP_GRO`).
    pub udp_gro: bool,
}

impl DataPath {
    /// How many frames of a superpacket one `UDP_SEGMENT` send carries at this MTU
    /// (`gso_max_segs` for the TUN, so that every superpacket takes one send).
    pub fn segments_per_send(&self) -> usize {
        frames_per_send(usize::from(self.mtu) + ringway_proto::wire::transport::OVERHEAD)
    }

    /// No offload at all: one packet per call on every path.
    pub fn plain(mtu: u16) -> Self {
        DataPath {
            mtu,
            vnet_hdr: false,
            uso: false,
            udp_gso: false,
            udp_gro: false,
        }
    }
}

impl std::fmt::Display for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        if !self.vnet_hdr {
            return f.write_str("one packet per call (TUN without virtio_net_hdr)");
        }
        write!(
            f,
            "TUN superpackets split and coalesced (TCP{}), UDP GSO {}, UDP GRO {}",
            if self.uso { " and UDP" } else { "" },
            on(self.udp_gso),
            on(self.udp_gro)
        )
    }
}

/// What the ring holds right now: after a clean stop, nothing is in flight
/// and every buffer and tx slot is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingUsage {
    /// Requests queued or held by the kernel.
    pub in_flight: usize,
    /// Small packet buffers in the pool.
    pub free_buffers: usize,
    /// Small packet buffers in all.
    pub buffers: usize,
    /// Large (64 KiB, offload) buffers in the pool.
    pub free_large_buffers: usize,
    /// Large buffers in all.
    pub large_buffers: usize,
    /// Tx slots neither in flight nor reserved.
    pub free_tx_slots: usize,
    /// Tx slots in all.
    pub tx_slots: usize,
}

/// What dropping the driver did with the memory the kernel may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Nothing was in flight: freed.
    Freed,
    /// The kernel still held requests: leaked.
    Leaked { in_kernel: usize },
}

/// The server's event loop.
pub struct Driver {
    // Field order is drop order: the ring is closed before the memory its
    // requests point into (which `Drop` leaks if requests are still out).
    ring: IoUring,
    ctx: Context,
    tun: TunPath,
    udp: Option<UdpPath>,
    tcp: TcpPath,
    timer: Timer,
    signal: SignalRead,
    cqes: Vec<(u64, i32, u32)>,
    shutdown_deadline: Option<Instant>,
    stats_at: Instant,
    /// Where the peers' last handshake timestamps are saved, if anywhere.
    state: Option<HandshakeState>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

/// Whether this process may create an io_uring at all: a two-entry ring, made and dropped
/// before anything else is set up, so `--io auto` can choose its backend first.
pub fn probe() -> Result<(), DriverError> {
    match IoUring::new(2) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(DriverError::NotPermitted),
        Err(e) => Err(DriverError::Setup(e)),
    }
}

/// Completion queue size: room for every request that can be in flight at
/// once, TCP connections (a receive and a send each) included.
fn cq_entries(t: &Tunables, max_tcp: u32) -> u32 {
    let inflight = u64::from(t.tun_rx_slots)
        + u64::from(t.udp_rx_slots)
        + u64::from(t.tx_slots)
        + u64::from(FIXED_REQUESTS)
        + 2 * u64::from(max_tcp);
    let want = (2 * inflight)
        .next_power_of_two()
        .max(2 * u64::from(t.ring_entries));
    want.min(65536) as u32
}

impl Driver {
    /// Builds the ring and the paths.
    pub fn new(
        t: &Tunables,
        limits: TcpLimits,
        path: DataPath,
        fds: Fds,
        sessions: Sessions,
    ) -> Result<Self, DriverError> {
        t.check()?;
        let max_tcp = if fds.tcp_listener.is_some() {
            limits.max_connections
        } else {
            0
        };
        let cq = cq_entries(t, max_tcp);
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq);
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
                    .setup_cqsize(cq)
                    .build(t.ring_entries)
                    .map_err(DriverError::Setup)?
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return Err(DriverError::NotPermitted)
            }
            Err(e) => return Err(DriverError::Setup(e)),
        };

        // Payload room: the MTU plus headroom and tag, rounded to a cache line.
        let buf_size = (PAYLOAD_OFFSET + usize::from(path.mtu) + TAG_LEN + 63) & !63;
        let udp_rx_slots = if fds.udp.is_some() { t.udp_rx_slots } else { 0 };
        let rx_slots = (t.tun_rx_slots + udp_rx_slots) as usize;
        // Every receive slot holds one buffer (a large one with offload) and every
        // tx slot at most one small one, so whenever a tx slot is free a small
        // buffer is too (see `Io::check_pool`).
        let (mut small, mut large) = if path.vnet_hdr {
            (t.tx_slots as usize, rx_slots + t.offload_buffers as usize)
        } else {
            (rx_slots + t.tx_slots as usize, 0)
        };
        // A queued packet holds a buffer but no tx slot: one more small buffer per slot
        // of each direction's queue keeps a small buffer free for every free tx slot.
        // With offload, queued superpackets hold large buffers too: room for each
        // queue's byte limit of them, so coalescing and reading go on while a backlog
        // stands (past that, packets to the TUN fall back to small buffers, as they do
        // without the queue, and superpackets from it are sent at once).
        let mut queue_large = 0;
        if let Some(fq) = &t.fair_queue {
            small += 2 * fq.queue.limit_items as usize;
            if path.vnet_hdr {
                queue_large = (fq.queue.limit_bytes as usize)
                    .div_ceil(LARGE_BUF_SIZE)
                    .min(fq.queue.limit_items as usize);
                large += 2 * queue_large;
            }
        }
        let requests = rx_slots + t.tx_slots as usize + FIXED_REQUESTS as usize;
        let gro = path.vnet_hdr.then(|| {
            // A third of the offload buffers hold runs being built; the rest carry
            // superpackets to the TUN and multi-datagram sends, and a lone packet's
            // receive buffer may take one only while half of those are free.
            let runs = (t.offload_buffers as usize / 3).min(MAX_RUNS);
            let reserve = (t.offload_buffers as usize - runs) / 2;
            Gro::new(runs, t.tx_slots as usize, path.uso, reserve)
        });
        let rng = SystemRandom::new();
        let queue_error = |e: ringway_fq::ConfigError| {
            DriverError::Config(ConfigError::Fq {
                key: "limit_packets",
                reason: e.to_string(),
            })
        };
        let (inside_queue, outside_queue) = match &t.fair_queue {
            Some(fq) => {
                let inside =
                    InsideQueue::new(fq.queue.clone(), fq.tun_writes_in_flight, flow_seed(&rng))
                        .map_err(queue_error)?;
                let outside = OutsideQueue::new(fq.queue.clone(), queue_large, flow_seed(&rng))
                    .map_err(queue_error)?;
                (Some(inside), Some(outside))
            }
            None => (None, None),
        };
        let mut ctx = Context {
            sessions,
            ids: OsRandom(rng),
            io: Io {
                queue: Queue::with_capacity(2 * requests),
                bufs: Pools {
                    small: BufferPool::new(small, buf_size),
                    large: BufferPool::new(large, LARGE_BUF_SIZE),
                },
                tx: TxTable::new(t.tx_slots),
                counters: IoCounters::default(),
                tun_fd: fds.tun,
                udp_fd: fds.udp,
                path,
                gso: path.udp_gso,
                inside_queue,
                outside_queue,
                now: Instant::now(),
            },
            gro,
            stopping: false,
            fatal: None,
        };
        if let Some(gro) = &mut ctx.gro {
            gro.refill(&mut ctx.io.bufs.large);
        }
        let udp = fds.udp.map(|fd| {
            if path.vnet_hdr {
                if let Some(ring_buf) = register_udp_ring(&ring) {
                    let buffers = udp_rx_slots.min(RING_ENTRIES as u32);
                    return UdpPath::multishot(fd, buffers, ring_buf);
                }
            }
            UdpPath::new(fd, udp_rx_slots)
        });
        let tun = match path.vnet_hdr.then(|| register_tun_ring(&ring)).flatten() {
            Some(ring_buf) => {
                let buffers = t.tun_rx_slots.min(RING_ENTRIES as u32);
                TunPath::multishot(fds.tun, buffers, ring_buf)
            }
            None => TunPath::new(fds.tun, t.tun_rx_slots),
        };
        Ok(Driver {
            ring,
            ctx,
            tun,
            udp,
            tcp: TcpPath::new(limits, fds.tcp_listener),
            timer: Timer::new(),
            signal: SignalRead::new(fds.signal),
            cqes: Vec::with_capacity(cq as usize),
            shutdown_deadline: None,
            stats_at: Instant::now(),
            state: None,
        })
    }

    /// Saves the peers' last handshake timestamps to `state` when the loop ends (not on the
    /// data path: the loop's only system call stays `io_uring_enter`).
    pub fn with_handshake_state(mut self, state: HandshakeState) -> Self {
        self.state = Some(state);
        self
    }

    /// The session layer, for inspection after the loop ends.
    pub fn sessions(&self) -> &Sessions {
        &self.ctx.sessions
    }

    /// I/O counters, for inspection after the loop ends.
    pub fn io_counters(&self) -> &IoCounters {
        &self.ctx.io.counters
    }

    /// What the ring holds now.
    pub fn usage(&self) -> RingUsage {
        let io = &self.ctx.io;
        RingUsage {
            in_flight: io.queue.inflight(),
            free_buffers: io.bufs.small.available(),
            buffers: io.bufs.small.capacity(),
            free_large_buffers: io.bufs.large.available(),
            large_buffers: io.bufs.large.capacity(),
            free_tx_slots: io.tx.free_slots(),
            tx_slots: io.tx.len() as usize,
        }
    }

    /// Runs until SIGINT/SIGTERM, then cancels everything and waits for the
    /// kernel to hand every buffer back.
    pub fn run(&mut self) -> Result<(), DriverError> {
        self.start();
        while self.turn()? {}
        tracing::info!(counters = %self.ctx.sessions.counters, io = %self.ctx.io.counters, "stopped");
        save_if_changed(self.state.as_mut(), &mut self.ctx.sessions, true);
        match self.ctx.fatal {
            Some(why) => Err(DriverError::Gone(why)),
            None => Ok(()),
        }
    }

    /// Arms every path's requests.
    fn start(&mut self) {
        let io = &mut self.ctx.io;
        self.tun.start(io);
        if let Some(udp) = &mut self.udp {
            udp.start(io);
        }
        self.tcp.start(io);
        self.timer.arm(io);
        self.signal.arm(io);
    }

    /// One round: submit what is queued, wait for completions, dispatch them.
    /// `false` once the loop is over.
    fn turn(&mut self) -> Result<bool, DriverError> {
        self.ctx.io.queue.flush(&mut self.ring.submission());
        let res = match self.shutdown_deadline {
            None => {
                // With a backlog, submit without waiting: reaping makes room.
                let want = usize::from(!self.ctx.io.queue.has_backlog());
                self.ring.submit_and_wait(want)
            }
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::warn!(
                        in_flight = self.ctx.io.queue.inflight(),
                        "requests still in flight after the shutdown grace period"
                    );
                    self.finish();
                    return Ok(false);
                }
                let ts = types::Timespec::from(left);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        if let Err(e) = res {
            match e.raw_os_error() {
                // Interrupted, timed out, or completions waiting to be reaped first.
                Some(libc::EINTR | libc::ETIME | libc::EBUSY | libc::EAGAIN) => {}
                _ => return Err(DriverError::Enter(e)),
            }
        }
        self.reap();
        if let (Some(why), None) = (self.ctx.fatal, self.shutdown_deadline) {
            tracing::error!("{why}: stopping");
            self.begin_shutdown(0, Instant::now());
        }
        let over = self.shutdown_deadline.is_some() && self.ctx.io.queue.inflight() == 0;
        if over {
            self.finish();
        }
        Ok(!over)
    }

    /// The loop is over: the coalescing batch gives its buffers back, and so does the
    /// UDP receive's buffer ring once the kernel can no longer use it.
    fn finish(&mut self) {
        if let Some(gro) = &mut self.ctx.gro {
            gro.release(&mut self.ctx.io.bufs);
        }
        let io = &mut self.ctx.io;
        if let Some(q) = &mut io.inside_queue {
            q.clear(&mut io.bufs);
            io.counters.fq_inside.update(q.stats());
        }
        if let Some(q) = &mut io.outside_queue {
            q.clear(&mut io.bufs);
            io.counters.fq_outside.update(q.stats());
        }
        if self.ctx.io.queue.in_kernel() > 0 {
            // A request may still pick from the rings: they are leaked on drop instead.
            return;
        }
        let rings = [
            self.udp.as_mut().and_then(UdpPath::buf_ring),
            self.tun.buf_ring(),
        ];
        for ring_buf in rings.into_iter().flatten() {
            match self.ring.submitter().unregister_buf_ring(ring_buf.bgid()) {
                Ok(()) => {
                    for buf in ring_buf.drain() {
                        self.ctx.io.bufs.put(buf);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not unregister a buffer ring"),
            }
        }
    }

    fn reap(&mut self) {
        self.cqes.clear();
        self.cqes.extend(
            self.ring
                .completion()
                .map(|cqe| (cqe.user_data(), cqe.result(), cqe.flags())),
        );
        if self.cqes.is_empty() {
            return;
        }
        let now = Instant::now();
        self.ctx.io.now = now;
        for i in 0..self.cqes.len() {
            let (user_data, res, flags) = self.cqes[i];
            self.dispatch(user_data, res, flags, now);
        }
        // Everything this round brought in for the TUN, coalesced: one write per
        // superpacket and per lone packet.
        if let Some(gro) = &mut self.ctx.gro {
            gro.flush(&mut self.ctx.io);
        }
        // Then, with the flow queue, the few TUN writes whose turn it is: everything
        // the round received is queued by now, so a sparse flow's packet goes first.
        self.ctx.io.pump_inside();
        // And what the round read from the TUN, sealed as it goes out (to a UDP peer while
        // a tx slot is free, to a TCP peer while its connection's send queue has room).
        send_queued(&mut self.ctx, &mut self.tcp);
        if now.duration_since(self.stats_at) >= STATS_EVERY {
            self.stats_at = now;
            tracing::debug!(sessions = self.ctx.sessions.len(), tcp = self.tcp.live(), counters = %self.ctx.sessions.counters, io = %self.ctx.io.counters, "stats");
        }
    }

    /// Hands one completion to the path that owns it.
    fn dispatch(&mut self, user_data: u64, res: i32, flags: u32, now: Instant) {
        let Some(ud) = UserData::decode(user_data) else {
            // Not ours to route, but a request all the same: retire it so
            // shutdown does not wait for it.
            self.ctx.io.counters.unknown_completions += 1;
            if !cqueue::more(flags) {
                self.ctx.io.queue.retire();
            }
            tracing::error!(user_data, res, "completion with unknown user_data");
            return;
        };
        let c = Completion { ud, res, flags };
        if c.ends_request() {
            self.ctx.io.queue.retire();
        }
        let ctx = &mut self.ctx;
        match ud.path {
            Path::TunRx => self.tun.on_read(ctx, &mut self.tcp, &c, now),
            Path::TunRxMulti => self.tun.on_read_multi(ctx, &mut self.tcp, &c, now),
            Path::TunPoll => self.tun.on_poll(ctx, &c),
            Path::UdpRx => match &mut self.udp {
                Some(udp) => udp.on_recv(ctx, &c, now),
                None => ctx.io.counters.stale_completions += 1,
            },
            Path::UdpRxMulti => match &mut self.udp {
                Some(udp) => udp.on_recv_multi(ctx, &c, now),
                None => ctx.io.counters.stale_completions += 1,
            },
            Path::Tx => ctx.io.on_sent(&c),
            Path::Timer => self.timer.on_complete(ctx, &mut self.tcp, &c, now),
            Path::Signal => {
                if let Some(signal) = self.signal.on_complete(ctx, &c) {
                    self.begin_shutdown(signal, now);
                }
            }
            Path::Accept => self.tcp.on_accept(ctx, &c, now),
            Path::TcpRx => self.tcp.on_recv(ctx, &c, now),
            Path::TcpTx => self.tcp.on_sent(ctx, &c),
            Path::Cancel => {}
        }
    }

    /// Says goodbye to peers, cancels every receive, poll and the timer, and
    /// closes every connection; the loop then ends once nothing is in flight.
    fn begin_shutdown(&mut self, signal: u32, now: Instant) {
        tracing::info!(signal, "shutting down");
        self.shutdown_deadline = Some(now + SHUTDOWN_GRACE);
        let ctx = &mut self.ctx;
        ctx.stopping = true;
        // UDP peers get a Disconnect; TCP peers see their connection close.
        let io = &mut ctx.io;
        ctx.sessions.disconnect_all(now, |out| {
            if let TimerOutput::Send(Outside::Udp(to), frame) = out {
                io.send_udp_copy(to, frame);
            }
        });
        // Requests queued but never submitted need no cancel: take them back.
        let (tun, udp, timer, signal) = (
            &mut self.tun,
            &mut self.udp,
            &mut self.timer,
            &mut self.signal,
        );
        let bufs = &mut io.bufs;
        io.queue.drain_unsubmitted(|ud| match ud.path {
            Path::TunRx | Path::TunPoll | Path::TunRxMulti => tun.forget(bufs, ud),
            Path::UdpRx | Path::UdpRxMulti => udp.as_mut().is_some_and(|u| u.forget(bufs, ud)),
            Path::Timer => timer.forget(ud),
            Path::Signal => signal.forget(ud),
            _ => false,
        });
        // Cancel what the kernel holds; sends finish on their own.
        let receives = tun
            .in_flight()
            .chain(udp.iter().flat_map(|u| u.in_flight()));
        for ud in receives.chain(timer.in_flight()) {
            io.queue.cancel(ud);
        }
        self.tcp.shutdown(ctx);
    }

    /// Frees nothing the kernel may still use: if it holds requests, every
    /// piece of memory they could point into is leaked instead.
    fn release(&mut self) -> Release {
        let in_kernel = self.ctx.io.queue.in_kernel();
        if in_kernel == 0 {
            return Release::Freed;
        }
        tracing::warn!(
            in_kernel,
            "leaking the ring's buffers: the kernel still holds requests"
        );
        self.ctx.io.leak();
        if let Some(udp) = &mut self.udp {
            udp.leak();
        }
        self.tun.leak();
        self.tcp.leak();
        self.timer.leak();
        self.signal.leak();
        Release::Leaked { in_kernel }
    }
}

/// The flow hash key, from the system RNG: flows an outsider cannot aim at one bucket.
fn flow_seed(rng: &SystemRandom) -> ringway_fq::inner::FlowSeed {
    let mut key = [0u8; 16];
    if rng.fill(&mut key).is_err() {
        // The kernel's getrandom does not fail after boot; a fixed key only makes the
        // buckets predictable, never the queue wrong.
        tracing::warn!("no system randomness for the flow hash key");
    }
    ringway_fq::inner::FlowSeed::from_bytes(key)
}

/// A provided-buffer ring for the UDP receive, registered with `ring`; `None` where the
/// kernel has none (before 5.19): the receive then uses single requests.
fn register_udp_ring(ring: &IoUring) -> Option<BufRing> {
    let region = Region {
        offset: 0,
        len: LARGE_BUF_SIZE,
    };
    match BufRing::register(ring, UDP_BGID, region) {
        Ok(buf_ring) => Some(buf_ring),
        Err(e) => {
            tracing::info!(error = %e, "no provided-buffer rings: UDP receives one request per datagram");
            None
        }
    }
}

/// A provided-buffer ring for the TUN read, registered with `ring`; `None` where the
/// kernel has no multishot read (before 6.7) or no such rings: single reads then.
fn register_tun_ring(ring: &IoUring) -> Option<BufRing> {
    let mut probe = io_uring::Probe::new();
    let supported = ring.submitter().register_probe(&mut probe).is_ok()
        && probe.is_supported(io_uring::opcode::ReadMulti::CODE);
    if !supported {
        tracing::info!("no multishot read: the TUN is read one request per packet");
        return None;
    }
    match BufRing::register(ring, TUN_BGID, multishot_region(LARGE_BUF_SIZE)) {
        Ok(buf_ring) => Some(buf_ring),
        Err(e) => {
            tracing::info!(error = %e, "no provided-buffer rings: the TUN is read one request per packet");
            None
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests;
