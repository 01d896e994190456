//! Owned copies of frames for a TCP send queue without an allocation per packet.
//!
//! A frame queued on a TCP connection must outlive the buffer it was sealed in
//! (that buffer goes straight back to a receive slot), so it is copied once into
//! a `Bytes`. Copies are carved out of one `BytesMut` chunk; when every `Bytes`
//! cut from a chunk has been sent and dropped, `reserve` reclaims the chunk in
//! place, so in steady state no allocation happens at all.
//!
//! Each connection has its own arena: a chunk stays allocated while any frame
//! cut from it is queued, so a shared arena would let one stalled peer pin
//! chunks full of other connections' long-gone frames. Per connection, what is
//! pinned is bounded by its own queue limit plus one chunk, and nothing is
//! allocated until the connection first sends.

use bytes::{Bytes, BytesMut};

/// Size of each arena chunk.
const CHUNK: usize = 32 * 1024;

/// A source of owned frame copies.
#[derive(Debug)]
pub struct Arena {
    buf: BytesMut,
}

impl Default for Arena {
    fn default() -> Self {
        Arena {
            buf: BytesMut::new(),
        }
    }
}

impl Arena {
    /// Copies `parts` (e.g. a length prefix and a frame) into one owned `Bytes`.
    pub fn copy(&mut self, parts: &[&[u8]]) -> Bytes {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.buf.capacity() < len {
            self.buf.reserve(len.max(CHUNK));
        }
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.buf.split().freeze()
    }

    /// `len` bytes that `fill` writes (starting zeroed), as one owned `Bytes`; `None`
    /// if `fill` says it could not, and the space is reused.
    pub fn build(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> bool) -> Option<Bytes> {
        if self.buf.capacity() < len {
            self.buf.reserve(len.max(CHUNK));
        }
        self.buf.resize(len, 0);
        if fill(&mut self.buf[..]) {
            Some(self.buf.split().freeze())
        } else {
            self.buf.clear();
            None
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
}
