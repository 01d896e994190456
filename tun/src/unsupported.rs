//! Stand-ins for platforms without TUN support in ringway: the API compiles, creating a
//! device fails with [`TunError::Unsupported`], and no `Tun` can exist.

use std::convert::Infallible;
use std::io;

use crate::{LinkConfig, Offloads, TunError, TunOptions};

/// A TUN device that cannot exist here: its only field is uninhabited.
#[derive(Debug)]
pub struct Tun(Infallible);

impl Tun {
    /// Always [`TunError::Unsupported`].
    pub fn create(_name: &str, _options: &TunOptions) -> Result<Tun, TunError> {
        Err(TunError::Unsupported(std::env::consts::OS))
    }

    /// Unreachable: no `Tun` can be made.
    pub fn name(&self) -> &str {
        match self.0 {}
    }

    /// Unreachable: no `Tun` can be made.
    pub fn offloads(&self) -> &Offloads {
        match self.0 {}
    }

    /// Unreachable: no `Tun` can be made.
    pub fn read(&self, _buf: &mut [u8]) -> io::Result<usize> {
        match self.0 {}
    }

    /// Unreachable: no `Tun` can be made.
    pub fn write(&self, _packet: &[u8]) -> io::Result<usize> {
        match self.0 {}
    }

    /// Unreachable: no `Tun` can be made.
    pub fn configure(&self, _link: &LinkConfig) -> Result<(), TunError> {
        match self.0 {}
    }
}
