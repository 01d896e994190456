//! The outside: the network sockets peers reach us on.

pub mod tcp;
pub mod udp;
