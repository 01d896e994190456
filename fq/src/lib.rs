//! A flow queue for a tunnel endpoint: per-flow fair queueing of inner packets by deficit
//! round robin, with CoDel at the head of each flow, as Linux's fq_codel (RFC 8290) does
//! for an interface.
//!
//! Why the endpoint: once sealed, all of a tunnel's inner flows are one outer UDP flow, so
//! no qdisc on the path can tell a ping from a bulk upload. Before sealing, the endpoint
//! still can. Placed in front of seal-and-send, this queue gives each inner flow its share
//! of the send path, lets sparse flows (ping, DNS, interactive SSH, a TCP ACK stream) go
//! first, and keeps a bulk flow's standing queue near `target` by dropping (or CE-marking)
//! from its head, so its sender backs off gently instead of losing a tail-drop burst.
//!
//! - [`FlowQueue`]: the queue, generic over the caller's item (a buffer token, an owned
//!   packet). [`FlowQueue::enqueue`] and [`FlowQueue::dequeue`] are O(1) amortised and never
//!   allocate; items dropped on the way go back to the caller through a sink with their
//!   [`DropReason`]. [`Stats`] counts what happened and why.
//! - [`Config`]: limits and CoDel parameters, with defaults for a tunnel and why.
//! - [`inner`]: inner-packet helpers: [`inner::flow_hash`] (keyed SipHash-1-3 of the
//!   5-tuple), [`inner::ecn`], [`inner::mark_ce`] (with the IPv4 checksum kept right).
//!
//! What it does not do: I/O, clock reads (every call that needs time takes `now`),
//! `unsafe`, allocation after [`FlowQueue::new`], or panicking on any input. It also has no
//! timers: CoDel acts only when something is dequeued, which is when its sojourn time
//! means something.
//!
//! # Using it
//!
//! ```
//! use std::time::Instant;
//! use ringway_fq::{inner, Config, DropReason, FlowQueue};
//!
//! let seed = inner::FlowSeed::from_bytes([7; 16]); // from the system RNG in a driver
//! let mut q: FlowQueue<Vec<u8>> = FlowQueue::new(Config::default())?;
//! let mut recycle = |_packet: Vec<u8>, _why: DropReason| { /* back to the pool, count */ };
//!
//! // Read side: every packet read from the TUN goes in.
//! let packet = vec![0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
//! let meta = inner::meta(&packet, &seed);
//! q.enqueue(Instant::now(), packet, meta, &mut recycle);
//!
//! // Send side: as long as a send can start right away.
//! while let Some(mut d) = q.dequeue(Instant::now(), &mut recycle) {
//!     if d.mark_ce {
//!         inner::mark_ce(&mut d.item);
//!     }
//!     // seal d.item in place and send it
//! }
//! # Ok::<(), ringway_fq::ConfigError>(())
//! ```
//!
//! # Wiring it into a driver
//!
//! The queue only helps if it is where packets wait. So: read the TUN eagerly into the
//! queue (route or drop unroutable packets first, but seal nothing yet), and dequeue only
//! when a send can start at once (a free tx slot, a writable socket), then mark if asked,
//! seal and send. Sealing at dequeue means CoDel's drops cost no AEAD work and counters go
//! out in order. Queues further down must stay short, or the standing queue just moves
//! there: a modest `SO_SNDBUF`, a bounded number of sends in flight, a small TUN
//! `txqueuelen`. One queue per direction; its [`Stats`] are that direction's counters.
//! The sink returns dropped items to their pool; [`FlowQueue::clear`] returns the rest when
//! a session or the driver stops. With buffer tokens from a fixed pool, keep `limit_items`
//! well below the pool size less the reads in flight, so the queue can always make room by
//! dropping from the fattest flow and the TUN reads never starve.
#![forbid(unsafe_code)]

mod codel;
mod config;
pub mod inner;
mod queue;
mod stats;

pub use config::{Config, ConfigError, MAX_FLOWS, MAX_ITEMS, MAX_TIME};
pub use queue::{Dequeued, Enqueued, FlowQueue, Meta};
pub use stats::{DropReason, Stats};
