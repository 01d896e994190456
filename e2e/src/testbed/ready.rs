//! Waiting until the server and client are really up.
//!
//! A spawned process is not a working tunnel: the server must have its TUN up with the pool's
//! first address and its outside socket bound (for TCP: listening), and the client must have
//! finished the handshake, which shows as an address on its TUN, and set that TUN up. Polling
//! observable kernel state (bounded, every 50 ms) avoids both sleeping for a guessed time and
//! depending on log wording; an early exit of either process fails at once with its log tail.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{Transport, SERVER_ENDPOINT, SERVER_TUNNEL_IP, TAIL, TUN_NAME};
use crate::netns::Netns;
use crate::process::{self, Process};

/// Readiness poll interval.
const READY_POLL: Duration = Duration::from_millis(50);

/// Polls until the server's TUN is up with its address and it listens for `transport`.
pub(super) fn wait_server_ready(
    ns: &Netns,
    server: &mut Process,
    transport: Transport,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut state;
    loop {
        server.ensure_running()?;
        let up = tun_is_up(ns, TUN_NAME);
        let addr = tun_ipv4(ns, TUN_NAME);
        let bound = listening(ns, transport);
        if up && addr == Some(SERVER_TUNNEL_IP) && bound {
            return Ok(());
        }
        state = format!(
            "{TUN_NAME} up: {up}, address: {addr:?} (want {SERVER_TUNNEL_IP}), \
             {transport} socket on {SERVER_ENDPOINT}: {bound}"
        );
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(READY_POLL);
    }
    bail!(
        "server not ready after {limit:?} in {}: {state}; last lines of its log:\n{}",
        ns.name(),
        server.log_tail(TAIL)
    )
}

/// Polls until the server listens for `transport` (a server that is up may still be binding
/// its other sockets).
pub(super) fn wait_server_listening(
    ns: &Netns,
    server: &mut Process,
    transport: Transport,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        server.ensure_running()?;
        if listening(ns, transport) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "server in {} has no {transport} socket on {SERVER_ENDPOINT} after {limit:?}; \
                 last lines of its log:\n{}",
                ns.name(),
                server.log_tail(TAIL)
            );
        }
        std::thread::sleep(READY_POLL);
    }
}

/// Whether a socket of `transport` is bound (UDP) or listening (TCP) on the server's port.
fn listening(ns: &Netns, transport: Transport) -> bool {
    let port = SERVER_ENDPOINT.rsplit_once(':').map_or("51820", |(_, p)| p);
    let sport = format!(":{port}");
    let kind = match transport {
        Transport::Udp => "-Hlnu",
        Transport::Tcp => "-Hlnt",
    };
    let mut ss = ns.command("ss");
    ss.args([kind, "sport", "=", &sport]);
    process::run_ok(&mut ss, Duration::from_secs(5)).is_ok_and(|out| !out.trim().is_empty())
}

/// Polls until the client's TUN `tun` is up with an IPv4 address, which it gets from the
/// handshake; returns that address.
pub(super) fn wait_client_ready(
    ns: &Netns,
    tun: &str,
    client: &mut Process,
    server: &mut Process,
    limit: Duration,
) -> Result<Ipv4Addr> {
    let deadline = Instant::now() + limit;
    loop {
        client.ensure_running()?;
        server.ensure_running()?;
        // The client assigns the address before it sets the link up; routes need both.
        if let Some(ip) = tun_ipv4(ns, tun).filter(|_| tun_is_up(ns, tun)) {
            return Ok(ip);
        }
        if Instant::now() >= deadline {
            bail!(
                "{} has no address on an up {tun} after {limit:?} in {}; \
                 last lines of its log:\n{}\n--- server log:\n{}",
                client.name(),
                ns.name(),
                client.log_tail(TAIL),
                server.log_tail(TAIL)
            );
        }
        std::thread::sleep(READY_POLL);
    }
}

/// Whether the TUN device exists with the UP flag (a missing device counts as not up).
fn tun_is_up(ns: &Netns, tun: &str) -> bool {
    ns.ip(&["-o", "link", "show", "dev", tun])
        .is_ok_and(|out| link_flags_up(&out))
}

/// The first IPv4 address on the TUN device, if the device exists and has one.
fn tun_ipv4(ns: &Netns, tun: &str) -> Option<Ipv4Addr> {
    ns.ip(&["-o", "-4", "addr", "show", "dev", tun])
        .ok()
        .and_then(|out| first_inet(&out))
}

/// Parses `<...,UP,...>` out of `ip -o link show`.
fn link_flags_up(line: &str) -> bool {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .is_some_and(|(flags, _)| flags.split(',').any(|f| f == "UP"))
}

/// Parses the address after the first `inet` in `ip -o -4 addr show`.
fn first_inet(out: &str) -> Option<Ipv4Addr> {
    let mut words = out.split_whitespace();
    words.find(|w| *w == "inet")?;
    let cidr = words.next()?;
    cidr.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CLIENT_TUNNEL_IP;

    #[test]
    fn parses_link_flags() {
        let up = "7: ringway0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1420 qdisc fq_codel";
        let down = "7: ringway0: <POINTOPOINT,MULTICAST,NOARP> mtu 1500 qdisc noop state DOWN";
        assert!(link_flags_up(up));
        assert!(!link_flags_up(down));
        assert!(!link_flags_up(""));
    }

    #[test]
    fn parses_inet_address() {
        let out =
            "7: ringway0    inet 198.18.0.2/24 scope global ringway0\\       valid_lft forever";
        assert_eq!(first_inet(out), Some(CLIENT_TUNNEL_IP));
        assert_eq!(first_inet(""), None);
    }
}
