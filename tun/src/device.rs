//! The open TUN device (Linux): `/dev/net/tun` attached to a named interface.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{create_error, Stage};
use crate::offload::{self, OffloadIoctls};
use crate::{check_name, link, LinkConfig, Offload, Offloads, TunError, TunOptions};

/// An open TUN device. It is deleted when this, the only holder of its descriptor, drops
/// (unless someone made it persistent).
///
/// The descriptor ([`AsRawFd`], [`AsFd`]) stays open and names the same device for as long as
/// the `Tun` lives: the file is a private field that nothing replaces or closes early. That is
/// what a caller registering it elsewhere (io_uring, tokio's `AsyncFd`) relies on.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    offloads: Offloads,
}

impl Tun {
    /// Creates (or attaches to) the TUN `name`, down and without addresses, with
    /// `IFF_TUN | IFF_NO_PI`: no packet-information prefix.
    ///
    /// With [`Offload::Auto`] it also asks for `IFF_VNET_HDR` and the offloads
    /// ([`Offloads`] says which the kernel gave); if the kernel refuses TSO the device is
    /// reopened without the header, and [`Offloads::refused`] says why. With [`Offload::Off`]
    /// it clears any offload state a persistent device kept from an earlier owner, so that
    /// reads are single packets as promised.
    pub fn create(name: &str, options: &TunOptions) -> Result<Tun, TunError> {
        check_name(name).map_err(|reason| TunError::BadName {
            name: name.to_owned(),
            reason,
        })?;
        if options.offload == Offload::Auto {
            let mut tun = Tun::open(name, options.blocking, true)?;
            match offload::enable(&mut Ioctls(&tun.file)) {
                Ok(offloads) => {
                    tun.offloads = offloads;
                    return Ok(tun);
                }
                Err(refused) => {
                    tracing::debug!(tun = name, "{refused}; reopening without vnet_hdr");
                    // Closing the only descriptor deletes the device; the reopen creates it anew.
                    drop(tun);
                    let mut tun = Tun::open_plain(name, options.blocking)?;
                    tun.offloads.refused = Some(refused);
                    return Ok(tun);
                }
            }
        }
        Tun::open_plain(name, options.blocking)
    }

    /// Opens without `IFF_VNET_HDR`, with the device-wide offload mask cleared. The mask
    /// outlives a descriptor on a persistent device, and with it set the kernel would hand
    /// this header-less descriptor superpackets it cannot frame.
    fn open_plain(name: &str, blocking: bool) -> Result<Tun, TunError> {
        let tun = Tun::open(name, blocking, false)?;
        sys_result(name, crate::sys::set_offload(&tun.file, 0))?;
        Ok(tun)
    }

    fn open(name: &str, blocking: bool, vnet_hdr: bool) -> Result<Tun, TunError> {
        let mut options = OpenOptions::new();
        // std opens with O_CLOEXEC: `ip`, run right after, must not inherit the device.
        options.read(true).write(true);
        if !blocking {
            options.custom_flags(libc::O_NONBLOCK);
        }
        let file = options
            .open("/dev/net/tun")
            .map_err(|e| create_error(name, Stage::Open, e, || false))?;
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
        if vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        // The flags all fit the 16-bit `ifr_flags` (largest: IFF_VNET_HDR, 0x4000).
        let flags = flags as libc::c_short;
        let given = crate::sys::set_iff(&file, name, flags).map_err(|e| {
            create_error(name, Stage::SetIff, e, || {
                Path::new("/sys/class/net").join(name).exists()
            })
        })?;
        Ok(Tun {
            file,
            name: given,
            offloads: Offloads::OFF,
        })
    }

    /// The device's name, as the kernel gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the kernel enabled: whether reads and writes carry a `virtio_net_hdr`, and which
    /// segmentation offloads may produce superpackets.
    pub fn offloads(&self) -> &Offloads {
        &self.offloads
    }

    /// Reads one packet (with its header first if [`Offloads::vnet_hdr`]); `WouldBlock` in
    /// non-blocking mode when none is waiting. A packet longer than `buf` is truncated.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one packet (with its header first if [`Offloads::vnet_hdr`]): all of it or
    /// nothing, the kernel never takes part of a packet.
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }

    /// Gives the device its address, MTU and queue length and brings it up
    /// ([`link::configure`]).
    pub fn configure(&self, link: &LinkConfig) -> Result<(), TunError> {
        link::configure(&self.name, link)
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// A failed ioctl after the device exists.
fn sys_result<T>(name: &str, r: io::Result<T>) -> Result<T, TunError> {
    r.map_err(|source| TunError::Create {
        name: name.to_owned(),
        source,
    })
}

/// The real ioctls behind [`offload::enable`].
struct Ioctls<'a>(&'a File);

impl OffloadIoctls for Ioctls<'_> {
    fn set_vnet_hdr_len(&mut self, len: usize) -> io::Result<()> {
        crate::sys::set_vnet_hdr_len(self.0, len)
    }

    fn set_vnet_le(&mut self) -> io::Result<()> {
        crate::sys::set_vnet_le(self.0)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        crate::sys::set_offload(self.0, flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_name_is_refused_before_any_syscall() {
        for offload in [Offload::Auto, Offload::Off] {
            let e = Tun::create(
                "no/slashes",
                &TunOptions {
                    offload,
                    blocking: false,
                },
            )
            .unwrap_err();
            assert_eq!(
                e.to_string(),
                "bad TUN name \"no/slashes\": must not contain '/', ':', NUL or spaces"
            );
        }
    }
}
