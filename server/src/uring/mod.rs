//! The io_uring driver: one ring, one thread, every data-path I/O.
//!
//! - [`driver`]: setup, the loop, and dispatch of completions to the paths.
//! - `paths`: one type per I/O path (TUN, UDP, TCP, timer, signal), each
//!   owning its slots and handling its own completions.
//! - `context`: what the paths share: session layer, submission queue,
//!   buffers, send slots, counters.
//! - `queue`: submissions waiting for the ring, and the exact in-flight count.
//! - `slots`: a request per slot, armed until its own completion; the one
//!   completion check every path uses.
//! - [`buffers`]: packet buffers, each claimed by a non-`Copy` token.
//! - `buf_ring`: a provided-buffer ring, for the multishot UDP receive.
//! - `tx`: send slots, claimed only through a permit.
//! - `fq`: with `fair_queue` on, the flow queues: TUN writes wait in one (a few
//!   at a time in flight, so receives keep draining the socket), packets for UDP
//!   peers in the other (sealed as they leave); sparse flows go first in both.
//! - `gro`: with offload, what goes to the TUN in a round, coalesced into
//!   superpackets and written once the round's completions are handled.
//! - `msg`, `kernel_box`: memory the kernel reads or writes (`msghdr`s and
//!   the like), at fixed addresses, reached only through shared references.
//! - [`user_data`]: which path/slot/generation a completion belongs to.
//!
//! Dependencies point one way: the driver uses the paths, the paths use the
//! context and the building blocks below it, and nothing uses the driver.

mod buf_ring;
pub mod buffers;
mod context;
pub mod driver;
mod fq;
mod gro;
mod kernel_box;
mod msg;
mod paths;
mod queue;
mod slots;
mod tx;
pub mod user_data;

pub use crate::config::Tunables;
/// SIGINT/SIGTERM as a readable descriptor (shared with the tokio backend).
pub use crate::signals;
pub use driver::{probe, DataPath, Driver, DriverError, Fds, RingUsage};
pub use paths::tcp::TcpLimits;
