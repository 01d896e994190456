//! One swarm run: connect every session, let them sit idle for a moment, load the server from
//! all but one, and time echoes through the one left over.
//!
//! ```text
//!  connect:  N x Tunnel::connect_to, `window` at a time ──▶ handshakes/s, server RSS per session
//!  idle:     every receiver running, nothing sent        ──▶ server CPU with N sessions up
//!  load:     pacer tasks ─ seal + send ─▶ sessions 1..N   (PPS in all, round robin)
//!            probe task  ─ ICMP echo every interval ─▶ session 0 ─▶ server's kernel answers
//!            receiver task per session: keepalives, ICMP errors, session ends
//!  end:      every session says goodbye (Disconnect)
//! ```
//!
//! The sessions are the client library's own [`Tunnel`]s, without a TUN: a pacer seals the
//! session's prebuilt packet in place and sends it ([`TunnelSender::send_packet`]); a receiver
//! task per session opens what comes back ([`TunnelReceiver::recv`]). Nothing is copied into
//! channels, so one swarm process keeps many more sessions busy than the in-memory inside
//! (which copies each packet into a `Vec`) would. Each UDP session has its own socket, so the
//! server sees N source ports, as from N clients.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ringway_client::core::Event;
use ringway_client::outside::HEADROOM;
use ringway_client::{
    ClientConfig, ConnectOptions, Received, Stats, TransportChoice, Tunnel, TunnelReceiver,
    TunnelSender,
};
use ringway_e2e::cpu::CpuTime;
use ringway_e2e::icmp;
use ringway_proto::wire::transport::TAG_LEN;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::packet;
use crate::report::{Handshakes, Load, Percentiles, Probe, Report, Server, ServerMemory};
use crate::server::{run_delay_of, ServerWatch, Window};

/// The discard port: where load packets go unless told otherwise.
pub const DISCARD_PORT: u16 = 9;
/// How often a pacer lets each of its sessions' cores run their timers.
const TIMER_CHECK: Duration = Duration::from_millis(200);
/// At most this much of a pacer's share is sent in one burst when it falls behind; the rest
/// is counted as `behind`.
const MAX_BURST: Duration = Duration::from_millis(10);
/// How long the probe waits for the last replies after the load stops.
const PROBE_GRACE: Duration = Duration::from_secs(1);
/// The ICMP identifier of the probe's echoes.
const PROBE_ID: u16 = 0x5357;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sessions to open (the probe's included).
    pub sessions: usize,
    /// Packets per second over all load sessions.
    pub rate: u64,
    /// Length of the load phase.
    pub load_for: Duration,
    /// Length of the idle phase between connecting and loading.
    pub idle_for: Duration,
    /// Bytes of each inner packet.
    pub packet_len: usize,
    /// UDP or TCP.
    pub transport: TransportChoice,
    /// Handshakes in flight at most.
    pub handshake_window: usize,
    /// How long one session may take to connect.
    pub connect_deadline: Duration,
    /// One probe echo this often.
    pub probe_interval: Duration,
    /// Where load packets go; `None`: the server's inner address, [`DISCARD_PORT`].
    pub target: Option<SocketAddrV4>,
    /// Pacer tasks the load sessions are spread over.
    pub pacers: usize,
}

/// Runs the swarm with `peers` (at least `opts.sessions` of them) against their endpoint;
/// `server`, if given, is watched through `/proc`.
pub async fn run(
    peers: Vec<ClientConfig>,
    opts: &Options,
    server: Option<&ServerWatch>,
) -> Result<Report> {
    ensure!(opts.sessions >= 1, "--sessions must be at least 1");
    ensure!(
        peers.len() >= opts.sessions,
        "the swarm file has {} peers, fewer than --sessions {}: provision more",
        peers.len(),
        opts.sessions
    );
    ensure!(opts.pacers >= 1, "at least one pacer");
    let endpoint_text = peers[0].endpoint.clone();
    let endpoint = ringway_client::outside::resolve(&endpoint_text)
        .await
        .with_context(|| format!("resolving {endpoint_text}"))?;
    let me = std::process::id();

    // Connect.
    let mem_before = server.map(ServerWatch::memory).transpose()?;
    let cpu0 = (
        CpuTime::of(me)?,
        server.map(|s| CpuTime::of(s.pid)).transpose()?,
    );
    let (tunnels, handshakes) = connect_all(peers, opts, endpoint).await;
    let cpu1 = (
        CpuTime::of(me)?,
        server.map(|s| CpuTime::of(s.pid)).transpose()?,
    );
    let percent = |a: &CpuTime, b: &CpuTime| {
        100.0 * b.since(a).total().as_secs_f64() / handshakes.seconds.max(1e-9)
    };
    let handshakes = Handshakes {
        swarm_cpu_percent: percent(&cpu0.0, &cpu1.0),
        server_cpu_percent: cpu0.1.zip(cpu1.1).map(|(a, b)| percent(&a, &b)),
        ..handshakes
    };
    let mem_with_sessions = server.map(ServerWatch::memory).transpose()?;
    let mut tunnels = tunnels.into_iter().flatten();
    let Some(probe_tunnel) = tunnels.next() else {
        bail!(
            "no session came up; the first failure: {}",
            handshakes
                .first_failure
                .as_deref()
                .unwrap_or("none recorded")
        );
    };
    let session = *probe_tunnel.session_config();
    ensure!(
        opts.packet_len <= usize::from(session.mtu),
        "--packet-len {} is larger than the session MTU {}",
        opts.packet_len,
        session.mtu
    );
    let target = opts
        .target
        .unwrap_or(SocketAddrV4::new(session.server_addr, DISCARD_PORT));

    // Every session's receiver runs from here on; the load sessions share one set of counters.
    let load_stats = Arc::new(Stats::default());
    let received = Arc::new(Returns::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut receivers = JoinSet::new();
    let mut load = Vec::with_capacity(handshakes.established.saturating_sub(1));
    for (i, tunnel) in tunnels.enumerate() {
        let client = tunnel.session_config().client_addr;
        let src = SocketAddrV4::new(client, 10_000 + (i % 50_000) as u16);
        let (sender, receiver) = tunnel.with_stats(Arc::clone(&load_stats)).split();
        receivers.spawn(receive(receiver, stop_rx.clone(), Arc::clone(&received)));
        load.push(LoadSession {
            sender,
            packet: packet::udp_packet(src, target, opts.packet_len),
            alive: true,
        });
    }
    let (probe_tx, probe_rx) = probe_tunnel.split();
    let load_sessions = load.len();

    // Idle: what N sessions cost the server with nothing to carry.
    let idle = match server {
        Some(s) => {
            let a = s.sample()?;
            tokio::time::sleep(opts.idle_for).await;
            let b = s.sample()?;
            Some(Window::between(&a, &b))
        }
        None => {
            tokio::time::sleep(opts.idle_for).await;
            None
        }
    };

    // Load, with the probe alongside.
    let start = tokio::time::Instant::now();
    let end = start + opts.load_for;
    let probe = tokio::spawn(run_probe(
        probe_tx,
        probe_rx,
        ProbePlan {
            me: session.client_addr,
            server: session.server_addr,
            interval: opts.probe_interval,
            end,
        },
    ));
    let mut shards: Vec<Vec<LoadSession>> = (0..opts.pacers).map(|_| Vec::new()).collect();
    for (i, s) in load.into_iter().enumerate() {
        shards[i % opts.pacers].push(s);
    }
    let mut pacers = JoinSet::new();
    for (j, shard) in shards.into_iter().enumerate() {
        // The rate's remainder goes to the first pacers, one packet/s each.
        let share =
            opts.rate / opts.pacers as u64 + u64::from((j as u64) < opts.rate % opts.pacers as u64);
        if !shard.is_empty() {
            pacers.spawn(pace(shard, share as f64, opts.packet_len, end));
        }
    }
    let warmup = (opts.load_for / 4).min(Duration::from_millis(500));
    tokio::time::sleep(warmup).await;
    let window_start = Mark::take(server, &load_stats, me)?;
    tokio::time::sleep_until(end).await;
    let window_end = Mark::take(server, &load_stats, me)?;
    let mut senders = Vec::with_capacity(load_sessions);
    let (mut behind, mut lost_at_send) = (0u64, 0u64);
    while let Some(done) = pacers.join_next().await {
        let done = done.context("a pacer task failed")?;
        behind += done.behind;
        lost_at_send += done.lost;
        senders.extend(done.sessions.into_iter().map(|s| s.sender));
    }
    let probe = probe.await.context("the probe task failed")?;
    let mem_after = server.map(ServerWatch::memory).transpose()?;

    // Goodbye, so the server frees the sessions now rather than at their idle timeout.
    let _ = stop_tx.send(true);
    for s in &mut senders {
        let _ = s.send_disconnect().await;
    }
    while receivers.join_next().await.is_some() {}

    let window_secs = window_end
        .at
        .duration_since(window_start.at)
        .as_secs_f64()
        .max(1e-9);
    let stats = load_stats.snapshot();
    let established = handshakes.established;
    Ok(Report {
        sessions: opts.sessions,
        transport: match opts.transport {
            TransportChoice::Tcp => "tcp",
            _ => "udp",
        }
        .to_owned(),
        endpoint: endpoint.to_string(),
        handshakes,
        load: Load {
            sessions: load_sessions,
            rate_requested: opts.rate,
            packet_len: opts.packet_len,
            target: target.to_string(),
            window_seconds: window_secs,
            sent_per_sec: window_end.sent.saturating_sub(window_start.sent) as f64 / window_secs,
            behind,
            sent: stats.tx_packets,
            send_errors: stats.tx_send_errors,
            received: received.packets.load(Relaxed),
            keepalives_received: stats.rx_keepalives,
            sessions_lost: received.lost.load(Relaxed).max(lost_at_send),
            swarm_cpu_percent: 100.0
                * window_end
                    .cpu
                    .since(&window_start.cpu)
                    .total()
                    .as_secs_f64()
                / window_secs,
            swarm_cpu_wait_percent: 100.0
                * window_end
                    .waited
                    .saturating_sub(window_start.waited)
                    .as_secs_f64()
                / window_secs,
        },
        probe,
        server: match (server, window_start.server, window_end.server) {
            (Some(s), Some(a), Some(b)) => {
                let before = mem_before.unwrap_or_default();
                let with = mem_with_sessions.unwrap_or_default();
                Some(Server {
                    pid: s.pid,
                    tun: s.tun.clone(),
                    memory: ServerMemory {
                        before,
                        with_sessions: with,
                        after_load: mem_after.unwrap_or_default(),
                        rss_per_session_bytes: (with.rss_kib as f64 - before.rss_kib as f64)
                            * 1024.0
                            / established.max(1) as f64,
                    },
                    idle_cpu_percent: idle.map_or(0.0, |w| w.cpu_percent),
                    load: Window::between(&a, &b),
                })
            }
            _ => None,
        },
        server_counters: None,
    })
}

/// One end of the measured window: what the server, the swarm's counters and its clock said.
#[derive(Debug)]
struct Mark {
    /// The server, if watched.
    server: Option<crate::server::Sample>,
    /// Load packets sent so far.
    sent: u64,
    /// The swarm's CPU time so far.
    cpu: CpuTime,
    /// The swarm's threads' run-queue wait so far.
    waited: Duration,
    /// When.
    at: Instant,
}

impl Mark {
    fn take(server: Option<&ServerWatch>, load: &Stats, me: u32) -> Result<Self> {
        Ok(Mark {
            server: server.map(ServerWatch::sample).transpose()?,
            sent: load.snapshot().tx_packets,
            cpu: CpuTime::of(me)?,
            waited: run_delay_of(me)?,
            at: Instant::now(),
        })
    }
}

/// Connects every peer, at most `opts.handshake_window` at a time; the tunnels in peer order
/// (`None` for those that failed) and how it went (CPU figures are filled in by the caller).
async fn connect_all(
    peers: Vec<ClientConfig>,
    opts: &Options,
    endpoint: SocketAddr,
) -> (Vec<Option<Tunnel>>, Handshakes) {
    let connect = ConnectOptions {
        transport: opts.transport,
        deadline: opts.connect_deadline,
        // One datagram per call: batching buys nothing at a few packets per session, and
        // a batching receiver holds 512 KiB of buffers.
        udp_offload: false,
        ..ConnectOptions::default()
    };
    let window = Arc::new(Semaphore::new(opts.handshake_window.max(1)));
    let mut set = JoinSet::new();
    let started = Instant::now();
    for (i, config) in peers.into_iter().take(opts.sessions).enumerate() {
        let Ok(permit) = Arc::clone(&window).acquire_owned().await else {
            break;
        };
        let connect = connect.clone();
        set.spawn(async move {
            let t = Instant::now();
            let res = Tunnel::connect_to(&config, endpoint, &connect).await;
            drop(permit);
            (i, res, t.elapsed(), Instant::now())
        });
    }
    let mut tunnels: Vec<Option<Tunnel>> = (0..opts.sessions).map(|_| None).collect();
    let mut latencies = Vec::with_capacity(opts.sessions);
    let mut last_up = started;
    let (mut failed, mut first_failure) = (0usize, None);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, Ok(tunnel), took, at)) => {
                tunnels[i] = Some(tunnel);
                latencies.push(took);
                last_up = last_up.max(at);
            }
            Ok((i, Err(e), _, _)) => {
                failed += 1;
                first_failure.get_or_insert_with(|| format!("session {i}: {e}"));
            }
            Err(e) => {
                failed += 1;
                first_failure.get_or_insert_with(|| format!("a connect task failed: {e}"));
            }
        }
    }
    let established = latencies.len();
    let seconds = last_up.duration_since(started).as_secs_f64();
    let handshakes = Handshakes {
        requested: opts.sessions,
        established,
        failed,
        first_failure,
        window: opts.handshake_window,
        seconds,
        per_sec: if seconds > 0.0 {
            established as f64 / seconds
        } else {
            0.0
        },
        latency: Percentiles::of(&mut latencies),
        server_cpu_percent: None,
        swarm_cpu_percent: 0.0,
    };
    (tunnels, handshakes)
}

/// What came back to the load sessions.
#[derive(Debug, Default)]
struct Returns {
    /// Inner packets (ICMP errors from the server's kernel, mostly).
    packets: AtomicU64,
    /// Sessions that ended on their own.
    lost: AtomicU64,
}

/// A load session's receiving half: opens what arrives until told to stop or the session
/// ends.
async fn receive(mut rx: TunnelReceiver, mut stop: watch::Receiver<bool>, counts: Arc<Returns>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            got = rx.recv() => match got {
                Ok(Received::Packet(_)) => {
                    counts.packets.fetch_add(1, Relaxed);
                }
                Ok(Received::Consumed) => {
                    while let Some(event) = rx.poll_event() {
                        if let Event::SessionLost(why) = event {
                            tracing::debug!(?why, "a load session ended");
                            counts.lost.fetch_add(1, Relaxed);
                            return;
                        }
                    }
                }
                Ok(Received::Dropped(_)) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "a load session's receiver stopped");
                    counts.lost.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
    }
}

/// One load session as a pacer holds it.
#[derive(Debug)]
struct LoadSession {
    sender: TunnelSender,
    /// The packet it sends, again and again.
    packet: Vec<u8>,
    /// False once a send found the session over.
    alive: bool,
}

/// What a pacer hands back.
#[derive(Debug)]
struct Paced {
    sessions: Vec<LoadSession>,
    behind: u64,
    lost: u64,
}

/// Sends `rate` packets per second, round robin over `sessions`, until `end`; runs the
/// sessions' timers on the way.
async fn pace(
    mut sessions: Vec<LoadSession>,
    rate: f64,
    packet_len: usize,
    end: tokio::time::Instant,
) -> Paced {
    let mut buf = vec![0u8; HEADROOM + packet_len + TAG_LEN];
    let start = tokio::time::Instant::now();
    let burst = ((rate * MAX_BURST.as_secs_f64()) as u64).max(1);
    let (mut sent, mut behind, mut lost) = (0u64, 0u64, 0u64);
    let mut next = 0usize;
    let mut timers_at = start + TIMER_CHECK;
    let n = sessions.len();
    'pacing: loop {
        let now = tokio::time::Instant::now();
        if now >= end || lost as usize == n {
            break;
        }
        let due = (rate * now.duration_since(start).as_secs_f64()) as u64;
        let mut owed = due.saturating_sub(sent + behind);
        if owed > burst {
            behind += owed - burst;
            owed = burst;
        }
        for _ in 0..owed {
            // The next session still up (one exists: fewer than n are lost).
            while !sessions[next].alive {
                next = (next + 1) % n;
            }
            let s = &mut sessions[next];
            next = (next + 1) % n;
            buf[HEADROOM..HEADROOM + s.packet.len()].copy_from_slice(&s.packet);
            match s.sender.send_packet(&mut buf, s.packet.len()).await {
                Ok(()) => sent += 1,
                Err(e) => {
                    tracing::debug!(error = %e, "a load session can no longer send");
                    s.alive = false;
                    lost += 1;
                    if lost as usize == n {
                        break 'pacing;
                    }
                }
            }
        }
        if now >= timers_at {
            for s in sessions.iter_mut().filter(|s| s.alive) {
                if s.sender
                    .poll_timeout()
                    .is_some_and(|t| t <= ringway_client::now())
                {
                    let _ = s.sender.handle_timeout().await;
                }
            }
            timers_at = now + TIMER_CHECK;
        }
        let next_due = start + Duration::from_secs_f64((sent + behind + 1) as f64 / rate.max(1e-9));
        tokio::time::sleep_until(next_due.min(timers_at).min(end)).await;
    }
    Paced {
        sessions,
        behind,
        lost,
    }
}

/// What the probe sends, where and when.
#[derive(Debug, Clone, Copy)]
struct ProbePlan {
    /// The probe session's inner address.
    me: Ipv4Addr,
    /// The server's inner address, whose kernel answers.
    server: Ipv4Addr,
    /// One echo request this often.
    interval: Duration,
    /// The last one goes before this.
    end: tokio::time::Instant,
}

/// Sends an ICMP echo request through the probe session as `plan` says, and times each reply;
/// waits up to [`PROBE_GRACE`] after the end for the last ones.
async fn run_probe(mut tx: TunnelSender, mut rx: TunnelReceiver, plan: ProbePlan) -> Probe {
    let ProbePlan {
        me,
        server,
        interval,
        end,
    } = plan;
    let mut outstanding: HashMap<u64, Instant> = HashMap::new();
    let mut rtts = Vec::new();
    let mut buf = vec![0u8; HEADROOM + 128 + TAG_LEN];
    let mut seq = 0u64;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let give_up = end + PROBE_GRACE;
    loop {
        let sending = tokio::time::Instant::now() < end;
        if !sending && outstanding.is_empty() {
            break;
        }
        let timer = tx.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = ticker.tick(), if sending => {
                // The sequence number in full in the payload: the ICMP field wraps.
                let mut payload = [0u8; 16];
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                let request = icmp::echo_request(me, server, PROBE_ID, seq as u16, &payload);
                buf[HEADROOM..HEADROOM + request.len()].copy_from_slice(&request);
                let sent_at = Instant::now();
                if tx.send_packet(&mut buf, request.len()).await.is_ok() {
                    outstanding.insert(seq, sent_at);
                }
                seq += 1;
            }
            got = rx.recv() => match got {
                Ok(Received::Packet(p)) => {
                    let now = Instant::now();
                    if let Ok(reply) = icmp::parse_echo_reply(p) {
                        let full = reply.payload.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
                        if let (PROBE_ID, Some(s)) = (reply.id, full) {
                            if let Some(at) = outstanding.remove(&s) {
                                rtts.push(now.duration_since(at));
                            }
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the probe session's receiver stopped");
                    break;
                }
            },
            () = async { match timer { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                let _ = tx.handle_timeout().await;
            }
            () = tokio::time::sleep_until(give_up) => break,
        }
    }
    let _ = tx.send_disconnect().await;
    Probe {
        sent: seq,
        received: rtts.len() as u64,
        interval_ms: interval.as_secs_f64() * 1e3,
        rtt: Percentiles::of(&mut rtts),
    }
}
