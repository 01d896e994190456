//! Misbehaving TCP peers: the server must close them (at once for garbage, at the handshake
//! deadline for silence) while a good TCP client keeps working. See `common::bad_peers`.
//!
//! Same prerequisites and rules as `udp_tunnel.rs`.

mod common;

use anyhow::Result;
use common::bad_peers::{self, Misbehaviour};

#[test]
fn tcp_garbage_is_closed_at_once() -> Result<()> {
    bad_peers::run("tcp_garbage_is_closed_at_once", &Misbehaviour::garbage())
}

#[test]
fn tcp_stalled_handshake_is_closed_at_deadline() -> Result<()> {
    bad_peers::run(
        "tcp_stalled_handshake_is_closed_at_deadline",
        &Misbehaviour::stalled_frame(),
    )
}

#[test]
fn tcp_silent_connection_is_closed_at_deadline() -> Result<()> {
    bad_peers::run(
        "tcp_silent_connection_is_closed_at_deadline",
        &Misbehaviour::silent(),
    )
}

#[test]
fn tcp_200_idle_connections_are_closed_at_deadline() -> Result<()> {
    bad_peers::run(
        "tcp_200_idle_connections_are_closed_at_deadline",
        &Misbehaviour::idle_flood(200),
    )
}

#[test]
fn tcp_connections_over_the_limit_are_closed_at_once() -> Result<()> {
    bad_peers::run(
        "tcp_connections_over_the_limit_are_closed_at_once",
        &Misbehaviour::over_limit(8, 16),
    )
}
