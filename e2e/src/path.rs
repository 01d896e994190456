//! Which way through the tunnel a measurement goes.
//!
//! With one client per namespace, the client's TUN is the only route to the server's inside
//! address. Several clients sharing a namespace each add a route for the same pool, and the
//! kernel would send everything through whichever came first. So every measurement binds its
//! client end to that client's inside address, and the testbed adds a source rule per client
//! (`from <inside address> lookup <its table>`) that sends such traffic out of its own TUN.

use std::net::Ipv4Addr;

use crate::netns::Netns;

/// Both ends of one client's path through the tunnel.
#[derive(Debug, Clone, Copy)]
pub struct TunnelPath<'a> {
    /// The namespace running the server, where listeners (iperf3 server, transfer receiver) go.
    pub server_ns: &'a Netns,
    /// The server's inside address.
    pub server_ip: Ipv4Addr,
    /// The namespace running the client, where the measuring side starts.
    pub client_ns: &'a Netns,
    /// The client's inside address; the client end binds to it (see the module doc).
    pub client_ip: Ipv4Addr,
}

impl<'a> TunnelPath<'a> {
    /// The same path with its ends swapped, for measuring the other direction: what ran on
    /// the client's end now runs on the server's, and the other way round.
    pub fn reversed(&self) -> TunnelPath<'a> {
        TunnelPath {
            server_ns: self.client_ns,
            server_ip: self.client_ip,
            client_ns: self.server_ns,
            client_ip: self.server_ip,
        }
    }
}
