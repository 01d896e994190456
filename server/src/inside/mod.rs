//! The inside: the TUN device that carries the tunnel's IP packets.

pub mod tun;
