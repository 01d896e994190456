//! The only place in this crate that calls into libc.
//!
//! The workspace denies `unsafe_code`; the harness needs a few syscalls that std does not offer
//! (entering a network namespace per thread, sending a signal other than SIGKILL, reading the
//! effective uid, catching Ctrl-C). Keeping them here, each behind a safe wrapper, keeps the unsafe surface
//! small enough to argue about line by line.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// Moves the *calling thread* into the network namespace that `ns` refers to.
///
/// `setns(CLONE_NEWNET)` only changes the calling thread's namespace, which is why the transfer
/// helpers call it on dedicated threads and never on the test's main thread.
pub(crate) fn enter_netns(ns: &File) -> io::Result<()> {
    // SAFETY: `setns` takes a file descriptor and a flag, no pointers. The descriptor is valid for
    // the whole call because `ns` is a live borrowed `File`, and the kernel does not keep it
    // after returning. A wrong kind of file is reported as EINVAL, not undefined behaviour.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `signal` to the process `pid`.
///
/// Callers must only pass the PID of a child they spawned and have not yet reaped: until it is
/// reaped the PID cannot be recycled, so the signal cannot hit an unrelated process.
pub(crate) fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: `kill` takes two integers and touches no memory of ours; invalid PIDs or signals
    // come back as an error code. Which process receives the signal is a logic concern that the
    // caller upholds (see above), not a memory-safety one.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the process runs with an effective uid of 0 (needed for `ip netns` and TUN devices).
pub(crate) fn is_root() -> bool {
    // SAFETY: `geteuid` has no arguments and no preconditions, and POSIX says it always succeeds.
    unsafe { libc::geteuid() == 0 }
}

/// Set by [`on_interrupt`]; read through [`interrupted`].
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Replaces the default "terminate now" action of SIGINT and SIGTERM with setting a flag, so
/// that a long-running caller can unwind and run its guards' destructors instead of leaking
/// namespaces. Handlers (unlike ignored signals) are reset by `exec`, so children still get
/// the default behaviour.
pub(crate) fn catch_interrupts() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only performs an atomic store, which is async-signal-safe, and it
        // is a plain `extern "C" fn` that lives for the whole program. On Linux/glibc `signal`
        // installs it with BSD semantics (SA_RESTART, handler kept after delivery).
        let previous = unsafe { libc::signal(signal, handler) };
        if previous == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
