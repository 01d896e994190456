//! Packets per system call on each of the server's I/O paths, from its counters.
//!
//! Batching (reading offloaded super-packets from the TUN, UDP_SEGMENT / GRO, several
//! datagrams per `sendmsg`) shows as more packets per call. The server counts, per path, the
//! calls it made and the packets they moved, as `<path>_<calls>` and `<path>_<packets>` with
//! the suffixes below; every such pair in the final counters becomes a ratio. The tables are
//! data: a server that names its counters differently needs a suffix added here, nothing else.

use std::collections::BTreeMap;

use ringway_e2e::counters::ServerCounters;

/// Paths whose ratio every throughput table shows, as `n/a` while the server does not count
/// them (builds before the offload work). Other paths found in the counters are shown too.
pub const PATHS: &[&str] = &["tun_rx", "udp_tx", "udp_rx", "tun_tx"];

/// Suffixes of a counter of system calls (or ring operations) on a path.
pub const CALL_SUFFIXES: &[&str] = &["reads", "writes", "sends", "recvs", "calls", "ops"];

/// Suffixes of a counter of packets moved on a path, in order of preference.
pub const PACKET_SUFFIXES: &[&str] = &["packets", "datagrams", "segments", "frames"];

/// The metric name of a path's ratio.
pub fn metric_name(path: &str) -> String {
    format!("pkts_per_call.{path}")
}

/// The path of a ratio metric, if `metric` is one.
pub fn path_of(metric: &str) -> Option<&str> {
    metric.strip_prefix("pkts_per_call.")
}

/// Packets per call for every path with both counters (and at least one call).
pub fn packets_per_call(counters: &ServerCounters) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, calls) in counters.iter() {
        let Some(path) = CALL_SUFFIXES
            .iter()
            .find_map(|s| name.strip_suffix(s)?.strip_suffix('_'))
        else {
            continue;
        };
        let packets = PACKET_SUFFIXES
            .iter()
            .find_map(|s| counters.get(&format!("{path}_{s}")));
        if let (Some(packets), true) = (packets, calls > 0) {
            out.insert(path.to_owned(), packets as f64 / calls as f64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_calls_with_packets() {
        let c = ServerCounters::parse(
            "stopped counters=tun_rx_reads 10 tun_rx_packets 40 udp_tx_sends 5 \
             udp_tx_datagrams 50 udp_rx_recvs 0 udp_rx_datagrams 0 tun_tx_writes 7 udp_tx 99",
        );
        let r = packets_per_call(&c);
        assert_eq!(r.get("tun_rx"), Some(&4.0));
        assert_eq!(r.get("udp_tx"), Some(&10.0));
        // No calls: no ratio rather than infinity; no packet counter: no ratio.
        assert_eq!(r.get("udp_rx"), None);
        assert_eq!(r.get("tun_tx"), None);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn todays_counters_have_no_pairs() {
        let c = ServerCounters::parse(
            "stopped counters=inside_rx 5 pkts/420 B, inside_tx 7 pkts/588 B, outside_rx 9 \
             io=udp_tx 3 tcp_tx 0 tx_full 0 eagain 12",
        );
        assert!(packets_per_call(&c).is_empty());
        assert_eq!(metric_name("tun_rx"), "pkts_per_call.tun_rx");
        assert_eq!(path_of("pkts_per_call.tun_rx"), Some("tun_rx"));
        assert_eq!(path_of("gbps"), None);
    }
}
