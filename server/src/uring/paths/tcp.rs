//! The TCP path: multishot accept, one receive and at most one send in flight
//! per connection, and a teardown that never frees memory the kernel may
//! still use.
//!
//! A connection is named by a [`ConnId`] (slot index + generation), never by
//! its file descriptor: a new accept may reuse a closed descriptor number while
//! completions of the old connection are still arriving. Its requests carry
//! that id as their `user_data` slot and generation. Closing marks the
//! connection, cancels its outstanding requests, and frees it (closing the
//! descriptor and dropping its buffers) only once both have completed.
//!
//! What the kernel touches per connection: the reassembly buffer a receive
//! fills (reachable only through [`ConnRx`], and only while no receive is in
//! flight), and the `msghdr` and iovecs of a send (in a [`KernelBox`]) over
//! frames the send queue keeps alive until the send completes.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use ringway_proto::wire::stream::{encode_prefix, FrameAssembler};
use ringway_proto::wire::{frame_type, FrameType};

use super::super::context::{Context, Io};
use super::super::gro::Parts;
use super::super::kernel_box::KernelBox;
use super::super::msg::MsgBuf;
use super::super::queue::Queue;
use super::super::slots::{Completion, Request};
use super::super::user_data::{next_generation, Path, UserData};
use crate::metrics::IoCounters;
use crate::outside::tcp::admission::{count_refusal, Admission};
pub(crate) use crate::outside::tcp::close::CloseReason;
use crate::outside::tcp::listener::{configure_connection, peer_addr};
use crate::outside::tcp::send_queue::{SendQueue, MAX_IOVECS};
use crate::sessions::{ConnId, Outside, OutsideAction};

/// Limits for TCP peers.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Connections served at once.
    pub max_connections: u32,
    /// Connections from one source address at once.
    pub max_per_source: u32,
    /// Time a new connection has to complete a handshake.
    pub handshake_timeout: Duration,
    /// Bytes queued per connection before frames to it are dropped.
    pub send_queue_bytes: usize,
    /// Per-connection receive buffer.
    pub rx_buffer_bytes: usize,
    /// Largest frame accepted on a stream.
    pub max_frame: usize,
    /// SO_SNDBUF (0 = kernel autotuning).
    pub socket_send_buffer: usize,
    /// SO_RCVBUF (0 = kernel autotuning).
    pub socket_recv_buffer: usize,
    /// A connection that receives nothing for this long is closed: its
    /// session (kept alive by keepalives) has moved elsewhere or its peer is gone.
    pub idle_timeout: Duration,
}

/// With the flow queue, a connection's send queue is filled only up to `1 /
/// TCP_QUEUE_GATE` of `send_queue_bytes`: the standing queue waits in the flow queue
/// (where a ping overtakes it and CoDel drops from its head), and the slack above takes
/// what must not wait (handshake replies, keepalives) and the one packet CoDel may hand
/// out behind a head it dropped, so nothing reaches the tail drop.
pub(in crate::uring) const TCP_QUEUE_GATE: usize = 2;

fn ud_of(path: Path, id: ConnId) -> UserData {
    UserData {
        path,
        slot: id.index,
        generation: id.generation,
    }
}

/// The receive side: the reassembly buffer and the receive filling it.
struct ConnRx {
    fd: RawFd,
    id: ConnId,
    asm: FrameAssembler,
    request: Request,
}

impl ConnRx {
    fn arm(&mut self, queue: &mut Queue) {
        let spare = self.asm.spare_mut();
        let (ptr, len) = (spare.as_mut_ptr(), spare.len());
        let ud = self.request.arm_as(ud_of(Path::TcpRx, self.id));
        let e = opcode::Recv::new(types::Fd(self.fd), ptr, len as u32)
            .build()
            .user_data(ud.encode());
        // SAFETY: `ptr..ptr + len` is the assembler's spare space in its heap
        // buffer, which does not move with the assembler; the `&mut` that
        // produced it ends here, and the assembler is reachable only through
        // `assembler()`, which refuses while this receive is in flight. The
        // connection (buffer included) is freed only once none of its requests
        // is in flight (`Conns::free_if_done`), or leaked with the driver.
        unsafe { queue.push(e) };
    }

    /// The assembler, once no receive is filling it.
    fn assembler(&mut self) -> Option<&mut FrameAssembler> {
        (!self.request.is_armed()).then_some(&mut self.asm)
    }
}

// By hand: the derived form would read the buffer the kernel may be filling.
impl std::fmt::Debug for ConnRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnRx")
            .field("id", &self.id)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// The send side: queued frames and the one `sendmsg` in flight over them.
#[derive(Debug)]
struct ConnTx {
    fd: RawFd,
    id: ConnId,
    queue: SendQueue,
    msg: KernelBox<MsgBuf<MAX_IOVECS>>,
    request: Request,
}

impl ConnTx {
    /// Queues `parts` (length prefix + frame, or `frames` prefixed frames back to
    /// back) and starts a send. Counts the frames as dropped if the queue is full.
    fn send(
        &mut self,
        queue: &mut Queue,
        counters: &mut IoCounters,
        parts: &[&[u8]],
        frames: usize,
    ) {
        if self.queue.push_parts(parts).is_err() {
            counters.drop_tcp_queue_full += frames as u64;
            return;
        }
        counters.tcp_tx_frames += frames as u64;
        self.start(queue);
    }

    /// Starts a send of the queued frames if there are any and none is in flight.
    fn start(&mut self, queue: &mut Queue) {
        if self.request.is_armed() || !self.queue.wants_send() {
            return;
        }
        let msg = self.msg.get();
        let frames = &mut self.queue;
        // SAFETY: no send of this connection is in flight (checked above), so
        // the kernel holds no pointer to this header.
        unsafe { msg.prepare_gather(|iov| frames.start_send(iov)) };
        let ud = self.request.arm_as(ud_of(Path::TcpTx, self.id));
        // MSG_NOSIGNAL: a peer that vanished must give EPIPE, not kill the server.
        let e = opcode::SendMsg::new(types::Fd(self.fd), msg.header())
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(ud.encode());
        // SAFETY: the header and iovecs are in a KernelBox (fixed address,
        // freed only with the connection, which waits for this completion, or
        // leaked); the iovecs point at frames the send queue keeps, unmoved and
        // unmodified, until `complete` or `abort_send` after this send's
        // completion.
        unsafe { queue.push(e) };
    }
}

#[derive(Debug)]
struct Conn {
    /// The socket, closed when the connection is freed; the halves use its number.
    _fd: OwnedFd,
    rx: ConnRx,
    tx: ConnTx,
    closing: bool,
    /// When it was accepted, until it completes a handshake.
    unproven_since: Option<Instant>,
    /// When bytes last arrived.
    last_rx: Instant,
    peer: Option<SocketAddr>,
}

#[derive(Debug)]
struct ConnSlot {
    generation: u32,
    conn: Option<Box<Conn>>,
}

/// The connection table.
#[derive(Debug, Default)]
struct Conns {
    slots: Vec<ConnSlot>,
    free: Vec<u32>,
    live: usize,
}

impl Conns {
    fn get(&self, id: ConnId) -> Option<&Conn> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.conn.as_deref()
    }

    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.conn.as_deref_mut()
    }

    /// Makes a connection (told its id) and stores it.
    fn insert(&mut self, make: impl FnOnce(ConnId) -> Box<Conn>) -> ConnId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(ConnSlot {
                    generation: 0,
                    conn: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = ConnId {
            index,
            generation: slot.generation,
        };
        slot.conn = Some(make(id));
        self.live += 1;
        id
    }

    /// Frees a closing connection once the kernel holds none of its requests.
    fn free_if_done(&mut self, id: ConnId) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.generation != id.generation {
            return;
        }
        let done = slot
            .conn
            .as_ref()
            .is_some_and(|c| c.closing && !c.rx.request.is_armed() && !c.tx.request.is_armed());
        if done {
            // Dropping the box closes the descriptor and frees its buffers: no
            // request of this connection is in flight any more.
            slot.conn = None;
            slot.generation = next_generation(slot.generation);
            self.free.push(id.index);
            self.live -= 1;
        }
    }

    /// Every open connection's id and state.
    fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let id = ConnId {
                index: index as u32,
                generation: slot.generation,
            };
            slot.conn.as_deref().map(|c| (id, c))
        })
    }
}

/// The listener and the connections.
#[derive(Debug)]
pub(in crate::uring) struct TcpPath {
    listen_fd: Option<RawFd>,
    accept: Request,
    /// Set when accept failed for lack of descriptors: re-armed on the next tick
    /// rather than at once, so a full descriptor table does not spin the loop.
    accept_backoff: bool,
    conns: Conns,
    limits: TcpLimits,
    /// The per-source cap and the handshake deadline under pressure.
    admission: Admission,
    /// Connections to close once the current pass is over.
    to_close: Vec<(ConnId, CloseReason)>,
}

impl TcpPath {
    /// No connections yet; accepts on `listen_fd` once started.
    pub fn new(limits: TcpLimits, listen_fd: Option<RawFd>) -> Self {
        TcpPath {
            listen_fd,
            accept: Request::default(),
            accept_backoff: false,
            conns: Conns::default(),
            admission: Admission::new(
                limits.max_connections,
                limits.max_per_source,
                limits.handshake_timeout,
            ),
            limits,
            to_close: Vec::new(),
        }
    }

    /// Connections open (including ones closing).
    pub fn live(&self) -> usize {
        self.conns.live
    }

    /// Starts accepting.
    pub fn start(&mut self, io: &mut Io) {
        self.arm_accept(io);
    }

    fn arm_accept(&mut self, io: &mut Io) {
        let Some(fd) = self.listen_fd else {
            return;
        };
        if self.accept.is_armed() {
            return;
        }
        let ud = self.accept.arm(Path::Accept, 0);
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud.encode());
        // SAFETY: a multishot accept without a peer address carries no pointer
        // into our memory.
        unsafe { io.queue.push(e) };
    }

    /// A connection arrived (or the accept ended).
    pub fn on_accept(&mut self, ctx: &mut Context, c: &Completion, now: Instant) {
        if !self.accept.complete(c) {
            ctx.io.counters.stale_completions += 1;
            // A descriptor handed to a request we no longer track is still ours to close.
            if c.res >= 0 {
                // SAFETY: a successful accept returns a new descriptor that
                // nothing else owns; OwnedFd closes it exactly once.
                drop(unsafe { OwnedFd::from_raw_fd(c.res) });
            }
            return;
        }
        if c.res < 0 {
            let quiet = [
                libc::ECANCELED,
                libc::ECONNABORTED,
                libc::EINTR,
                libc::EAGAIN,
            ];
            if !quiet.contains(&-c.res) {
                // Out of descriptors, a policy refusing accept, a kernel without
                // multishot accept: retrying at once would spin, so wait a tick.
                tracing::warn!(error = ?c.error(), "accept failed; retrying in a second");
                ctx.io.counters.io_errors += 1;
                self.accept_backoff = true;
            }
        } else {
            // SAFETY: a successful accept returns a new descriptor that nothing
            // else owns; OwnedFd closes it exactly once.
            let fd = unsafe { OwnedFd::from_raw_fd(c.res) };
            self.on_new_connection(ctx, fd, now);
        }
        if !self.accept_backoff && !ctx.stopping {
            self.arm_accept(&mut ctx.io);
        }
    }

    fn on_new_connection(&mut self, ctx: &mut Context, fd: OwnedFd, now: Instant) {
        if ctx.stopping {
            return;
        }
        let limits = &self.limits;
        let peer = peer_addr(&fd);
        if let Err(refused) = self.admission.admit(peer.map(|p| p.ip()), self.conns.live) {
            count_refusal(&mut ctx.io.counters, refused, peer);
            return; // dropping `fd` closes it
        }
        configure_connection(&fd, limits.socket_send_buffer, limits.socket_recv_buffer);
        let id = self.conns.insert(|id| {
            let raw = fd.as_raw_fd();
            Box::new(Conn {
                _fd: fd,
                rx: ConnRx {
                    fd: raw,
                    id,
                    asm: FrameAssembler::new(limits.rx_buffer_bytes, limits.max_frame),
                    request: Request::default(),
                },
                tx: ConnTx {
                    fd: raw,
                    id,
                    queue: SendQueue::new(limits.send_queue_bytes),
                    msg: MsgBuf::boxed(),
                    request: Request::default(),
                },
                closing: false,
                unproven_since: Some(now),
                last_rx: now,
                peer,
            })
        });
        ctx.io.counters.tcp_accepted += 1;
        tracing::debug!(?peer, conn = id.index, "TCP connection accepted");
        if let Some(conn) = self.conns.get_mut(id) {
            conn.rx.arm(&mut ctx.io.queue);
        }
    }

    /// Bytes arrived on a connection: hand every complete frame to the session
    /// layer, then receive again (or close a connection that sent garbage).
    pub fn on_recv(&mut self, ctx: &mut Context, c: &Completion, now: Instant) {
        let id = ConnId {
            index: c.ud.slot,
            generation: c.ud.generation,
        };
        let mine = |conn: &mut Conn| conn.rx.request.complete(c);
        let Some(conn) = self
            .conns
            .get_mut(id)
            .and_then(|conn| mine(conn).then_some(conn))
        else {
            ctx.io.counters.stale_completions += 1;
            return;
        };
        if conn.closing {
            self.conns.free_if_done(id);
            return;
        }
        let Some(n) = c.bytes() else {
            if c.res == -libc::EAGAIN || c.res == -libc::EINTR {
                conn.rx.arm(&mut ctx.io.queue);
            } else if c.res == 0 {
                self.close(ctx, id, CloseReason::ByPeer);
            } else {
                tracing::debug!(error = ?c.error(), "TCP receive failed");
                self.close(ctx, id, CloseReason::Error);
            }
            return;
        };
        let Some(asm) = conn.rx.assembler() else {
            debug_assert!(
                false,
                "the receive just completed, yet the assembler is busy"
            );
            return;
        };
        asm.commit(n);
        conn.last_rx = now;
        ctx.io.counters.tcp_rx_recvs += 1;
        let from = Outside::Tcp(id);
        let mut garbage = false;
        loop {
            let frame = match asm.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    garbage = true;
                    break;
                }
            };
            ctx.io.counters.tcp_rx_frames += 1;
            // A stream that is not Ringway frames cannot be resynchronised, and
            // before its handshake a connection may send nothing but one.
            match frame_type(frame) {
                Ok(FrameType::HandshakeInit) => {}
                Ok(t) if t.is_transport() && conn.unproven_since.is_none() => {}
                _ => {
                    garbage = true;
                    break;
                }
            }
            match ctx.sessions.handle_outside(frame, from, now, &mut ctx.ids) {
                OutsideAction::None => {}
                // The stream buffer is reused by the next receive: the packet is
                // copied, into a superpacket being coalesced or a buffer of its own.
                OutsideAction::ToInside(range) => match &mut ctx.gro {
                    Some(gro) => {
                        if gro.is_full() {
                            gro.flush(&mut ctx.io);
                        }
                        gro.push_copy(Parts::of(&mut ctx.io), &frame[range]);
                    }
                    None => ctx.io.write_tun_copy(&frame[range]),
                },
                OutsideAction::Reply(to, bytes) if to == from => {
                    // Only an accepted handshake ends the deadline; a reject
                    // or an echo does not.
                    if frame_type(&bytes) == Ok(FrameType::HandshakeResp) {
                        conn.unproven_since = None;
                    }
                    if let Ok(prefix) = encode_prefix(bytes.len()) {
                        conn.tx.send(
                            &mut ctx.io.queue,
                            &mut ctx.io.counters,
                            &[&prefix, &bytes],
                            1,
                        );
                    }
                }
                OutsideAction::Reply(..) => {}
            }
        }
        if garbage {
            self.close(ctx, id, CloseReason::Garbage);
        } else {
            conn.rx.arm(&mut ctx.io.queue);
        }
    }

    /// A send on a connection completed: consume what went, send the rest.
    pub fn on_sent(&mut self, ctx: &mut Context, c: &Completion) {
        let id = ConnId {
            index: c.ud.slot,
            generation: c.ud.generation,
        };
        let mine = |conn: &mut Conn| conn.tx.request.complete(c);
        let Some(conn) = self
            .conns
            .get_mut(id)
            .and_then(|conn| mine(conn).then_some(conn))
        else {
            ctx.io.counters.stale_completions += 1;
            return;
        };
        if conn.closing {
            conn.tx.queue.abort_send();
            self.conns.free_if_done(id);
            return;
        }
        match c.bytes() {
            // No assumption on the count: a short send resumes where the kernel stopped.
            Some(n) => {
                ctx.io.counters.tcp_tx_sends += 1;
                conn.tx.queue.complete(n);
            }
            None if c.res == -libc::EAGAIN || c.res == -libc::EINTR || c.res == 0 => {
                conn.tx.queue.abort_send();
            }
            None => {
                conn.tx.queue.abort_send();
                tracing::debug!(error = ?c.error(), "TCP send failed");
                self.close(ctx, id, CloseReason::Error);
                return;
            }
        }
        conn.tx.start(&mut ctx.io.queue);
    }

    /// Queues `parts` (length prefix + frame) on connection `id` and starts a
    /// send if none is in flight. Counts a drop if the queue is full.
    fn send_frame(&mut self, io: &mut Io, id: ConnId, parts: &[&[u8]]) {
        if let Some(conn) = self.conns.get_mut(id).filter(|c| !c.closing) {
            conn.tx.send(&mut io.queue, &mut io.counters, parts, 1);
        }
    }

    /// Whether connection `id`'s send queue takes `bytes` more while staying under
    /// [`TCP_QUEUE_GATE`] of its limit (an empty queue takes anything): what the flow
    /// queue asks before letting a packet for it leave. A connection that is gone or
    /// closing has room, so what waits for it leaves, finds no session and is dropped.
    pub fn has_room(&self, id: ConnId, bytes: usize) -> bool {
        let Some(conn) = self.conns.get(id).filter(|c| !c.closing) else {
            return true;
        };
        let queued = conn.tx.queue.queued_bytes();
        queued == 0 || queued + bytes <= self.limits.send_queue_bytes / TCP_QUEUE_GATE
    }

    /// Sends a frame that is not yet prefixed (a handshake reply, a keepalive).
    pub fn send_unprefixed(&mut self, io: &mut Io, id: ConnId, frame: &[u8]) {
        if let Ok(prefix) = encode_prefix(frame.len()) {
            self.send_frame(io, id, &[&prefix, frame]);
        }
    }

    /// Sends `bytes`: `frames` length-prefixed frames back to back. The
    /// connection's queue takes its one copy; the caller keeps `bytes`.
    pub fn send_bytes(
        &mut self,
        queue: &mut Queue,
        counters: &mut IoCounters,
        id: ConnId,
        bytes: &[u8],
        frames: usize,
    ) {
        if let Some(conn) = self.conns.get_mut(id).filter(|c| !c.closing) {
            conn.tx.send(queue, counters, &[bytes], frames);
        }
    }

    /// Sends `frames` length-prefixed frames that `fill` writes, `len` bytes in all,
    /// straight into the connection's send memory: no copy after `fill`'s, and one
    /// queue entry, so they leave in one gathered send. `fill` returns `false` if it
    /// could not (nothing is sent then). Counts the frames as dropped if the queue is
    /// full.
    pub fn send_built(
        &mut self,
        queue: &mut Queue,
        counters: &mut IoCounters,
        id: ConnId,
        len: usize,
        frames: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) {
        let Some(conn) = self.conns.get_mut(id).filter(|c| !c.closing) else {
            return;
        };
        match conn.tx.queue.push_built(len, fill) {
            Ok(true) => {
                counters.tcp_tx_frames += frames as u64;
                conn.tx.start(queue);
            }
            Ok(false) => {}
            Err(_) => counters.drop_tcp_queue_full += frames as u64,
        }
    }

    /// Starts closing `id`: cancels its requests, tells the session layer; the
    /// memory goes once the last completion is in.
    pub fn close(&mut self, ctx: &mut Context, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.closing {
            return;
        }
        conn.closing = true;
        self.admission.release(conn.peer.map(|p| p.ip()));
        tracing::debug!(peer = ?conn.peer, conn = id.index, ?reason, "closing TCP connection");
        let requests = [
            conn.rx.request.in_flight(Path::TcpRx, id.index),
            conn.tx.request.in_flight(Path::TcpTx, id.index),
        ];
        for ud in requests.into_iter().flatten() {
            ctx.io.queue.cancel(ud);
        }
        let counters = &mut ctx.io.counters;
        reason.count(counters);
        if reason != CloseReason::SessionEnd {
            ctx.sessions.connection_closed(id);
        }
        self.conns.free_if_done(id);
    }

    /// Once a second: close connections past their handshake deadline or
    /// silent for longer than the idle timeout, and re-arm an accept that
    /// backed off.
    pub fn tick(&mut self, ctx: &mut Context, now: Instant) {
        let idle = self.limits.idle_timeout;
        for (id, c) in self.conns.iter() {
            if c.closing {
                continue;
            }
            let overdue = |since| {
                self.admission
                    .handshake_overdue(since, now, self.conns.live)
            };
            let reason = if c.unproven_since.is_some_and(overdue) {
                CloseReason::HandshakeTimeout
            } else if now.saturating_duration_since(c.last_rx) >= idle {
                CloseReason::Idle
            } else {
                continue;
            };
            self.to_close.push((id, reason));
        }
        self.close_pending(ctx);
        if self.accept_backoff {
            self.accept_backoff = false;
            self.arm_accept(&mut ctx.io);
        }
    }

    fn close_pending(&mut self, ctx: &mut Context) {
        while let Some((id, reason)) = self.to_close.pop() {
            self.close(ctx, id, reason);
        }
    }

    /// Shutdown: stop accepting and close every connection.
    pub fn shutdown(&mut self, ctx: &mut Context) {
        if let Some(ud) = self.accept.in_flight(Path::Accept, 0) {
            ctx.io.queue.cancel(ud);
        }
        let open: Vec<_> = self
            .conns
            .iter()
            .map(|(id, _)| (id, CloseReason::Shutdown))
            .collect();
        self.to_close.extend(open);
        self.close_pending(ctx);
    }

    /// Forgets every connection without freeing its memory: for a teardown in
    /// which the kernel did not return all requests.
    pub fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.conns.slots));
    }
}
