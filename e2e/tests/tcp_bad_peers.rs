//! Misbehaving TCP peers: the server must close them (at once for garbage and for connections
//! over the cap, at the handshake deadline for silence, each for the reason its counters name)
//! while a good TCP client keeps working. See `common::bad_peers`.
//!
//! Same prerequisites and rules as `udp_tunnel.rs`.

mod common;

use std::process::ExitCode;

use common::bad_peers::{self, Misbehaviour};
use ringway_e2e::harness::{self, Scenario};

/// A scenario playing `bad` against the server.
fn scenario(name: &str, bad: Misbehaviour) -> Scenario {
    Scenario::testbed(name, &["ping"], move |t| bad_peers::run(t, &bad))
}

fn main() -> ExitCode {
    harness::main([
        scenario("tcp_garbage_is_closed_at_once", Misbehaviour::garbage()),
        scenario(
            "tcp_stalled_handshake_is_closed_at_deadline",
            Misbehaviour::stalled_frame(),
        ),
        scenario(
            "tcp_silent_connection_is_closed_at_deadline",
            Misbehaviour::silent(),
        ),
        scenario(
            "tcp_200_idle_connections_from_one_address_are_capped_and_closed_at_deadline",
            Misbehaviour::idle_flood(200),
        ),
        scenario(
            "tcp_connections_over_the_limit_are_closed_at_once",
            Misbehaviour::over_limit(8, 16),
        ),
    ])
}
