//! Owned copies of frames for a TCP send queue without an allocation per packet.
//!
//! A frame queued on a TCP connection must outlive the buffer it was sealed in
//! (that buffer goes straight back to a receive slot), so it is copied once into
//! a `Bytes` (or, for a superpacket's frames, cut and sealed straight into one).
//! Copies are carved out of a `BytesMut` chunk; when every `Bytes` cut from a
//! chunk has been sent and dropped, the chunk is reclaimed in place
//! (`BytesMut::try_reclaim`), so in steady state no allocation happens at all.
//!
//! One chunk is not enough once a whole superpacket (up to 64 KiB of frames) is
//! queued at a time: the next one would find the chunk still pinned by frames in
//! flight and allocate, and freeing that allocation a moment later makes the
//! allocator move the heap's end (a `brk` per superpacket, which the e2e
//! system-call check catches). So an arena keeps a few chunks in rotation, and
//! takes whichever has been sent in full.
//!
//! Each connection has its own arena: a chunk stays allocated while any frame
//! cut from it is queued, so a shared arena would let one stalled peer pin
//! chunks full of other connections' long-gone frames. Per connection, what is
//! pinned is bounded by its own queue limit plus [`SPARE_CHUNKS`] + 1 chunks,
//! and nothing is allocated until the connection first sends.

use bytes::{Bytes, BytesMut};

/// Size of each arena chunk: two superpackets' frames.
const CHUNK: usize = 128 * 1024;
/// Chunks kept for reuse besides the one being filled.
pub const SPARE_CHUNKS: usize = 2;

/// A source of owned frame copies.
#[derive(Debug, Default)]
pub struct Arena {
    current: BytesMut,
    spare: Vec<BytesMut>,
    /// Chunks allocated so far (for tests: steady state allocates none).
    allocated: usize,
}

impl Arena {
    /// Copies `parts` (e.g. a length prefix and a frame) into one owned `Bytes`.
    pub fn copy(&mut self, parts: &[&[u8]]) -> Bytes {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.room(len);
        for p in parts {
            self.current.extend_from_slice(p);
        }
        self.current.split().freeze()
    }

    /// `len` bytes that `fill` writes (starting zeroed), as one owned `Bytes`; `None`
    /// if `fill` says it could not, and the space is reused.
    pub fn build(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> bool) -> Option<Bytes> {
        self.room(len);
        self.current.resize(len, 0);
        if fill(&mut self.current[..]) {
            Some(self.current.split().freeze())
        } else {
            self.current.clear();
            None
        }
    }

    /// Makes the current chunk hold at least `len` more bytes: as it is, reclaimed,
    /// swapped for a spare that has been sent in full, or (while frames pin them all)
    /// a new chunk.
    fn room(&mut self, len: usize) {
        if self.current.capacity() >= len || self.current.try_reclaim(len) {
            return;
        }
        let want = len.max(CHUNK);
        let fresh = match self.spare.iter_mut().position(|c| c.try_reclaim(want)) {
            Some(i) => self.spare.swap_remove(i),
            None => {
                self.allocated += 1;
                BytesMut::with_capacity(want)
            }
        };
        let pinned = std::mem::replace(&mut self.current, fresh);
        // A chunk never allocated has nothing to keep; beyond the spares, a pinned
        // chunk is freed once its last frame is sent.
        if pinned.capacity() > 0 && self.spare.len() < SPARE_CHUNKS {
            self.spare.push(pinned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_bytes_are_what_fill_wrote() {
        let mut a = Arena::default();
        let b = a.build(5, |out| {
            out.copy_from_slice(b"hello");
            true
        });
        assert_eq!(b.as_deref(), Some(&b"hello"[..]));
        assert_eq!(a.build(4, |_| false), None);
        assert_eq!(&a.copy(&[b"ab"])[..], b"ab");
    }

    #[test]
    fn copies_are_independent_and_chunk_is_reclaimed() {
        let mut a = Arena::default();
        let x = a.copy(&[b"ab", b"cd"]);
        let y = a.copy(&[b"ef"]);
        assert_eq!(&x[..], b"abcd");
        assert_eq!(&y[..], b"ef");
        let base = x.as_ptr();
        drop(x);
        drop(y);
        // Fill past the chunk: once nothing from the chunk is alive, it is reused.
        let mut last = a.copy(&[&[0u8; 1000]]);
        for _ in 0..(CHUNK / 1000) * 3 {
            drop(last);
            last = a.copy(&[&[0u8; 1000]]);
        }
        let p = last.as_ptr() as usize;
        let start = base as usize;
        assert!(p >= start && p < start + CHUNK, "chunk was not reclaimed");
    }

    #[test]
    fn superpackets_in_flight_rotate_through_the_same_chunks() {
        let mut a = Arena::default();
        let big = 60 * 1024;
        // Two superpackets stay queued while a third is built, over and over: the
        // chunks in rotation serve them all, with no new allocation after the first few.
        let mut queued = std::collections::VecDeque::new();
        for _ in 0..100 {
            queued.push_back(a.build(big, |_| true).unwrap());
            if queued.len() > 2 {
                queued.pop_front();
            }
        }
        assert!(
            a.allocated <= 1 + SPARE_CHUNKS,
            "{} chunks allocated for 100 superpackets",
            a.allocated
        );
    }
}
