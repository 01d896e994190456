//! SipHash (Aumasson and Bernstein, 2012): a keyed PRF for short inputs.
//!
//! The flow hash uses SipHash-1-3 (one compression round per 8 bytes, three finalization
//! rounds), the variant Rust's `HashMap` uses against hash flooding: an attacker who does
//! not know the key cannot choose 5-tuples that land in one bucket, and 1-3 is ~2x
//! cheaper than the paper's 2-4 on a 13- or 37-byte key. The round count is a const
//! parameter so the tests can check the code against the paper's 2-4 vectors too.

/// SipHash with `C` compression and `D` finalization rounds over `data`, keyed by
/// `(k0, k1)` (the 16-byte key read as two little-endian words).
pub(crate) fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut blocks = data.chunks_exact(8);
    for block in &mut blocks {
        let mut word = [0u8; 8];
        word.copy_from_slice(block);
        let m = u64::from_le_bytes(word);
        v[3] ^= m;
        for _ in 0..C {
            round(&mut v);
        }
        v[0] ^= m;
    }
    // The last block: the remaining bytes, zero padded, with the length's low byte on top.
    let rest = blocks.remainder();
    let mut word = [0u8; 8];
    word[..rest.len()].copy_from_slice(rest);
    word[7] = data.len() as u8;
    let m = u64::from_le_bytes(word);
    v[3] ^= m;
    for _ in 0..C {
        round(&mut v);
    }
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// SipRound.
#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Key 00 01 .. 0f, as two little-endian words.
    const K0: u64 = 0x0706_0504_0302_0100;
    const K1: u64 = 0x0f0e_0d0c_0b0a_0908;

    fn counting(n: usize) -> Vec<u8> {
        (0..n as u8).collect()
    }

    #[test]
    fn siphash_2_4_matches_the_papers_vectors() {
        // From the reference implementation's vectors: message 00 01 .. (n-1), key above.
        let vectors: [(usize, u64); 6] = [
            (0, 0x726f_db47_dd0e_0e31),
            (1, 0x74f8_39c5_93dc_67fd),
            (7, 0xab02_00f5_8b01_d137),
            (8, 0x93f5_f579_9a93_2462),
            (15, 0xa129_ca61_49be_45e5), // the paper's Appendix A example
            (63, 0x958a_324c_eb06_4572),
        ];
        for (n, want) in vectors {
            assert_eq!(siphash::<2, 4>(K0, K1, &counting(n)), want, "length {n}");
        }
    }

    #[test]
    fn siphash_1_3_matches_published_vectors() {
        // Published as the big-endian bytes of the u64.
        let be = |hex: &str| u64::from_str_radix(hex, 16).expect("hex");
        assert_eq!(siphash::<1, 3>(K0, K1, b""), be("abac0158050fc4dc"));
        assert_eq!(siphash::<1, 3>(K0, K1, b"siphash"), be("d5518fe19f28c745"));
        assert_eq!(
            siphash::<1, 3>(K0, K1, b"digest-sip_hash"),
            be("71783f159400d4b5")
        );
        assert_eq!(siphash::<1, 3>(0, 0, b""), be("d1fba762150c532c"));
        assert_eq!(siphash::<1, 3>(0, 0, b"siphash"), be("8264ceeccb16bcbe"));
    }

    #[test]
    #[allow(deprecated)] // std's SipHasher is SipHash-2-4, kept for exactly this kind of use
    fn siphash_2_4_agrees_with_std_for_every_length() {
        use std::hash::Hasher;
        for n in 0..80 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let mut h = std::hash::SipHasher::new_with_keys(0x1234, 0xfeed_beef);
            h.write(&data);
            assert_eq!(
                siphash::<2, 4>(0x1234, 0xfeed_beef, &data),
                h.finish(),
                "length {n}"
            );
        }
    }
}
