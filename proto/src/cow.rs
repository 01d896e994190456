//! [`CowBytes`]: a send buffer that copies only when the data must outlive the call.

use bytes::Bytes;
use std::ops::Deref;

/// Bytes handed to a send path.
///
/// A driver that can finish with the data before returning (a synchronous send,
/// a copy into a kernel-owned slot) takes the borrowed form and never allocates;
/// one that must queue the data past the call (a TCP send queue waiting for the
/// kernel) calls [`CowBytes::into_owned`], which copies only a borrowed slice and
/// moves an already-owned `Bytes` for free.
#[derive(Debug, Clone)]
pub enum CowBytes<'a> {
    /// Data the caller keeps alive for the duration of the call only.
    Borrowed(&'a [u8]),
    /// Reference-counted data that may be kept for as long as needed.
    Owned(Bytes),
}

impl CowBytes<'_> {
    /// The bytes, whichever form holds them.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            CowBytes::Borrowed(b) => b,
            CowBytes::Owned(b) => b,
        }
    }

    /// Owned bytes that may outlive the borrow: a copy for `Borrowed`, a move for `Owned`.
    pub fn into_owned(self) -> Bytes {
        match self {
            CowBytes::Borrowed(b) => Bytes::copy_from_slice(b),
            CowBytes::Owned(b) => b,
        }
    }

    /// Whether [`CowBytes::into_owned`] would be free.
    pub fn is_owned(&self) -> bool {
        matches!(self, CowBytes::Owned(_))
    }
}

impl Deref for CowBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<'a> From<&'a [u8]> for CowBytes<'a> {
    fn from(b: &'a [u8]) -> Self {
        CowBytes::Borrowed(b)
    }
}

impl From<Bytes> for CowBytes<'_> {
    fn from(b: Bytes) -> Self {
        CowBytes::Owned(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_into_owned_shares_the_allocation() {
        let b = Bytes::from_static(b"packet");
        let ptr = b.as_ptr();
        let cow = CowBytes::from(b);
        assert!(cow.is_owned());
        assert_eq!(cow.into_owned().as_ptr(), ptr);
    }

    #[test]
    fn borrowed_into_owned_copies() {
        let data = [1u8, 2, 3];
        let cow = CowBytes::from(&data[..]);
        assert!(!cow.is_owned());
        assert_eq!(&*cow, &data);
        let owned = cow.into_owned();
        assert_eq!(&owned[..], &data);
        assert_ne!(owned.as_ptr(), data.as_ptr());
    }
}
