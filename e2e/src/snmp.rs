//! A namespace's protocol counters (`/proc/net/snmp`): what its IP, UDP and TCP stacks did.
//!
//! Tests wait on these instead of sleeping: "the client has retried twice" is two more
//! datagrams to a closed port (`Udp.NoPorts`) in the server's namespace, or two more refused
//! connects (`Tcp.AttemptFails`) in the client's. Benchmarks use them to see that load is
//! flowing before they measure under it (`Tcp.OutSegs`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::process;

/// Bound for one read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One reading of `/proc/net/snmp`: `"Tcp.OutSegs"` and the like, to their values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snmp {
    values: BTreeMap<String, i64>,
}

impl Snmp {
    /// Reads the counters of namespace `ns` (`/proc/net` shows the reader's namespace, so
    /// `cat` runs inside it).
    pub fn read(ns: &Netns) -> Result<Self> {
        let text = process::run_ok(ns.command("cat").arg("/proc/net/snmp"), READ_TIMEOUT)
            .with_context(|| format!("reading /proc/net/snmp in {}", ns.name()))?;
        Self::parse(&text)
    }

    /// Reads the protocol counters of the namespace process `pid` lives in, without entering it
    /// (`/proc/<pid>/net` shows that process's namespace).
    pub fn of_process(pid: u32) -> Result<Self> {
        let path = format!("/proc/{pid}/net/snmp");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Self::parse(&text)
    }

    /// Parses the file: pairs of lines, `Proto: Name ...` then `Proto: value ...`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut values = BTreeMap::new();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, nums] = pair else {
                bail!("odd number of lines in /proc/net/snmp");
            };
            let (proto, names) = names.split_once(':').context("no `Proto:` prefix")?;
            let (proto2, nums) = nums.split_once(':').context("no `Proto:` prefix")?;
            if proto != proto2 {
                bail!("/proc/net/snmp pairs {proto} with {proto2}");
            }
            for (name, num) in names.split_whitespace().zip(nums.split_whitespace()) {
                let value = num
                    .parse()
                    .with_context(|| format!("{proto}.{name} is {num:?}"))?;
                values.insert(format!("{proto}.{name}"), value);
            }
        }
        Ok(Self { values })
    }

    /// The counter `name` (`"Udp.NoPorts"`), or 0 if this kernel does not have it.
    pub fn get(&self, name: &str) -> i64 {
        self.values.get(name).copied().unwrap_or(0)
    }

    /// How much `name` grew since `earlier`.
    pub fn delta(&self, earlier: &Self, name: &str) -> i64 {
        self.get(name) - earlier.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_of_lines() {
        let text = "Tcp: RtoAlgorithm MaxConn OutSegs AttemptFails\n\
                    Tcp: 1 -1 1234 2\n\
                    Udp: InDatagrams NoPorts\n\
                    Udp: 10 3\n";
        let s = Snmp::parse(text).unwrap();
        assert_eq!(s.get("Tcp.MaxConn"), -1);
        assert_eq!(s.get("Tcp.OutSegs"), 1234);
        assert_eq!(s.get("Udp.NoPorts"), 3);
        assert_eq!(s.get("Udp.Nothing"), 0);
        let later = Snmp::parse(&text.replace("10 3", "10 7")).unwrap();
        assert_eq!(later.delta(&s, "Udp.NoPorts"), 4);
        assert!(Snmp::parse("Tcp: A\nUdp: 1\n").is_err());
    }

    #[test]
    fn reads_this_machine() {
        let text = std::fs::read_to_string("/proc/net/snmp").unwrap();
        let s = Snmp::parse(&text).unwrap();
        assert!(s.values.contains_key("Tcp.OutSegs"), "{s:?}");
    }
}
