//! The tick: once a second, as in the io_uring loop, the session timers (keepalives,
//! expiry) and the TCP deadlines run, and every 30 s the counters go to the debug log.

use std::time::{Duration, Instant};

use super::core::{Core, Shared};
use super::tcp::CloseReason;
use crate::sessions::{Outside, TimerOutput};

/// How often session timers and TCP deadlines run; both are whole seconds.
const TICK: Duration = Duration::from_secs(1);

/// How often the counters are logged (at debug level).
const STATS_EVERY: Duration = Duration::from_secs(30);

/// Ticks until the loop ends.
pub(super) async fn tick_loop(shared: Shared) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ended = Vec::new();
    let mut stats_at = Instant::now();
    loop {
        interval.tick().await;
        let now = Instant::now();
        let mut core = shared.borrow_mut();
        tick(&mut core, now, &mut ended);
        if now.duration_since(stats_at) >= STATS_EVERY {
            stats_at = now;
            tracing::debug!(sessions = core.sessions.len(), counters = %core.sessions.counters, io = %core.counters, "stats");
        }
    }
}

/// One tick: keepalives out, ended sessions' connections closed, TCP deadlines enforced.
fn tick(core: &mut Core, now: Instant, ended: &mut Vec<Outside>) {
    let Core {
        sessions,
        counters,
        udp,
        tcp,
        ..
    } = core;
    sessions.handle_timers(now, |out| match out {
        TimerOutput::Send(Outside::Udp(to), frame) => {
            if let Some(u) = udp {
                u.try_send_to(frame, to, counters);
            }
        }
        TimerOutput::Send(Outside::Tcp(id), frame) => tcp.send_unprefixed(id, frame, counters),
        TimerOutput::Ended(to) => ended.push(to),
    });
    for to in ended.drain(..) {
        if let Outside::Tcp(id) = to {
            tcp.close(id, CloseReason::SessionEnd, sessions, counters);
        }
    }
    tcp.close_pending(sessions, counters);
    tcp.tick(now, sessions, counters);
}
