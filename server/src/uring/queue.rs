//! Submissions waiting for room in the ring, and the exact count of requests
//! the kernel holds or will hold.
//!
//! Every request is counted once when queued and once when its final
//! completion is reaped (or when it is taken back unsubmitted), so the count
//! reaching zero is what lets shutdown free memory; a count that would go
//! below zero is a bug, caught by a debug assertion rather than clamped.
//! A full submission queue leaves entries in the backlog for the next round:
//! never dropped, never a panic.
#![allow(unsafe_code)]

use std::collections::VecDeque;

use io_uring::{opcode, squeue, SubmissionQueue};

use super::user_data::{Path, UserData};

/// Queued submissions and the count of requests in flight.
#[derive(Debug)]
pub(super) struct Queue {
    backlog: VecDeque<squeue::Entry>,
    inflight: usize,
}

impl Queue {
    /// An empty queue with room for `n` entries before it grows.
    pub fn with_capacity(n: usize) -> Self {
        Queue {
            backlog: VecDeque::with_capacity(n),
            inflight: 0,
        }
    }

    /// Queues `entry` for the next submission.
    ///
    /// # Safety
    ///
    /// Every pointer in `entry` must stay valid, and the memory behind it must
    /// not be touched by Rust code (no `&mut` over it, no reads of what the
    /// kernel writes), until the entry's final completion has been reaped, or
    /// until [`Queue::drain_unsubmitted`] took it back unsubmitted.
    pub unsafe fn push(&mut self, entry: squeue::Entry) {
        self.backlog.push_back(entry);
        self.inflight += 1;
    }

    /// Queues a cancel of the request tagged `target`. The cancel completes
    /// on its own (and is counted like any request).
    pub fn cancel(&mut self, target: UserData) {
        let me = UserData {
            path: Path::Cancel,
            slot: 0,
            generation: 0,
        };
        let e = opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(me.encode());
        // SAFETY: a cancel carries no pointer, only the target's user_data.
        unsafe { self.push(e) };
    }

    /// A request's final completion was reaped.
    pub fn retire(&mut self) {
        debug_assert!(
            self.inflight > self.backlog.len(),
            "a completion for a request never submitted"
        );
        self.inflight -= 1;
    }

    /// Requests queued or held by the kernel.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Requests the kernel holds: submitted, not yet completed.
    pub fn in_kernel(&self) -> usize {
        self.inflight - self.backlog.len()
    }

    /// Whether entries wait for room in the submission queue.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Moves queued entries into the submission queue as space allows; what
    /// does not fit waits for the next round.
    pub fn flush(&mut self, sq: &mut SubmissionQueue<'_>) {
        while let Some(e) = self.backlog.front() {
            // SAFETY: `e` came through `Queue::push`, whose caller guaranteed
            // that its memory stays valid and untouched until the completion.
            if unsafe { sq.push(e) }.is_err() {
                break;
            }
            self.backlog.pop_front();
        }
        sq.sync();
    }

    /// Takes back every unsubmitted entry for which `take` says yes (it is
    /// told the entry's `user_data`, and must forget the request, which will
    /// never complete). Undecodable entries stay.
    pub fn drain_unsubmitted(&mut self, mut take: impl FnMut(UserData) -> bool) {
        let before = self.backlog.len();
        self.backlog
            .retain(|e| !UserData::decode(e.get_user_data()).is_some_and(&mut take));
        self.inflight -= before - self.backlog.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nop(path: Path, slot: u32) -> squeue::Entry {
        let ud = UserData {
            path,
            slot,
            generation: 1,
        };
        opcode::Nop::new().build().user_data(ud.encode())
    }

    #[test]
    fn counts_every_request_and_takes_back_unsubmitted_ones() {
        let mut q = Queue::with_capacity(4);
        // SAFETY: a nop carries no pointer.
        unsafe {
            q.push(nop(Path::TunRx, 0));
            q.push(nop(Path::Tx, 1));
            q.push(nop(Path::TunRx, 2));
        }
        q.cancel(UserData {
            path: Path::Tx,
            slot: 1,
            generation: 1,
        });
        assert_eq!((q.inflight(), q.in_kernel()), (4, 0));
        let mut taken = Vec::new();
        q.drain_unsubmitted(|ud| {
            let take = ud.path == Path::TunRx;
            if take {
                taken.push(ud.slot);
            }
            take
        });
        assert_eq!(taken, [0, 2]);
        assert_eq!((q.inflight(), q.in_kernel()), (2, 0));
        assert!(q.has_backlog());
    }
}
