//! Ringway's TUN device, shared by the server and the client.
//!
//! What it does, once at start: create a TUN by name (`IFF_TUN | IFF_NO_PI`), optionally with
//! `IFF_VNET_HDR` and the kernel's offloads ([`Offload::Auto`]: checksum, TSO4/6, and USO4/6
//! where the kernel has them), blocking or not; give it an address, MTU, queue length and bring
//! it up with iproute2's `ip` ([`link`]); and say in one typed [`TunError`] what went wrong and
//! what the operator can do about it.
//!
//! What it does not do: move packets on a data path or parse them. [`Tun::read`] and
//! [`Tun::write`] are plain `read(2)`/`write(2)` of one packet (with its 10-byte
//! `virtio_net_hdr` in front when [`Offloads::vnet_hdr`] is on); the server's io_uring loop
//! uses the raw descriptor instead, and the client wraps it in tokio's `AsyncFd`. Splitting and
//! coalescing superpackets belongs to `ringway-offload`.
//!
//! Why not `tun-tap` or `tun-rs`: `tun-tap` cannot open a TUN with `IFF_VNET_HDR`; `tun-rs`
//! can, but creates `/dev/net/tun` with `mknod` when it is missing (hiding the "no TUN support"
//! error an operator needs, and writing into a container's `/dev`), fails the whole open when
//! the kernel refuses TSO instead of falling back, and adopts descriptors only without offload
//! state. The four ioctls we need live in `sys.rs`, the crate's only unsafe code.
//!
//! Linux only: elsewhere every constructor fails with [`TunError::Unsupported`], so a portable
//! caller (the client library) still builds.

#[cfg(target_os = "linux")]
mod device;
mod error;
pub mod ip;
pub mod link;
mod name;
// The negotiation in it is used by the Linux device only, and kept portable so that its
// tests run anywhere.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod offload;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(not(target_os = "linux"))]
mod unsupported;

#[cfg(target_os = "linux")]
pub use device::Tun;
pub use error::TunError;
pub use link::LinkConfig;
pub use name::{check_name, MAX_NAME_LEN};
pub use offload::{Offload, OffloadStep, Offloads, Refused, UnknownOffload, VNET_HDR_LEN};
#[cfg(not(target_os = "linux"))]
pub use unsupported::Tun;

/// How to open the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunOptions {
    /// Whether to ask for `IFF_VNET_HDR` and offloads.
    pub offload: Offload,
    /// Blocking reads and writes. The server's io_uring loop and the client's tokio reactor
    /// both want non-blocking: a read with nothing waiting fails with `WouldBlock`.
    pub blocking: bool,
}
