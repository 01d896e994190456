//! Many datagrams per system call: where they lie in a buffer, without any I/O. Shared by
//! every driver that sends with `UDP_SEGMENT` or receives with `UDP_GRO` (the tokio client,
//! the server's tokio backend).
//!
//! Both directions of the UDP outside keep frames back to back at a fixed *stride*, the last
//! one possibly shorter, exactly as the kernel's UDP GSO and GRO do:
//!
//! ```text
//!  buf: | frame 0 (stride) | frame 1 (stride) | ... | last frame (<= stride) |
//!  send: one sendmsg per GSO chunk, cmsg UDP_SEGMENT = stride ([`gso_sends`])
//!  recv: one recvmsg returns len bytes, cmsg UDP_GRO = stride ([`datagrams`])
//! ```
//!
//! A send may carry no more datagrams than the socket's GSO limit (`UDP_MAX_SEGMENTS`, which
//! the driver probes) and no more bytes than one UDP datagram's length field allows, since the
//! kernel builds the whole chunk as one datagram before cutting it
//! ([`MAX_GSO_BYTES`]). A receive's stride comes from the kernel; a buffer that was too short
//! for the whole aggregate ends in a truncated datagram, which then fails to authenticate and
//! is counted like any other bad frame.

use std::ops::Range;

/// The most payload one `sendmsg` with `UDP_SEGMENT` may carry: a UDP length field's worth
/// (65 535) less the UDP header (8) and an IPv6 header (40). IPv4 would allow 20 bytes more;
/// one bound for both keeps the arithmetic the same whatever the server's address family.
pub const MAX_GSO_BYTES: usize = 65_535 - 40 - 8;

/// The sends for `len` bytes of frames at `stride`: each range a run of whole frames that one
/// `sendmsg` carries, at most `max_segments` frames and [`MAX_GSO_BYTES`] bytes (but always at
/// least one frame, so a frame larger than that still goes out, alone, and the kernel judges
/// it). A stride of 0 means one frame of `len` bytes.
pub fn gso_sends(len: usize, stride: usize, max_segments: usize) -> GsoSends {
    let stride = if stride == 0 { len.max(1) } else { stride };
    let per_send = max_segments.min(MAX_GSO_BYTES / stride).max(1);
    GsoSends {
        len,
        chunk: per_send.saturating_mul(stride),
        at: 0,
    }
}

/// The iterator [`gso_sends`] returns.
#[derive(Debug, Clone)]
pub struct GsoSends {
    len: usize,
    chunk: usize,
    at: usize,
}

impl Iterator for GsoSends {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.at >= self.len {
            return None;
        }
        let start = self.at;
        self.at = start.saturating_add(self.chunk).min(self.len);
        Some(start..self.at)
    }
}

/// The datagrams of one receive of `len` bytes whose boundaries are every `stride` bytes (GRO;
/// the last one may be shorter). A stride of 0, or one not shorter than `len`, means one
/// datagram; an empty receive has none.
pub fn datagrams(len: usize, stride: usize) -> GsoSends {
    let stride = if stride == 0 { len } else { stride };
    GsoSends {
        len,
        chunk: stride.max(1),
        at: 0,
    }
}

/// How many frames of `stride` bytes (the last possibly shorter) `len` bytes hold.
pub fn count(len: usize, stride: usize) -> usize {
    if stride == 0 {
        usize::from(len > 0)
    } else {
        len.div_ceil(stride)
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one datagram is a one-range list
mod tests {
    use super::*;

    fn collect(it: impl Iterator<Item = Range<usize>>) -> Vec<Range<usize>> {
        it.collect()
    }

    #[test]
    fn a_64_kib_superpacket_fits_the_byte_limit_not_the_segment_limit() {
        // 48 frames of 1452 bytes (1420-byte packets sealed) and a short last one.
        let stride = 1452;
        let len = 48 * stride + 300;
        let sends = collect(gso_sends(len, stride, 64));
        // 45 frames per send: 45 * 1452 = 65 340 <= 65 487 < 46 * 1452.
        assert_eq!(sends, [0..45 * stride, 45 * stride..len]);
        assert!(sends.iter().all(|r| r.len() <= MAX_GSO_BYTES));
        assert_eq!(count(len, stride), 49);
        // Every send starts on a frame boundary and the sends cover the buffer once.
        assert!(sends.iter().all(|r| r.start % stride == 0));
    }

    #[test]
    fn the_segment_limit_bounds_a_send_of_small_frames() {
        let stride = 100;
        let len = 130 * stride;
        let sends = collect(gso_sends(len, stride, 64));
        assert_eq!(sends, [0..6400, 6400..12800, 12800..13000]);
    }

    #[test]
    fn without_gso_every_frame_is_its_own_send() {
        let sends = collect(gso_sends(3 * 1000 + 10, 1000, 1));
        assert_eq!(sends, [0..1000, 1000..2000, 2000..3000, 3000..3010]);
    }

    #[test]
    fn an_oversized_frame_still_goes_out_alone() {
        let sends = collect(gso_sends(70_000, 70_000, 64));
        assert_eq!(sends, [0..70_000]);
        assert!(collect(gso_sends(0, 1452, 64)).is_empty());
        assert_eq!(collect(gso_sends(10, 0, 64)), [0..10]);
    }

    #[test]
    fn a_gro_receive_splits_by_stride() {
        assert_eq!(
            collect(datagrams(3 * 1452, 1452)),
            [0..1452, 1452..2904, 2904..4356]
        );
        assert_eq!(count(3 * 1452, 1452), 3);
    }

    #[test]
    fn a_gro_receive_may_end_in_a_short_datagram() {
        assert_eq!(collect(datagrams(1452 + 80, 1452)), [0..1452, 1452..1532]);
    }

    #[test]
    fn a_receive_without_gro_is_one_datagram() {
        // The kernel reports no stride (0) or the datagram's own length.
        assert_eq!(collect(datagrams(600, 0)), [0..600]);
        assert_eq!(collect(datagrams(600, 600)), [0..600]);
        assert_eq!(collect(datagrams(600, 9000)), [0..600]);
        assert!(collect(datagrams(0, 1452)).is_empty());
        assert_eq!(count(0, 0), 0);
        assert_eq!(count(600, 0), 1);
    }

    #[test]
    fn a_truncated_aggregate_ends_in_a_partial_datagram() {
        // The kernel aggregated 40 datagrams of 1452 bytes but the buffer held 50 000: the
        // receive is cut inside the 35th, which comes out short and will fail to open.
        let got = collect(datagrams(50_000, 1452));
        assert_eq!(got.len(), 35);
        assert_eq!(got[34], 34 * 1452..50_000);
        assert!(got[..34].iter().all(|r| r.len() == 1452));
    }
}
