//! The UDP socket: datagrams from peers opened in place and written to the TUN, frames to
//! peers sent many per `sendmsg`.
//!
//! With GSO or GRO on the data path, the socket goes through quinn-udp (as the client's
//! does): `recvmmsg` of up to [`RECV_SLOTS`] receives, each possibly many datagrams of one
//! peer at the stride the kernel reports (`UDP_GRO`), and `sendmsg` with `UDP_SEGMENT` for
//! the frames of a superpacket. Without, one datagram per call, as the io_uring loop does
//! without offload.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use ringway_offload::gso;
use tokio::net::UdpSocket;

use super::core::{write_inside, Core, Shared};
use crate::metrics::IoCounters;
use crate::outside::udp::{keep_default_pmtu_discovery, Udp};
use crate::sessions::{Outside, OutsideAction};
use crate::uring::DataPath;

/// Receives per `recvmmsg` with GRO (each up to 64 KiB of datagrams).
const RECV_SLOTS: usize = 8;

/// Bytes per receive slot: a GRO aggregate is one skb, under 64 KiB.
const RECV_SLOT_LEN: usize = 1 << 16;

/// The socket and what the kernel lets it batch.
#[derive(Debug)]
pub(super) struct UdpOut {
    socket: UdpSocket,
    /// quinn-udp's view of the socket, with GSO or GRO on the data path.
    state: Option<quinn_udp::UdpSocketState>,
    /// Multi-datagram sends: on while the kernel accepts them (one refusal turns this off).
    gso: Cell<bool>,
}

impl UdpOut {
    /// Takes over the bound socket; with GSO or GRO in `path`, through quinn-udp.
    pub fn new(udp: Udp, path: DataPath) -> Result<Self> {
        let std = udp.into_std();
        std.set_nonblocking(true)
            .context("cannot make the UDP socket non-blocking")?;
        let ipv6 = std.local_addr().is_ok_and(|a| a.is_ipv6());
        let socket =
            UdpSocket::from_std(std).context("cannot register the UDP socket with epoll")?;
        let state = (path.udp_gso || path.udp_gro)
            .then(|| quinn_udp::UdpSocketState::new((&socket).into()))
            .and_then(|state| match state {
                Ok(state) => {
                    // quinn-udp sets DF; a VPN keeps the kernel's default PMTU behaviour.
                    if let Err(e) = keep_default_pmtu_discovery(&socket, ipv6) {
                        tracing::debug!(error = %e, "could not restore IP_PMTUDISC_WANT");
                    }
                    Some(state)
                }
                Err(e) => {
                    tracing::info!(error = %e, "no UDP offload on this socket");
                    None
                }
            });
        let gso = path.udp_gso && state.as_ref().is_some_and(|s| s.max_gso_segments() > 1);
        Ok(UdpOut {
            socket,
            state,
            gso: Cell::new(gso),
        })
    }

    /// The start-up line's UDP part.
    pub fn describe(&self) -> String {
        match &self.state {
            Some(s) => format!(
                "quinn-udp, GSO {} segments, GRO {}",
                self.max_segments(),
                if s.gro_segments() > 1 { "on" } else { "off" }
            ),
            None => "one datagram per call".to_owned(),
        }
    }

    /// Datagrams one send may carry now.
    fn max_segments(&self) -> usize {
        match &self.state {
            Some(s) if self.gso.get() => s.max_gso_segments(),
            _ => 1,
        }
    }

    /// Sends one frame now, or drops it (counted as `tx_full`) if the socket has no room:
    /// for control frames (handshake replies, keepalives), which must not hold up a batch.
    pub fn try_send_to(&self, frame: &[u8], to: SocketAddr, counters: &mut IoCounters) {
        match self.socket.try_send_to(frame, to) {
            Ok(_) => {
                counters.udp_tx_sends += 1;
                counters.udp_tx_datagrams += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => counters.drop_tx_full += 1,
            Err(e) => {
                counters.io_errors += 1;
                tracing::debug!(error = %e, %to, "UDP send failed");
            }
        }
    }

    /// Sends `frames`, back to back at `stride` (the last possibly shorter; 0: one frame), to
    /// `to`: as few `sendmsg`s as GSO allows, each waiting for room in the socket.
    pub async fn send_frames(&self, shared: &Shared, frames: &[u8], stride: usize, to: SocketAddr) {
        let mut at = 0;
        while at < frames.len() {
            let max = self.max_segments();
            let Some(chunk) = gso::gso_sends(frames.len() - at, stride, max).next() else {
                break;
            };
            let bytes = &frames[at..at + chunk.len()];
            let count = gso::count(bytes.len(), stride);
            let sent = match (&self.state, count > 1) {
                (Some(state), true) => {
                    let transmit = quinn_udp::Transmit {
                        destination: to,
                        ecn: None,
                        contents: bytes,
                        segment_size: Some(stride),
                        src_ip: None,
                    };
                    self.socket
                        .async_io(tokio::io::Interest::WRITABLE, || {
                            state.try_send((&self.socket).into(), &transmit)
                        })
                        .await
                }
                _ => self.socket.send_to(bytes, to).await.map(drop),
            };
            let mut core = shared.borrow_mut();
            let counters = &mut core.counters;
            match sent {
                Ok(()) => {
                    counters.udp_tx_sends += 1;
                    counters.udp_tx_datagrams += count as u64;
                }
                Err(e) => {
                    counters.io_errors += 1;
                    let refused = matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
                    );
                    if count > 1 && refused && self.gso.get() {
                        // The device cannot checksum or the kernel refuses this
                        // segmentation: one datagram per send from now on. These
                        // datagrams are lost; the inner flows retransmit.
                        self.gso.set(false);
                        counters.gso_refused += 1;
                        tracing::warn!(error = %e, "the kernel refused a UDP_SEGMENT send: sending one datagram per call from now on");
                    } else {
                        tracing::debug!(error = %e, %to, "UDP send failed");
                    }
                }
            }
            at += chunk.len();
        }
    }
}

/// Receives until the socket fails: each batch opened in place, answered or written to the
/// TUN (coalesced), in one step.
pub(super) async fn recv_loop(shared: Shared, udp: Rc<UdpOut>) -> Result<()> {
    let mut buf = vec![0u8; RECV_SLOTS * RECV_SLOT_LEN].into_boxed_slice();
    let mut datagrams: Vec<(SocketAddr, Range<usize>)> =
        Vec::with_capacity(super::MAX_BATCH_PACKETS);
    let mut packets: Vec<Range<usize>> = Vec::with_capacity(super::MAX_BATCH_PACKETS);
    loop {
        datagrams.clear();
        let received = receive(&udp, &mut buf, &mut datagrams).await;
        match received {
            Ok(receives) => {
                let mut core = shared.borrow_mut();
                core.counters.udp_rx_recvs += receives as u64;
                open_batch(&mut core, &udp, &mut buf, &mut datagrams, &mut packets);
            }
            Err(e) => {
                // A peer's ICMP error, an interrupted call: counted, not fatal.
                shared.borrow_mut().counters.io_errors += 1;
                tracing::debug!(error = %e, "UDP receive failed");
            }
        }
        // One batch per turn: the TUN reader and the connections get theirs.
        tokio::task::yield_now().await;
    }
}

/// Opens every datagram of a receive batch in place, answers handshakes, and writes what
/// opened to the TUN (coalesced).
fn open_batch(
    core: &mut Core,
    udp: &UdpOut,
    buf: &mut [u8],
    datagrams: &mut Vec<(SocketAddr, Range<usize>)>,
    packets: &mut Vec<Range<usize>>,
) {
    let now = Instant::now();
    packets.clear();
    for (from, range) in datagrams.drain(..) {
        core.counters.udp_rx_datagrams += 1;
        let frame = &mut buf[range.clone()];
        match core
            .sessions
            .handle_outside(frame, Outside::Udp(from), now, &mut core.ids)
        {
            OutsideAction::ToInside(r) => {
                packets.push(range.start + r.start..range.start + r.end);
            }
            OutsideAction::Reply(Outside::Udp(to), bytes) => {
                udp.try_send_to(&bytes, to, &mut core.counters);
            }
            OutsideAction::None | OutsideAction::Reply(Outside::Tcp(_), _) => {}
        }
    }
    let Core {
        tun, counters, gro, ..
    } = core;
    write_inside(tun.get_ref(), counters, gro.as_mut(), buf, packets);
}

/// Waits for datagrams and lists where each lies in `buf` and who sent it; returns how
/// many receives (kernel `msghdr`s) that took.
async fn receive(
    udp: &UdpOut,
    buf: &mut [u8],
    out: &mut Vec<(SocketAddr, Range<usize>)>,
) -> io::Result<usize> {
    let Some(state) = &udp.state else {
        let (n, from) = udp.socket.recv_from(buf).await?;
        out.push((from, 0..n));
        return Ok(1);
    };
    let mut meta = [quinn_udp::RecvMeta::default(); RECV_SLOTS];
    let n = {
        let mut slots = buf.chunks_mut(RECV_SLOT_LEN);
        let mut iovs: [io::IoSliceMut<'_>; RECV_SLOTS] =
            std::array::from_fn(|_| io::IoSliceMut::new(slots.next().unwrap_or_default()));
        udp.socket
            .async_io(tokio::io::Interest::READABLE, || {
                state.recv((&udp.socket).into(), &mut iovs, &mut meta)
            })
            .await?
    };
    for (slot, m) in meta.iter().enumerate().take(n) {
        let base = slot * RECV_SLOT_LEN;
        let len = m.len.min(RECV_SLOT_LEN);
        out.extend(gso::datagrams(len, m.stride).map(|r| (m.addr, base + r.start..base + r.end)));
    }
    Ok(n)
}
