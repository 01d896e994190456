//! Randomness, which is always the caller's.
//!
//! This crate reads no entropy source of its own. Everything random in the
//! protocol (the handshake's ephemeral keys, the client's sender index) is
//! drawn from the [`Entropy`] the caller passes in: drivers pass the operating
//! system's generator, tests a seeded one, so a test replays a handshake byte
//! for byte.

/// The caller's random source could not deliver: our side's failure, never
/// the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the random source failed")]
pub struct EntropyError;

/// A source of unpredictable bytes.
///
/// In production it must be a cryptographically secure generator: handshake
/// ephemeral keys come from it. A deterministic one is for tests only.
pub trait Entropy {
    /// Fills `dest` entirely with fresh random bytes.
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError>;

    /// Four fresh random bytes as a number.
    fn next_u32(&mut self) -> Result<u32, EntropyError> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_ne_bytes(b))
    }
}

impl<E: Entropy + ?Sized> Entropy for &mut E {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        (**self).fill(dest)
    }
}

impl<E: Entropy + ?Sized> Entropy for Box<E> {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        (**self).fill(dest)
    }
}

/// Hands snow exactly one ephemeral key, drawn from the caller's
/// [`Entropy`], as the only randomness it can draw; everything else comes
/// from snow's default resolver.
pub(crate) mod snow_rng {
    use snow::params::{CipherChoice, DHChoice, HashChoice};
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    use snow::types::{Cipher, Dh, Hash, Random};

    /// Bytes of an X25519 private key.
    pub(crate) const EPHEMERAL_LEN: usize = 32;

    /// A resolver whose random source yields `ephemeral` once.
    pub(crate) struct OneEphemeral(pub(crate) [u8; EPHEMERAL_LEN]);

    impl CryptoResolver for OneEphemeral {
        fn resolve_rng(&self) -> Option<Box<dyn Random>> {
            Some(Box::new(Once(Some(self.0))))
        }

        fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
            DefaultResolver.resolve_dh(choice)
        }

        fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
            DefaultResolver.resolve_hash(choice)
        }

        fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
            DefaultResolver.resolve_cipher(choice)
        }
    }

    /// Yields its key to the first request for exactly that many bytes and
    /// fails every other request: IKpsk2 draws one ephemeral key per side,
    /// so anything else would be snow using randomness we did not plan for.
    struct Once(Option<[u8; EPHEMERAL_LEN]>);

    impl Random for Once {
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
            match self.0.take() {
                Some(key) if dest.len() == key.len() => {
                    dest.copy_from_slice(&key);
                    Ok(())
                }
                _ => Err(snow::Error::Rng),
            }
        }
    }
}
