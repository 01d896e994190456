//! The tick: once a second, the session timers (keepalives, expiry) and the
//! TCP deadlines run.
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::super::context::{Context, Io};
use super::super::kernel_box::KernelBox;
use super::super::slots::{Completion, Request};
use super::super::user_data::{Path, UserData};
use super::send_control;
use super::tcp::{CloseReason, TcpPath};
use crate::sessions::{Outside, TimerOutput};

/// How often session timers and TCP deadlines run; both are whole seconds.
pub(in crate::uring) const TICK: Duration = Duration::from_secs(1);

/// A one-shot timeout, re-armed after each tick.
#[derive(Debug)]
pub(in crate::uring) struct Timer {
    /// The kernel reads this for as long as the timeout is armed.
    interval: KernelBox<types::Timespec>,
    request: Request,
    /// Sessions that ended this tick (kept to reuse its allocation).
    ended: Vec<Outside>,
}

impl Timer {
    /// An idle timer.
    pub fn new() -> Self {
        Timer {
            interval: KernelBox::new(Box::new(types::Timespec::from(TICK))),
            request: Request::default(),
            ended: Vec::new(),
        }
    }

    /// Arms the next tick.
    pub fn arm(&mut self, io: &mut Io) {
        let ud = self.request.arm(Path::Timer, 0);
        let e = opcode::Timeout::new(self.interval.get())
            .build()
            .user_data(ud.encode());
        // SAFETY: the timespec is in a KernelBox, never written after
        // creation, and freed only once the ring holds no request (or leaked).
        unsafe { io.queue.push(e) };
    }

    /// The tick: run the timers, send what they ask, close what ended.
    pub fn on_complete(
        &mut self,
        ctx: &mut Context,
        tcp: &mut TcpPath,
        c: &Completion,
        now: Instant,
    ) {
        if !self.request.complete(c) {
            ctx.io.counters.stale_completions += 1;
            return;
        }
        if ctx.stopping {
            return;
        }
        let ended = &mut self.ended;
        let io = &mut ctx.io;
        ctx.sessions.handle_timers(now, |out| match out {
            TimerOutput::Send(to, frame) => send_control(io, tcp, to, frame),
            TimerOutput::Ended(to) => ended.push(to),
        });
        for to in ended.drain(..) {
            if let Outside::Tcp(id) = to {
                tcp.close(ctx, id, CloseReason::SessionEnd);
            }
        }
        tcp.tick(ctx, now);
        self.arm(&mut ctx.io);
    }

    /// The timeout in flight, to cancel at shutdown.
    pub fn in_flight(&self) -> Option<UserData> {
        self.request.in_flight(Path::Timer, 0)
    }

    /// Forgets a timeout taken back from the backlog unsubmitted.
    pub fn forget(&mut self, ud: UserData) -> bool {
        self.request.forget(ud)
    }

    /// Never free the timespec: the kernel may still read it.
    pub fn leak(&mut self) {
        self.interval.leak();
    }
}
