//! TCP peers: the listening socket and the per-connection pieces that do no I/O of their
//! own (admission, send queue, buffer arena). Each backend's driver owns the connections
//! and drives these.

pub mod admission;
pub mod arena;
pub mod close;
pub mod listener;
pub mod send_queue;
