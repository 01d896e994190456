//! A TCP connection's outgoing frames: bounded, at most one send in flight, and
//! resumable after a partial send.
//!
//! TCP-in-TCP must not build latency: when the queue holds `max_bytes`, further
//! frames are refused (the caller drops and counts them) instead of waiting.
//! Frames are `CowBytes`: an owned `Bytes` is queued as is; a borrowed slice is
//! copied once (into the queue's own [`Arena`]) because it must outlive the call.
//!
//! The in-flight send covers up to [`MAX_IOVECS`] queued frames at once, so a
//! burst goes to the kernel in one `sendmsg`. Whatever the kernel reports as
//! sent is consumed from the front, whole frames first, then part of the next.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};
use ringway_proto::CowBytes;

use super::arena::Arena;

/// Frames gathered into one send.
pub const MAX_IOVECS: usize = 32;

/// The queue is full: the frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// Outgoing frames of one connection.
#[derive(Debug)]
pub struct SendQueue {
    frames: VecDeque<Bytes>,
    queued_bytes: usize,
    max_bytes: usize,
    /// Bytes handed to the kernel in the current send, if one is in flight.
    in_flight: Option<usize>,
    arena: Arena,
}

impl SendQueue {
    /// An empty queue refusing frames beyond `max_bytes` queued.
    pub fn new(max_bytes: usize) -> Self {
        SendQueue {
            frames: VecDeque::new(),
            queued_bytes: 0,
            max_bytes,
            in_flight: None,
            arena: Arena::default(),
        }
    }

    /// Queues `frame`. Refuses it if the queue is full (an empty queue accepts
    /// any one frame, so an oversized limit misconfiguration cannot wedge it).
    pub fn push(&mut self, frame: CowBytes<'_>) -> Result<(), QueueFull> {
        if !self.frames.is_empty() && self.queued_bytes + frame.len() > self.max_bytes {
            return Err(QueueFull);
        }
        let owned = match frame {
            CowBytes::Owned(b) => b,
            CowBytes::Borrowed(s) => self.arena.copy(&[s]),
        };
        self.queued_bytes += owned.len();
        self.frames.push_back(owned);
        Ok(())
    }

    /// Queues a frame given as parts (a length prefix and the frame), copied once.
    pub fn push_parts(&mut self, parts: &[&[u8]]) -> Result<(), QueueFull> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if !self.frames.is_empty() && self.queued_bytes + len > self.max_bytes {
            return Err(QueueFull);
        }
        let owned = self.arena.copy(parts);
        self.queued_bytes += owned.len();
        self.frames.push_back(owned);
        Ok(())
    }

    /// Queues `len` bytes that `fill` writes straight into the queue's own memory
    /// (frames sealed and prefixed in place, no further copy). `Ok(false)`, with
    /// nothing queued, if `fill` says it could not.
    pub fn push_built(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) -> Result<bool, QueueFull> {
        if !self.frames.is_empty() && self.queued_bytes + len > self.max_bytes {
            return Err(QueueFull);
        }
        let Some(owned) = self.arena.build(len, fill) else {
            return Ok(false);
        };
        self.queued_bytes += owned.len();
        self.frames.push_back(owned);
        Ok(true)
    }

    /// Whether a send is in flight.
    pub fn is_sending(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether there is something to send and nothing in flight.
    pub fn wants_send(&self) -> bool {
        self.in_flight.is_none() && !self.frames.is_empty()
    }

    /// Bytes queued (including any in flight).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Starts a send: fills `iovecs` with the front frames and returns how many
    /// were filled. The frames stay queued (and their memory alive) until
    /// [`SendQueue::complete`] consumes them.
    pub fn start_send(&mut self, iovecs: &mut [libc::iovec]) -> usize {
        let mut n = 0;
        let mut bytes = 0;
        for (iov, frame) in iovecs.iter_mut().zip(self.frames.iter()) {
            iov.iov_base = frame.as_ptr() as *mut libc::c_void;
            iov.iov_len = frame.len();
            bytes += frame.len();
            n += 1;
        }
        if n > 0 {
            self.in_flight = Some(bytes);
        }
        n
    }

    /// Records that the kernel sent `sent` bytes of the in-flight send (which
    /// may be fewer than asked, or, for a misbehaving report, more: clamped).
    pub fn complete(&mut self, sent: usize) {
        let Some(asked) = self.in_flight.take() else {
            return;
        };
        let mut left = sent.min(asked);
        while left > 0 {
            let Some(front) = self.frames.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                self.queued_bytes -= front.len();
                self.frames.pop_front();
            } else {
                front.advance(left);
                self.queued_bytes -= left;
                left = 0;
            }
        }
    }

    /// Sends the front frames (up to [`MAX_IOVECS`]) with `write`, a vectored write that
    /// returns at once (a non-blocking socket's), and consumes what it reports sent: the
    /// readiness backend's send, where the iovecs need not outlive the call. Nothing may be
    /// in flight (see [`SendQueue::start_send`]).
    pub fn write_with(
        &mut self,
        write: impl FnOnce(&[std::io::IoSlice<'_>]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        debug_assert!(
            self.in_flight.is_none(),
            "a readiness write during a ring send"
        );
        let mut frames = self.frames.iter();
        let slices: [std::io::IoSlice<'_>; MAX_IOVECS] = std::array::from_fn(|_| {
            std::io::IoSlice::new(frames.next().map_or(&[][..], |f| &f[..]))
        });
        let count = self.frames.len().min(MAX_IOVECS);
        let asked: usize = slices[..count].iter().map(|s| s.len()).sum();
        let sent = write(&slices[..count])?;
        self.in_flight = Some(asked);
        self.complete(sent);
        Ok(sent)
    }

    /// Ends the in-flight send without progress (an error or a cancel).
    pub fn abort_send(&mut self) {
        self.in_flight = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iovs() -> Vec<libc::iovec> {
        vec![
            libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0
            };
            MAX_IOVECS
        ]
    }

    #[test]
    fn whole_and_partial_sends() {
        let mut q = SendQueue::new(1 << 20);
        q.push(CowBytes::Borrowed(b"aaaa")).unwrap();
        q.push(CowBytes::Owned(Bytes::from_static(b"bbbbbb")))
            .unwrap();
        let mut v = iovs();
        assert!(q.wants_send());
        assert_eq!(q.start_send(&mut v), 2);
        assert_eq!(v[0].iov_len, 4);
        assert_eq!(v[1].iov_len, 6);
        assert!(!q.wants_send());
        // Kernel took the first frame and 2 bytes of the second.
        q.complete(6);
        assert_eq!(q.queued_bytes(), 4);
        assert!(q.wants_send());
        assert_eq!(q.start_send(&mut v), 1);
        assert_eq!(v[0].iov_len, 4);
        q.complete(4);
        assert_eq!(q.queued_bytes(), 0);
        assert!(!q.wants_send());
    }

    #[test]
    fn full_queue_refuses_but_empty_accepts_one() {
        let mut q = SendQueue::new(10);
        q.push(CowBytes::Borrowed(&[0u8; 50])).unwrap();
        assert_eq!(q.push(CowBytes::Borrowed(&[0u8; 1])), Err(QueueFull));
        let mut v = iovs();
        q.start_send(&mut v);
        q.complete(50);
        q.push_parts(&[&[0, 4], b"abcd"]).unwrap();
        assert_eq!(q.queued_bytes(), 6);
        assert_eq!(q.push_parts(&[&[0u8; 5]]), Err(QueueFull));
    }

    #[test]
    fn over_reported_and_aborted_sends() {
        let mut q = SendQueue::new(100);
        q.push(CowBytes::Borrowed(b"xyz")).unwrap();
        let mut v = iovs();
        q.start_send(&mut v);
        q.abort_send();
        assert!(q.wants_send());
        q.start_send(&mut v);
        q.complete(1000);
        assert_eq!(q.queued_bytes(), 0);
        // Completion without a send in flight is ignored.
        q.complete(5);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn built_entries_are_queued_whole_or_not_at_all() {
        let mut q = SendQueue::new(100);
        assert_eq!(
            q.push_built(60, |b| {
                b.fill(7);
                true
            }),
            Ok(true)
        );
        assert_eq!(q.push_built(10, |_| false), Ok(false));
        assert_eq!(q.queued_bytes(), 60);
        assert_eq!(q.push_built(50, |_| true), Err(QueueFull));
        let mut v = iovs();
        assert_eq!(q.start_send(&mut v), 1);
        assert_eq!(v[0].iov_len, 60);
    }

    #[test]
    fn gathers_at_most_max_iovecs() {
        let mut q = SendQueue::new(1 << 20);
        for _ in 0..MAX_IOVECS + 5 {
            q.push(CowBytes::Borrowed(b"f")).unwrap();
        }
        let mut v = iovs();
        assert_eq!(q.start_send(&mut v), MAX_IOVECS);
        q.complete(MAX_IOVECS);
        assert_eq!(q.start_send(&mut v), 5);
    }

    #[test]
    fn a_readiness_write_consumes_what_was_written() {
        let mut q = SendQueue::new(1000);
        q.push_parts(&[b"ab", b"cdef"]).unwrap();
        q.push_parts(&[b"ghij"]).unwrap();
        let mut seen = Vec::new();
        let n = q
            .write_with(|slices| {
                seen = slices.iter().map(|s| s.to_vec()).collect();
                Ok(8)
            })
            .unwrap();
        assert_eq!(n, 8);
        assert_eq!(seen, [b"abcdef".to_vec(), b"ghij".to_vec()]);
        assert_eq!(q.queued_bytes(), 2);
        assert!(!q.is_sending());
        let err = q.write_with(|_| Err(std::io::ErrorKind::WouldBlock.into()));
        assert!(err.is_err());
        assert_eq!(q.queued_bytes(), 2, "a refused write consumes nothing");
        q.write_with(|slices| Ok(slices[0].len())).unwrap();
        assert_eq!(q.queued_bytes(), 0);
    }
}
