//! TCP peers: the listener, one task per connection, and the connections' send queues.
//!
//! A connection is named by a [`ConnId`] (slot and generation), as in the io_uring loop, so
//! the session layer sees the same names from both backends. Its frames are read into a
//! [`FrameAssembler`] its task owns; what goes out waits in a bounded [`SendQueue`] in the
//! [`Conns`] table, where any task can append to it: the appending task writes at once
//! (one non-blocking gathered write), and only what the socket did not take waits for the
//! connection's task, which sleeps until the socket is writable. Closing removes the
//! connection from the table and wakes its task, which drops the socket.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use ringway_proto::wire::stream::{encode_prefix, FrameAssembler};
use ringway_proto::wire::{frame_type, FrameType};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::core::{Core, Shared};
use crate::metrics::IoCounters;
use crate::outside::tcp::admission::{count_refusal, Admission};
pub(crate) use crate::outside::tcp::close::CloseReason;
use crate::outside::tcp::listener::{configure_connection, Listener};
use crate::outside::tcp::send_queue::SendQueue;
use crate::sessions::{ConnId, Outside, OutsideAction, Sessions};
use crate::uring::TcpLimits;

/// How long accepting pauses after a failure such as running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// One open connection as the table holds it.
#[derive(Debug)]
struct Conn {
    stream: Rc<TcpStream>,
    queue: SendQueue,
    /// Wakes the connection's task: to wait for writability, or to end.
    wake: Rc<Notify>,
    /// When it was accepted, until a handshake completes on it.
    unproven_since: Option<Instant>,
    last_rx: Instant,
    peer: Option<SocketAddr>,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

/// The open connections, by [`ConnId`].
#[derive(Debug)]
pub(super) struct Conns {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    limits: TcpLimits,
    /// The per-source cap and the handshake deadline under pressure.
    admission: Admission,
    /// Connections found failing while the table was borrowed, closed right after.
    to_close: Vec<(ConnId, CloseReason)>,
}

impl Conns {
    /// No connections yet.
    pub fn new(limits: TcpLimits) -> Self {
        Conns {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            admission: Admission::new(
                limits.max_connections,
                limits.max_per_source,
                limits.handshake_timeout,
            ),
            limits,
            to_close: Vec::new(),
        }
    }

    fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.conn.as_mut()
    }

    fn insert(&mut self, conn: Conn) -> ConnId {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.conn = Some(conn);
        self.live += 1;
        ConnId {
            index,
            generation: slot.generation,
        }
    }

    /// Queues `bytes` (`frames` length-prefixed frames back to back, copied once) on `id`
    /// and writes what the socket takes now. Counts the frames as dropped if the queue is
    /// full.
    pub fn send(&mut self, id: ConnId, bytes: &[u8], frames: usize, counters: &mut IoCounters) {
        let Some(conn) = self.get_mut(id) else {
            return;
        };
        match conn.queue.push_parts(&[bytes]) {
            Ok(()) => counters.tcp_tx_frames += frames as u64,
            Err(_) => {
                counters.drop_tcp_queue_full += frames as u64;
                return;
            }
        }
        if let Err(reason) = flush(conn, counters) {
            self.to_close.push((id, reason));
        }
    }

    /// Sends a frame that is not yet prefixed (a handshake reply, a keepalive).
    pub fn send_unprefixed(&mut self, id: ConnId, frame: &[u8], counters: &mut IoCounters) {
        let Ok(prefix) = encode_prefix(frame.len()) else {
            return;
        };
        let Some(conn) = self.get_mut(id) else {
            return;
        };
        match conn.queue.push_parts(&[&prefix, frame]) {
            Ok(()) => counters.tcp_tx_frames += 1,
            Err(_) => {
                counters.drop_tcp_queue_full += 1;
                return;
            }
        }
        if let Err(reason) = flush(conn, counters) {
            self.to_close.push((id, reason));
        }
    }

    /// Closes `id`: out of the table (its task wakes and drops the socket), and its session
    /// ends unless the session ended first.
    pub fn close(
        &mut self,
        id: ConnId,
        reason: CloseReason,
        sessions: &mut Sessions,
        counters: &mut IoCounters,
    ) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.generation != id.generation {
            return;
        }
        let Some(conn) = slot.conn.take() else {
            return;
        };
        self.free.push(id.index);
        self.live -= 1;
        self.admission.release(conn.peer.map(|p| p.ip()));
        tracing::debug!(peer = ?conn.peer, conn = id.index, ?reason, "closing TCP connection");
        reason.count(counters);
        if reason != CloseReason::SessionEnd {
            sessions.connection_closed(id);
        }
        conn.wake.notify_one();
    }

    /// Closes what a send found broken.
    pub fn close_pending(&mut self, sessions: &mut Sessions, counters: &mut IoCounters) {
        while let Some((id, reason)) = self.to_close.pop() {
            self.close(id, reason, sessions, counters);
        }
    }

    /// Once a second: connections past their handshake deadline or silent for the idle
    /// timeout are closed.
    pub fn tick(&mut self, now: Instant, sessions: &mut Sessions, counters: &mut IoCounters) {
        let idle = self.limits.idle_timeout;
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(c) = &slot.conn else {
                continue;
            };
            let overdue = |since| self.admission.handshake_overdue(since, now, self.live);
            let reason = if c.unproven_since.is_some_and(overdue) {
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
            self.to_close.push((id, reason));
        }
        self.close_pending(sessions, counters);
    }

    /// Shutdown: every connection closed.
    pub fn close_all(&mut self, sessions: &mut Sessions, counters: &mut IoCounters) {
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.conn.is_some() {
                let id = ConnId {
                    index: index as u32,
                    generation: slot.generation,
                };
                self.to_close.push((id, CloseReason::Shutdown));
            }
        }
        self.close_pending(sessions, counters);
    }
}

/// Writes what `conn`'s socket takes now; wakes its task to wait for room if something is
/// left. `Err` with the reason to close it.
fn flush(conn: &mut Conn, counters: &mut IoCounters) -> Result<(), CloseReason> {
    while conn.queue.queued_bytes() > 0 {
        let stream = &conn.stream;
        match conn
            .queue
            .write_with(|slices| stream.try_write_vectored(slices))
        {
            Ok(0) => return Err(CloseReason::Error),
            Ok(_) => counters.tcp_tx_sends += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                conn.wake.notify_one();
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!(error = %e, "TCP send failed");
                return Err(CloseReason::Error);
            }
        }
    }
    Ok(())
}

/// Takes over the bound listener.
pub(super) fn listener(l: Listener) -> std::io::Result<TcpListener> {
    let std = l.into_std();
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// Accepts connections until the loop ends; one task each.
pub(super) async fn accept_loop(shared: Shared, listener: TcpListener) -> Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                let quiet = matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN)
                );
                if !quiet {
                    // Out of descriptors or refused by a policy: retrying at once would spin.
                    tracing::warn!(error = %e, "accept failed; retrying in a second");
                    shared.borrow_mut().counters.io_errors += 1;
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                continue;
            }
        };
        let now = Instant::now();
        let mut core = shared.borrow_mut();
        let core = &mut *core;
        let limits = core.tcp.limits.clone();
        let live = core.tcp.live;
        if let Err(refused) = core.tcp.admission.admit(Some(peer.ip()), live) {
            count_refusal(&mut core.counters, refused, Some(peer));
            continue; // dropping `stream` closes it
        }
        configure_connection(
            &stream,
            limits.socket_send_buffer,
            limits.socket_recv_buffer,
        );
        let asm = FrameAssembler::new(limits.rx_buffer_bytes, limits.max_frame);
        let stream = Rc::new(stream);
        let wake = Rc::new(Notify::new());
        let id = core.tcp.insert(Conn {
            stream: Rc::clone(&stream),
            queue: SendQueue::new(limits.send_queue_bytes),
            wake: Rc::clone(&wake),
            unproven_since: Some(now),
            last_rx: now,
            peer: Some(peer),
        });
        core.counters.tcp_accepted += 1;
        tracing::debug!(?peer, conn = id.index, "TCP connection accepted");
        tokio::task::spawn_local(serve(Rc::clone(&shared), id, stream, wake, asm));
    }
}

/// One connection's task: reads frames, and writes what waits once the socket has room,
/// until the connection leaves the table.
async fn serve(
    shared: Shared,
    id: ConnId,
    stream: Rc<TcpStream>,
    wake: Rc<Notify>,
    mut asm: FrameAssembler,
) {
    loop {
        let waiting = match shared.borrow_mut().tcp.get_mut(id) {
            Some(conn) => conn.queue.queued_bytes() > 0,
            None => return,
        };
        tokio::select! {
            r = stream.readable() => {
                if r.is_err() {
                    close(&shared, id, CloseReason::Error);
                    return;
                }
                let spare = asm.spare_mut();
                if spare.is_empty() {
                    // The assembler always has room for a whole frame: cannot happen.
                    close(&shared, id, CloseReason::Garbage);
                    return;
                }
                match stream.try_read(spare) {
                    Ok(0) => {
                        close(&shared, id, CloseReason::ByPeer);
                        return;
                    }
                    Ok(n) => {
                        asm.commit(n);
                        let mut core = shared.borrow_mut();
                        if let Err(reason) = on_bytes(&mut core, id, &mut asm) {
                            let Core { tcp, sessions, counters, .. } = &mut *core;
                            tcp.close(id, reason, sessions, counters);
                        }
                        let Core { tcp, sessions, counters, .. } = &mut *core;
                        tcp.close_pending(sessions, counters);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "TCP receive failed");
                        close(&shared, id, CloseReason::Error);
                        return;
                    }
                }
            }
            r = stream.writable(), if waiting => {
                let mut core = shared.borrow_mut();
                let Core { tcp, sessions, counters, .. } = &mut *core;
                let failed = match (r, tcp.get_mut(id)) {
                    (Err(_), _) => Some(CloseReason::Error),
                    (Ok(()), Some(conn)) => flush(conn, counters).err(),
                    (Ok(()), None) => None,
                };
                if let Some(reason) = failed {
                    tcp.close(id, reason, sessions, counters);
                }
            }
            () = wake.notified() => {}
        }
    }
}

fn close(shared: &Shared, id: ConnId, reason: CloseReason) {
    let mut core = shared.borrow_mut();
    let Core {
        tcp,
        sessions,
        counters,
        ..
    } = &mut *core;
    tcp.close(id, reason, sessions, counters);
}

/// Bytes arrived on `id` (committed to `asm`): every complete frame goes to the session
/// layer, packets to the TUN (coalesced), replies back on the connection. `Err` to close a
/// connection that sent something that is not Ringway frames.
fn on_bytes(core: &mut Core, id: ConnId, asm: &mut FrameAssembler) -> Result<(), CloseReason> {
    let now = Instant::now();
    let Core {
        sessions,
        ids,
        counters,
        tun,
        tcp,
        gro,
        stream_batch,
        ..
    } = core;
    counters.tcp_rx_recvs += 1;
    let from = Outside::Tcp(id);
    let mut result = Ok(());
    let Some(conn) = tcp.get_mut(id) else {
        return Ok(());
    };
    conn.last_rx = now;
    let mut handshake_done = conn.unproven_since.is_none();
    loop {
        let frame = match asm.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => {
                result = Err(CloseReason::Garbage);
                break;
            }
        };
        counters.tcp_rx_frames += 1;
        // A stream that is not Ringway frames cannot be resynchronised, and before its
        // handshake a connection may send nothing but one.
        match frame_type(frame) {
            Ok(FrameType::HandshakeInit) => {}
            Ok(t) if t.is_transport() && handshake_done => {}
            _ => {
                result = Err(CloseReason::Garbage);
                break;
            }
        }
        match sessions.handle_outside(frame, from, now, ids) {
            OutsideAction::None => {}
            OutsideAction::ToInside(range) => {
                let packet = &frame[range];
                if !stream_batch.has_room(packet.len()) {
                    stream_batch.write(tun.get_ref(), counters, gro.as_mut());
                }
                stream_batch.push(packet);
            }
            OutsideAction::Reply(to, bytes) if to == from => {
                // Only an accepted handshake ends the deadline; a reject or an echo does not.
                if frame_type(&bytes) == Ok(FrameType::HandshakeResp) {
                    handshake_done = true;
                    if let Some(conn) = tcp.get_mut(id) {
                        conn.unproven_since = None;
                    }
                }
                tcp.send_unprefixed(id, &bytes, counters);
            }
            OutsideAction::Reply(..) => {}
        }
    }
    stream_batch.write(tun.get_ref(), counters, gro.as_mut());
    result
}
