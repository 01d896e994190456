//! The bare veth pair between the two namespaces: no tunnel at all, the ceiling for any.

use std::net::Ipv4Addr;

use anyhow::Result;
use ringway_e2e::counters::ServerCounters;
use ringway_e2e::netns::{self, Netns};
use ringway_e2e::path::TunnelPath;

use super::{Running, System, TunnelProcess};
use crate::tunnel::build::Build;

/// Raw veth addresses (TEST-NET-2, apart from the tunnels' outside network).
const VETH_SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const VETH_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// iperf3 and ping straight over the veth pair.
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

    fn describe(&self) -> String {
        "no tunnel: iperf3 and ping straight over the veth pair (MTU 1500)".to_owned()
    }

    fn setup_secs(&self) -> f64 {
        0.1
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
