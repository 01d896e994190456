//! The clients of a testbed: the first one started with it, and any added later.
//!
//! All clients run in the client namespace, each with its own TUN device and inside address.
//! Each gets a source rule (`from <inside address> lookup <its table>`, with one route for the
//! pool through its TUN in that table), so traffic bound to a client's address leaves through
//! that client, whatever order the kernel keeps the pool routes of several TUNs in.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{Transport, TUNNEL_POOL};
use crate::netns::Netns;

/// First routing table and rule priority used for the per-client source rules; client `i`
/// uses `SOURCE_TABLE_BASE + i` for both. Above the local table's rule (priority 0), below
/// main's (32766).
const SOURCE_TABLE_BASE: usize = 100;
/// Linux refuses interface names of 16 bytes or more (IFNAMSIZ counts the NUL).
const MAX_IFNAME_LEN: usize = 15;

/// What a test needs to know about one client of a [`Testbed`](super::Testbed).
///
/// Obtained from [`Testbed::primary_client`](super::Testbed::primary_client) or
/// [`Testbed::add_client`](super::Testbed::add_client), and passed back to the `*_from`
/// measurement methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandle {
    pub(super) index: usize,
    pub(super) transport: Transport,
    pub(super) tun_name: String,
    pub(super) tunnel_ip: Ipv4Addr,
    pub(super) status_socket: PathBuf,
}

impl ClientHandle {
    /// 0 for the client started with the testbed, then 1, 2, ... in the order added.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The outside transport this client uses.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Its TUN device in the client namespace.
    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// The inside address the server assigned it.
    pub fn tunnel_ip(&self) -> Ipv4Addr {
        self.tunnel_ip
    }

    /// Where it serves `ringway status` (`up --status-socket`): a path in the testbed's
    /// directory, never the shared default under /run.
    pub fn status_socket(&self) -> &Path {
        &self.status_socket
    }
}

/// Byte counters of a client's TUN device, as the kernel in the client namespace sees them.
///
/// `tx` is what the kernel routed into the TUN (the client reads it and sends it to the
/// server), `rx` what the client wrote into it. They show which client carried a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunCounters {
    /// Bytes routed into the TUN, towards the server.
    pub tx_bytes: u64,
    /// Bytes the client delivered from the server.
    pub rx_bytes: u64,
}

impl TunCounters {
    /// Reads the counters of `tun` in `ns`.
    pub(super) fn read(ns: &Netns, tun: &str) -> Result<Self> {
        let json = ns.ip(&["-s", "-j", "link", "show", "dev", tun])?;
        Self::parse(&json).with_context(|| format!("statistics of {tun} in {}", ns.name()))
    }

    /// Parses `ip -s -j link show dev X`.
    fn parse(json: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(json).context("`ip -j` output is not JSON")?;
        let get = |pointer: &str| {
            v.pointer(pointer)
                .and_then(Value::as_u64)
                .with_context(|| format!("no {pointer} in `ip -s -j link` output"))
        };
        Ok(Self {
            tx_bytes: get("/0/stats64/tx/bytes")?,
            rx_bytes: get("/0/stats64/rx/bytes")?,
        })
    }

    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
        }
    }
}

/// Fails unless `name` is usable as an interface name the client can create.
pub(super) fn check_tun_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        bail!("TUN name {name:?} must be 1 to {MAX_IFNAME_LEN} bytes");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("TUN name {name:?}: use letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// The client config `text` with its `tun_name` set to `name` (replacing any existing one).
///
/// The config is a flat table, so a key appended at the end belongs to it.
pub(super) fn with_tun_name(text: &str, name: &str) -> String {
    let mut out: String = text
        .lines()
        .filter(|line| {
            let key = line.trim_start();
            !key.strip_prefix("tun_name")
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    out.push_str(&format!("tun_name = \"{name}\"\n"));
    out
}

/// Rewrites the client config at `path` to use the TUN `name`; the file keeps its permissions.
pub(super) fn set_tun_name(path: &Path, name: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    std::fs::write(path, with_tun_name(&text, name))
        .with_context(|| format!("writing {}", path.display()))
}

/// Appends `lines` to the client config at `path` (the config is a flat table, so they are
/// top-level keys); the file keeps its permissions.
pub(super) fn append_lines(path: &Path, lines: &[String]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Routes traffic from `ip` out of `tun`, in the client namespace only (see the module doc).
pub(super) fn route_by_source(ns: &Netns, index: usize, tun: &str, ip: Ipv4Addr) -> Result<()> {
    let table = (SOURCE_TABLE_BASE + index).to_string();
    let ip = ip.to_string();
    ns.ip(&[
        "route",
        "add",
        TUNNEL_POOL,
        "dev",
        tun,
        "src",
        &ip,
        "table",
        &table,
    ])
    .with_context(|| format!("routing the pool through {tun} in table {table}"))?;
    ns.ip(&[
        "rule", "add", "from", &ip, "lookup", &table, "priority", &table,
    ])
    .with_context(|| format!("adding the source rule for {ip}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# Ringway client config for peer \"client2\". Keep this file private.\n\
                          endpoint = \"192.0.2.1:51820\"\n\
                          server_public_key = \"AAAA\"\n\
                          private_key = \"BBBB\"\n\
                          psk = \"CCCC\"\n";

    #[test]
    fn appends_tun_name() {
        let out = with_tun_name(CONFIG, "ringway1");
        assert_eq!(out, format!("{CONFIG}tun_name = \"ringway1\"\n"));
    }

    #[test]
    fn replaces_existing_tun_name_only() {
        let text = format!(
            "{CONFIG}tun_name = \"ringway0\"\n  tun_name=\"x\"\ntun_names_note = \"kept\"\n"
        );
        let out = with_tun_name(&text, "rw-b");
        assert_eq!(
            out,
            format!("{CONFIG}tun_names_note = \"kept\"\ntun_name = \"rw-b\"\n")
        );
    }

    #[test]
    fn handles_missing_final_newline() {
        let out = with_tun_name("endpoint = \"x:1\"", "t");
        assert_eq!(out, "endpoint = \"x:1\"\ntun_name = \"t\"\n");
    }

    #[test]
    fn parses_link_statistics() {
        let json = r#"[{"ifindex":5,"ifname":"ringway1","stats64":{
            "rx":{"bytes":1000,"packets":10,"errors":0},
            "tx":{"bytes":2500,"packets":20,"errors":0}}}]"#;
        let c = TunCounters::parse(json).unwrap();
        assert_eq!(
            c,
            TunCounters {
                tx_bytes: 2500,
                rx_bytes: 1000
            }
        );
        let later = TunCounters {
            tx_bytes: 4000,
            rx_bytes: 1000,
        };
        assert_eq!(later.since(&c).tx_bytes, 1500);
        assert!(TunCounters::parse("[]").is_err());
        assert!(TunCounters::parse("Device does not exist").is_err());
    }

    #[test]
    fn checks_tun_names() {
        for ok in ["ringway1", "rw-2", "a", "fifteen-chars-x"] {
            check_tun_name(ok).unwrap();
        }
        for bad in ["", "sixteen-chars-xx", "has space", "a/b", "quote\""] {
            assert!(check_tun_name(bad).is_err(), "{bad:?}");
        }
    }
}
