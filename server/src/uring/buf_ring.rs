//! A provided-buffer ring: buffers the kernel picks from as data arrives, for a
//! multishot receive that stays armed across many completions.
//!
//! The ring is one page the kernel reads (`IORING_REGISTER_PBUF_RING`): entries
//! of `{addr, len, bid}` and, overlaid on the first entry's last two bytes, the
//! tail we advance to hand the kernel more buffers. Each buffer is a large
//! [`PacketBuf`]; while it is provided, its token sits in this ring's table
//! under its buffer id, so nothing else can touch it. A completion names the
//! buffer id the kernel filled; [`BufRing::take`] hands that token back, and
//! whoever processes the data gives a buffer back with [`BufRing::provide`]
//! (the same one, or a fresh one when the filled buffer moved on to a TUN write).
//!
//! The page is reached only through raw pointers (the kernel reads it at any
//! time) and freed only once the ring is unregistered or the io_uring closed,
//! or leaked (`Driver::drop`).
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;

use super::buffers::{BufferPool, PacketBuf};
use super::kernel_box::KernelBox;

/// Entries in the ring: one page of 16-byte entries.
pub(super) const RING_ENTRIES: usize = 256;

/// `struct io_uring_buf`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    /// In entry 0: the ring's tail.
    resv: u16,
}

/// The ring's page, aligned as `IORING_REGISTER_PBUF_RING` requires.
#[repr(C, align(4096))]
struct Page(UnsafeCell<[Entry; RING_ENTRIES]>);

const _: () = assert!(std::mem::size_of::<Page>() == 4096);

/// Where in a provided buffer the kernel's data starts, and how much it may write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Region {
    /// Offset of the region in each buffer.
    pub offset: usize,
    /// Its length.
    pub len: usize,
}

/// A registered ring of provided buffers (buffer group `bgid`).
pub(super) struct BufRing {
    page: KernelBox<Page>,
    bgid: u16,
    /// Our copy of the tail: entries before it are the kernel's to use.
    tail: u16,
    region: Region,
    /// The token of each buffer id while provided.
    held: Vec<Option<PacketBuf>>,
    /// Buffer ids free to provide a buffer under.
    free_ids: Vec<u16>,
}

impl std::fmt::Debug for BufRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufRing")
            .field("bgid", &self.bgid)
            .field("provided", &self.provided())
            .finish_non_exhaustive()
    }
}

impl BufRing {
    /// An empty ring for buffer group `bgid`, registered with `ring`.
    ///
    /// The caller must keep the io_uring's lifetime within this ring's: drop the
    /// io_uring first (or unregister), or [`BufRing::leak`] this one.
    pub fn register(ring: &IoUring, bgid: u16, region: Region) -> std::io::Result<Self> {
        let buf_ring = Self::new(bgid, region);
        let (addr, entries) = buf_ring.addr();
        // SAFETY: `addr` is this ring's page: page-aligned, `entries` entries long, at a
        // fixed address (a KernelBox) that is freed only when this `BufRing` is dropped,
        // which its owner does after closing the io_uring or unregistering the group,
        // or never (`leak`) while the kernel may still read it.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(addr, entries, bgid, 0)?
        };
        Ok(buf_ring)
    }

    /// An empty ring for buffer group `bgid`, whose buffers the kernel fills in
    /// `region` (the same in every buffer). Not yet registered.
    fn new(bgid: u16, region: Region) -> Self {
        let page = Page(UnsafeCell::new(
            [Entry {
                addr: 0,
                len: 0,
                bid: 0,
                resv: 0,
            }; RING_ENTRIES],
        ));
        BufRing {
            page: KernelBox::new(Box::new(page)),
            bgid,
            tail: 0,
            region,
            held: (0..RING_ENTRIES).map(|_| None).collect(),
            free_ids: (0..RING_ENTRIES as u16).rev().collect(),
        }
    }

    /// The ring's address and size, for `register_buf_ring_with_flags`.
    fn addr(&self) -> (u64, u16) {
        (self.page.get().0.get() as u64, RING_ENTRIES as u16)
    }

    /// The buffer group id receives name.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Buffers provided now.
    pub fn provided(&self) -> usize {
        RING_ENTRIES - self.free_ids.len()
    }

    /// Hands `buf` (a buffer of `pool`) to the kernel. Gives it back if the ring is
    /// full (never, while no more than [`RING_ENTRIES`] buffers are provided).
    pub fn provide(&mut self, pool: &BufferPool, buf: PacketBuf) -> Result<(), PacketBuf> {
        let Some(bid) = self.free_ids.pop() else {
            return Err(buf);
        };
        let Region { offset, len } = self.region;
        let addr = pool.ptr(&buf, offset, len) as u64;
        self.held[usize::from(bid)] = Some(buf);
        let base = self.page.get().0.get().cast::<Entry>();
        let at = usize::from(self.tail) & (RING_ENTRIES - 1);
        // SAFETY: `at` < RING_ENTRIES, so the entry lies in the page, which lives at a
        // fixed address until it is freed (after unregistering) or leaked. The kernel
        // reads only entries before the published tail; this one is at the tail, so it
        // is ours to write until the store below publishes it. Its `resv` is not
        // written: in entry 0 it is the tail the kernel may be reading. The buffer it
        // points to is `len` bytes at `offset` in the buffer whose token now sits in
        // `held[bid]`, so nothing else touches it until the kernel's completion names
        // `bid` and `take` hands the token back.
        unsafe {
            let e = base.add(at);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(len as u32);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // The tail overlays the first entry's `resv`: bytes 14..16 of the page.
        // SAFETY: the address is in the page and 2-aligned (the page is 4096-aligned);
        // the kernel only reads it (with acquire ordering), and every access from our
        // side is this atomic store, so the store-release publishes the entry above.
        let tail = unsafe { AtomicU16::from_ptr(base.cast::<u8>().add(14).cast::<u16>()) };
        tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// The buffer the kernel filled, named by a completion's buffer id; `None` for an
    /// id not provided (a stray completion).
    pub fn take(&mut self, bid: u16) -> Option<PacketBuf> {
        let buf = self.held.get_mut(usize::from(bid))?.take()?;
        self.free_ids.push(bid);
        Some(buf)
    }

    /// Every buffer still provided, once the kernel can no longer use them (the ring
    /// is unregistered, or the io_uring closed).
    pub fn drain(&mut self) -> impl Iterator<Item = PacketBuf> + '_ {
        self.free_ids.clear();
        self.free_ids.extend((0..RING_ENTRIES as u16).rev());
        self.held.iter_mut().filter_map(Option::take)
    }

    /// Never free the page or give back the buffers: the kernel may still use them.
    pub fn leak(&mut self) {
        self.page.leak();
        std::mem::forget(std::mem::take(&mut self.held));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_by_id_and_the_tail_advances() {
        let mut pool = BufferPool::new(3, 256);
        let region = Region {
            offset: 16,
            len: 200,
        };
        let mut ring = BufRing::new(0, region);
        let (addr, entries) = ring.addr();
        assert_eq!(addr % 4096, 0);
        assert_eq!(entries, 256);
        let bufs: Vec<_> = (0..3).map(|_| pool.take().unwrap()).collect();
        for b in bufs {
            ring.provide(&pool, b).unwrap();
        }
        assert_eq!(ring.provided(), 3);
        // SAFETY: no kernel has this ring (never registered); reading our own writes.
        let (first, tail) = unsafe {
            let base = ring.page.get().0.get().cast::<Entry>();
            (base.read(), base.cast::<u8>().add(14).cast::<u16>().read())
        };
        // Entry 0's `resv` is the tail: three entries published.
        assert_eq!(tail, 3);
        assert_eq!((first.len, first.bid), (200, 0));
        let provided_first = ring.held[0].as_ref().unwrap();
        assert_eq!(first.addr, pool.ptr(provided_first, 16, 200) as u64);
        let b = ring.take(1).expect("buffer id 1 was provided");
        assert!(ring.take(1).is_none(), "a buffer id is taken once");
        assert!(ring.take(200).is_none());
        pool.put(b);
        let rest: Vec<_> = ring.drain().collect();
        assert_eq!(rest.len(), 2);
        for b in rest {
            pool.put(b);
        }
        assert_eq!((ring.provided(), pool.available()), (0, 3));
    }
}
