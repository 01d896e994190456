//! One allocation of equal-sized packet buffers, handed out by index.
//!
//! Buffers move between owners without copying: a TUN read slot hands its
//! filled buffer to a tx slot (which sends the sealed frame from it) and takes
//! a free one to re-arm with. The pool is sized so that whenever a tx slot is
//! free, a buffer is free too (`rx slots + tx slots` buffers in all), so
//! re-arming a receive never waits.
//!
//! Addresses are stable: the backing store is allocated once and never grows,
//! which is what lets the kernel hold a pointer into it across a submission.

/// A buffer's index in the pool.
pub type BufId = u32;

/// Fixed-size buffers in one block of memory.
#[derive(Debug)]
pub struct BufferPool {
    mem: Box<[u8]>,
    buf_size: usize,
    free: Vec<BufId>,
}

impl BufferPool {
    /// `count` buffers of `buf_size` bytes each.
    pub fn new(count: usize, buf_size: usize) -> Self {
        BufferPool {
            mem: vec![0u8; count * buf_size].into_boxed_slice(),
            buf_size,
            free: (0..count as BufId).rev().collect(),
        }
    }

    /// Size of each buffer.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Takes a free buffer.
    pub fn take(&mut self) -> Option<BufId> {
        self.free.pop()
    }

    /// Returns a buffer to the pool.
    pub fn put(&mut self, id: BufId) {
        debug_assert!(!self.free.contains(&id), "buffer {id} returned twice");
        self.free.push(id);
    }

    /// Free buffers.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// The bytes of buffer `id`.
    pub fn get_mut(&mut self, id: BufId) -> &mut [u8] {
        let start = id as usize * self.buf_size;
        &mut self.mem[start..start + self.buf_size]
    }

    /// A raw pointer to byte `offset` of buffer `id`, for a submission. The
    /// pointer stays valid for as long as the pool lives.
    pub fn ptr(&mut self, id: BufId, offset: usize) -> *mut u8 {
        self.get_mut(id)[offset..].as_mut_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_put_and_disjoint_buffers() {
        let mut p = BufferPool::new(3, 16);
        let a = p.take().unwrap();
        let b = p.take().unwrap();
        assert_ne!(a, b);
        p.get_mut(a).fill(1);
        p.get_mut(b).fill(2);
        assert!(p.get_mut(a).iter().all(|&x| x == 1));
        assert_eq!(p.available(), 1);
        p.put(a);
        p.put(b);
        assert_eq!(p.available(), 3);
        let c = p.take().unwrap();
        let base = p.ptr(c, 0) as usize;
        assert_eq!(p.ptr(c, 5) as usize, base + 5);
        assert_eq!(p.get_mut(c).len(), 16);
    }
}
