//! CPU time a process has used, from `/proc/<pid>/stat`.
//!
//! The kernel sums user and system time over every thread of the process, including threads
//! that have ended and the io_uring workers it created, so two readings around a measurement
//! give what the process cost, whatever its threading. The resolution is one clock tick
//! (10 ms), which is why benchmarks read it around runs of seconds.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::sys;

/// User and system CPU time of one process so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CpuTime {
    /// Time in user mode.
    pub user: Duration,
    /// Time in the kernel on the process's behalf.
    pub system: Duration,
}

impl CpuTime {
    /// Reads the CPU time of process `pid` (all its threads).
    pub fn of(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/stat");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Self::parse(&text, sys::clock_ticks_per_second()).with_context(|| format!("parsing {path}"))
    }

    /// Parses a `/proc/<pid>/stat` line; `ticks` is the clock tick rate.
    fn parse(stat: &str, ticks: u64) -> Result<Self> {
        // The command name (field 2) is in parentheses and may hold spaces or parentheses, so
        // fields are counted from the last `)`: field 3 (state) comes first after it.
        let (_, rest) = stat
            .rsplit_once(')')
            .context("no `)` after the command name")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| -> Result<u64> {
            fields
                .get(n - 3)
                .with_context(|| format!("no field {n}"))?
                .parse()
                .with_context(|| format!("field {n} is not a number"))
        };
        let to_duration = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / ticks);
        Ok(Self {
            user: to_duration(field(14)?),
            system: to_duration(field(15)?),
        })
    }

    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// What was used since `earlier` (zero if the counters went backwards, which they do not
    /// for one process).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "4242 (ringway (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 \
                    3 0 12345 1000000 200 18446744073709551615";
        let t = CpuTime::parse(stat, 100).unwrap();
        assert_eq!(t.user, Duration::from_millis(2500));
        assert_eq!(t.system, Duration::from_millis(750));
        assert_eq!(t.total(), Duration::from_millis(3250));
        assert!(CpuTime::parse("garbage", 100).is_err());
    }

    #[test]
    fn reads_our_own_process() {
        let start = CpuTime::of(std::process::id()).unwrap();
        // Burn a little CPU so that at least the sum does not go backwards.
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let end = CpuTime::of(std::process::id()).unwrap();
        assert!(end.total() >= start.total());
        assert_eq!(end.since(&start).total(), end.total() - start.total());
    }
}
