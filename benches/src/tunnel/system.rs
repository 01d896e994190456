//! What carries the traffic: a system that can be started in two fresh namespaces, measured
//! through, and stopped.
//!
//! [`RawVeth`] is the bare link, the limit any tunnel is measured against; [`Ringway`] is one
//! build of Ringway over one transport. Another VPN (issue 10) is another [`System`]: it only
//! has to bring up a path between two namespaces, name its processes, and say what it counted.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use ringway_e2e::counters::ServerCounters;
use ringway_e2e::netns::{self, Netns};
use ringway_e2e::path::TunnelPath;
use ringway_e2e::{Testbed, TestbedOptions, Transport, SERVER_TUNNEL_IP};

use super::build::Build;

/// Raw veth addresses (TEST-NET-2, apart from the testbed's outside network).
const VETH_SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const VETH_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// How long a stopping server may take before it counts as a failed run (its contract is 1 s).
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Something that carries traffic between a server and a client namespace.
pub trait System: fmt::Debug + Send + Sync {
    /// The name in tables and JSON: `raw-veth`, `ringway-udp`, `ringway-udp@base`.
    fn name(&self) -> String;
    /// The Ringway build it runs, if any.
    fn build(&self) -> Option<&Build>;
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

/// The bare veth pair between the two namespaces: no tunnel at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawVeth;

struct RunningVeth {
    // Field order is drop order; the namespaces take the veth pair with them.
    server_ns: Netns,
    client_ns: Netns,
}

impl System for RawVeth {
    fn name(&self) -> String {
        "raw-veth".to_owned()
    }

    fn build(&self) -> Option<&Build> {
        None
    }

    fn start(&self) -> Result<Box<dyn Running>> {
        let [server_ns, client_ns] = Netns::create_set(["s", "c"])?;
        netns::connect(
            &server_ns,
            "veth-rw-s",
            &format!("{VETH_SERVER_IP}/24"),
            &client_ns,
            "veth-rw-c",
            &format!("{VETH_CLIENT_IP}/24"),
        )?;
        Ok(Box::new(RunningVeth {
            server_ns,
            client_ns,
        }))
    }
}

impl Running for RunningVeth {
    fn path(&self) -> TunnelPath<'_> {
        TunnelPath {
            server_ns: &self.server_ns,
            server_ip: VETH_SERVER_IP,
            client_ns: &self.client_ns,
            client_ip: VETH_CLIENT_IP,
        }
    }

    fn processes(&self) -> Vec<TunnelProcess> {
        Vec::new()
    }

    fn finish(self: Box<Self>) -> Result<Option<ServerCounters>> {
        Ok(None)
    }
}

/// One build of Ringway over one transport: the e2e testbed with one client.
#[derive(Debug, Clone)]
pub struct Ringway {
    /// The outside transport.
    pub transport: Transport,
    /// The binaries.
    pub build: Build,
    /// Whether tables name the build (more than one build in the run).
    pub show_build: bool,
}

struct RunningRingway {
    bed: Testbed,
}

impl System for Ringway {
    fn name(&self) -> String {
        let base = format!("ringway-{}", self.transport);
        if self.show_build {
            format!("{base}@{}", self.build.label)
        } else {
            base
        }
    }

    fn build(&self) -> Option<&Build> {
        Some(&self.build)
    }

    fn start(&self) -> Result<Box<dyn Running>> {
        let opts = TestbedOptions::new(self.transport)
            .binaries(self.build.binaries.clone())
            .server_args(self.build.server_args.iter().cloned())
            .client_args(self.build.client_args.iter().cloned());
        let bed = Testbed::start(opts).with_context(|| format!("starting {}", self.name()))?;
        Ok(Box::new(RunningRingway { bed }))
    }
}

impl Running for RunningRingway {
    fn path(&self) -> TunnelPath<'_> {
        TunnelPath {
            server_ns: self.bed.server_ns(),
            server_ip: SERVER_TUNNEL_IP,
            client_ns: self.bed.client_ns(),
            client_ip: self.bed.client_tunnel_ip(),
        }
    }

    fn processes(&self) -> Vec<TunnelProcess> {
        vec![
            TunnelProcess {
                role: "server",
                pid: self.bed.server_pid(),
            },
            TunnelProcess {
                role: "client",
                pid: self.bed.client_pid(),
            },
        ]
    }

    fn client_counters(&mut self) -> BTreeMap<String, u64> {
        let client = self.bed.primary_client();
        let Ok(status) = self.bed.client_status(&client) else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for group in ["counters", "io", "queue_out", "queue_in"] {
            if let Some(obj) = status[group].as_object() {
                for (name, value) in obj {
                    if let Some(v) = value.as_u64() {
                        out.insert(format!("client_{group}_{name}"), v);
                    }
                }
            }
        }
        out
    }

    fn finish(mut self: Box<Self>) -> Result<Option<ServerCounters>> {
        let stopped = self.bed.stop_server(STOP_LIMIT);
        let res = stopped.and_then(|t| {
            anyhow::ensure!(t.status.success(), "the server exited {}", t.status);
            Ok(self.bed.final_server_counters())
        });
        self.bed.explain(res)
    }
}

/// The systems named on the command line, in order, each Ringway one once per build.
pub fn expand(names: &[String], builds: &[Build]) -> Result<Vec<Box<dyn System>>> {
    let show_build = builds.len() > 1;
    let mut systems: Vec<Box<dyn System>> = Vec::new();
    for name in names {
        match name.as_str() {
            "raw-veth" | "veth" => systems.push(Box::new(RawVeth)),
            other => {
                let transport = match other.strip_prefix("ringway-") {
                    Some(t) => t.parse::<Transport>(),
                    None => Err(anyhow::anyhow!("not a ringway system")),
                }
                .with_context(|| {
                    format!(
                        "unknown system {other:?}; known: {}",
                        KNOWN_SYSTEMS.join(", ")
                    )
                })?;
                for build in builds {
                    systems.push(Box::new(Ringway {
                        transport,
                        build: build.clone(),
                        show_build,
                    }));
                }
            }
        }
    }
    Ok(systems)
}

/// What `--systems` accepts.
pub const KNOWN_SYSTEMS: &[&str] = &["raw-veth", "ringway-udp", "ringway-tcp"];
