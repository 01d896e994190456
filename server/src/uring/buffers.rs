//! Packet buffers: one allocation of equal-sized buffers, each claimed by a
//! [`PacketBuf`] token.
//!
//! Whoever holds a buffer's token, and only they, may touch its bytes. A
//! receive slot holds the token of the buffer the kernel reads into while its
//! request is in flight; when the completion hands the token back, the filled
//! buffer moves (token and all, no copy) to the tx slot that sends it, and the
//! receive re-arms with a fresh token from the pool. A token is neither `Copy`
//! nor `Clone`, so no buffer can have two owners, and none can be touched while
//! its token sits in an armed slot.
//!
//! The memory is allocated once, never grows or moves, and is reached only
//! through raw pointers made from its base ([`BufferPool::ptr`] for a
//! submission, [`BufferPool::bytes_mut`] for the token holder), never through a
//! `&mut` over the whole pool, so the kernel writing one buffer and the loop
//! working on another never overlap a borrow.
//!
//! A pool has one buffer size. [`Pools`] holds the two the driver uses: small
//! buffers (one packet and its frame overhead) and, with segmentation offload,
//! large ones (a 64 KiB superpacket behind its `virtio_net_hdr`, or the frames
//! of one `UDP_SEGMENT` send). A token names its pool, a pool refuses (panics
//! on) another's, and [`Pools::put`] returns a token to the pool that made it.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};

use super::kernel_box::KernelBox;

/// The claim on one buffer of a [`BufferPool`]: not `Copy`, not `Clone`.
#[derive(Debug, PartialEq, Eq)]
pub struct PacketBuf {
    pool: u32,
    index: u32,
}

/// Tells pools apart, so a token is only ever honoured by the pool that made it.
static NEXT_POOL_ID: AtomicU32 = AtomicU32::new(0);

/// Fixed-size buffers in one block of memory.
#[derive(Debug)]
pub struct BufferPool {
    id: u32,
    mem: KernelBox<[UnsafeCell<u8>]>,
    buf_size: usize,
    count: usize,
    free: Vec<PacketBuf>,
}

impl BufferPool {
    /// `count` buffers of `buf_size` bytes each.
    pub fn new(count: usize, buf_size: usize) -> Self {
        let mem: Box<[UnsafeCell<u8>]> =
            (0..count * buf_size).map(|_| UnsafeCell::new(0)).collect();
        let count32 = u32::try_from(count).expect("a buffer pool of more than 2^32 buffers");
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        BufferPool {
            id,
            mem: KernelBox::new(mem),
            buf_size,
            count,
            free: (0..count32)
                .rev()
                .map(|index| PacketBuf { pool: id, index })
                .collect(),
        }
    }

    /// Whether `buf` is one of this pool's buffers.
    pub fn owns(&self, buf: &PacketBuf) -> bool {
        buf.pool == self.id
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Buffers in the pool, taken or not.
    pub fn capacity(&self) -> usize {
        self.count
    }

    /// Free buffers.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes a free buffer.
    pub fn take(&mut self) -> Option<PacketBuf> {
        self.free.pop()
    }

    /// Returns a buffer to the pool.
    pub fn put(&mut self, buf: PacketBuf) {
        debug_assert!(buf.pool == self.id, "{buf:?} returned to pool {}", self.id);
        debug_assert!(
            self.free.len() < self.count,
            "more buffers returned than the pool has"
        );
        self.free.push(buf);
    }

    /// Start of `buf`'s bytes, with provenance over the whole pool.
    fn start(&self, buf: &PacketBuf) -> *mut u8 {
        let index = buf.index as usize;
        assert!(
            buf.pool == self.id && index < self.count,
            "{buf:?} is not from pool {}",
            self.id
        );
        // `UnsafeCell<u8>` has the layout of `u8`, and a pointer derived from a
        // shared reference to `UnsafeCell`s may be written through.
        let base: *mut u8 = self.mem.get().as_ptr().cast::<u8>().cast_mut();
        base.wrapping_add(index * self.buf_size)
    }

    /// A raw pointer to `len` bytes at `offset` in `buf`, for a submission.
    /// Panics if the range does not lie in the buffer: the kernel would
    /// otherwise read or write past it.
    pub fn ptr(&self, buf: &PacketBuf, offset: usize, len: usize) -> *mut u8 {
        assert!(
            offset
                .checked_add(len)
                .is_some_and(|end| end <= self.buf_size),
            "{len} bytes at {offset} do not fit a {}-byte buffer",
            self.buf_size
        );
        self.start(buf).wrapping_add(offset)
    }

    /// The bytes of `buf`, for whoever holds its token.
    pub fn bytes_mut<'a>(&'a self, buf: &'a mut PacketBuf) -> &'a mut [u8] {
        let start = self.start(buf);
        // SAFETY: `start..start + buf_size` is buffer `index` of the live
        // allocation (`start` checks that the token is this pool's). This pool
        // made exactly one token per index, and this one is borrowed mutably
        // for `'a`, so no other slice of
        // these bytes exists, and the token cannot be in an armed slot, so the
        // kernel is not using them. The pool cannot be freed while `&'a self`
        // lives.
        unsafe { std::slice::from_raw_parts_mut(start, self.buf_size) }
    }

    /// Never free the memory: the kernel may still write into it.
    pub fn leak(&mut self) {
        self.mem.leak();
    }
}

/// The driver's two pools: small buffers for single packets, large ones for
/// superpackets (empty when offload is off).
#[derive(Debug)]
pub struct Pools {
    /// One packet (or one frame) each.
    pub small: BufferPool,
    /// A 64 KiB superpacket or the frames of one multi-datagram send each.
    pub large: BufferPool,
}

impl Pools {
    /// The pool that made `buf`.
    pub fn of(&self, buf: &PacketBuf) -> &BufferPool {
        if self.large.owns(buf) {
            &self.large
        } else {
            &self.small
        }
    }

    /// Returns `buf` to the pool that made it.
    pub fn put(&mut self, buf: PacketBuf) {
        if self.large.owns(&buf) {
            self.large.put(buf);
        } else {
            self.small.put(buf);
        }
    }

    /// Never free the memory: the kernel may still use it.
    pub fn leak(&mut self) {
        self.small.leak();
        self.large.leak();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_back_to_their_own_pool() {
        let mut pools = Pools {
            small: BufferPool::new(2, 16),
            large: BufferPool::new(1, 64),
        };
        let a = pools.small.take().unwrap();
        let b = pools.large.take().unwrap();
        assert_eq!(pools.of(&a).buf_size(), 16);
        assert_eq!(pools.of(&b).buf_size(), 64);
        pools.put(b);
        pools.put(a);
        assert_eq!((pools.small.available(), pools.large.available()), (2, 1));
    }

    #[test]
    fn take_put_and_disjoint_buffers() {
        let mut p = BufferPool::new(3, 16);
        let mut a = p.take().unwrap();
        let mut b = p.take().unwrap();
        assert_ne!(a, b);
        p.bytes_mut(&mut a).fill(1);
        p.bytes_mut(&mut b).fill(2);
        assert!(p.bytes_mut(&mut a).iter().all(|&x| x == 1));
        assert!(p.bytes_mut(&mut b).iter().all(|&x| x == 2));
        assert_eq!(p.available(), 1);
        p.put(a);
        p.put(b);
        assert_eq!(p.available(), 3);
        assert_eq!(p.capacity(), 3);
        let mut c = p.take().unwrap();
        let base = p.ptr(&c, 0, 16) as usize;
        assert_eq!(p.ptr(&c, 5, 11) as usize, base + 5);
        assert_eq!(p.bytes_mut(&mut c).as_ptr() as usize, base);
        assert_eq!(p.bytes_mut(&mut c).len(), 16);
    }

    #[test]
    #[should_panic(expected = "is not from pool")]
    fn another_pools_token_is_refused() {
        let mut a = BufferPool::new(2, 16);
        let b = BufferPool::new(2, 16);
        let mut t = a.take().unwrap();
        b.bytes_mut(&mut t);
    }

    #[test]
    #[should_panic(expected = "do not fit")]
    fn a_range_past_the_buffer_is_refused() {
        let mut p = BufferPool::new(2, 16);
        let b = p.take().unwrap();
        p.ptr(&b, 8, 9);
    }
}
