//! Send slots and submission bookkeeping shared by every path.
//!
//! A tx slot owns the buffer it sends from until its completion; the helpers
//! here fill the slot's `msghdr`/`iovec` (which live in the slot, at a stable
//! address) and queue the request.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};
use socket2::SockAddr;

use super::buffers::{BufId, BufferPool};
use super::user_data::{next_generation, Path, UserData};
use crate::sessions::FRAME_OFFSET;

/// What the kernel reads or writes for a sendmsg/recvmsg. Pointers inside are
/// refreshed each time the slot is armed, from the slot's own fields.
pub(super) struct MsgSlot {
    pub hdr: libc::msghdr,
    pub iov: libc::iovec,
    /// Where recvmsg writes the sender's address.
    pub from: libc::sockaddr_storage,
    /// Where sendmsg reads the destination from.
    pub to: SockAddr,
}

impl MsgSlot {
    pub fn new() -> Self {
        // SAFETY: msghdr, iovec and sockaddr_storage are plain C structs for
        // which all-zero bytes are a valid (empty) value.
        let (hdr, iov, from) =
            unsafe { (std::mem::zeroed(), std::mem::zeroed(), std::mem::zeroed()) };
        MsgSlot {
            hdr,
            iov,
            from,
            to: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }
}

impl MsgSlot {
    /// Points the header at one data buffer and a socket address, refreshing
    /// every pointer from this slot's own (stable) fields.
    pub fn point(
        &mut self,
        data: *mut u8,
        len: usize,
        name: *mut libc::c_void,
        namelen: libc::socklen_t,
    ) {
        self.iov.iov_base = data.cast();
        self.iov.iov_len = len;
        self.hdr.msg_name = name;
        self.hdr.msg_namelen = namelen;
        self.hdr.msg_iov = &mut self.iov;
        self.hdr.msg_iovlen = 1;
        self.hdr.msg_control = std::ptr::null_mut();
        self.hdr.msg_controllen = 0;
        self.hdr.msg_flags = 0;
    }

    /// Points the header at `data` and at `from` for recvmsg to fill.
    pub fn point_for_recv(&mut self, data: *mut u8, len: usize) {
        let name = (&mut self.from as *mut libc::sockaddr_storage).cast();
        self.point(
            data,
            len,
            name,
            std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        );
    }

    /// Points the header at `data` and at destination `to`.
    pub fn point_for_send(&mut self, data: *mut u8, len: usize, to: SocketAddr) {
        self.to = SockAddr::from(to);
        let (name, namelen) = (self.to.as_ptr() as *mut libc::c_void, self.to.len());
        self.point(data, len, name, namelen);
    }
}

/// Queues a cancel of the request tagged `target`; the cancel's own
/// completion carries nothing we need.
pub(super) fn queue_cancel(queue: &mut Queue, target: UserData) {
    let me = UserData {
        path: Path::Cancel,
        slot: 0,
        generation: 0,
    };
    queue.push(
        opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(me.encode()),
    );
}

/// Which kind of send a tx slot carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TxKind {
    Udp,
    Tun,
}

pub(super) struct TxSlot {
    pub buf: BufId,
    pub generation: u32,
    pub busy: bool,
    pub kind: TxKind,
    pub msg: MsgSlot,
}

/// Slots for sends: each holds the buffer it sends from until its completion.
pub(super) struct TxTable {
    pub slots: Vec<TxSlot>,
    pub free: Vec<u32>,
}

impl TxTable {
    /// Marks slot `t` busy with `buf` for a send of `kind` and returns the
    /// `user_data` its request carries (a fresh generation).
    fn claim(&mut self, t: u32, buf: BufId, kind: TxKind) -> (&mut TxSlot, UserData) {
        let s = &mut self.slots[t as usize];
        s.busy = true;
        s.buf = buf;
        s.kind = kind;
        s.generation = next_generation(s.generation);
        let ud = UserData {
            path: Path::Tx,
            slot: t,
            generation: s.generation,
        };
        (s, ud)
    }

    pub fn new(n: u32) -> Self {
        TxTable {
            slots: (0..n)
                .map(|_| TxSlot {
                    buf: 0,
                    generation: 0,
                    busy: false,
                    kind: TxKind::Udp,
                    msg: MsgSlot::new(),
                })
                .collect(),
            free: (0..n).rev().collect(),
        }
    }
}

/// Queued submissions and the count of requests the kernel holds or will hold.
pub(super) struct Queue {
    pub pending: VecDeque<squeue::Entry>,
    pub inflight: usize,
}

impl Queue {
    pub fn push(&mut self, e: squeue::Entry) {
        self.pending.push_back(e);
        self.inflight += 1;
    }
}

/// Queues a sendmsg of `len` bytes from `buf` (at the frame offset) to `to`
/// using tx slot `t`, which owns `buf` until the completion.
#[allow(clippy::too_many_arguments)]
pub(super) fn queue_udp_send(
    bufs: &mut BufferPool,
    tx: &mut TxTable,
    queue: &mut Queue,
    udp_fd: RawFd,
    t: u32,
    buf: BufId,
    len: usize,
    to: SocketAddr,
) {
    let ptr = bufs.ptr(buf, FRAME_OFFSET);
    let (s, ud) = tx.claim(t, buf, TxKind::Udp);
    let m = &mut s.msg;
    m.point_for_send(ptr, len, to);
    queue.push(
        opcode::SendMsg::new(types::Fd(udp_fd), &m.hdr)
            .build()
            .user_data(ud.encode()),
    );
}

/// Queues a TUN write of `len` bytes at `offset` in `buf` using tx slot `t`.
#[allow(clippy::too_many_arguments)]
pub(super) fn queue_tun_write(
    bufs: &mut BufferPool,
    tx: &mut TxTable,
    queue: &mut Queue,
    tun_fd: RawFd,
    t: u32,
    buf: BufId,
    offset: usize,
    len: usize,
) {
    let ptr = bufs.ptr(buf, offset);
    let (_, ud) = tx.claim(t, buf, TxKind::Tun);
    queue.push(
        opcode::Write::new(types::Fd(tun_fd), ptr, len as u32)
            .build()
            .user_data(ud.encode()),
    );
}

/// Copies `bytes` into a free buffer at `offset` and returns it with a tx slot
/// reserved for it, or `None` when every tx slot is busy. Used where the bytes
/// do not already sit in a slot buffer (handshake replies, keepalives, TCP
/// frames bound for the TUN).
pub(super) fn take_copy(
    bufs: &mut BufferPool,
    tx: &mut TxTable,
    offset: usize,
    bytes: &[u8],
) -> Option<(u32, BufId, usize)> {
    let t = tx.free.pop()?;
    let Some(buf) = bufs.take() else {
        tx.free.push(t);
        return None;
    };
    let dst = &mut bufs.get_mut(buf)[offset..];
    let n = bytes.len().min(dst.len());
    dst[..n].copy_from_slice(&bytes[..n]);
    Some((t, buf, n))
}
