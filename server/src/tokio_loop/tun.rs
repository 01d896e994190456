//! The TUN reader: each packet (or, with offload, 64 KiB superpacket) read is routed, sealed
//! and sent in one step.
//!
//! A read lands so that its packet starts at [`PAYLOAD_OFFSET`], its `virtio_net_hdr` (with
//! offload) just in front, the transport header's room in front of that, and room for the
//! tag behind: a plain packet is sealed where it lies and sent from the read buffer. A
//! superpacket is cut by the [`Segmenter`] into frames at a fixed stride, each sealed in
//! place, and all of them go to the peer in one `UDP_SEGMENT` `sendmsg` (or one gathered
//! TCP write, length prefixes included).
//!
//! The reader waits for room in the UDP socket before it reads again: the backlog stays in
//! the TUN's queue, not in memory of ours.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{bail, Result};
use ringway_offload::batch::{Outbound, Segmenter};
use ringway_offload::{Layout, VNET_HDR_LEN};
use ringway_proto::wire::transport::{HEADER_LEN, TAG_LEN};
use ringway_proto::wire::STREAM_PREFIX_LEN;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::core::{Core, Shared};
use crate::inside::tun::Tun;
use crate::sessions::{Outside, FRAME_OFFSET, PAYLOAD_OFFSET};

/// Reads in a row before the other tasks get a turn.
const READ_BURST: usize = 16;

/// What a read asks to send over UDP once the core is released.
#[derive(Debug)]
struct UdpSend {
    to: SocketAddr,
    /// Sealed frames, back to back.
    frames: Range<usize>,
    /// Their stride (0: one frame).
    stride: usize,
    /// In the read buffer (a plain packet) or the segmenter's (a superpacket).
    split: bool,
}

/// Reads the TUN until it fails.
pub(super) async fn read_loop(shared: Shared, tun: Rc<AsyncFd<Tun>>) -> Result<()> {
    let vnet = shared.borrow().path.vnet_hdr;
    let header = if vnet { VNET_HDR_LEN } else { 0 };
    let at = PAYLOAD_OFFSET - header;
    let mut buf = vec![0u8; PAYLOAD_OFFSET + usize::from(u16::MAX) + TAG_LEN].into_boxed_slice();
    let read_end = buf.len() - TAG_LEN;
    let mut seg = Segmenter::new();
    let udp = shared.borrow().udp.clone();
    loop {
        // ERROR too: a deleted TUN polls as EPOLLERR only, never readable, and the read that
        // follows says why.
        let mut guard = tun.ready(Interest::READABLE | Interest::ERROR).await?;
        let mut reads = 0;
        while reads < READ_BURST {
            let n = match guard.try_io(|t| t.get_ref().read(&mut buf[at..read_end])) {
                Err(_would_block) => break,
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    let gone = matches!(e.raw_os_error(), Some(libc::EBADFD | libc::EIO));
                    if gone {
                        bail!("the TUN device went away ({e}): deleted or its interface removed");
                    }
                    shared.borrow_mut().counters.io_errors += 1;
                    tracing::debug!(error = %e, "TUN read failed");
                    break;
                }
            };
            reads += 1;
            let send = seal(&mut shared.borrow_mut(), &mut buf, n, header, &mut seg);
            if let (Some(s), Some(udp)) = (send, &udp) {
                let bytes = if s.split {
                    &seg.out()[s.frames]
                } else {
                    &buf[s.frames]
                };
                udp.send_frames(&shared, bytes, s.stride, s.to).await;
            }
        }
        drop(guard);
        if reads == READ_BURST {
            tokio::task::yield_now().await;
        }
    }
}

/// Routes and seals the `n` bytes read (a packet, behind its `virtio_net_hdr` of `header`
/// bytes): frames for a TCP peer go straight into its send queue, frames for a UDP peer are
/// described for the caller to send.
fn seal(
    core: &mut Core,
    buf: &mut [u8],
    n: usize,
    header: usize,
    seg: &mut Segmenter,
) -> Option<UdpSend> {
    let now = Instant::now();
    let Core {
        sessions,
        counters,
        tcp,
        path,
        ..
    } = core;
    counters.tun_rx_reads += 1;
    let Some(len) = n.checked_sub(header).filter(|&l| l > 0) else {
        counters.drop_offload += 1;
        return None;
    };
    let packet = PAYLOAD_OFFSET..PAYLOAD_OFFSET + len;
    let Some(mut route) = sessions.route_inside(&buf[packet.clone()]) else {
        counters.tun_rx_packets += 1;
        return None;
    };
    let to = route.to();
    let tcp_peer = matches!(to, Outside::Tcp(_));
    let prefix = if tcp_peer { STREAM_PREFIX_LEN } else { 0 };
    let layout = Layout {
        headroom: prefix + HEADER_LEN,
        tailroom: TAG_LEN,
        max_packet_len: usize::from(path.mtu),
    };
    let outbound = if header > 0 {
        seg.prepare(&mut buf[PAYLOAD_OFFSET - header..packet.end], &layout)
    } else {
        Ok(Outbound::Ready)
    };
    match outbound {
        Err(e) => {
            counters.tun_rx_packets += 1;
            counters.drop_offload += 1;
            tracing::debug!(error = %e, "TUN read not segmentable: dropped");
            None
        }
        Ok(Outbound::Ready) => {
            counters.tun_rx_packets += 1;
            let sealed = route.seal(&mut buf[FRAME_OFFSET..], len, now)?;
            match to {
                Outside::Udp(to) => Some(UdpSend {
                    to,
                    frames: FRAME_OFFSET..FRAME_OFFSET + sealed,
                    stride: 0,
                    split: false,
                }),
                Outside::Tcp(id) => {
                    let start = FRAME_OFFSET - STREAM_PREFIX_LEN;
                    buf[start..FRAME_OFFSET].copy_from_slice(&(sealed as u16).to_be_bytes());
                    tcp.send(id, &buf[start..FRAME_OFFSET + sealed], 1, counters);
                    None
                }
            }
        }
        Ok(Outbound::Split(segs)) => {
            counters.tun_rx_packets += segs.count() as u64;
            counters.tun_rx_superpackets += 1;
            let out = seg.out();
            let mut end = 0;
            for r in segs.packets() {
                let frame = r.start - HEADER_LEN;
                let sealed = route.seal(&mut out[frame..], r.len(), now)?;
                if tcp_peer {
                    out[frame - STREAM_PREFIX_LEN..frame]
                        .copy_from_slice(&(sealed as u16).to_be_bytes());
                }
                end = frame + sealed;
            }
            match to {
                Outside::Udp(to) => Some(UdpSend {
                    to,
                    frames: 0..end,
                    stride: segs.stride(),
                    split: true,
                }),
                Outside::Tcp(id) => {
                    tcp.send(id, &out[..end], segs.count(), counters);
                    None
                }
            }
        }
    }
}
