//! The outside: the network sockets peers reach us on.

pub mod udp;
