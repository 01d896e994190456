//! Everything that differs between operating systems: creating, configuring
//! and removing the TUN device, and adding and removing routes.
//!
//! Each platform module offers the same items: `TunDevice` (create, name, async
//! read and write of whole packets), `configure` (address, MTU, up),
//! `reconfigure` (a new session's address or MTU), `delete_link`, the two
//! error codes the drivers treat specially (`is_eio`, `is_no_buffer_space`), and
//! `SystemRoutes` (the [`RouteOps`](crate::routes::RouteOps) that
//! [`RouteTable`](crate::routes::RouteTable) uses). Linux is implemented;
//! elsewhere the same API compiles and fails with [`TunError::Unsupported`],
//! so the library (config, tunnel, driver, supervisor) still builds and runs
//! with a non-TUN inside.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::{
    configure, delete_link, is_eio, is_no_buffer_space, reconfigure, SystemRoutes, TunDevice,
};

#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub use unsupported::{
    configure, delete_link, is_eio, is_no_buffer_space, reconfigure, SystemRoutes, TunDevice,
};

use std::io;

/// Why the TUN device could not be created or set up.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The kernel refused: creating network devices takes `CAP_NET_ADMIN`.
    #[error("creating TUN needs root or CAP_NET_ADMIN (try sudo)")]
    PermissionDenied,
    /// The TUN driver is not there.
    #[error("no /dev/net/tun: this system has no TUN support (try `modprobe tun`)")]
    NoTunDevice,
    /// Another process holds a device of that name.
    #[error("TUN device {name:?} is already in use (is another ringway running? set `tun_name`)")]
    Busy {
        /// The requested name.
        name: String,
    },
    /// Creating the device failed otherwise.
    #[error("cannot create TUN device {name:?}: {source}")]
    Create {
        /// The requested name.
        name: String,
        /// What the OS said.
        source: io::Error,
    },
    /// An address or route we were about to add is already there (left by
    /// another client, or by hand).
    #[error("{what} already exists (is another ringway running, or was it added by hand?)")]
    AlreadyExists {
        /// The address or route.
        what: String,
    },
    /// The system's state does not allow what was asked.
    #[error("{0}")]
    Invalid(String),
    /// A configuration command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr, or why it could not run.
        detail: String,
    },
    /// This OS has no TUN support in ringway yet.
    #[error("unsupported platform: ringway cannot create TUN devices on {0} yet")]
    Unsupported(&'static str),
}

impl TunError {
    /// Whether running with more privileges would help.
    pub fn is_permission(&self) -> bool {
        matches!(self, TunError::PermissionDenied)
    }

    /// Whether something of ours is already taken: the TUN name, an address
    /// or a route.
    pub fn is_in_use(&self) -> bool {
        matches!(self, TunError::Busy { .. } | TunError::AlreadyExists { .. })
    }

    /// Whether the system has no TUN driver.
    pub fn is_no_tun(&self) -> bool {
        matches!(self, TunError::NoTunDevice)
    }
}
