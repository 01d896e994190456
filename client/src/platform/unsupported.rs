//! Stand-ins for platforms without TUN support: the API compiles, creating a
//! device fails with a clear error, and nothing else can be reached.

use std::convert::Infallible;
use std::io;

use ringway_proto::SessionConfig;

use super::TunError;

/// A TUN device that cannot exist here: its only field is uninhabited.
#[derive(Debug)]
pub struct TunDevice(Infallible);

impl TunDevice {
    /// Always [`TunError::Unsupported`].
    pub fn create(_name: &str) -> Result<TunDevice, TunError> {
        Err(TunError::Unsupported(std::env::consts::OS))
    }

    /// Unreachable: no `TunDevice` can be made.
    pub fn name(&self) -> &str {
        match self.0 {}
    }

    /// Unreachable: no `TunDevice` can be made.
    pub async fn read(&self, _buf: &mut [u8]) -> io::Result<usize> {
        match self.0 {}
    }

    /// Unreachable: no `TunDevice` can be made.
    pub async fn write(&self, _packet: &[u8]) -> io::Result<()> {
        match self.0 {}
    }
}

/// Always [`TunError::Unsupported`].
pub fn configure(_name: &str, _config: &SessionConfig) -> Result<(), TunError> {
    Err(TunError::Unsupported(std::env::consts::OS))
}

/// Always [`TunError::Unsupported`].
pub fn delete_link(_name: &str) -> Result<(), TunError> {
    Err(TunError::Unsupported(std::env::consts::OS))
}
