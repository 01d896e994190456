//! Peak memory of a tunnel process: `VmHWM` ("high water mark") of `/proc/<pid>/status`, the
//! most resident memory it has had at any time, read just before it is stopped.

use anyhow::{Context, Result};

/// The peak resident set size of process `pid`, in KiB.
pub fn peak_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_hwm(&text).with_context(|| format!("no VmHWM in {path}"))
}

/// The `VmHWM:   1234 kB` line of a `/proc/<pid>/status`, in KiB.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim();
    let kib = value.strip_suffix("kB")?.trim();
    kib.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_high_water_mark() {
        let status = "Name:\tringway-server\nVmPeak:\t  123456 kB\nVmHWM:\t    9876 kB\n\
                      VmRSS:\t    5432 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_hwm(status), Some(9876));
        // Kernel threads have no memory lines.
        assert_eq!(parse_vm_hwm("Name:\tkworker/0:1\nThreads:\t1\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\tlots kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t12 MB\n"), None);
    }

    #[test]
    fn reads_our_own() {
        assert!(peak_kib(std::process::id()).unwrap() > 0);
    }
}
