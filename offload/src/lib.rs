//! Segmentation (GSO) and coalescing (GRO) of inner IP packets, as a sans-IO library.
//!
//! A TUN opened with `IFF_VNET_HDR` and `TUNSETOFFLOAD` hands its reader up to 64 KiB at a
//! time: a 10-byte [`virtio`] header, then one IP packet that may be a TCP or UDP
//! *superpacket* (many segments' worth of payload behind one set of headers) whose
//! transport checksum the kernel left for us to finish. Going the other way, the TUN accepts
//! such superpackets, so a receiver that glues consecutive segments of one flow back
//! together pays one write per 64 KiB instead of one per segment.
//!
//! This crate does the byte work of both directions and nothing else:
//! - [`segment`]: a superpacket (plus its header) becomes MTU-sized packets, written at a
//!   fixed stride into one caller buffer so each can be sealed in place and all of them sent
//!   with one `UDP_SEGMENT` `sendmsg`. Plain packets are recognised without parsing and stay
//!   where they are.
//! - [`coalesce`]: a [`Coalescer`] (GRO table) takes decrypted inner packets one at a time
//!   and appends those that continue a flow into caller-owned superpacket buffers, saying
//!   which inputs must be written on their own, in an order that keeps every flow in order.
//! - [`batch`] and [`gso`]: what a driver with heap buffers (the tokio client and the
//!   server's tokio backend) needs on top: a [`batch::Segmenter`] and a [`batch::Gro`] owning
//!   their buffers, and where the datagrams of one `UDP_SEGMENT` send or `UDP_GRO` receive lie.
//! - [`checksum`], [`ip`], [`tcp`], [`udp`], [`virtio`]: the ones'-complement arithmetic and
//!   zero-copy header views both need.
//!
//! What it does not do: open a TUN, call `read`/`write`/`sendmsg`, read a clock, allocate
//! per packet, or use `unsafe`. Every input is a byte slice that may be garbage; every
//! function returns `Ok` or a typed [`Error`], never panics. Drivers (the io_uring server,
//! the tokio client) own the buffers and the system calls.
//!
//! # Using it
//!
//! TUN read side (the buffer has `headroom - VNET_HDR_LEN` bytes free in front of the read):
//!
//! ```
//! use ringway_offload::{prepare, split, Layout, Prepared, VnetHdr, VNET_HDR_LEN};
//! # let mut read = vec![0u8; VNET_HDR_LEN + 28];
//! # read[VNET_HDR_LEN] = 0x45;
//! # read[VNET_HDR_LEN + 3] = 28;
//! let layout = Layout { headroom: 16, tailroom: 16, max_packet_len: 1420 };
//! let (hdr, packet) = read.split_at_mut(VNET_HDR_LEN);
//! let hdr = VnetHdr::parse(hdr)?; // Err: drop and count
//! match prepare(&hdr, packet, &layout)? {
//!     Prepared::Ready => { /* seal `packet` in place, send as today */ }
//!     Prepared::Split(plan) => {
//!         let mut out = vec![0u8; plan.out_len(&layout)]; // a driver reuses one buffer
//!         let segs = split(&hdr, packet, &mut out, &layout)?;
//!         for r in segs.packets() { /* seal out[r] in place (header in the headroom) */ }
//!         // then one sendmsg of out[..], UDP_SEGMENT = segs.stride()
//!     }
//! }
//! # Ok::<(), ringway_offload::Error>(())
//! ```
//!
//! TUN write side, once per receive batch (output buffers allocated once, 10 + 65 535
//! bytes each):
//!
//! ```
//! use ringway_offload::{CoalesceConfig, Coalescer, Output, VNET_HDR_LEN};
//! let mut gro = Coalescer::new(CoalesceConfig::default());
//! let mut bufs = vec![vec![0u8; VNET_HDR_LEN + 65535]; gro.config().max_runs];
//! # let opened: Vec<Vec<u8>> = vec![vec![0x45, 0, 0, 20]];
//! for (i, plaintext) in opened.iter().enumerate() {
//!     if gro.push(plaintext, i as u64, &mut bufs).is_err() {
//!         // Full: flush (below), then push this one again.
//!     }
//! }
//! for write in gro.flush(&mut bufs) {
//!     match write {
//!         Output::Buffer { slot, len, .. } => { /* write bufs[slot][..len] */ }
//!         Output::Input { tag } => { /* write input `tag` behind 10 zero bytes */ }
//!     }
//! }
//! ```
//!
//! The segment payload size is the caller's: it passes the largest inner packet its tunnel
//! carries (`max_packet_len`, the TUN MTU). The kernel's `gso_size` is honoured when it fits;
//! a TCP superpacket whose `gso_size` would give larger packets is cut at the caller's limit
//! instead (TCP is a byte stream, so any cut is valid); a UDP one cannot be recut without
//! changing datagram boundaries and is refused.
#![forbid(unsafe_code)]

pub mod batch;
pub mod checksum;
pub mod coalesce;
pub mod gso;
pub mod ip;
pub mod segment;
pub mod tcp;
pub mod udp;
pub mod virtio;

pub use checksum::Checksum;
pub use coalesce::{CoalesceConfig, Coalescer, Full, Output, Pushed, Stats};
pub use segment::{prepare, split, split_part, Layout, Plan, Prepared, Segments};
pub use virtio::{GsoType, VnetHdr, VNET_HDR_LEN};

/// Why a packet (or a header in front of it) could not be offloaded.
///
/// Almost every variant is about the packet: it came from the local kernel through the TUN
/// and does not describe something we can segment. Drop it and count it. The exceptions are
/// the caller's own sizing mistakes, [`Error::OutputTooSmall`] and
/// [`Error::MaxPacketTooSmall`] (see [`Error::is_misuse`]): they mean a driver bug, not a
/// bad packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the header it has to hold.
    #[error("truncated: shorter than its headers")]
    Truncated,
    /// The version nibble is neither 4 nor 6.
    #[error("not an IPv4 or IPv6 packet")]
    NotIp,
    /// Header length, total length or payload length disagree with the packet's size.
    #[error("IP header lengths inconsistent with the packet")]
    BadIpHeader,
    /// An IPv4 fragment (MF set or a non-zero offset) claims to be a GSO packet.
    #[error("IPv4 fragment cannot be a GSO packet")]
    Fragment,
    /// IPv6 with extension headers: refused for segmentation rather than guessed at.
    #[error("IPv6 extension headers are not supported for segmentation")]
    Ipv6ExtensionHeaders,
    /// The transport protocol is not the one the GSO type names (or not TCP/UDP at all).
    #[error("transport protocol {0} does not match the GSO type")]
    ProtocolMismatch(u8),
    /// The TCP data offset or UDP length field disagrees with the packet.
    #[error("transport header inconsistent with the packet")]
    BadTransportHeader,
    /// A virtio-net header flag we do not know.
    #[error("unknown virtio-net header flags {0:#04x}")]
    UnknownFlags(u8),
    /// Legacy UFO (type 3), an unknown type, or the ECN bit on a non-TCP type.
    #[error("unsupported GSO type {0:#04x}")]
    UnsupportedGso(u8),
    /// `gso_size` is zero on a GSO packet.
    #[error("GSO size is zero")]
    ZeroGsoSize,
    /// `csum_start`/`csum_offset` point outside the packet or not at the transport checksum.
    #[error("checksum start/offset inconsistent with the packet")]
    BadChecksumOffsets,
    /// A TCP superpacket with SYN or RST: no kernel builds one, and cutting it would
    /// misnumber the sequence space.
    #[error("TCP GSO packet carries SYN or RST")]
    GsoFlags,
    /// A packet (or UDP datagram, which cannot be recut) is larger than the caller's limit.
    #[error("a {len}-byte packet exceeds the {max}-byte limit")]
    TooLarge {
        /// The packet or segment length that does not fit.
        len: usize,
        /// The caller's `max_packet_len`.
        max: usize,
    },
    /// Caller misuse: `max_packet_len` leaves no room for payload after the headers.
    #[error("max packet length {max} leaves no room after {headers} bytes of headers")]
    MaxPacketTooSmall {
        /// The caller's `max_packet_len`.
        max: usize,
        /// IP plus transport header bytes of this packet.
        headers: usize,
    },
    /// Caller misuse: the output buffer cannot hold every segment at the chosen stride.
    #[error("output buffer holds {room} bytes, {needed} needed")]
    OutputTooSmall {
        /// Bytes the layout needs.
        needed: usize,
        /// Bytes the buffer has.
        room: usize,
    },
}

impl Error {
    /// Whether this is the caller's sizing mistake (a bug to fix) rather than a bad packet.
    pub fn is_misuse(&self) -> bool {
        matches!(
            self,
            Error::OutputTooSmall { .. } | Error::MaxPacketTooSmall { .. }
        )
    }
}
