//! Shutdown signals as a file descriptor the loop can read (a completion in the io_uring
//! loop, a readiness event in the tokio one).
//!
//! SIGINT and SIGTERM are blocked for the thread and delivered through a
//! signalfd instead, so the request to stop arrives as one more completion in
//! the loop; no signal handler runs and no syscall is interrupted mid-packet.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Blocks SIGINT/SIGTERM on this thread and returns a signalfd for them.
///
/// Call before any other thread is spawned so they inherit the mask.
pub fn shutdown_signalfd() -> io::Result<OwnedFd> {
    // SAFETY: `set` is a plain C struct we own on the stack; sigemptyset and
    // sigaddset only write into it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    };
    // SAFETY: `set` is initialised above; passing null for the old mask is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `set` is initialised; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
