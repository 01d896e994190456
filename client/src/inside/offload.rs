//! The `virtio_net_hdr` side of an offloading inside: what the driver does with what it reads
//! and what it writes when the inside speaks the header ([`Offloads::vnet_hdr`]).
//!
//! The byte work and the batch buffers are `ringway-offload`'s ([`ringway_offload::batch`],
//! shared with the server's tokio backend): a [`Segmenter`] per outbound task cuts
//! superpackets read from the inside, a [`Gro`] per inbound task coalesces a receive batch.
//! This module only sizes them for the client.

pub use ringway_offload::batch::{lone_packet, Gro, Outbound, Segmenter, GRO_BUF_LEN, GRO_RUNS};

use super::Offloads;
use crate::outside::{MAX_RECV_BATCH, PACKET_HEADROOM};

// Zero-copy writes of lone packets put the header in the frame's transport header.
const _: () = assert!(PACKET_HEADROOM >= ringway_offload::VNET_HDR_LEN);

/// A coalescer for an inside with `offloads`, for batches of a receive's frames; `None` if it
/// takes no `virtio_net_hdr` (then every packet is written on its own, bare).
pub fn gro(offloads: &Offloads) -> Option<Gro> {
    offloads
        .vnet_hdr
        .then(|| Gro::new(MAX_RECV_BATCH, offloads.uso))
}

/// Test packets for this crate's tests.
#[cfg(test)]
pub(crate) use ringway_offload::batch::test_packets;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_header_no_coalescing() {
        assert!(gro(&Offloads::OFF).is_none());
        let on = Offloads {
            vnet_hdr: true,
            tso: true,
            uso: false,
            refused: None,
        };
        assert!(gro(&on).is_some());
    }
}
