//! The TUN ioctls: the crate's only unsafe code.
//!
//! Four calls on a descriptor we opened on `/dev/net/tun`. None of them leaves the kernel
//! holding memory of ours after it returns: each reads (and `TUNSETIFF` writes back) a local
//! value for the duration of the call, or takes a plain integer. Opening the device, reads and
//! writes go through `std::fs::File` and need no unsafe at all.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use libc::{c_int, c_short, c_ulong};

/// `TUNSETIFF`: attaches `file` to the TUN `name` (creating it if needed) with `flags`
/// (`IFF_TUN | IFF_NO_PI | ...`), and returns the name the kernel gave it.
///
/// `name` must be at most `IFNAMSIZ - 1` bytes without NUL ([`crate::check_name`]), so the
/// copy below always leaves the terminating NUL in place.
pub(crate) fn set_iff(file: &File, name: &str, flags: c_short) -> io::Result<String> {
    debug_assert!(name.len() < libc::IFNAMSIZ && !name.contains('\0'));
    // SAFETY: `ifreq` is plain old data: byte arrays and a union of integers, byte arrays,
    // socket addresses and one pointer, for all of which all-zero bytes are a valid value
    // (the pointer member is null and never read here).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF copies one `struct ifreq` in from the pointer and, on success, one
    // back out (the device's name). `req` is a live, aligned, exclusively borrowed local of
    // exactly that type for the whole call, and the kernel keeps no reference to it after
    // returning. The descriptor is open: it is borrowed from `file`.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::TUNSETIFF,
            &mut req as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `TUNSETOFFLOAD flags`: which `TUN_F_*` work the kernel may leave to us.
pub(crate) fn set_offload(file: &File, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of `TUN_F_*` bits),
    // not a pointer: the kernel reads no memory of ours. Unknown bits are refused with EINVAL.
    // The descriptor is open: it is borrowed from `file`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETOFFLOAD, c_ulong::from(flags)) };
    check(rc)
}

/// `TUNSETVNETHDRSZ len`: the `virtio_net_hdr` length in front of each packet.
pub(crate) fn set_vnet_hdr_len(file: &File, len: usize) -> io::Result<()> {
    let len = c_int::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    set_int(file, libc::TUNSETVNETHDRSZ, len)
}

/// `TUNSETVNETLE 1`: the header's fields in little-endian byte order on every host.
pub(crate) fn set_vnet_le(file: &File) -> io::Result<()> {
    set_int(file, libc::TUNSETVNETLE, 1)
}

/// An ioctl that reads one `int` through its pointer argument.
fn set_int(file: &File, request: libc::Ioctl, value: c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ and TUNSETVNETLE (the only requests passed here) read one `int`
    // from the pointer (`get_user`) during the call and keep nothing. `value` is a live local
    // of that type until the call returns. The descriptor is open: it is borrowed from `file`.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, &value as *const c_int) };
    check(rc)
}

fn check(rc: c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
