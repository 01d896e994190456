//! An inside made of channels, for tests and benchmarks that run the real driver
//! without a TUN device (and without root).
//!
//! It copies each packet into a `Vec`, which the TUN path never does; it is
//! meant for checking behaviour and driving many sessions from one process, not
//! for measuring the per-packet cost of the client.
//!
//! [`memory_with_offloads`] makes one that speaks `virtio_net_hdr` as an
//! offloading TUN does: the host sends `[header][packet or superpacket]` and
//! receives the same, so the driver's batching path (splitting what it reads,
//! coalescing what it writes) runs without root.

use std::io;

use tokio::sync::mpsc;

use super::{Inside, InsideReader, InsideWriter, Offloads};

/// The driver's end: what it reads packets from and writes packets to.
#[derive(Debug)]
pub struct MemoryInside {
    outbound: mpsc::Receiver<Vec<u8>>,
    inbound: mpsc::Sender<Vec<u8>>,
    offloads: Offloads,
}

/// The test's end: play the host's IP stack.
#[derive(Debug)]
pub struct MemoryHost {
    /// Packets sent here go into the tunnel, as if the host had routed them into the TUN.
    pub to_tunnel: mpsc::Sender<Vec<u8>>,
    /// Packets that came out of the tunnel, as if written to the TUN.
    pub from_tunnel: mpsc::Receiver<Vec<u8>>,
}

/// A connected pair holding up to `capacity` packets each way.
pub fn memory(capacity: usize) -> (MemoryInside, MemoryHost) {
    memory_with_offloads(capacity, Offloads::OFF)
}

/// A connected pair whose packets carry a `virtio_net_hdr` when `offloads.vnet_hdr` is set
/// (and, with `tso`/`uso`, may be TCP/UDP superpackets each way).
pub fn memory_with_offloads(capacity: usize, offloads: Offloads) -> (MemoryInside, MemoryHost) {
    let (to_tunnel, outbound) = mpsc::channel(capacity);
    let (inbound, from_tunnel) = mpsc::channel(capacity);
    (
        MemoryInside {
            outbound,
            inbound,
            offloads,
        },
        MemoryHost {
            to_tunnel,
            from_tunnel,
        },
    )
}

/// Reads what the host sent.
#[derive(Debug)]
pub struct MemoryReader(mpsc::Receiver<Vec<u8>>);

/// Delivers to the host.
#[derive(Debug)]
pub struct MemoryWriter(mpsc::Sender<Vec<u8>>);

impl Inside for MemoryInside {
    type Reader = MemoryReader;
    type Writer = MemoryWriter;

    fn offloads(&self) -> Offloads {
        self.offloads
    }

    fn split(self) -> (MemoryReader, MemoryWriter) {
        (MemoryReader(self.outbound), MemoryWriter(self.inbound))
    }
}

impl InsideReader for MemoryReader {
    /// Cancel-safe because `mpsc::Receiver::recv` is. Fails once the host's
    /// sender is gone, as a TUN read fails once the device is.
    async fn read_packet(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let packet = self
            .0
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "memory inside closed"))?;
        let n = packet.len().min(buf.len());
        buf[..n].copy_from_slice(&packet[..n]);
        Ok(n)
    }
}

impl InsideWriter for MemoryWriter {
    async fn write_packet(&mut self, packet: &[u8]) -> io::Result<()> {
        self.0
            .send(packet.to_vec())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "memory inside closed"))
    }
}
