//! The only place in this crate that calls into libc.
//!
//! The workspace denies `unsafe_code`; the harness needs a few syscalls that std does not offer
//! (entering a network namespace per thread, sending a signal other than SIGKILL, reading the
//! effective uid, catching Ctrl-C, waiting for a child's exit with a timeout, the clock tick
//! of `/proc` CPU times). Keeping them here, each behind a safe wrapper, keeps the unsafe surface
//! small enough to argue about line by line.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// Sets the IPv4 options (`IP_OPTIONS`) every packet sent on `socket` carries.
pub(crate) fn set_ip_options(socket: &impl AsRawFd, options: &[u8]) -> io::Result<()> {
    let len = libc::socklen_t::try_from(options.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "options too long"))?;
    // SAFETY: setsockopt reads `len` bytes from `options`, a live slice of exactly that length;
    // the descriptor is valid for the call because `socket` is borrowed. A bad descriptor or
    // option comes back as an error code.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            options.as_ptr().cast(),
            len,
        )
    };
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

/// A descriptor that becomes readable when the process `pid` exits (Linux 5.3+).
///
/// Same rule as [`send_signal`]: `pid` must be an unreaped child of ours, so it names the
/// process we think it does; from then on the descriptor keeps naming it even after reaping.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: `pidfd_open(pid, flags)` takes two integers and returns a new descriptor or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "descriptor out of range"))?;
    // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns, so the
    // `OwnedFd` is its only owner and closes it exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits up to `limit` for `fd` (a pidfd) to become readable, i.e. for its process to exit;
/// `Ok(false)` on timeout.
pub(crate) fn wait_readable(fd: &OwnedFd, limit: Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // Round up, so a sub-millisecond rest still waits instead of spinning.
        let ms = libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a live, exclusively borrowed `pollfd` on our stack for the whole call
        // and we pass a count of exactly one; the kernel writes only its `revents` field.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        match rc {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Clock ticks per second, the unit of the CPU times in `/proc/<pid>/stat`.
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: `sysconf` takes an integer name and returns an integer; no memory is involved.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // USER_HZ is 100 on every Linux architecture; the fallback only guards a failed call.
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
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
