//! Everything that differs between operating systems: the TUN device and routes.
//!
//! The device itself (creation, offload flags, error mapping, `ip`) is the shared
//! `ringway-tun` crate, which the server uses too; this module adapts it to the client: the
//! device registered with tokio's reactor, the session config as link settings, routes.
//!
//! Each platform module offers the same items: `TunDevice` (create, name, async read and
//! write of whole packets), the two error codes the drivers treat specially (`is_eio`,
//! `is_no_buffer_space`), and `SystemRoutes` (the [`RouteOps`](crate::routes::RouteOps)
//! that [`RouteTable`](crate::routes::RouteTable) uses). Linux is implemented; elsewhere the
//! same API compiles and fails with [`TunError::Unsupported`], so the library (config,
//! tunnel, driver, supervisor) still builds and runs with a non-TUN inside.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{is_eio, is_no_buffer_space, keep_default_pmtu_discovery, SystemRoutes, TunDevice};

#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub use unsupported::{is_eio, is_no_buffer_space, SystemRoutes, TunDevice};

use ringway_proto::SessionConfig;
use ringway_tun::{link, LinkConfig};
pub use ringway_tun::{Offload, Offloads, TunError};

/// Whether the client's data path (the TUN inside and the driver) reads and writes TUN
/// packets with the 10-byte `virtio_net_hdr` in front, splits the superpackets a read may
/// return, and completes the checksums the kernel leaves partial.
///
/// It does ([`inside::offload`](crate::inside::offload)), so `--offload auto` opens the TUN
/// with the header and whatever offloads the kernel has.
pub const DATA_PATH_HANDLES_VNET_HDR: bool = true;

/// Assigns the session's address and prefix to `name`, sets its MTU and brings it up. The
/// kernel adds the route for the prefix, which is what sends the server's tunnel subnet into
/// the TUN.
pub fn configure(name: &str, config: &SessionConfig) -> Result<(), TunError> {
    link::configure(name, &link_config(config))
}

/// Moves `name` from the session config `old` to `new`: the address (and with it the subnet
/// route) if it changed, and the MTU if that did.
pub fn reconfigure(name: &str, old: &SessionConfig, new: &SessionConfig) -> Result<(), TunError> {
    link::reconfigure(name, &link_config(old), &link_config(new))
}

/// Removes the link, for when its file descriptor cannot be closed first.
pub fn delete_link(name: &str) -> Result<(), TunError> {
    link::delete_link(name)
}

/// The link settings a session asks for; the queue length stays the kernel's.
fn link_config(config: &SessionConfig) -> LinkConfig {
    LinkConfig {
        addr: config.client_addr,
        prefix_len: config.prefix_len,
        mtu: config.mtu,
        txqueuelen: None,
    }
}
