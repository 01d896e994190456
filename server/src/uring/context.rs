//! What every path shares: the session layer, and [`Io`], everything a
//! request needs to be queued (the submission queue, packet buffers, send
//! slots, counters and the descriptors sends go to).
//!
//! The driver owns one [`Context`] and lends it to one path at a time, for one
//! completion. The two halves are separate fields so that a session callback
//! (keepalives from the timers, disconnects at shutdown) can send through
//! `io` while the session layer is borrowed.

use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;

use ring::rand::{SecureRandom, SystemRandom};

use super::buffers::{BufferPool, PacketBuf};
use super::queue::Queue;
use super::slots::Completion;
use super::tx::{Permit, Send, TxKind, TxTable};
use crate::metrics::IoCounters;
use crate::sessions::{IdSource, Sessions, FRAME_OFFSET, PAYLOAD_OFFSET};

/// Session ids from the system RNG.
#[derive(Debug)]
pub(super) struct OsRandom(pub SystemRandom);

impl IdSource for OsRandom {
    fn next_id(&mut self) -> u32 {
        let mut b = [0u8; 4];
        // A failing system RNG leaves zero, which the session layer rejects
        // and asks again for; the kernel's getrandom does not fail after boot.
        let _ = self.0.fill(&mut b);
        u32::from_ne_bytes(b)
    }
}

/// The shared state every path works on.
#[derive(Debug)]
pub(super) struct Context {
    /// Who may connect and where each packet goes.
    pub sessions: Sessions,
    /// Randomness for session ids.
    pub ids: OsRandom,
    /// Submissions, buffers, send slots, counters.
    pub io: Io,
    /// Set once shutdown began: completions are absorbed, nothing re-arms.
    pub stopping: bool,
}

/// Everything a request needs to be queued.
#[derive(Debug)]
pub(super) struct Io {
    /// Submissions and the in-flight count.
    pub queue: Queue,
    /// Packet buffers.
    pub bufs: BufferPool,
    /// Send slots.
    pub tx: TxTable,
    /// What the I/O saw.
    pub counters: IoCounters,
    /// Where TUN writes go.
    pub tun_fd: RawFd,
    /// Where UDP sends go, if UDP is on.
    pub udp_fd: Option<RawFd>,
}

impl Io {
    /// Claims a tx slot, or counts a drop when every one is busy.
    pub fn reserve(&mut self) -> Option<Permit> {
        let permit = self.tx.reserve();
        if permit.is_none() {
            self.counters.drop_tx_full += 1;
        }
        self.check_pool();
        permit
    }

    /// The pool holds `rx slots + tx slots` buffers, and a receive slot holds
    /// at most one: so whenever a tx slot is free (or just reserved), a buffer
    /// is free for it or for the receive slot that gave its buffer away.
    fn check_pool(&self) {
        debug_assert!(
            self.bufs.available() >= self.tx.free_slots(),
            "{} buffers free for {} free tx slots",
            self.bufs.available(),
            self.tx.free_slots()
        );
    }

    /// A free buffer, for a receive slot that gave its own to a send or for a
    /// copy under a permit; the pool's sizing guarantees one.
    pub fn fresh_buffer(&mut self) -> Option<PacketBuf> {
        let buf = self.bufs.take();
        debug_assert!(
            buf.is_some(),
            "buffer pool empty with a receive slot or a tx permit to serve"
        );
        if buf.is_none() {
            tracing::error!("buffer pool empty with a receive slot or a tx permit to serve");
        }
        buf
    }

    /// Sends bytes `frame` of `buf` as one UDP datagram to `to`.
    pub fn send_udp(
        &mut self,
        permit: Permit,
        buf: PacketBuf,
        frame: Range<usize>,
        to: SocketAddr,
    ) {
        let Some(fd) = self.udp_fd else {
            self.tx.release(permit);
            self.bufs.put(buf);
            return;
        };
        let send = Send::Udp { fd, buf, frame, to };
        self.tx.submit(&mut self.queue, &self.bufs, permit, send);
    }

    /// Writes the IP packet at `packet` in `buf` to the TUN.
    pub fn write_tun(&mut self, permit: Permit, buf: PacketBuf, packet: Range<usize>) {
        let send = Send::Tun {
            fd: self.tun_fd,
            buf,
            packet,
        };
        self.tx.submit(&mut self.queue, &self.bufs, permit, send);
    }

    /// Copies `bytes` to `offset` in a fresh buffer under a fresh permit: for
    /// what does not already sit in a slot buffer (handshake replies,
    /// keepalives, packets from a TCP stream). Counts a drop if no slot is free.
    fn copy_out(
        &mut self,
        offset: usize,
        bytes: &[u8],
    ) -> Option<(Permit, PacketBuf, Range<usize>)> {
        let permit = self.reserve()?;
        let Some(mut buf) = self.fresh_buffer() else {
            self.tx.release(permit);
            return None;
        };
        let dst = &mut self.bufs.bytes_mut(&mut buf)[offset..];
        let n = bytes.len().min(dst.len());
        dst[..n].copy_from_slice(&bytes[..n]);
        Some((permit, buf, offset..offset + n))
    }

    /// Sends `frame` to a UDP peer from a copy.
    pub fn send_udp_copy(&mut self, to: SocketAddr, frame: &[u8]) {
        if self.udp_fd.is_none() {
            return;
        }
        if let Some((permit, buf, range)) = self.copy_out(FRAME_OFFSET, frame) {
            self.send_udp(permit, buf, range, to);
        }
    }

    /// Writes `packet` to the TUN from a copy.
    pub fn write_tun_copy(&mut self, packet: &[u8]) {
        if let Some((permit, buf, range)) = self.copy_out(PAYLOAD_OFFSET, packet) {
            self.write_tun(permit, buf, range);
        }
    }

    /// A send completed: its slot and buffer are free again.
    pub fn on_sent(&mut self, c: &Completion) {
        let Some(sent) = self.tx.complete(c) else {
            self.counters.stale_completions += 1;
            return;
        };
        self.bufs.put(sent.buf);
        self.check_pool();
        match c.error() {
            Some(e) => {
                if !c.is_retry_or_cancel() {
                    tracing::debug!(kind = ?sent.kind, error = %e, "send failed");
                }
                self.counters.io_errors += 1;
            }
            None if sent.kind == TxKind::Udp => self.counters.udp_tx_frames += 1,
            None => {}
        }
    }

    /// Never free kernel-shared memory: the kernel may still use it.
    pub fn leak(&mut self) {
        self.bufs.leak();
        self.tx.leak();
    }
}
