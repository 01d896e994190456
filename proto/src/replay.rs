//! Sliding replay window over packet counters.
//!
//! UDP reorders, so a counter below the highest seen is not necessarily a replay;
//! the window remembers which of the last [`WINDOW`] counters arrived. The check
//! and the update are separate calls because a frame must pass the window
//! *before* it is decrypted (cheap rejection) but may mark its counter seen only
//! *after* its tag verified: otherwise a forged frame could burn a counter that
//! the genuine packet then finds taken.
//!
//! The bitmap is a ring of 64-bit blocks (RFC 6479): advancing the window clears
//! whole blocks rather than shifting bits.

/// Number of 64-bit blocks in the bitmap; one block is kept as slack so the
/// window can advance by clearing blocks.
const BLOCKS: usize = 64;
const BLOCK_BITS: u64 = 64;
/// Counters this far below the highest seen are still accepted once.
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;
const _: () = assert!(
    WINDOW >= 2048,
    "the window must cover at least 2048 packets"
);

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Already seen.
    #[error("replayed counter")]
    Replayed,
    /// Below the window: too old to tell.
    #[error("counter too old")]
    TooOld,
}

/// Which counters in the window have been seen.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// The highest counter committed so far (meaningless while `empty`).
    top: u64,
    empty: bool,
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// A window that has seen nothing.
    pub fn new() -> Self {
        ReplayWindow {
            top: 0,
            empty: true,
            bitmap: [0; BLOCKS],
        }
    }

    fn locate(counter: u64) -> (usize, u64) {
        let block = (counter / BLOCK_BITS) as usize % BLOCKS;
        (block, 1u64 << (counter % BLOCK_BITS))
    }

    /// Whether `counter` would be accepted; changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        if self.empty || counter > self.top {
            return Ok(());
        }
        if self.top - counter >= WINDOW {
            return Err(ReplayError::TooOld);
        }
        let (block, bit) = Self::locate(counter);
        if self.bitmap[block] & bit != 0 {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }

    /// Marks `counter` seen, advancing the window if it is the new highest.
    /// Checks again, so a caller that raced two frames cannot accept both.
    pub fn commit(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        if self.empty {
            self.empty = false;
            self.top = counter;
        } else if counter > self.top {
            let old_block = self.top / BLOCK_BITS;
            let new_block = counter / BLOCK_BITS;
            let advance = (new_block - old_block).min(BLOCKS as u64);
            for i in 1..=advance {
                let idx = ((old_block + i) % BLOCKS as u64) as usize;
                self.bitmap[idx] = 0;
            }
            self.top = counter;
        }
        let (block, bit) = Self::locate(counter);
        self.bitmap[block] |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_and_replays() {
        let mut w = ReplayWindow::new();
        for c in 0..10_000u64 {
            assert_eq!(w.check(c), Ok(()));
            w.commit(c).unwrap();
            assert_eq!(w.check(c), Err(ReplayError::Replayed));
        }
    }

    #[test]
    fn out_of_order_within_window() {
        let mut w = ReplayWindow::new();
        w.commit(5000).unwrap();
        w.commit(5000 - (WINDOW - 1)).unwrap();
        assert_eq!(w.check(5000 - WINDOW), Err(ReplayError::TooOld));
        assert_eq!(w.check(4999), Ok(()));
        w.commit(4999).unwrap();
        assert_eq!(w.commit(4999), Err(ReplayError::Replayed));
    }

    #[test]
    fn large_jump_clears_everything() {
        let mut w = ReplayWindow::new();
        for c in 0..100 {
            w.commit(c).unwrap();
        }
        w.commit(1_000_000).unwrap();
        // Counters just below the new top are fresh, not stale bits from before.
        for c in (1_000_000 - 200)..1_000_000 {
            assert_eq!(w.check(c), Ok(()), "counter {c}");
        }
    }

    #[test]
    fn first_counter_may_be_anything() {
        let mut w = ReplayWindow::new();
        w.commit(u64::MAX).unwrap();
        assert_eq!(w.check(u64::MAX), Err(ReplayError::Replayed));
        assert_eq!(w.check(0), Err(ReplayError::TooOld));
    }

    proptest! {
        /// Against a model (a set of seen counters): the window accepts exactly the
        /// unseen counters within WINDOW of the highest.
        #[test]
        fn matches_model(ops in proptest::collection::vec(0u64..20_000, 1..500)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            let mut top: Option<u64> = None;
            for c in ops {
                let expect = match top {
                    None => Ok(()),
                    Some(t) if c > t => Ok(()),
                    Some(t) if t - c >= WINDOW => Err(ReplayError::TooOld),
                    Some(_) if seen.contains(&c) => Err(ReplayError::Replayed),
                    Some(_) => Ok(()),
                };
                prop_assert_eq!(w.check(c), expect);
                if expect.is_ok() {
                    w.commit(c).unwrap();
                    seen.insert(c);
                    top = Some(top.map_or(c, |t| t.max(c)));
                }
            }
        }
    }
}
