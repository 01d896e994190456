//! TCP peers: the listening socket and the per-connection pieces that do not
//! touch the ring (send queue, buffer arena). The ring driver owns the
//! connections and drives these.

pub mod arena;
pub mod listener;
pub mod send_queue;
