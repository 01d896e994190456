//! The client's core and the server's session layer, stepped against each
//! other in memory, in the style of quinn's `Pair`: no sockets, no tasks, a
//! simulated clock that jumps from one event to the next, and a wire between
//! them that can lose, duplicate, delay (reorder) and tamper with frames in
//! either direction, from a seeded generator, so every run is the same.
//!
//! Both ends are the real thing: [`Core`] as the client runs it, and
//! `ringway_server::sessions::Sessions` as the io_uring driver runs it. The
//! pair plays the drivers: it sends what each side asks, delivers frames when
//! they arrive, and runs each side's timers when they are due. It also plays
//! the hosts behind them (packets delivered to each inside are kept, and the
//! server can echo them) and, if asked, an attacker on the path who answers
//! every initiation with forged responses before the server can.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_client::core::{
    Control, Core, CoreConfig, Event, Inbound, Refused, SessionOptions, MAX_CONTROL_LEN,
};
use ringway_client::stats::{Stats, StatsSnapshot};
use ringway_proto::handshake::client::ClientKeys;
use ringway_proto::wire::handshake::{emit_reject, RejectReason, RESP_LEN};
use ringway_proto::wire::transport::{HEADER_LEN, TAG_LEN};
use ringway_proto::wire::{frame_type, FrameType};
use ringway_server::config::Settings;
use ringway_server::sessions::{InsideAction, Outside, OutsideAction, Sessions, TimerOutput};

use super::{client_keys, echoed, server_keys, Ids, Seeded, PSK};

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToServer,
    ToClient,
}

/// Decides, frame by frame, which frames the wire loses.
pub type DropIf = Box<dyn FnMut(&[u8]) -> bool>;

/// What the wire does to frames going one way. Probabilities are per frame,
/// drawn from the pair's seeded generator.
#[derive(Default)]
pub struct Faults {
    /// Lose the frame.
    pub loss: f64,
    /// Deliver it twice.
    pub duplicate: f64,
    /// Hold it back by `reorder_by`, so frames sent after it overtake it.
    pub reorder: f64,
    pub reorder_by: Duration,
    /// Flip one random bit.
    pub tamper: f64,
    /// Lose every frame this says to (after the rest are applied).
    pub drop_if: Option<DropIf>,
    /// Lose everything (a server gone, a path broken).
    pub blackhole: bool,
}

/// One frame put on the wire, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Since the pair was made.
    pub at: Duration,
    pub dir: Dir,
    pub kind: Option<FrameType>,
    pub len: usize,
    pub lost: bool,
}

struct InFlight {
    arrive: Instant,
    seq: u64,
    dir: Dir,
    frame: Vec<u8>,
}

/// How a pair is set up.
pub struct PairConfig {
    pub settings: Settings,
    pub keys: ClientKeys,
    pub latency: Duration,
    pub connect_within: Duration,
    pub retry_interval: Duration,
    pub session: SessionOptions,
    pub seed: u64,
}

impl Default for PairConfig {
    fn default() -> Self {
        PairConfig {
            settings: super::server_settings(10, 60),
            keys: ClientKeys {
                secret: client_keys().secret,
                server_public: server_keys().public,
                psk: Some(PSK),
            },
            latency: Duration::from_millis(10),
            connect_within: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
            session: SessionOptions::default(),
            seed: 1,
        }
    }
}

/// The client's core and the server's sessions, joined by a simulated wire.
pub struct Pair {
    /// The simulated clock.
    pub now: Instant,
    /// When the pair was made.
    pub start: Instant,
    pub client: Core,
    pub server: Sessions,
    settings: Settings,
    ids: Ids,
    wire: Vec<InFlight>,
    seq: u64,
    /// One-way delay of every frame.
    pub latency: Duration,
    pub to_server: Faults,
    pub to_client: Faults,
    faults_rng: Seeded,
    /// Packets the client's core handed to its inside.
    pub client_rx: Vec<Vec<u8>>,
    /// Packets the server handed to its TUN.
    pub server_rx: Vec<Vec<u8>>,
    /// Everything the client's core said, in order.
    pub events: Vec<(Instant, Event)>,
    /// Every frame either side sent.
    pub log: Vec<Sent>,
    /// The server answers each packet it receives (a ping responder behind it).
    pub server_echo: bool,
    /// An attacker on the path answers each initiation with this many forged
    /// responses, arriving before the server's.
    pub forge_responses: usize,
    /// The attacker also (or instead) answers each initiation with this reject.
    pub forge_reject: Option<RejectReason>,
    server_next: Option<Instant>,
    client_outside: Outside,
    control: [u8; MAX_CONTROL_LEN],
}

impl Pair {
    /// A pair whose client starts connecting now.
    pub fn new(config: PairConfig) -> Pair {
        let now = Instant::now();
        let client = Core::connect(
            CoreConfig {
                keys: config.keys,
                cipher: None,
                connect_within: config.connect_within,
                retry_interval: config.retry_interval,
                session: config.session,
                // 2023-11-14: any fixed wall clock will do.
                wall_clock: Duration::from_secs(1_700_000_000),
            },
            now,
            Box::new(Seeded(config.seed)),
            Arc::new(Stats::default()),
        );
        let pair = Pair {
            now,
            start: now,
            client,
            server: Sessions::new(&config.settings),
            settings: config.settings,
            ids: Ids::default(),
            wire: Vec::new(),
            seq: 0,
            latency: config.latency,
            to_server: Faults::default(),
            to_client: Faults::default(),
            faults_rng: Seeded(config.seed ^ 0xfa17),
            client_rx: Vec::new(),
            server_rx: Vec::new(),
            events: Vec::new(),
            log: Vec::new(),
            server_echo: false,
            forge_responses: 0,
            forge_reject: None,
            server_next: None,
            client_outside: Outside::Udp(SocketAddr::from(([192, 0, 2, 2], 40000))),
            control: [0; MAX_CONTROL_LEN],
        };
        // What the client owes (its first initiation) goes out on the first
        // step, so the test can set up the wire first.
        pair
    }

    /// A pair with the default setup.
    pub fn default_pair() -> Pair {
        Pair::new(PairConfig::default())
    }

    /// Time since the pair was made.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The client's counters.
    pub fn client_stats(&self) -> StatsSnapshot {
        self.client.stats().snapshot()
    }

    /// Runs until the client is connected (or `limit` passes); whether it is.
    pub fn connect(&mut self, limit: Duration) -> bool {
        self.run_until(limit, |p| p.client.is_established())
    }

    /// The server restarts: a fresh session layer with the same config,
    /// knowing nothing of earlier sessions.
    pub fn restart_server(&mut self) {
        self.server = Sessions::new(&self.settings);
        self.server_next = None;
    }

    /// The client's inside sends `packet`: sealed by the core and put on
    /// the wire, or refused.
    pub fn client_send(&mut self, packet: &[u8]) -> Result<(), Refused> {
        let mut buf = vec![0u8; HEADER_LEN + packet.len() + TAG_LEN];
        buf[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
        let n = self.client.seal_packet(&mut buf, packet.len(), self.now)?;
        buf.truncate(n);
        self.put(Dir::ToServer, buf);
        self.client_flush();
        Ok(())
    }

    /// The server's TUN reads `packet`: whether the server sealed and sent it.
    pub fn server_send(&mut self, packet: &[u8]) -> bool {
        let mut buf = vec![0u8; HEADER_LEN + packet.len() + TAG_LEN];
        buf[HEADER_LEN..HEADER_LEN + packet.len()].copy_from_slice(packet);
        match self.server.handle_inside(&mut buf, packet.len(), self.now) {
            InsideAction::Send { len, .. } => {
                buf.truncate(len);
                self.put(Dir::ToClient, buf);
                true
            }
            InsideAction::Drop => false,
        }
    }

    /// Puts a frame on the wire towards `dir`, arriving `after` from now
    /// (bypassing the faults): an attacker's injection.
    pub fn inject(&mut self, dir: Dir, frame: Vec<u8>, after: Duration) {
        self.seq += 1;
        self.wire.push(InFlight {
            arrive: self.now + after,
            seq: self.seq,
            dir,
            frame,
        });
    }

    /// Runs the simulation for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(d, |p| p.now >= until);
    }

    /// Runs event by event until `done` holds (checked after every step) or
    /// `limit` from now passes; whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            match self.next_time() {
                Some(t) if t <= deadline => self.now = t.max(self.now),
                _ => {
                    self.now = deadline;
                    self.settle();
                    return done(self);
                }
            }
        }
    }

    /// Frames of `kind` sent towards `dir` so far (lost or not).
    pub fn count(&self, dir: Dir, kind: FrameType) -> usize {
        self.log
            .iter()
            .filter(|s| s.dir == dir && s.kind == Some(kind))
            .count()
    }

    /// When the client sent its frames of `kind`.
    pub fn sent_at(&self, kind: FrameType) -> Vec<Duration> {
        self.log
            .iter()
            .filter(|s| s.dir == Dir::ToServer && s.kind == Some(kind))
            .map(|s| s.at)
            .collect()
    }

    /// The client's events so far, without their times.
    pub fn event_list(&self) -> Vec<Event> {
        self.events.iter().map(|(_, e)| e.clone()).collect()
    }

    /// When the client said something matching `want` first, since the start.
    pub fn event_at(&self, want: impl Fn(&Event) -> bool) -> Option<Duration> {
        self.events
            .iter()
            .find(|(_, e)| want(e))
            .map(|(t, _)| *t - self.start)
    }

    /// The earliest thing due: a frame arriving or either side's timer.
    fn next_time(&self) -> Option<Instant> {
        [
            self.wire.iter().map(|f| f.arrive).min(),
            self.client.poll_timeout(),
            self.server_next,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles everything due now, until nothing is.
    fn settle(&mut self) {
        // Whatever the test did to the client directly (a close, a path
        // change) may owe the server something.
        self.client_flush();
        loop {
            let mut progressed = false;
            while let Some(i) = self.next_arrival() {
                let f = self.wire.remove(i);
                self.deliver(f.dir, f.frame);
                progressed = true;
            }
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
                self.client_flush();
                assert!(
                    self.client.poll_timeout().is_none_or(|t| t > self.now),
                    "the client's timer spins at {:?}",
                    self.elapsed()
                );
                progressed = true;
            }
            if self.server_next.is_some_and(|t| t <= self.now) {
                self.server_timers();
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }

    /// The frame that arrives first among those due now.
    fn next_arrival(&self) -> Option<usize> {
        self.wire
            .iter()
            .enumerate()
            .filter(|(_, f)| f.arrive <= self.now)
            .min_by_key(|(_, f)| (f.arrive, f.seq))
            .map(|(i, _)| i)
    }

    fn deliver(&mut self, dir: Dir, mut frame: Vec<u8>) {
        match dir {
            Dir::ToServer => {
                let action = self.server.handle_outside(
                    &mut frame,
                    self.client_outside,
                    self.now,
                    &mut self.ids,
                );
                let mut echo = None;
                let reply = match action {
                    OutsideAction::Reply(_, bytes) => Some(bytes.to_vec()),
                    OutsideAction::ToInside(range) => {
                        let packet = frame[range].to_vec();
                        if self.server_echo {
                            echo = Some(echoed(packet.clone()));
                        }
                        self.server_rx.push(packet);
                        None
                    }
                    OutsideAction::None => None,
                };
                if let Some(reply) = reply {
                    self.put(Dir::ToClient, reply);
                }
                if let Some(packet) = echo {
                    self.server_send(&packet);
                }
                self.server_timers();
            }
            Dir::ToClient => {
                if let Inbound::Packet(range) = self.client.handle_frame(&mut frame, self.now) {
                    self.client_rx.push(frame[range].to_vec());
                }
                self.client_flush();
            }
        }
    }

    /// Sends what the client owes and collects what it says.
    fn client_flush(&mut self) {
        while let Some(t) = self.client.poll_transmit(self.now, &mut self.control) {
            let frame = self.control[..t.len].to_vec();
            if t.kind == Control::Initiation {
                if let Some(reason) = self.forge_reject {
                    let index = u32::from_be_bytes(frame[4..8].try_into().unwrap());
                    let reject = emit_reject(index, reason).to_vec();
                    self.inject(Dir::ToClient, reject, Duration::from_micros(1));
                }
                for _ in 0..self.forge_responses {
                    let forged = self.forged_response(&frame);
                    self.inject(Dir::ToClient, forged, Duration::from_micros(1));
                }
            }
            self.put(Dir::ToServer, frame);
        }
        while let Some(event) = self.client.poll_event() {
            self.events.push((self.now, event));
        }
    }

    /// A response an attacker who saw `init` could make: the right receiver
    /// index, everything else made up.
    fn forged_response(&mut self, init: &[u8]) -> Vec<u8> {
        let mut forged = vec![0u8; RESP_LEN];
        for b in forged.iter_mut() {
            *b = self.faults_rng.next_u64() as u8;
        }
        forged[..4].copy_from_slice(&[FrameType::HandshakeResp as u8, 0, 0, 0]);
        forged[4..8].copy_from_slice(&init[4..8]);
        forged
    }

    /// Runs the server's timers, sending what they ask.
    fn server_timers(&mut self) {
        let mut out = Vec::new();
        self.server_next = self.server.handle_timers(self.now, |o| {
            if let TimerOutput::Send(_, bytes) = o {
                out.push(bytes.to_vec());
            }
        });
        for frame in out {
            self.put(Dir::ToClient, frame);
        }
    }

    /// Puts a frame on the wire, through that direction's faults.
    fn put(&mut self, dir: Dir, mut frame: Vec<u8>) {
        let rng = &mut self.faults_rng;
        let faults = match dir {
            Dir::ToServer => &mut self.to_server,
            Dir::ToClient => &mut self.to_client,
        };
        let kind = frame_type(&frame).ok();
        let mut lost = faults.blackhole || rng.unit() < faults.loss;
        if let Some(drop_if) = faults.drop_if.as_mut() {
            lost |= drop_if(&frame);
        }
        self.log.push(Sent {
            at: self.now - self.start,
            dir,
            kind,
            len: frame.len(),
            lost,
        });
        if lost {
            return;
        }
        if rng.unit() < faults.tamper {
            let bit = (rng.next_u64() as usize) % (frame.len() * 8);
            frame[bit / 8] ^= 1 << (bit % 8);
        }
        let mut arrive = self.now + self.latency;
        if rng.unit() < faults.reorder {
            arrive += faults.reorder_by;
        }
        let copies = if rng.unit() < faults.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            self.seq += 1;
            self.wire.push(InFlight {
                arrive,
                seq: self.seq,
                dir,
                frame: frame.clone(),
            });
        }
    }
}

/// Only frames of `kind`, the first `n` of them: a `drop_if` for [`Faults`].
pub fn first_of(kind: FrameType, n: usize) -> DropIf {
    let mut seen = 0;
    Box::new(move |frame| {
        if frame_type(frame) == Ok(kind) && seen < n {
            seen += 1;
            true
        } else {
            false
        }
    })
}

/// Every frame of `kind`.
pub fn all_of(kind: FrameType) -> DropIf {
    Box::new(move |frame| frame_type(frame) == Ok(kind))
}
