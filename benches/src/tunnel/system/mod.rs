//! What carries the traffic: a system that can be started in two fresh namespaces, measured
//! through, and stopped.
//!
//! [`RawVeth`] is the bare link, the limit any tunnel is measured against; [`Ringway`] is one
//! build of Ringway over one transport (and one server I/O backend). The other VPNs (issue 10)
//! are other [`System`]s, each in its own module: [`WireguardGo`] and [`Boringtun`] (two
//! userspace WireGuards, configured alike by `wg`, see `wg.rs`), [`Openvpn`] and [`Fastd`].
//! They share the namespace pair and process guards of `pair.rs` and install what they miss
//! through `install.rs`. A system only has to bring up a path between two namespaces, name its
//! processes (whose CPU time and peak memory a run charges to it), and say what it counted.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Result};
use ringway_e2e::counters::ServerCounters;
use ringway_e2e::path::TunnelPath;
use ringway_e2e::Transport;

use super::build::Build;

mod boringtun;
mod fastd;
mod install;
mod openvpn;
mod pair;
mod ringway;
mod veth;
mod wg;
mod wireguard_go;

pub use boringtun::Boringtun;
pub use fastd::Fastd;
pub use install::ToolCache;
pub use openvpn::Openvpn;
pub use ringway::{Ringway, ServerIo};
pub use veth::RawVeth;
pub use wireguard_go::WireguardGo;

/// Something that carries traffic between a server and a client namespace.
pub trait System: fmt::Debug + Send + Sync {
    /// The name in tables and JSON: `raw-veth`, `ringway-udp`, `ringway-udp@base`, `fastd`.
    fn name(&self) -> String;
    /// The Ringway build it runs, if any.
    fn build(&self) -> Option<&Build>;
    /// One line on how it is set up (version, cipher, threads), for the report.
    fn describe(&self) -> String;
    /// Installs or finds what it needs; called once, before any run. An error marks every
    /// run of the system "failed to start" with its reason, without trying to start it.
    fn prepare(&self) -> Result<()> {
        Ok(())
    }
    /// Rough seconds it takes to start and stop, for the run time estimate.
    fn setup_secs(&self) -> f64;
    /// Builds the namespaces and starts the processes; ready for traffic when this returns.
    fn start(&self) -> Result<Box<dyn Running>>;
}

/// A started system; dropping it tears everything down.
pub trait Running {
    /// Where measurements go: listeners in the server namespace, clients in the client one.
    fn path(&self) -> TunnelPath<'_>;
    /// The tunnel's own processes, whose CPU time a test charges to the data it moved.
    fn processes(&self) -> Vec<TunnelProcess>;
    /// Stops it and returns what its server counted (`None` if it has no server or the
    /// server logged nothing).
    fn finish(self: Box<Self>) -> Result<Option<ServerCounters>>;
    /// What its client counts so far, as flat `client_<group>_<name>` counters (Ringway:
    /// `ringway status --json`'s `counters`, `io`, `queue_out` and `queue_in`), for the
    /// run's record; empty where there is no such client or it cannot be asked.
    fn client_counters(&mut self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}

/// One process of a running tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelProcess {
    /// `server` or `client`.
    pub role: &'static str,
    /// Its PID (a child of ours, alive while the system runs).
    pub pid: u32,
}

/// What `--systems` accepts, in the order `all` lists them.
pub const KNOWN_SYSTEMS: &[&str] = &[
    "raw-veth",
    "ringway-udp",
    "ringway-tcp",
    "ringway-udp-tokio",
    "ringway-tcp-tokio",
    "wireguard-go",
    "boringtun",
    "openvpn",
    "fastd",
];

/// The systems measured when `--systems` is not given: the link and Ringway.
pub const DEFAULT_SYSTEMS: &[&str] = &["raw-veth", "ringway-udp", "ringway-tcp"];

/// The systems named on the command line, in order (`all`: every known one), each Ringway one
/// once per build; a name given twice is measured once.
pub fn expand(
    names: &[String],
    builds: &[Build],
    tools: &ToolCache,
) -> Result<Vec<Box<dyn System>>> {
    let mut wanted: Vec<&str> = Vec::new();
    for name in names {
        let name = name.trim();
        let add: Vec<&str> = match name {
            "all" => KNOWN_SYSTEMS.to_vec(),
            "veth" => vec!["raw-veth"],
            other => match KNOWN_SYSTEMS.iter().find(|k| **k == other) {
                Some(known) => vec![*known],
                None => bail!(
                    "unknown system {other:?}; known: all, {}",
                    KNOWN_SYSTEMS.join(", ")
                ),
            },
        };
        for n in add {
            if !wanted.contains(&n) {
                wanted.push(n);
            }
        }
    }
    let show_build = builds.len() > 1;
    let mut systems: Vec<Box<dyn System>> = Vec::new();
    for name in wanted {
        let ringway = |transport, io| {
            builds.iter().map(move |build| {
                Box::new(Ringway {
                    transport,
                    io,
                    build: build.clone(),
                    show_build,
                }) as Box<dyn System>
            })
        };
        match name {
            "raw-veth" => systems.push(Box::new(RawVeth)),
            "ringway-udp" => systems.extend(ringway(Transport::Udp, ServerIo::Default)),
            "ringway-tcp" => systems.extend(ringway(Transport::Tcp, ServerIo::Default)),
            "ringway-udp-tokio" => systems.extend(ringway(Transport::Udp, ServerIo::Tokio)),
            "ringway-tcp-tokio" => systems.extend(ringway(Transport::Tcp, ServerIo::Tokio)),
            "wireguard-go" => systems.push(Box::new(WireguardGo::default())),
            "boringtun" => systems.push(Box::new(Boringtun::new(tools.clone()))),
            "openvpn" => systems.push(Box::new(Openvpn::default())),
            "fastd" => systems.push(Box::new(Fastd::default())),
            other => unreachable!("{other} is in KNOWN_SYSTEMS but not built here"),
        }
    }
    Ok(systems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(systems: &[Box<dyn System>]) -> Vec<String> {
        systems.iter().map(|s| s.name()).collect()
    }

    #[test]
    fn all_means_every_system_once() {
        let tools = ToolCache::new("/nonexistent/tools".into());
        let all = expand(&["all".into(), "fastd".into()], &[], &tools).unwrap();
        // Without builds there are no Ringway systems to run.
        assert_eq!(
            names(&all),
            ["raw-veth", "wireguard-go", "boringtun", "openvpn", "fastd"]
        );
        let some = expand(&["veth".into(), "openvpn".into()], &[], &tools).unwrap();
        assert_eq!(names(&some), ["raw-veth", "openvpn"]);
        let e = expand(&["wireguard".into()], &[], &tools).unwrap_err();
        assert!(format!("{e}").contains("known: all, raw-veth"), "{e}");
        for s in &all {
            assert!(!s.describe().is_empty());
            assert!(s.setup_secs() > 0.0);
        }
    }
}
