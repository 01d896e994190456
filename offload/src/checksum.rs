//! The Internet checksum (RFC 1071): ones'-complement sums, pseudo-headers, incremental update.
//!
//! [`Checksum`] accumulates in a `u64` over *native-order* 32-bit halves of 8-byte chunks
//! and folds once at the end. That is correct because a ones'-complement sum commutes with
//! byte swapping (RFC 1071 §2(B)): summing words read in host order gives the byte-swapped
//! sum, which [`Checksum::fold`] swaps back. Eight bytes cost one load and two adds, and
//! the compiler vectorises the loop; a `u64` cannot overflow before 16 GiB of input, far
//! beyond any IP packet.
//!
//! All values going in and out of this module's API are in *network* order as numbers
//! (`0x1234` is the bytes `12 34` on the wire).

/// A running ones'-complement sum (not yet folded or complemented).
///
/// Feed it byte slices that each start at an even offset of the summed region; only the
/// last slice may have an odd length (its final byte is padded with zero, as RFC 1071 says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checksum(u64);

impl Checksum {
    /// An empty sum.
    pub const fn new() -> Self {
        Checksum(0)
    }

    /// Adds `data`, which must start at an even offset of the region being summed.
    #[inline]
    pub fn add_bytes(self, data: &[u8]) -> Self {
        Checksum(self.0 + sum_ne(data))
    }

    /// Adds a 16-bit word given in network order as a number.
    #[inline]
    pub fn add_u16(self, word: u16) -> Self {
        Checksum(self.0 + u64::from(u16::from_ne_bytes(word.to_be_bytes())))
    }

    /// Adds a 32-bit value as two 16-bit words (for IPv6 pseudo-header lengths).
    #[inline]
    pub fn add_u32(self, word: u32) -> Self {
        self.add_u16((word >> 16) as u16).add_u16(word as u16)
    }

    /// Adds another partial sum (of a region that also started at an even offset).
    #[inline]
    pub fn add_sum(self, other: Checksum) -> Self {
        Checksum(self.0 + other.0)
    }

    /// Folds to 16 bits in network order, *not* complemented.
    ///
    /// This is what a `CHECKSUM_PARTIAL` packet carries in its checksum field (the
    /// pseudo-header sum the hardware, or whoever finishes the job, starts from). A non-empty
    /// sum of data that is not all zero never folds to 0: it folds to `0xffff` instead.
    #[inline]
    pub fn fold(self) -> u16 {
        let mut s = self.0;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        u16::from_be_bytes((s as u16).to_ne_bytes())
    }

    /// The checksum to store: the complement of [`Checksum::fold`].
    ///
    /// Over a region that includes a correct checksum field this is 0: see
    /// [`Checksum::is_valid`].
    #[inline]
    pub fn finish(self) -> u16 {
        !self.fold()
    }

    /// Whether a region summed *including* its checksum field verifies.
    #[inline]
    pub fn is_valid(self) -> bool {
        self.fold() == 0xffff
    }
}

/// Sums `data` as native-order 16-bit words, unfolded.
#[inline]
fn sum_ne(data: &[u8]) -> u64 {
    let chunks = data.chunks_exact(8);
    let tail = chunks.remainder();
    let mut acc: u64 = chunks
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            let w = u64::from_ne_bytes(w);
            (w >> 32) + (w & 0xffff_ffff)
        })
        .sum();
    if !tail.is_empty() {
        // Zero padding to 8 bytes keeps every byte at its parity, so an odd last byte
        // counts as the high byte of a network-order word, as RFC 1071 requires.
        let mut w = [0u8; 8];
        w[..tail.len()].copy_from_slice(tail);
        let w = u64::from_ne_bytes(w);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    acc
}

/// Copies `src` into `dst` (same length) and returns the sum of the bytes copied.
///
/// Segmentation and coalescing copy every payload byte once and need its sum: summing the
/// destination right after the copy reads it from L1, so the sum costs no memory traffic
/// and the copy keeps memcpy's wide stores. Panics only on a length mismatch, which the
/// crate's callers rule out before calling.
#[inline]
pub(crate) fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> Checksum {
    dst.copy_from_slice(src);
    Checksum(sum_ne(dst))
}

/// The IPv4 pseudo-header (RFC 793/768): addresses, protocol, transport length.
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, len: u16) -> Checksum {
    Checksum::new()
        .add_bytes(&src)
        .add_bytes(&dst)
        .add_u16(u16::from(protocol))
        .add_u16(len)
}

/// The IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> Checksum {
    Checksum::new()
        .add_bytes(src)
        .add_bytes(dst)
        .add_u32(len)
        .add_u16(u16::from(next_header))
}

/// Updates a stored checksum after one 16-bit word changed from `old` to `new`
/// (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`), for rewriting a field without re-summing.
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    !Checksum::new()
        .add_u16(!check)
        .add_u16(!old)
        .add_u16(new)
        .fold()
}

/// [`update_u16`] for a 32-bit field (sequence numbers, IPv4 addresses).
pub fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let c = update_u16(check, (old >> 16) as u16, (new >> 16) as u16);
    update_u16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook algorithm, one big-endian word at a time: the reference.
    fn naive(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            s += hi | lo;
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Checksum::new().add_bytes(&data).fold(), 0xddf2);
        assert_eq!(Checksum::new().add_bytes(&data).finish(), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A textbook header (Wikipedia's IPv4 checksum example) with its checksum b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(Checksum::new().add_bytes(&h).finish(), 0xb861);
        let mut with = h;
        with[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(Checksum::new().add_bytes(&with).is_valid());
    }

    #[test]
    fn empty_and_zero() {
        assert_eq!(Checksum::new().fold(), 0);
        assert_eq!(Checksum::new().add_bytes(&[0; 9]).fold(), 0);
        assert_eq!(Checksum::new().add_bytes(&[0xff, 0xff]).fold(), 0xffff);
        assert_eq!(Checksum::new().add_bytes(&[0x12]).fold(), 0x1200);
    }

    proptest! {
        #[test]
        fn matches_naive(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let fast = Checksum::new().add_bytes(&data).fold();
            let slow = naive(&data);
            // 0x0000 and 0xffff are the same number in ones' complement; our fold only
            // yields 0 for an all-zero input.
            if data.iter().all(|&b| b == 0) {
                prop_assert_eq!(fast, 0);
            } else {
                prop_assert_eq!(fast, if slow == 0 { 0xffff } else { slow });
            }
        }

        #[test]
        fn split_anywhere_even(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..300) {
            let cut = (cut * 2).min(data.len() & !1);
            let whole = Checksum::new().add_bytes(&data).fold();
            let parts = Checksum::new().add_bytes(&data[..cut]).add_sum(Checksum::new().add_bytes(&data[cut..])).fold();
            prop_assert_eq!(whole, parts);
        }

        #[test]
        fn copy_and_sum_copies_and_sums(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut dst = vec![0u8; data.len()];
            let s = copy_and_sum(&mut dst, &data);
            prop_assert_eq!(&dst, &data);
            prop_assert_eq!(s.fold(), Checksum::new().add_bytes(&data).fold());
        }

        #[test]
        fn incremental_update_matches_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 8..200),
            at in 0usize..100,
            new16 in any::<u16>(),
            new32 in any::<u32>(),
        ) {
            let at = (at * 2) % (data.len() & !1).saturating_sub(4).max(2);
            let check = Checksum::new().add_bytes(&data).finish();
            let old16 = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new16.to_be_bytes());
            let updated = update_u16(check, old16, new16);
            let fresh = Checksum::new().add_bytes(&data).finish();
            // Equal as ones'-complement numbers (0 and 0xffff coincide).
            prop_assert_eq!(updated % 0xffff, fresh % 0xffff);

            let old32 = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            data[at..at + 4].copy_from_slice(&new32.to_be_bytes());
            let updated = update_u32(fresh, old32, new32);
            let fresh = Checksum::new().add_bytes(&data).finish();
            prop_assert_eq!(updated % 0xffff, fresh % 0xffff);
        }
    }
}
