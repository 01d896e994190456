//! The io_uring driver: one ring, one thread, every data-path I/O.
//!
//! - [`user_data`]: which path/slot/generation a completion belongs to.
//! - [`buffers`]: the packet buffers, moved between slots without copying.
//! - [`driver`]: the loop: reap completions, hand bytes to the session layer,
//!   queue what it asks for, submit; the TUN and UDP paths.
//! - [`tx`]: send slots and the helpers that queue sends and TUN writes.
//! - [`tcp`]: TCP connections: accept, receive, send queues, teardown.
//! - [`signals`]: SIGINT/SIGTERM as a readable descriptor.

pub mod buffers;
pub mod driver;
pub mod signals;
mod tcp;
mod tx;
pub mod user_data;

pub use driver::{Driver, Fds, Tunables};
pub use tcp::TcpLimits;
