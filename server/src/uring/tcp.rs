//! TCP connections in the ring: multishot accept, one receive and at most one
//! send in flight per connection, and a teardown that never frees memory the
//! kernel may still use.
//!
//! A connection is named by a [`ConnId`] (slot index + generation), never by
//! its file descriptor: a new accept may reuse a closed descriptor number while
//! completions of the old connection are still arriving. Closing marks the
//! connection, cancels its outstanding requests, and frees it (closing the
//! descriptor and dropping its buffers) only once both have completed.
#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};
use ringway_proto::wire::stream::{encode_prefix, FrameAssembler};
use ringway_proto::wire::{frame_type, FrameType};

use super::driver::Driver;
use super::tx::{queue_cancel, queue_tun_write, take_copy, Queue};
use super::user_data::{next_generation, Path, UserData};
use crate::metrics::IoCounters;
use crate::outside::tcp::listener::{configure_connection, peer_addr};
use crate::outside::tcp::send_queue::{SendQueue, MAX_IOVECS};
use crate::sessions::{ConnId, Outside, OutsideAction, PAYLOAD_OFFSET};

/// Limits for TCP peers.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    /// Connections served at once.
    pub max_connections: u32,
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

/// Why a connection was closed, for counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CloseReason {
    Garbage,
    HandshakeTimeout,
    ByPeer,
    Error,
    SessionEnd,
    Idle,
    Shutdown,
}

pub(super) struct Conn {
    fd: OwnedFd,
    asm: FrameAssembler,
    tx: SendQueue,
    iov: [libc::iovec; MAX_IOVECS],
    msg: libc::msghdr,
    rx_armed: bool,
    tx_armed: bool,
    closing: bool,
    /// Set until the connection completes a handshake.
    handshake_deadline: Option<Instant>,
    /// When bytes last arrived.
    last_rx: Instant,
    peer: Option<SocketAddr>,
}

struct ConnSlot {
    generation: u32,
    conn: Option<Box<Conn>>,
}

/// The connection table and the listener's state.
pub(super) struct Conns {
    slots: Vec<ConnSlot>,
    free: Vec<u32>,
    live: usize,
    pub limits: TcpLimits,
    listen_fd: Option<RawFd>,
    accept_armed: bool,
    accept_generation: u32,
    /// Set when accept failed for lack of descriptors: re-armed on the next tick
    /// rather than at once, so a full descriptor table does not spin the loop.
    accept_backoff: bool,
    /// Connections to close once the current completion is handled.
    pub to_close: Vec<(ConnId, CloseReason)>,
}

impl Conns {
    pub fn new(limits: TcpLimits, listen_fd: Option<RawFd>) -> Self {
        Conns {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            limits,
            listen_fd,
            accept_armed: false,
            accept_generation: 0,
            accept_backoff: false,
            to_close: Vec::new(),
        }
    }

    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.conn.as_deref_mut()
    }

    fn insert(&mut self, conn: Box<Conn>) -> ConnId {
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
        slot.conn = Some(conn);
        self.live += 1;
        ConnId {
            index,
            generation: slot.generation,
        }
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
            .is_some_and(|c| c.closing && !c.rx_armed && !c.tx_armed);
        if done {
            // Dropping the box closes the descriptor and frees its buffers: no
            // request of this connection is in flight any more.
            slot.conn = None;
            slot.generation = next_generation(slot.generation);
            self.free.push(id.index);
            self.live -= 1;
        }
    }

    /// Live connections (including ones closing).
    pub fn live(&self) -> usize {
        self.live
    }

    /// Forgets every connection without freeing its memory: for a teardown in
    /// which the kernel did not return all requests.
    pub fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slots));
    }
}

/// Queues `parts` (length prefix + frame, or one prefixed slice) on connection
/// `id` and starts a send if none is in flight. Counts a drop if the queue is full.
pub(super) fn queue_frame(
    conns: &mut Conns,
    id: ConnId,
    parts: &[&[u8]],

    queue: &mut Queue,
    io: &mut IoCounters,
) {
    let Some(conn) = conns.get_mut(id) else {
        return;
    };
    if conn.closing {
        return;
    }
    if conn.tx.push_parts(parts).is_err() {
        io.drop_tcp_queue_full += 1;
        return;
    }
    io.tcp_tx_frames += 1;
    start_send(conn, id, queue);
}

/// Sends a frame that is not yet prefixed (a handshake reply, a keepalive).
pub(super) fn queue_unprefixed(
    conns: &mut Conns,
    id: ConnId,
    frame: &[u8],

    queue: &mut Queue,
    io: &mut IoCounters,
) {
    let Ok(prefix) = encode_prefix(frame.len()) else {
        return;
    };
    queue_frame(conns, id, &[&prefix, frame], queue, io);
}

fn start_send(conn: &mut Conn, id: ConnId, queue: &mut Queue) {
    if conn.tx_armed || conn.closing || !conn.tx.wants_send() {
        return;
    }
    let n = conn.tx.start_send(&mut conn.iov);
    conn.msg.msg_iov = conn.iov.as_mut_ptr();
    conn.msg.msg_iovlen = n as _;
    conn.tx_armed = true;
    let ud = UserData {
        path: Path::TcpTx,
        slot: id.index,
        generation: id.generation,
    };
    // MSG_NOSIGNAL: a peer that vanished must give EPIPE, not kill the server.
    queue.push(
        opcode::SendMsg::new(types::Fd(conn.fd.as_raw_fd()), &conn.msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(ud.encode()),
    );
}

fn arm_recv(conn: &mut Conn, id: ConnId, queue: &mut Queue) {
    let spare = conn.asm.spare_mut();
    let (ptr, len) = (spare.as_mut_ptr(), spare.len());
    conn.rx_armed = true;
    let ud = UserData {
        path: Path::TcpRx,
        slot: id.index,
        generation: id.generation,
    };
    queue.push(
        opcode::Recv::new(types::Fd(conn.fd.as_raw_fd()), ptr, len as u32)
            .build()
            .user_data(ud.encode()),
    );
}

fn cancel(queue: &mut Queue, path: Path, id: ConnId) {
    queue_cancel(
        queue,
        UserData {
            path,
            slot: id.index,
            generation: id.generation,
        },
    );
}

impl Driver {
    pub(super) fn arm_accept(&mut self) {
        let Some(fd) = self.conns.listen_fd else {
            return;
        };
        if self.conns.accept_armed {
            return;
        }
        self.conns.accept_generation = next_generation(self.conns.accept_generation);
        self.conns.accept_armed = true;
        let ud = UserData {
            path: Path::Accept,
            slot: 0,
            generation: self.conns.accept_generation,
        };
        self.queue.push(
            opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_CLOEXEC)
                .build()
                .user_data(ud.encode()),
        );
    }

    pub(super) fn on_accept(&mut self, ud: UserData, res: i32, flags: u32, now: Instant) {
        if ud.generation != self.conns.accept_generation {
            return;
        }
        if !cqueue::more(flags) {
            self.conns.accept_armed = false;
        }
        if res < 0 {
            let transient = [
                libc::ECANCELED,
                libc::ECONNABORTED,
                libc::EINTR,
                libc::EAGAIN,
            ];
            if !transient.contains(&-res) {
                // Out of descriptors, a policy refusing accept, a kernel without
                // multishot accept: retrying at once would spin, so wait a tick.
                tracing::warn!(error = %std::io::Error::from_raw_os_error(-res), "accept failed; retrying in a second");
                self.io.io_errors += 1;
                self.conns.accept_backoff = true;
            }
        } else {
            // SAFETY: a successful accept returns a new descriptor that nothing
            // else owns; OwnedFd closes it exactly once.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            self.on_new_connection(fd, now);
        }
        if !self.conns.accept_armed && !self.conns.accept_backoff && !self.shutting_down() {
            self.arm_accept();
        }
    }

    fn on_new_connection(&mut self, fd: OwnedFd, now: Instant) {
        if self.shutting_down() {
            return;
        }
        let limits = &self.conns.limits;
        if self.conns.live() >= limits.max_connections as usize {
            self.io.tcp_refused += 1;
            tracing::debug!("TCP connection refused: at max_connections");
            return; // dropping `fd` closes it
        }
        configure_connection(&fd, limits.socket_send_buffer, limits.socket_recv_buffer);
        let peer = peer_addr(&fd);
        // SAFETY: all-zero is a valid msghdr and iovec (null pointers, zero lengths).
        let (msg, iov) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let conn = Box::new(Conn {
            fd,
            asm: FrameAssembler::new(limits.rx_buffer_bytes, limits.max_frame),
            tx: SendQueue::new(limits.send_queue_bytes),
            iov: [iov; MAX_IOVECS],
            msg,
            rx_armed: false,
            tx_armed: false,
            closing: false,
            handshake_deadline: Some(now + limits.handshake_timeout),
            last_rx: now,
            peer,
        });
        let id = self.conns.insert(conn);
        self.io.tcp_accepted += 1;
        tracing::debug!(?peer, conn = id.index, "TCP connection accepted");
        if let Some(conn) = self.conns.get_mut(id) {
            arm_recv(conn, id, &mut self.queue);
        }
    }

    pub(super) fn on_tcp_rx(&mut self, ud: UserData, res: i32, now: Instant) {
        let id = ConnId {
            index: ud.slot,
            generation: ud.generation,
        };
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.rx_armed = false;
        if conn.closing {
            self.conns.free_if_done(id);
            return;
        }
        if res == 0 {
            self.close_conn(id, CloseReason::ByPeer);
            return;
        }
        if res < 0 {
            if res == -libc::EAGAIN || res == -libc::EINTR {
                arm_recv(conn, id, &mut self.queue);
            } else {
                tracing::debug!(error = %std::io::Error::from_raw_os_error(-res), "TCP receive failed");
                self.close_conn(id, CloseReason::Error);
            }
            return;
        }
        conn.asm.commit(res as usize);
        conn.last_rx = now;
        let from = Outside::Tcp(id);
        let mut garbage = false;
        loop {
            let frame = match conn.asm.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    garbage = true;
                    break;
                }
            };
            // A stream that is not Ringway frames cannot be resynchronised, and
            // before its handshake a connection may send nothing but one.
            match frame_type(frame) {
                Ok(FrameType::HandshakeInit) => {}
                Ok(t) if t.is_transport() && conn.handshake_deadline.is_none() => {}
                _ => {
                    garbage = true;
                    break;
                }
            }
            match self
                .sessions
                .handle_outside(frame, from, now, &mut self.ids)
            {
                OutsideAction::None => {}
                OutsideAction::ToInside(range) => {
                    // The stream buffer is reused by the next receive: copy the
                    // packet into a slot buffer the TUN write can own.
                    let packet = &frame[range];
                    let shared = &mut *self.shared;
                    match take_copy(&mut shared.bufs, &mut shared.tx, PAYLOAD_OFFSET, packet) {
                        Some((t, buf, n)) => queue_tun_write(
                            &mut shared.bufs,
                            &mut shared.tx,
                            &mut self.queue,
                            self.tun_fd,
                            t,
                            buf,
                            PAYLOAD_OFFSET,
                            n,
                        ),
                        None => self.io.drop_tx_full += 1,
                    }
                }
                OutsideAction::Reply(to, bytes) => {
                    if to == from {
                        // Only an accepted handshake ends the deadline; a reject
                        // or an echo does not.
                        if frame_type(&bytes) == Ok(FrameType::HandshakeResp) {
                            conn.handshake_deadline = None;
                        }
                        if let Ok(prefix) = encode_prefix(bytes.len()) {
                            if conn.tx.push_parts(&[&prefix, &bytes]).is_ok() {
                                self.io.tcp_tx_frames += 1;
                                start_send(conn, id, &mut self.queue);
                            } else {
                                self.io.drop_tcp_queue_full += 1;
                            }
                        }
                    }
                }
            }
        }
        if garbage {
            self.close_conn(id, CloseReason::Garbage);
        } else {
            arm_recv(conn, id, &mut self.queue);
        }
    }

    pub(super) fn on_tcp_tx(&mut self, ud: UserData, res: i32) {
        let id = ConnId {
            index: ud.slot,
            generation: ud.generation,
        };
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.tx_armed = false;
        if conn.closing {
            conn.tx.abort_send();
            self.conns.free_if_done(id);
            return;
        }
        if res < 0 {
            conn.tx.abort_send();
            if res == -libc::EAGAIN || res == -libc::EINTR {
                start_send(conn, id, &mut self.queue);
            } else {
                tracing::debug!(error = %std::io::Error::from_raw_os_error(-res), "TCP send failed");
                self.close_conn(id, CloseReason::Error);
            }
            return;
        }
        // No assumption on the count: a short send resumes where the kernel stopped.
        conn.tx.complete(res as usize);
        start_send(conn, id, &mut self.queue);
    }

    /// Closes every connection queued in `to_close`.
    pub(super) fn close_pending(&mut self) {
        while let Some((id, reason)) = self.conns.to_close.pop() {
            self.close_conn(id, reason);
        }
    }

    /// Starts closing `id`: cancels its requests, tells the session layer; the
    /// memory goes once the last completion is in.
    pub(super) fn close_conn(&mut self, id: ConnId, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.closing {
            return;
        }
        conn.closing = true;
        tracing::debug!(peer = ?conn.peer, conn = id.index, ?reason, "closing TCP connection");
        if conn.rx_armed {
            cancel(&mut self.queue, Path::TcpRx, id);
        }
        if conn.tx_armed {
            cancel(&mut self.queue, Path::TcpTx, id);
        }
        match reason {
            CloseReason::Garbage => self.io.tcp_closed_garbage += 1,
            CloseReason::HandshakeTimeout => self.io.tcp_closed_handshake_timeout += 1,
            CloseReason::ByPeer => self.io.tcp_closed_by_peer += 1,
            CloseReason::Error => self.io.tcp_closed_error += 1,
            CloseReason::SessionEnd => self.io.tcp_closed_session_end += 1,
            CloseReason::Idle => self.io.tcp_closed_idle += 1,
            CloseReason::Shutdown => {}
        }
        if reason != CloseReason::SessionEnd {
            self.sessions.connection_closed(id);
        }
        self.conns.free_if_done(id);
    }

    /// Once a second: close connections past their handshake deadline or
    /// silent for longer than the idle timeout, and re-arm an accept that
    /// backed off.
    pub(super) fn tcp_tick(&mut self, now: Instant) {
        let idle = self.conns.limits.idle_timeout;
        for (index, slot) in self.conns.slots.iter().enumerate() {
            let Some(c) = &slot.conn else { continue };
            if c.closing {
                continue;
            }
            let reason = if c.handshake_deadline.is_some_and(|d| now >= d) {
                CloseReason::HandshakeTimeout
            } else if now.saturating_duration_since(c.last_rx) >= idle {
                CloseReason::Idle
            } else {
                continue;
            };
            let id = ConnId {
                index: index as u32,
                generation: slot.generation,
            };
            self.conns.to_close.push((id, reason));
        }
        self.close_pending();
        if self.conns.accept_backoff {
            self.conns.accept_backoff = false;
            self.arm_accept();
        }
    }

    /// Shutdown: stop accepting and close every connection.
    pub(super) fn tcp_shutdown(&mut self) {
        if self.conns.accept_armed {
            let target = UserData {
                path: Path::Accept,
                slot: 0,
                generation: self.conns.accept_generation,
            };
            queue_cancel(&mut self.queue, target);
        }
        for (index, slot) in self.conns.slots.iter().enumerate() {
            if slot.conn.is_some() {
                let id = ConnId {
                    index: index as u32,
                    generation: slot.generation,
                };
                self.conns.to_close.push((id, CloseReason::Shutdown));
            }
        }
        self.close_pending();
    }
}
