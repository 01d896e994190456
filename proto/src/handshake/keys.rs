//! Static X25519 keys.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// Bytes in a public or secret key.
pub const KEY_LEN: usize = 32;

/// A static X25519 secret key. Its `Debug` never prints the key.
#[derive(Clone)]
pub struct SecretKey([u8; KEY_LEN]);

/// A static X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

/// A secret key with its public half.
#[derive(Debug, Clone)]
pub struct Keypair {
    /// Keep this one private.
    pub secret: SecretKey,
    /// Give this one out.
    pub public: PublicKey,
}

impl SecretKey {
    /// A key from 32 bytes; the caller supplies randomness (this crate reads no
    /// entropy source), or bytes read back from a key file.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        // Clamp as X25519 does, so what we store is what the DH actually uses.
        let clamped = x25519_dalek::StaticSecret::from(bytes).to_bytes();
        SecretKey(clamped)
    }

    /// The raw key, for writing to a key file.
    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.0
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl PublicKey {
    /// A public key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// A public key from a slice, if it is 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(PublicKey(bytes.try_into().ok()?))
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// A key in a config file was not 32 bytes of standard base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 32 bytes of base64")]
pub struct KeyParseError;

fn parse_b64(s: &str) -> Result<[u8; KEY_LEN], KeyParseError> {
    let v = B64.decode(s.trim()).map_err(|_| KeyParseError)?;
    v.try_into().map_err(|_| KeyParseError)
}

/// Parses a 32-byte value (a key or a PSK) from base64, as config files hold them.
pub fn key_from_base64(s: &str) -> Result<[u8; KEY_LEN], KeyParseError> {
    parse_b64(s)
}

/// Encodes a 32-byte value as base64 for a config file.
pub fn key_to_base64(k: &[u8; KEY_LEN]) -> String {
    B64.encode(k)
}

impl SecretKey {
    /// Parses a base64 secret key from a config or key file.
    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        parse_b64(s).map(SecretKey::from_bytes)
    }

    /// Base64 for a key file; handle the result as a secret.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, KeyParseError> {
        parse_b64(s).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&B64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

impl Keypair {
    /// A keypair from 32 random bytes.
    pub fn from_random(bytes: [u8; KEY_LEN]) -> Self {
        let secret = SecretKey::from_bytes(bytes);
        let public = secret.public_key();
        Keypair { secret, public }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        let k = Keypair::from_random([5u8; 32]);
        let text = k.public.to_string();
        assert_eq!(text.parse::<PublicKey>(), Ok(k.public));
        let s = SecretKey::from_base64(&k.secret.to_base64()).unwrap();
        assert_eq!(s.public_key(), k.public);
        assert_eq!("AAAA".parse::<PublicKey>(), Err(KeyParseError));
        assert_eq!(key_from_base64("not base64!"), Err(KeyParseError));
        assert_eq!(key_from_base64(&key_to_base64(&[3u8; 32])), Ok([3u8; 32]));
    }
}
