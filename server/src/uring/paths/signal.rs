//! The read that says "stop": one `signalfd_siginfo` read from the signal
//! descriptor (or, in tests, any readable descriptor).
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::os::fd::RawFd;

use io_uring::{opcode, types};

use super::super::context::{Context, Io};
use super::super::kernel_box::KernelBox;
use super::super::slots::{Completion, Request};
use super::super::user_data::{Path, UserData};

/// The signal read.
#[derive(Debug)]
pub(in crate::uring) struct SignalRead {
    fd: RawFd,
    /// The kernel writes the signal's details here.
    info: KernelBox<UnsafeCell<libc::signalfd_siginfo>>,
    request: Request,
}

impl SignalRead {
    /// An idle read on `fd`.
    pub fn new(fd: RawFd) -> Self {
        // SAFETY: signalfd_siginfo is a plain C struct; all-zero is valid.
        let zero: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        SignalRead {
            fd,
            info: KernelBox::new(Box::new(UnsafeCell::new(zero))),
            request: Request::default(),
        }
    }

    /// Arms the read.
    pub fn arm(&mut self, io: &mut Io) {
        let ud = self.request.arm(Path::Signal, 0);
        let len = std::mem::size_of::<libc::signalfd_siginfo>() as u32;
        let e = opcode::Read::new(types::Fd(self.fd), self.info.get().get().cast(), len)
            .build()
            .user_data(ud.encode());
        // SAFETY: the siginfo is an UnsafeCell in a KernelBox (fixed address,
        // freed only once the ring holds no request, or leaked), read by us
        // only after this read's completion.
        unsafe { io.queue.push(e) };
    }

    /// The read completed: `Some(signal number)` if the server should stop
    /// (the number means nothing when the descriptor is not a signalfd, and a
    /// descriptor that reached end of file stops the server too).
    pub fn on_complete(&mut self, ctx: &mut Context, c: &Completion) -> Option<u32> {
        if !self.request.complete(c) {
            ctx.io.counters.stale_completions += 1;
            return None;
        }
        if ctx.stopping {
            return None;
        }
        if c.res < 0 {
            self.arm(&mut ctx.io);
            return None;
        }
        // SAFETY: the read into `info` completed (checked above) and is not
        // re-armed: the kernel is done writing it.
        let signo = unsafe { (*self.info.get().get()).ssi_signo };
        Some(signo)
    }

    /// Forgets a read taken back from the backlog unsubmitted.
    pub fn forget(&mut self, ud: UserData) -> bool {
        self.request.forget(ud)
    }

    /// Never free the siginfo: the kernel may still write it.
    pub fn leak(&mut self) {
        self.info.leak();
    }
}
