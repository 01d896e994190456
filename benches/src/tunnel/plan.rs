//! The order of runs: repetitions outermost, then tests, then systems, so that every system
//! takes its turn (A B C A B C) before any test moves on.
//!
//! A shared machine drifts (a neighbour's build starts, the CPU warms); interleaving spreads
//! that drift evenly over the systems compared, instead of giving one system the quiet minutes
//! and another the busy ones.

/// One run: indices into the run's tests and systems, and the repetition (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Repetition, 1-based.
    pub rep: u32,
    /// Index into the tests.
    pub test: usize,
    /// Index into the systems.
    pub system: usize,
}

/// Every run of `reps` repetitions of `tests` tests on `systems` systems, in order.
pub fn order(reps: u32, tests: usize, systems: usize) -> Vec<Slot> {
    let mut slots = Vec::with_capacity(reps as usize * tests * systems);
    for rep in 1..=reps {
        for test in 0..tests {
            for system in 0..systems {
                slots.push(Slot { rep, test, system });
            }
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_alternate_within_each_test() {
        let o = order(2, 2, 3);
        assert_eq!(o.len(), 12);
        let systems: Vec<usize> = o.iter().map(|s| s.system).collect();
        assert_eq!(systems, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
        let tests: Vec<usize> = o.iter().map(|s| s.test).collect();
        assert_eq!(tests, [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]);
        assert_eq!((o[0].rep, o[11].rep), (1, 2));
        assert!(order(0, 2, 3).is_empty());
    }
}
