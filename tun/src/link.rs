//! The TUN's link settings: address and prefix, MTU, transmit queue length, up.
//!
//! Both ends configure their device the same way, with [`ip`], once at start (and
//! the client again when a new session brings another address or MTU). The tunnel carries
//! IPv4 only, so IPv6 is turned off on the device first: otherwise the kernel sends router
//! solicitations and MLD reports into it, only for the other end to drop them.

use std::net::Ipv4Addr;

use crate::{ip, TunError};

/// What [`configure`] gives the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Our address inside the tunnel.
    pub addr: Ipv4Addr,
    /// Its prefix length; the kernel routes that prefix into the device.
    pub prefix_len: u8,
    /// The device MTU (the largest inner packet without offload).
    pub mtu: u16,
    /// `txqueuelen`: packets the kernel queues for us before dropping. `None` keeps the
    /// kernel's default (500 for a TUN).
    pub txqueuelen: Option<u32>,
}

impl LinkConfig {
    /// `addr/prefix_len`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.addr, self.prefix_len)
    }
}

/// Gives `name` its address and prefix, MTU and queue length, and brings it up. The kernel
/// adds the route for the prefix, which is what sends the tunnel subnet into the TUN.
pub fn configure(name: &str, link: &LinkConfig) -> Result<(), TunError> {
    disable_ipv6(name);
    ip::run(&["addr", "add", &link.cidr(), "dev", name])?;
    let up = up_args(name, link);
    ip::run(&up.iter().map(String::as_str).collect::<Vec<_>>()).map(drop)
}

/// Moves `name` from `old` to `new`: the address (and with it the subnet route) if it changed,
/// the MTU and queue length if they did. Routes through the device stay, since they name the
/// device, not the address.
pub fn reconfigure(name: &str, old: &LinkConfig, new: &LinkConfig) -> Result<(), TunError> {
    if (old.addr, old.prefix_len) != (new.addr, new.prefix_len) {
        // Add first, so the device is never without an address.
        ip::run(&["addr", "add", &new.cidr(), "dev", name])?;
        if let Err(e) = ip::run(&["addr", "del", &old.cidr(), "dev", name]) {
            tracing::warn!(tun = name, "could not remove the old address: {e}");
        }
    }
    if old.mtu != new.mtu {
        ip::run(&["link", "set", "dev", name, "mtu", &new.mtu.to_string()])?;
    }
    if let Some(qlen) = new.txqueuelen.filter(|_| old.txqueuelen != new.txqueuelen) {
        ip::run(&["link", "set", "dev", name, "txqueuelen", &qlen.to_string()])?;
    }
    Ok(())
}

/// Removes the link, for when its file descriptor cannot be closed first.
pub fn delete_link(name: &str) -> Result<(), TunError> {
    ip::run(&["link", "delete", "dev", name]).map(drop)
}

/// `link set dev NAME mtu MTU [txqueuelen N] up`.
fn up_args(name: &str, link: &LinkConfig) -> Vec<String> {
    let mut args: Vec<String> = ["link", "set", "dev", name, "mtu"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    args.push(link.mtu.to_string());
    if let Some(qlen) = link.txqueuelen {
        args.extend(["txqueuelen".to_owned(), qlen.to_string()]);
    }
    args.push("up".to_owned());
    args
}

/// Best effort: without IPv6 in the kernel there is nothing to turn off.
fn disable_ipv6(name: &str) {
    let knob = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    if let Err(e) = std::fs::write(&knob, "1") {
        tracing::debug!(%knob, error = %e, "could not disable IPv6 on the TUN");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_sets_mtu_and_queue_length_when_asked() {
        let mut link = LinkConfig {
            addr: Ipv4Addr::new(198, 18, 0, 1),
            prefix_len: 24,
            mtu: 1420,
            txqueuelen: None,
        };
        assert_eq!(link.cidr(), "198.18.0.1/24");
        assert_eq!(
            up_args("rw0", &link).join(" "),
            "link set dev rw0 mtu 1420 up"
        );
        link.txqueuelen = Some(64);
        assert_eq!(
            up_args("rw0", &link).join(" "),
            "link set dev rw0 mtu 1420 txqueuelen 64 up"
        );
    }
}
