//! The inside: where plaintext IP packets come from and go to.
//!
//! In `ringway up` that is the TUN device ([`tun`]); in tests and benchmarks it
//! can be anything that reads and writes whole packets, such as [`memory`].
//! The driver runs the two directions on separate tasks, so an inside splits
//! into a reader and a writer that need no lock between them.

pub mod memory;
pub mod tun;

use std::future::Future;
use std::io;

/// A packet source and sink that splits into its two directions.
pub trait Inside: Send + 'static {
    /// The half packets come out of (towards the server).
    type Reader: InsideReader;
    /// The half packets go into (from the server).
    type Writer: InsideWriter;

    /// Separates the directions.
    fn split(self) -> (Self::Reader, Self::Writer);
}

/// Reads outbound packets, one per call.
pub trait InsideReader: Send + 'static {
    /// Reads one whole packet into `buf` and returns its length. Must be
    /// cancel-safe: the driver races it against its timers, and a packet must
    /// not be lost because the timer won.
    fn read_packet(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
}

/// Writes inbound packets, one per call.
pub trait InsideWriter: Send + 'static {
    /// Writes one whole packet.
    fn write_packet(&mut self, packet: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}
