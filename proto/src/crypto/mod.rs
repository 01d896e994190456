//! The per-packet AEAD, keyed from the handshake.
//!
//! Each direction has its own key, so a counter is used with a key only once
//! even though both peers count from zero. The 96-bit nonce is four zero bytes
//! followed by the 64-bit counter. Sealing and opening work in place in the
//! caller's buffer: the driver's receive buffer is where the plaintext ends up.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::hkdf;

use crate::wire::transport::TAG_LEN;

/// Which AEAD protects transport frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Cipher {
    /// AES-256-GCM: the fastest where the CPU has AES instructions.
    #[default]
    Aes256Gcm = 1,
    /// ChaCha20-Poly1305: constant-time and fast without AES instructions.
    ChaCha20Poly1305 = 2,
}

impl Cipher {
    /// Parses the wire id; `None` for unknown ids.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Cipher::Aes256Gcm),
            2 => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// Parses a config-file name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "aes-256-gcm" => Some(Cipher::Aes256Gcm),
            "chacha20-poly1305" => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// A sealed frame failed to open: forged, corrupted, or keyed for another session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AuthError;

/// One direction's AEAD key.
pub struct DataKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").finish_non_exhaustive()
    }
}

impl DataKey {
    /// Derives a key from one half of the Noise split, bound by HKDF to the
    /// cipher, so the same handshake secret never keys two algorithms.
    pub fn derive(cipher: Cipher, split_key: &[u8; 32]) -> Self {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"ringway data v1");
        let prk = salt.extract(split_key);
        let info = [cipher as u8];
        let info_parts = [&info[..]];
        let okm = prk.expand(&info_parts, cipher.algorithm()).expect(
            "HKDF output length equals the AEAD key length, which HKDF-SHA256 can always produce",
        );
        DataKey {
            key: LessSafeKey::new(UnboundKey::from(okm)),
        }
    }

    /// Encrypts `in_out` in place and writes the tag into `tag_out`.
    pub fn seal(&self, counter: u64, aad: &[u8], in_out: &mut [u8], tag_out: &mut [u8; TAG_LEN]) {
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), in_out)
            .expect("ring refuses only inputs over 2^36 bytes; frames are at most 64 KiB");
        tag_out.copy_from_slice(tag.as_ref());
    }

    /// Decrypts `in_out` (ciphertext followed by the tag) in place, returning the
    /// plaintext length.
    pub fn open(&self, counter: u64, aad: &[u8], in_out: &mut [u8]) -> Result<usize, AuthError> {
        self.key
            .open_in_place(nonce(counter), Aad::from(aad), in_out)
            .map(|p| p.len())
            .map_err(|_| AuthError)
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_both_ciphers() {
        for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            let k = DataKey::derive(cipher, &[7u8; 32]);
            let mut buf = b"hello tunnel".to_vec();
            let mut tag = [0u8; TAG_LEN];
            k.seal(5, b"hdr", &mut buf, &mut tag);
            assert_ne!(&buf, b"hello tunnel");
            buf.extend_from_slice(&tag);
            let n = k.open(5, b"hdr", &mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello tunnel");
        }
    }

    #[test]
    fn wrong_counter_aad_or_key_fails() {
        let k = DataKey::derive(Cipher::Aes256Gcm, &[1u8; 32]);
        let mut buf = vec![0u8; 10];
        let mut tag = [0u8; TAG_LEN];
        k.seal(1, b"a", &mut buf, &mut tag);
        buf.extend_from_slice(&tag);
        assert!(k.open(2, b"a", &mut buf.clone()).is_err());
        assert!(k.open(1, b"b", &mut buf.clone()).is_err());
        let other = DataKey::derive(Cipher::Aes256Gcm, &[2u8; 32]);
        assert!(other.open(1, b"a", &mut buf.clone()).is_err());
        // Same secret, other cipher: HKDF binds the algorithm, so no cross-use.
        let cc = DataKey::derive(Cipher::ChaCha20Poly1305, &[1u8; 32]);
        assert!(cc.open(1, b"a", &mut buf.clone()).is_err());
    }

    #[test]
    fn cipher_names_and_ids() {
        for c in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            assert_eq!(Cipher::from_name(c.name()), Some(c));
            assert_eq!(Cipher::from_u8(c as u8), Some(c));
        }
        assert_eq!(Cipher::from_u8(0), None);
        assert_eq!(Cipher::from_name("rot13"), None);
    }
}
