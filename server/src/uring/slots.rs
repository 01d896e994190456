//! Requests and the slots that own them until their completion.
//!
//! Every request the driver submits belongs to a [`Request`]: armed when it is
//! queued, disarmed only by its own final completion (or when it is taken back
//! from the backlog before the kernel ever saw it). [`Request::complete`] is
//! the one check every path makes on a completion: the request is armed, and
//! the completion carries the generation it was armed with. Anything else is a
//! late completion of an older request and is ignored.
//!
//! A [`SlotTable`] is a row of such requests, each holding what its request
//! owns while in flight (a buffer token): arming moves the value in, the
//! completion hands it back.

use std::io;

use io_uring::cqueue;

use super::user_data::{next_generation, Path, UserData};

/// One completion, as the ring reported it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Completion {
    /// Whose request it was.
    pub ud: UserData,
    /// The result: a byte count or descriptor, or `-errno`.
    pub res: i32,
    /// Completion flags (`more` for multishot requests).
    pub flags: u32,
}

impl Completion {
    /// Whether more completions of the same (multishot) request follow.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    /// Whether the request is over with this completion.
    pub fn ends_request(&self) -> bool {
        !(self.ud.path.is_multishot() && self.more())
    }

    /// A positive result as a byte count.
    pub fn bytes(&self) -> Option<usize> {
        usize::try_from(self.res).ok().filter(|&n| n > 0)
    }

    /// The request did nothing and nothing went wrong: no data yet (EAGAIN,
    /// EINTR, ENOBUFS) or it was cancelled. Re-arm, or give up quietly.
    pub fn is_retry_or_cancel(&self) -> bool {
        matches!(
            -self.res,
            libc::EAGAIN | libc::EINTR | libc::ENOBUFS | libc::ECANCELED
        )
    }

    /// The error, for a negative result.
    pub fn error(&self) -> Option<io::Error> {
        (self.res < 0).then(|| io::Error::from_raw_os_error(-self.res))
    }
}

/// A request that is either in flight under a generation, or not.
#[derive(Debug, Default)]
pub(super) struct Request {
    generation: u32,
    armed: bool,
}

impl Request {
    /// Marks the request in flight under a fresh generation and returns the
    /// `user_data` its submission carries.
    pub fn arm(&mut self, path: Path, slot: u32) -> UserData {
        let generation = next_generation(self.generation);
        self.arm_as(UserData {
            path,
            slot,
            generation,
        })
    }

    /// Marks the request in flight under a generation the caller names (a TCP
    /// connection's, so the completion names the connection).
    pub fn arm_as(&mut self, ud: UserData) -> UserData {
        debug_assert!(!self.armed, "{ud:?} armed while its request is in flight");
        self.generation = ud.generation;
        self.armed = true;
        ud
    }

    /// Whether the request is in flight.
    pub fn is_armed(&self) -> bool {
        self.armed
    }

    /// The `user_data` of the request in flight, to cancel it.
    pub fn in_flight(&self, path: Path, slot: u32) -> Option<UserData> {
        self.armed.then_some(UserData {
            path,
            slot,
            generation: self.generation,
        })
    }

    /// Whether `c` belongs to the request now in flight; if so, and no more
    /// completions of it follow, the request is over.
    pub fn complete(&mut self, c: &Completion) -> bool {
        if !self.armed || self.generation != c.ud.generation {
            return false;
        }
        if c.ends_request() {
            self.armed = false;
        }
        true
    }

    /// Forgets the request in flight under `ud`, whose submission was taken
    /// back from the backlog unsubmitted: no completion will come.
    pub fn forget(&mut self, ud: UserData) -> bool {
        let mine = self.armed && self.generation == ud.generation;
        if mine {
            self.armed = false;
        }
        mine
    }
}

#[derive(Debug)]
struct Slot<T> {
    request: Request,
    owned: Option<T>,
}

/// Slots of one path, each with at most one request in flight and what that
/// request owns until its completion.
#[derive(Debug)]
pub(super) struct SlotTable<T> {
    path: Path,
    slots: Vec<Slot<T>>,
}

impl<T> SlotTable<T> {
    /// `n` idle slots for requests on `path`.
    pub fn new(path: Path, n: u32) -> Self {
        SlotTable {
            path,
            slots: (0..n)
                .map(|_| Slot {
                    request: Request::default(),
                    owned: None,
                })
                .collect(),
        }
    }

    /// Number of slots.
    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Whether `slot` has a request in flight (a slot that does not exist has none).
    pub fn is_armed(&self, slot: u32) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.request.is_armed())
    }

    /// Arms `slot`, which takes `owned` until the completion; returns the
    /// `user_data` for the submission. The slot must be idle.
    pub fn arm(&mut self, slot: u32, owned: T) -> UserData {
        let s = &mut self.slots[slot as usize];
        debug_assert!(s.owned.is_none(), "{:?} slot {slot} armed twice", self.path);
        s.owned = Some(owned);
        s.request.arm(self.path, slot)
    }

    /// Looks up the completion's slot, checks it is armed under the
    /// completion's generation, and disarms it: the slot and what its request
    /// owned come back. `None` for a late or foreign completion.
    pub fn complete(&mut self, c: &Completion) -> Option<(u32, T)> {
        let s = self.slots.get_mut(c.ud.slot as usize)?;
        if !s.request.complete(c) {
            return None;
        }
        debug_assert!(c.ends_request(), "{:?} is not multishot", self.path);
        Some((c.ud.slot, s.owned.take()?))
    }

    /// Forgets the request of `ud`, taken back from the backlog unsubmitted,
    /// and returns what it owned.
    pub fn forget(&mut self, ud: UserData) -> Option<T> {
        let s = self.slots.get_mut(ud.slot as usize)?;
        if !s.request.forget(ud) {
            return None;
        }
        s.owned.take()
    }

    /// The requests in flight, to cancel them.
    pub fn in_flight(&self) -> impl Iterator<Item = UserData> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.request.in_flight(self.path, i as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(ud: UserData) -> Completion {
        Completion {
            ud,
            res: 1,
            flags: 0,
        }
    }

    #[test]
    fn a_stale_generation_or_idle_slot_is_ignored() {
        let mut t: SlotTable<&str> = SlotTable::new(Path::TunRx, 2);
        let first = t.arm(0, "a");
        assert_eq!(t.complete(&done(first)), Some((0, "a")));
        let second = t.arm(0, "b");
        assert_ne!(first.generation, second.generation);
        // The first request's completion again (late): ignored, slot stays armed.
        assert_eq!(t.complete(&done(first)), None);
        assert!(t.is_armed(0));
        // An idle slot, and one that does not exist.
        assert_eq!(t.complete(&done(UserData { slot: 1, ..first })), None);
        assert_eq!(t.complete(&done(UserData { slot: 9, ..first })), None);
        assert_eq!(t.in_flight().collect::<Vec<_>>(), [second]);
        assert_eq!(t.complete(&done(second)), Some((0, "b")));
        assert!(!t.is_armed(0));
        assert_eq!(t.in_flight().count(), 0);
    }

    #[test]
    fn forget_takes_back_an_unsubmitted_request() {
        let mut t: SlotTable<u8> = SlotTable::new(Path::UdpRx, 1);
        let ud = t.arm(0, 7);
        assert_eq!(
            t.forget(UserData {
                generation: 0,
                ..ud
            }),
            None
        );
        assert_eq!(t.forget(ud), Some(7));
        assert!(!t.is_armed(0));
        assert_eq!(t.complete(&done(ud)), None);
    }

    #[test]
    fn a_multishot_request_stays_armed_while_more_follow() {
        let mut r = Request::default();
        let ud = r.arm(Path::Accept, 0);
        assert!(cqueue::more(1 << 1));
        let more = Completion {
            ud,
            res: 5,
            // IORING_CQE_F_MORE
            flags: 1 << 1,
        };
        assert!(r.complete(&more));
        assert!(r.is_armed());
        assert!(r.complete(&done(ud)));
        assert!(!r.is_armed());
        assert!(!r.complete(&done(ud)));
    }

    #[test]
    fn results_are_classified() {
        let ud = UserData {
            path: Path::Tx,
            slot: 0,
            generation: 1,
        };
        let c = |res| Completion { ud, res, flags: 0 };
        assert_eq!(c(42).bytes(), Some(42));
        assert_eq!(c(0).bytes(), None);
        assert!(c(-libc::EAGAIN).is_retry_or_cancel());
        assert!(c(-libc::ECANCELED).is_retry_or_cancel());
        assert!(!c(-libc::EIO).is_retry_or_cancel());
        assert_eq!(
            c(-libc::EIO).error().unwrap().raw_os_error(),
            Some(libc::EIO)
        );
        assert!(c(3).error().is_none());
    }
}
