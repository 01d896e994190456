//! The tokio backend (`--io tokio`): the server's data path on readiness (epoll) I/O, one
//! thread, for kernels or policies without io_uring and to measure what io_uring buys.
//!
//! It shares everything but the I/O driver with the io_uring loop: the session layer
//! ([`Sessions`]: handshakes, sealing, opening, routing, timers), the offload byte work
//! (`ringway_offload`: a [`Segmenter`](ringway_offload::batch::Segmenter) cuts TUN
//! superpackets, a [`Gro`](ringway_offload::batch::Gro) coalesces what goes to the TUN, the
//! same types the client uses), the TCP framing and send queue, the config and the counters
//! (the same `stopped` line). So a benchmark of `--io uring` against `--io tokio` measures
//! the I/O model, not two implementations of the protocol.
//!
//! The shape is tokio's, on a current-thread runtime: one task per I/O source, all on one
//! thread, sharing one [`Core`](core::Core) through an `Rc<RefCell<_>>` that no task holds
//! across an `.await`, so each step (a TUN read sealed, a receive batch opened and written)
//! runs to completion as one io_uring completion does.
//!
//! - `tun`: reads from the TUN (a 64 KiB superpacket each with offload), sealed and sent:
//!   one `UDP_SEGMENT` `sendmsg` per superpacket, or one gathered write to a TCP peer.
//! - `udp`: the socket (through quinn-udp for GSO and GRO, as the client's), receive batches
//!   opened in place and written to the TUN, coalesced.
//! - `tcp`: the listener, one task per connection, frames in and a bounded send queue out.
//! - `timers`: once a second, the session timers and TCP deadlines.
//! - `core`: what the tasks share, and the TUN write side.
//!
//! What the io_uring loop has and this one has not: the flow queue (`server.fair_queue`);
//! with it on, this backend logs once that it runs without it.

// Registering descriptors with tokio's reactor is the one unsafe step (`serve`).
#![allow(unsafe_code)]

mod core;
mod tcp;
mod timers;
mod tun;
mod udp;

use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{Context as _, Result};
use ringway_offload::batch::Gro;
use tokio::io::unix::AsyncFd;

use self::core::{Core, Shared};
use crate::handshake_state::{save_if_changed, HandshakeState};
use crate::inside::tun::Tun;
use crate::metrics::IoCounters;
use crate::outside::tcp::listener::Listener;
use crate::outside::udp::Udp;
use crate::sessions::{OsRandom, Outside, Sessions, TimerOutput};
use crate::uring::{DataPath, TcpLimits};

/// Receives per batch and packets per coalescing batch: what one UDP wakeup handles.
const MAX_BATCH_PACKETS: usize = 512;

/// What the backend drives; it owns them and closes them when it returns.
#[derive(Debug)]
pub struct Parts {
    /// The TUN, opened non-blocking.
    pub tun: Tun,
    /// The UDP socket, if UDP is on.
    pub udp: Option<Udp>,
    /// The TCP listener, if TCP is on.
    pub tcp: Option<Listener>,
    /// Becomes readable when the server should stop (see [`crate::signals`]).
    pub signal: OwnedFd,
    /// Where the peers' last handshake timestamps are saved, if anywhere.
    pub state: Option<HandshakeState>,
}

/// What the loop counted, for the caller and tests once it is over.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The session layer's counters.
    pub sessions: crate::metrics::SessionCounters,
    /// The I/O counters, named as the io_uring loop's.
    pub io: IoCounters,
}

/// Runs the data path until the signal descriptor becomes readable, then says goodbye to
/// peers and returns. An error is a failure of the TUN or a socket the loop cannot go on
/// without.
pub fn run(path: DataPath, limits: TcpLimits, parts: Parts, sessions: Sessions) -> Result<Summary> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("cannot start the tokio runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(path, limits, parts, sessions))
}

async fn serve(
    path: DataPath,
    limits: TcpLimits,
    parts: Parts,
    sessions: Sessions,
) -> Result<Summary> {
    // SAFETY: registration needs the descriptor to stay open and name the same file while
    // the `AsyncFd` lives. `Tun` owns the `File` it opened on /dev/net/tun in a private field
    // that nothing replaces, `as_raw_fd` returns that file's descriptor, and it closes only
    // when the `Tun` drops, which is when this `AsyncFd` (its sole owner) drops.
    let tun = unsafe { AsyncFd::register(parts.tun) }
        .map_err(|e| anyhow::Error::from(std::io::Error::from(e)))
        .context("cannot register the TUN with epoll")?;
    let tun = Rc::new(tun);
    let udp = parts
        .udp
        .map(|u| udp::UdpOut::new(u, path))
        .transpose()?
        .map(Rc::new);
    let listener = parts
        .tcp
        .map(tcp::listener)
        .transpose()
        .context("cannot register the TCP listener with epoll")?;
    // SAFETY: as above: the `OwnedFd` is moved into the `AsyncFd`, which alone closes it.
    let signal = unsafe { AsyncFd::register(parts.signal) }
        .map_err(|e| anyhow::Error::from(std::io::Error::from(e)))
        .context("cannot register the signal descriptor")?;
    let gro = path.vnet_hdr.then(|| Gro::new(MAX_BATCH_PACKETS, path.uso));
    let shared: Shared = Rc::new(RefCell::new(Core {
        sessions,
        ids: OsRandom(ring::rand::SystemRandom::new()),
        counters: IoCounters::default(),
        path,
        tun: Rc::clone(&tun),
        udp: udp.clone(),
        tcp: tcp::Conns::new(limits),
        gro,
        stream_batch: core::StreamBatch::new(),
    }));
    if let Some(u) = &udp {
        tracing::info!(udp = %u.describe(), "tokio backend: one thread, readiness I/O");
    }

    let tun_task = tokio::task::spawn_local(tun::read_loop(Rc::clone(&shared), tun));
    let udp_task = udp.map(|u| tokio::task::spawn_local(udp::recv_loop(Rc::clone(&shared), u)));
    let accept_task =
        listener.map(|l| tokio::task::spawn_local(tcp::accept_loop(Rc::clone(&shared), l)));
    let mut state = parts.state;
    let timer_task = tokio::task::spawn_local(timers::tick_loop(Rc::clone(&shared)));

    let udp_done = async {
        match udp_task {
            Some(t) => t.await,
            None => std::future::pending().await,
        }
    };
    let outcome: Result<()> = tokio::select! {
        r = signal.readable() => {
            drop(r.context("waiting for the shutdown signal")?);
            tracing::info!("shutting down");
            Ok(())
        }
        r = tun_task => r.context("the TUN task panicked")?,
        r = udp_done => r.context("the UDP task panicked")?,
    };
    if let Some(t) = accept_task {
        t.abort();
    }
    timer_task.abort();
    let summary = goodbye(&shared);
    save_if_changed(state.as_mut(), &mut shared.borrow_mut().sessions, true);
    outcome.map(|()| summary)
}

/// Seals a disconnect to every UDP peer (TCP peers see their connection close) and closes
/// every connection; returns what was counted.
fn goodbye(shared: &Shared) -> Summary {
    let mut core = shared.borrow_mut();
    let core = &mut *core;
    let now = Instant::now();
    let (udp, counters) = (&core.udp, &mut core.counters);
    core.sessions.disconnect_all(now, |out| {
        if let (TimerOutput::Send(Outside::Udp(to), frame), Some(u)) = (out, udp) {
            u.try_send_to(frame, to, counters);
        }
    });
    core.tcp.close_all(&mut core.sessions, &mut core.counters);
    tracing::info!(counters = %core.sessions.counters, io = %core.counters, "stopped");
    Summary {
        sessions: core.sessions.counters.clone(),
        io: core.counters.clone(),
    }
}
