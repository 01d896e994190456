//! The server's counters, read from the line it logs when it stops.
//!
//! `ringway-server` keeps its counters in plain integers on its one data-path thread and
//! prints them once, in its final `stopped counters=... io=...` log line. Tests judge *why*
//! something happened from them (a connection closed for garbage, not for a timeout), and the
//! tunnel benchmark divides packets by system calls. The line is meant for people, so the
//! parser is lenient: every `name value` or `name=value` pair whose value is an integer is a
//! counter, whatever the separators and whatever new counters the server grows.

use std::collections::BTreeMap;
use std::fmt;

/// What the server's final log line says before its counters.
pub const MARKER: &str = "stopped counters=";

/// Counter name to value, as the server logged them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerCounters {
    values: BTreeMap<String, u64>,
}

impl ServerCounters {
    /// Parses the counters out of `line` (the part after [`MARKER`], or all of it if the
    /// marker is absent). A name given twice keeps its last value.
    pub fn parse(line: &str) -> Self {
        let text = line.split_once(MARKER).map_or(line, |(_, rest)| rest);
        let tokens: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '='))
            .filter(|t| !t.is_empty())
            .collect();
        let mut values = BTreeMap::new();
        for pair in tokens.windows(2) {
            if let (true, Ok(value)) = (is_name(pair[0]), pair[1].parse::<u64>()) {
                values.insert(pair[0].to_owned(), value);
            }
        }
        Self { values }
    }

    /// The value of counter `name`, if the server logged it.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.values.get(name).copied()
    }

    /// Every counter, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.values.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Whether no counter was found.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Display for ServerCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.values {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// A counter name: a lowercase identifier (`udp_tx`, `tcp_closed_garbage`).
fn is_name(token: &str) -> bool {
    token.starts_with(|c: char| c.is_ascii_lowercase())
        && token
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_todays_line() {
        let line = "2025-01-01T00:00:00Z  INFO ringway_server::uring::driver: stopped \
                    counters=inside_rx 5 pkts/420 B, inside_tx 7 pkts/588 B, outside_rx 9, \
                    drops: no_route 0 malformed 2 io=udp_tx 3 tcp_tx 0 tx_full 0 eagain 12; \
                    tcp_accepted 1 tcp_closed_garbage 1";
        let c = ServerCounters::parse(line);
        assert_eq!(c.get("inside_rx"), Some(5));
        assert_eq!(c.get("outside_rx"), Some(9));
        assert_eq!(c.get("malformed"), Some(2));
        assert_eq!(c.get("udp_tx"), Some(3));
        assert_eq!(c.get("eagain"), Some(12));
        assert_eq!(c.get("tcp_closed_garbage"), Some(1));
        // Words that are not followed by a number are not counters.
        assert_eq!(c.get("drops"), None);
        assert_eq!(c.get("io"), None);
        assert_eq!(c.get("counters"), None);
        assert_eq!(c.get("pkts"), None);
    }

    #[test]
    fn parses_key_value_pairs() {
        let c = ServerCounters::parse("stopped counters=tun_rx_reads=10 tun_rx_packets=40, x=y");
        assert_eq!(c.get("tun_rx_reads"), Some(10));
        assert_eq!(c.get("tun_rx_packets"), Some(40));
        assert_eq!(c.get("x"), None);
        assert_eq!(c.to_string(), "tun_rx_packets=40 tun_rx_reads=10");
        assert!(ServerCounters::parse("nothing here").is_empty());
    }
}
