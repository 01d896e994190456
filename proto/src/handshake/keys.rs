//! Static X25519 keys.

use std::fmt;

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
