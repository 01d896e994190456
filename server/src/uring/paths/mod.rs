//! The I/O paths through the ring. Each owns its slots and handles its own
//! completions, working on the shared [`Context`](super::context::Context)
//! the driver lends it; none knows the driver.
//!
//! - [`tun`]: reads from the TUN, sealed and sent to peers.
//! - [`udp`]: datagrams from peers, opened and written to the TUN.
//! - [`tcp`]: TCP peers: accept, receive, send queues, teardown.
//! - [`timer`]: the session timers and TCP deadlines, once a second.
//! - [`signal`]: the read that says "stop".

pub(super) mod signal;
pub(super) mod tcp;
pub(super) mod timer;
pub(super) mod tun;
pub(super) mod udp;

use super::context::Io;
use crate::sessions::Outside;

/// Sends a control frame (handshake reply, keepalive, disconnect) that does
/// not sit in a slot buffer: copied once, into a tx buffer (UDP) or the
/// connection's send queue (TCP).
pub(super) fn send_control(io: &mut Io, tcp: &mut tcp::TcpPath, to: Outside, frame: &[u8]) {
    match to {
        Outside::Udp(addr) => io.send_udp_copy(addr, frame),
        Outside::Tcp(id) => tcp.send_unprefixed(io, id, frame),
    }
}
