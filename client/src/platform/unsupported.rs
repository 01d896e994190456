//! Stand-ins for platforms without TUN support: the API compiles, creating a
//! device fails with a clear error, and nothing else can be reached.

use std::convert::Infallible;
use std::io;
use std::net::Ipv4Addr;

use super::{Offload, Offloads, TunError};
use crate::routes::{OutsidePath, Route, RouteOps};

/// A TUN device that cannot exist here: its only field is uninhabited.
#[derive(Debug)]
pub struct TunDevice(Infallible);

impl TunDevice {
    /// Always [`TunError::Unsupported`].
    pub fn create(_name: &str, _offload: Offload) -> Result<TunDevice, TunError> {
        Err(TunError::Unsupported(std::env::consts::OS))
    }

    /// Unreachable: no `TunDevice` can be made.
    pub fn name(&self) -> &str {
        match self.0 {}
    }

    /// Unreachable: no `TunDevice` can be made.
    pub fn offloads(&self) -> Offloads {
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

/// Routes cannot be changed here: every call is [`TunError::Unsupported`].
#[derive(Debug, Default)]
pub struct SystemRoutes;

impl RouteOps for SystemRoutes {
    fn lookup(&mut self, _dst: Ipv4Addr) -> Result<OutsidePath, TunError> {
        Err(TunError::Unsupported(std::env::consts::OS))
    }

    fn add(&mut self, _route: &Route) -> Result<(), TunError> {
        Err(TunError::Unsupported(std::env::consts::OS))
    }

    fn delete(&mut self, _route: &Route) -> Result<(), TunError> {
        Err(TunError::Unsupported(std::env::consts::OS))
    }
}

/// No special meaning here.
pub fn is_eio(_: &io::Error) -> bool {
    false
}

/// No special meaning here.
pub fn is_no_buffer_space(_: &io::Error) -> bool {
    false
}
