//! The inside: where plaintext IP packets come from and go to.
//!
//! In `ringway up` that is the TUN device ([`tun`]); in tests and benchmarks it
//! can be anything that reads and writes whole packets, such as [`memory`].
//! The driver runs the two directions on separate tasks, so an inside splits
//! into a reader and a writer that need no lock between them.
//!
//! An inside may speak `virtio_net_hdr` ([`Inside::offloads`]): every read
//! and write then starts with the 10-byte header, a read may be a superpacket
//! of up to 64 KiB, and a write may be one. The driver does the rest with
//! [`offload`]: it cuts what it reads into packets and coalesces what it
//! writes, so an inside only moves bytes.

pub mod memory;
pub mod offload;
pub mod tun;

use std::future::Future;
use std::io;

pub use ringway_tun::Offloads;

/// A packet source and sink that splits into its two directions.
pub trait Inside: Send + 'static {
    /// The half packets come out of (towards the server).
    type Reader: InsideReader;
    /// The half packets go into (from the server).
    type Writer: InsideWriter;

    /// Whether reads and writes carry a `virtio_net_hdr`, and which
    /// superpackets the inside makes and takes (TCP with `tso`, UDP with
    /// `uso`). Without the header, one plain IP packet per read and write.
    fn offloads(&self) -> Offloads {
        Offloads::OFF
    }

    /// Separates the directions.
    fn split(self) -> (Self::Reader, Self::Writer);
}

/// Reads outbound packets, one per call.
pub trait InsideReader: Send + 'static {
    /// Reads one whole packet into `buf` (behind its `virtio_net_hdr` when
    /// [`Inside::offloads`] says so) and returns its length. Must be
    /// cancel-safe: the driver races it against its timers, and a packet must
    /// not be lost because the timer won.
    fn read_packet(&mut self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>> + Send;
}

/// Writes inbound packets, one per call.
pub trait InsideWriter: Send + 'static {
    /// Writes one whole packet (behind its `virtio_net_hdr` when
    /// [`Inside::offloads`] says so).
    fn write_packet(&mut self, packet: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
}
