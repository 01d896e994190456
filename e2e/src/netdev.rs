//! A namespace's per-device counters (`/proc/net/dev`): where packets were dropped.
//!
//! Under load, a tunnel's queues overflow somewhere: a TUN device's transmit ring (the
//! kernel drops what the tunnel process did not read in time, counted as the device's
//! `tx_drop`), or a socket's receive buffer (`Udp.RcvbufErrors` in [`crate::snmp`]).
//! Benchmarks read both before and after a run to say which queue was the bottleneck.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::process;

/// Bound for one read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One device's counters, as `/proc/net/dev` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DevCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets dropped on receive.
    pub rx_drop: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets dropped on transmit (for a TUN: its queue to the reading process was full).
    pub tx_drop: u64,
}

/// One reading of `/proc/net/dev`: device name to counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    devices: BTreeMap<String, DevCounters>,
}

impl NetDev {
    /// Reads the counters of namespace `ns`.
    pub fn read(ns: &Netns) -> Result<Self> {
        let text = process::run_ok(ns.command("cat").arg("/proc/net/dev"), READ_TIMEOUT)
            .with_context(|| format!("reading /proc/net/dev in {}", ns.name()))?;
        Self::parse(&text)
    }

    /// Reads the device counters of the namespace process `pid` lives in, without entering it
    /// (`/proc/<pid>/net` shows that process's namespace).
    pub fn of_process(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/net/dev");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Self::parse(&text)
    }

    /// Parses the file: two heading lines, then `name: 8 receive and 8 transmit columns`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut devices = BTreeMap::new();
        for line in text.lines().skip(2) {
            let Some((name, nums)) = line.split_once(':') else {
                bail!("no `name:` in /proc/net/dev line {line:?}");
            };
            let nums: Vec<u64> = nums
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("a counter of {} is not a number", name.trim()))?;
            if nums.len() < 16 {
                bail!("{} has {} counters, expected 16", name.trim(), nums.len());
            }
            devices.insert(
                name.trim().to_owned(),
                DevCounters {
                    rx_packets: nums[1],
                    rx_drop: nums[3],
                    tx_packets: nums[9],
                    tx_drop: nums[11],
                },
            );
        }
        Ok(Self { devices })
    }

    /// The counters of device `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<DevCounters> {
        self.devices.get(name).copied()
    }

    /// Transmit drops of every device but loopback, summed: in a tunnel's namespace that is
    /// its TUN (veths drop nothing on transmit).
    pub fn tx_drops(&self) -> u64 {
        self.devices
            .iter()
            .filter(|(name, _)| name.as_str() != "lo")
            .map(|(_, c)| c.tx_drop)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0\n  \
            rw0: 5000000    4000    0    1    0     0          0         0  9000000    7000    0  321    0     0       0          0\n";
        let d = NetDev::parse(text).unwrap();
        let tun = d.get("rw0").unwrap();
        assert_eq!(tun.rx_packets, 4000);
        assert_eq!(tun.rx_drop, 1);
        assert_eq!(tun.tx_packets, 7000);
        assert_eq!(tun.tx_drop, 321);
        assert_eq!(d.tx_drops(), 321);
        assert!(d.get("eth0").is_none());
    }

    #[test]
    fn refuses_short_lines() {
        let text = "h1\nh2\n  lo: 1 2 3\n";
        assert!(NetDev::parse(text).is_err());
    }
}
