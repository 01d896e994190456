//! The only place in this crate that calls into libc: the open-file limit.
//!
//! Every UDP session is a socket of its own (its own source port, as real clients have), so
//! ten thousand sessions need ten thousand descriptors, more than the usual soft limit of
//! 1024. std has no way to raise it.
#![allow(unsafe_code)]

use std::io;

/// Raises the soft limit on open descriptors to the hard limit; returns the limit now in
/// force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through the pointer, which points at `lim`, a
    // live, properly aligned local of exactly that type, for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= lim.rlim_max {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `setrlimit` only reads one `rlimit` through the pointer, which points at
    // `raised`, a live local of that type. Raising the soft limit up to the hard one needs no
    // privilege and affects only this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(raised.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_is_idempotent() {
        let first = raise_nofile_limit().unwrap();
        assert!(first > 0);
        assert_eq!(raise_nofile_limit().unwrap(), first);
    }
}
