//! What the tasks share, and the TUN write side every receive path ends in.
//!
//! Inner packets opened from a UDP receive lie in the receive buffer, each behind its
//! frame's transport header; packets from a TCP stream are copied into a [`StreamBatch`]
//! laid out the same way (the stream buffer is reused by the next read). Either way the
//! batch goes through [`write_inside`]: coalesced into superpackets where the TUN takes a
//! `virtio_net_hdr`, one `write` per superpacket and per packet that joined none.

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;

use ringway_offload::batch::{lone_packet, Gro};
use ringway_offload::Output;
use ringway_proto::wire::transport::HEADER_LEN;
use tokio::io::unix::AsyncFd;

use super::tcp::Conns;
use super::udp::UdpOut;
use crate::inside::tun::Tun;
use crate::metrics::IoCounters;
use crate::sessions::{OsRandom, Sessions};
use crate::uring::DataPath;

/// The state every task works on, borrowed for one step at a time and never across an
/// `.await`.
#[derive(Debug)]
pub(super) struct Core {
    /// Who may connect and where each packet goes.
    pub sessions: Sessions,
    /// Randomness for session ids.
    pub ids: OsRandom,
    /// What the I/O saw, named as the io_uring loop's counters.
    pub counters: IoCounters,
    /// What the TUN and the UDP socket do per call.
    pub path: DataPath,
    /// The TUN: writes are made from here (a TUN write never waits).
    pub tun: Rc<AsyncFd<Tun>>,
    /// The UDP socket, if UDP is on.
    pub udp: Option<Rc<UdpOut>>,
    /// TCP connections.
    pub tcp: Conns,
    /// With offload: the coalescer in front of TUN writes.
    pub gro: Option<Gro>,
    /// Packets from TCP frames waiting for one [`write_inside`].
    pub stream_batch: StreamBatch,
}

/// The core, shared by the tasks of one thread.
pub(super) type Shared = Rc<RefCell<Core>>;

/// Bytes a [`StreamBatch`] holds before it is written: a 64 KiB superpacket's worth of
/// packets, each with its header room.
const STREAM_BATCH_BYTES: usize = 96 << 10;

/// Inner packets copied out of TCP stream buffers, each behind [`HEADER_LEN`] bytes of room
/// (where [`lone_packet`] puts its header), for one coalescing batch.
#[derive(Debug)]
pub(super) struct StreamBatch {
    buf: Vec<u8>,
    packets: Vec<Range<usize>>,
}

impl StreamBatch {
    /// An empty batch with its memory.
    pub fn new() -> Self {
        StreamBatch {
            buf: Vec::with_capacity(STREAM_BATCH_BYTES),
            packets: Vec::with_capacity(super::MAX_BATCH_PACKETS),
        }
    }

    /// Whether `len` more bytes (with header room) fit without growing.
    pub fn has_room(&self, len: usize) -> bool {
        self.packets.len() < super::MAX_BATCH_PACKETS
            && self.buf.len() + HEADER_LEN + len <= self.buf.capacity()
    }

    /// Copies `packet` in behind its header room.
    pub fn push(&mut self, packet: &[u8]) {
        self.buf.resize(self.buf.len() + HEADER_LEN, 0);
        let start = self.buf.len();
        self.buf.extend_from_slice(packet);
        self.packets.push(start..self.buf.len());
    }

    /// Writes the batch to the TUN and empties it.
    pub fn write(&mut self, tun: &Tun, counters: &mut IoCounters, gro: Option<&mut Gro>) {
        if !self.packets.is_empty() {
            write_inside(tun, counters, gro, &mut self.buf, &self.packets);
        }
        self.buf.clear();
        self.packets.clear();
    }
}

/// Writes `packets` (ranges of `buf`, each with at least `VNET_HDR_LEN` bytes of scratch in
/// front) to the TUN: with `gro`, coalesced where they continue a flow, in an order that keeps
/// every flow's packets in order; without, one bare packet per write.
pub(super) fn write_inside(
    tun: &Tun,
    counters: &mut IoCounters,
    gro: Option<&mut Gro>,
    buf: &mut [u8],
    packets: &[Range<usize>],
) {
    let Some(gro) = gro else {
        for p in packets {
            if let Some(bytes) = buf.get(p.clone()) {
                write_tun(tun, counters, bytes, 1);
            }
        }
        return;
    };
    let mut first = 0;
    while first < packets.len() {
        let took = gro.push(buf, &packets[first..], first);
        gro.flush();
        for w in gro.writes() {
            match *w {
                Output::Buffer {
                    slot,
                    len,
                    segments,
                } => write_tun(tun, counters, gro.buffer(slot, len), segments),
                Output::Input { tag } => {
                    let Some(p) = packets.get(tag as usize) else {
                        continue;
                    };
                    if let Some(bytes) = lone_packet(buf, p.clone()) {
                        write_tun(tun, counters, bytes, 1);
                    }
                }
            }
        }
        // A batch that took nothing even empty cannot take this packet: it goes alone.
        if took == 0 {
            if let Some(bytes) = lone_packet(buf, packets[first].clone()) {
                write_tun(tun, counters, bytes, 1);
            }
            first += 1;
        }
        first += took;
    }
}

/// One TUN write of `packets` inner packets (a superpacket counts its segments).
fn write_tun(tun: &Tun, counters: &mut IoCounters, bytes: &[u8], packets: usize) {
    match tun.write(bytes) {
        Ok(_) => {
            counters.tun_tx_writes += 1;
            counters.tun_tx_packets += packets as u64;
            if packets > 1 {
                counters.tun_tx_superpackets += 1;
            }
        }
        Err(e) => {
            counters.io_errors += 1;
            tracing::debug!(error = %e, "TUN write failed");
        }
    }
}
