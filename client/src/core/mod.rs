//! The client's protocol core: every decision the client makes, and no I/O.
//!
//! A [`Core`] is one connection to the server, from its first initiation to
//! the end of its session (rekeys included). In the style of quinn-proto it
//! has no runtime, no sockets and no clock: the driver feeds it what arrived
//! ([`Core::handle_frame`]) and what the time is ([`Core::handle_timeout`],
//! at [`Core::poll_timeout`]), seals outbound packets with it
//! ([`Core::seal_packet`]), and sends what it asks for
//! ([`Core::poll_transmit`]); what changed comes out of [`Core::poll_event`].
//! The same core therefore runs under the tokio driver and, in tests, against
//! the server's real session layer in memory with a simulated clock.
//!
//! ```text
//!   connect ─▶ Connecting ──response──▶ Established ──lost / close──▶ Closed
//!               │  initiation every retry interval   │  rekeys in place
//!               └─ deadline: ConnectFailed
//! ```
//!
//! What it decides: when to send (or resend) an initiation and when to give
//! up connecting, with which verdict ([`handshake`]); when keepalives and RTT
//! probes go out ([`rtt`]), when to rekey (with jitter, retried with a
//! doubling pause), when silence calls for a quiet re-handshake and when it
//! ends the session ([`timers`]); which frames open, with which session (the
//! one before a rekey still opens stragglers), and which inner packets may go
//! in or come out. What it leaves to the driver is pure I/O: sockets, TCP
//! reconnects and stream framing, noticing that the local address went away
//! (the driver reports it with [`Core::handle_path_change`]; sending a probe
//! then is the core's decision).
//!
//! The data path allocates nothing: [`Core::seal_packet`] seals in the
//! caller's buffer and [`Core::handle_frame`] opens in place, returning where
//! the plaintext lies. Both take `&mut self` only briefly, so a driver that
//! shares the core between tasks (behind a mutex) can seal or open a whole
//! batch of packets per lock.

pub mod handshake;
pub mod rtt;
pub mod timers;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_proto::handshake::client::ClientKeys;
use ringway_proto::session::{probe_id, OpenError, SealError};
use ringway_proto::wire::handshake::{RejectReason, INIT_LEN};
use ringway_proto::wire::transport::{peek_session_id, HEADER_LEN, OVERHEAD, PROBE_LEN};
use ringway_proto::wire::{frame_type, FrameType};
use ringway_proto::{Cipher, Entropy, Opener, Sealer, Session, SessionConfig};

use crate::ip;
use crate::stats::{bump, inc, Stats};
pub use handshake::ConnectFailure;
use handshake::{Answer, Attempts, Initiator, Pending};
use rtt::Rtt;
use timers::Timers;

/// The largest control frame [`Core::poll_transmit`] writes: an initiation,
/// or a keepalive carrying a probe.
pub const MAX_CONTROL_LEN: usize = if INIT_LEN > OVERHEAD + PROBE_LEN {
    INIT_LEN
} else {
    OVERHEAD + PROBE_LEN
};

/// Timers of an established session the client chooses itself.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Send an RTT probe at least this often, busy or not; `None` (and
    /// anything longer) means every keepalive interval.
    pub probe_every: Option<Duration>,
    /// The first pause before a rekey's initiation is sent again; it doubles
    /// up to [`timers::REKEY_RETRY_MAX`].
    pub rekey_retry: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            probe_every: None,
            rekey_retry: Duration::from_secs(1),
        }
    }
}

/// Everything a core needs to know up front.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Our static key, the server's public key and the PSK.
    pub keys: ClientKeys,
    /// The AEAD to ask for; `None` leaves it to the server.
    pub cipher: Option<Cipher>,
    /// Give up connecting after this long without a session.
    pub connect_within: Duration,
    /// Send a fresh initiation this often while no answer comes.
    pub retry_interval: Duration,
    /// The established session's own timers.
    pub session: SessionOptions,
    /// The wall-clock time at the `now` given to [`Core::connect`], as time
    /// since the Unix epoch: initiation timestamps are this plus the
    /// monotonic time since (the core reads no clock).
    pub wall_clock: Duration,
}

/// What an incoming frame turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// An IPv4 packet for our inner address, decrypted in place at this range
    /// of the frame buffer: hand it to the inside.
    Packet(Range<usize>),
    /// A frame for the protocol (a keepalive or probe echo, a handshake
    /// answer, a disconnect); what it changed comes out of [`Core::poll_event`].
    Consumed,
    /// Dropped, and counted in the stats.
    Dropped(Dropped),
}

/// Why an incoming frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not a well-formed frame of a kind a client receives.
    Malformed,
    /// A transport frame for a session we do not have.
    WrongSession,
    /// A transport frame before any session exists, or after it ended.
    NoSession,
    /// Its counter was replayed or too old.
    Replay,
    /// Its tag (or a handshake response) did not authenticate.
    Auth,
    /// It opened, but held no IPv4 packet addressed to us.
    NotForUs,
    /// A handshake answer nothing is waiting for.
    Stray,
}

/// Why an outbound packet was not sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Only IPv4 goes through the tunnel.
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// Larger than a frame can carry.
    #[error("packet too large for a frame")]
    TooLarge,
    /// No session to seal with: still connecting, or the session ended.
    #[error("no session")]
    NoSession,
    /// The buffer lacks room for the header in front or the tag behind.
    #[error("buffer too small for header, packet and tag")]
    BufferTooSmall,
}

/// Why an established session ended without being closed by us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Nothing authenticated arrived for the session's idle timeout.
    ServerSilent(Duration),
    /// The server sent a disconnect.
    ServerClosed,
    /// The send counter ran out (far beyond any real session's life).
    CounterExhausted,
    /// A rekey could not be started on our side (no randomness).
    Internal(String),
}

/// What the core has to tell its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The handshake completed: the session is up.
    Connected {
        /// The id every transport frame carries.
        session_id: u32,
        /// What the server assigned.
        config: SessionConfig,
    },
    /// Connecting ended without a session.
    ConnectFailed(ConnectFailure),
    /// A rekey completed: frames now open and are sealed with the new session.
    Rekeyed {
        /// The new session's id.
        session_id: u32,
        /// What the server assigned this time (usually as before).
        config: SessionConfig,
    },
    /// The server refused a rekey's initiation. Unauthenticated, so only a
    /// hint: the rekey stays open for a genuine answer.
    Rejected(RejectReason),
    /// The session ended.
    SessionLost(Lost),
}

/// A control frame [`Core::poll_transmit`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// What it is.
    pub kind: Control,
}

/// The kinds of control frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// A handshake initiation (connecting, or a rekey).
    Initiation,
    /// A keepalive carrying an RTT probe.
    Probe,
    /// The goodbye.
    Disconnect,
}

/// One connection's protocol state; see the module doc.
pub struct Core {
    options: SessionOptions,
    retry_interval: Duration,
    rng: Box<dyn Entropy + Send>,
    stats: Arc<Stats>,
    initiator: Initiator,
    /// The initiation in flight (connecting, or a rekey).
    pending: Option<Pending>,
    state: State,
    owed: Owed,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("state", &self.state)
            .field("pending", &self.pending)
            .field("owed", &self.owed)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum State {
    Connecting(Connecting),
    Established(Box<Established>),
    Closed,
}

#[derive(Debug)]
struct Connecting {
    started: Instant,
    deadline: Instant,
    next_initiation: Instant,
    attempts: Attempts,
}

#[derive(Debug)]
struct Established {
    sealer: Sealer,
    opener: Opener,
    /// The session before the last rekey, for frames sent before the switch.
    previous: Option<Opener>,
    config: SessionConfig,
    started: Instant,
    timers: Timers,
    rtt: Rtt,
    /// The session ended (it was lost): nothing opens any more, and only a
    /// goodbye may still be sealed.
    ended: bool,
}

/// Control frames owed to the driver.
#[derive(Debug, Default, Clone, Copy)]
struct Owed {
    initiation: bool,
    probe: bool,
    disconnect: bool,
}

impl Core {
    /// Starts connecting at `now`: the first initiation is owed at once.
    ///
    /// `rng` supplies every random byte (ephemeral keys, sender indexes,
    /// rekey jitter): the OS's generator in production, a seeded one in
    /// tests. Counters go to `stats`, which readers share without locking
    /// the core.
    pub fn connect(
        config: CoreConfig,
        now: Instant,
        rng: Box<dyn Entropy + Send>,
        stats: Arc<Stats>,
    ) -> Core {
        let retry_interval = config.retry_interval.max(Duration::from_millis(1));
        let mut core = Core {
            options: config.session,
            retry_interval,
            rng,
            stats,
            initiator: Initiator::new(config.keys, config.cipher, now, config.wall_clock),
            pending: None,
            state: State::Connecting(Connecting {
                started: now,
                deadline: now + config.connect_within,
                next_initiation: now + retry_interval,
                attempts: Attempts::default(),
            }),
            owed: Owed::default(),
            events: VecDeque::new(),
        };
        core.initiate_connect(now);
        core
    }

    /// Handles a frame received from the server at `now`, decrypting it in
    /// place if it is a transport frame.
    pub fn handle_frame(&mut self, frame: &mut [u8], now: Instant) -> Inbound {
        match frame_type(frame) {
            Ok(FrameType::HandshakeResp | FrameType::HandshakeReject) => {
                self.handle_answer(frame, now)
            }
            Ok(t) if t.is_transport() => self.handle_transport(frame, now),
            // Initiations only ever go from client to server.
            Ok(_) | Err(_) => {
                inc(&self.stats.rx.dropped_malformed);
                Inbound::Dropped(Dropped::Malformed)
            }
        }
    }

    /// Seals the `len`-byte IPv4 packet at `frame[HEADER_LEN..]` in place:
    /// the header goes in front of it and the tag behind (the buffer needs
    /// [`TAG_LEN`](ringway_proto::wire::transport::TAG_LEN) bytes to spare).
    /// Returns the frame's length from `frame[0]`.
    pub fn seal_packet(
        &mut self,
        frame: &mut [u8],
        len: usize,
        now: Instant,
    ) -> Result<usize, Refused> {
        let tx = &self.stats.tx;
        let packet = frame
            .get(HEADER_LEN..HEADER_LEN + len)
            .ok_or(Refused::BufferTooSmall)?;
        if !ip::is_ipv4(packet) {
            inc(&tx.dropped_not_ipv4);
            return Err(Refused::NotIpv4);
        }
        let State::Established(est) = &mut self.state else {
            inc(&tx.dropped_no_session);
            return Err(Refused::NoSession);
        };
        if est.ended {
            inc(&tx.dropped_no_session);
            return Err(Refused::NoSession);
        }
        match est.sealer.seal_data(frame, len, now) {
            Ok(n) => Ok(n),
            Err(SealError::PayloadTooLarge) => {
                inc(&tx.dropped_too_large);
                Err(Refused::TooLarge)
            }
            Err(SealError::CounterExhausted) => {
                self.lose(Lost::CounterExhausted);
                Err(Refused::NoSession)
            }
            Err(SealError::BufferTooSmall | SealError::PayloadNotAllowed) => {
                Err(Refused::BufferTooSmall)
            }
        }
    }

    /// Does whatever is due at `now`: retry or give up connecting; probe,
    /// rekey, re-handshake or expire an established session.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Connecting(c) => {
                if now >= c.deadline {
                    self.fail_connect(now);
                } else if now >= c.next_initiation {
                    c.next_initiation = (now + self.retry_interval).min(c.deadline);
                    match &self.pending {
                        // Never sent (a TCP connection is still being made):
                        // it is as fresh as a new one would be.
                        Some(p) if !p.sent => self.owed.initiation = true,
                        // Failed answers never end a connect early: anyone on the path
                        // can forge one for every initiation. The deadline's verdict
                        // says what they were.
                        Some(p) => {
                            c.attempts.initiation_ended(p);
                            self.initiate_connect(now);
                        }
                        None => self.initiate_connect(now),
                    }
                }
            }
            State::Established(est) if !est.ended => {
                let due = est.timers.due(now, est.sealer.last_sent());
                if due.expired {
                    let idle = est.timers.idle_timeout();
                    self.lose(Lost::ServerSilent(idle));
                    return;
                }
                if due.probe {
                    est.timers.last_probe = now;
                    self.owed.probe = true;
                }
                if let Some(why) = due.rekey {
                    tracing::debug!(
                        why,
                        session_id = est.sealer.session_id(),
                        "re-handshaking in place"
                    );
                    self.initiate_rekey(now);
                }
            }
            State::Established(_) | State::Closed => {}
        }
    }

    /// When [`Core::handle_timeout`] next has something to do; `None` once
    /// the connection is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Connecting(c) => Some(c.next_initiation.min(c.deadline)),
            State::Established(est) if !est.ended => Some(est.timers.next(est.sealer.last_sent())),
            State::Established(_) | State::Closed => None,
        }
    }

    /// Writes the next control frame owed to the server into `buf` (at least
    /// [`MAX_CONTROL_LEN`] bytes), if any. Call until `None` after every
    /// other call, and send each in turn.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if std::mem::take(&mut self.owed.disconnect) {
            self.owed = Owed::default();
            let state = std::mem::replace(&mut self.state, State::Closed);
            if let State::Established(mut est) = state {
                if let Ok(len) = est.sealer.seal_disconnect(buf, now) {
                    return Some(Transmit {
                        len,
                        kind: Control::Disconnect,
                    });
                }
            }
            return None;
        }
        if std::mem::take(&mut self.owed.initiation) {
            if let Some(p) = self.pending.as_mut() {
                if let Some(out) = buf.get_mut(..INIT_LEN) {
                    out.copy_from_slice(&p.frame);
                    p.sent = true;
                    if let State::Connecting(c) = &mut self.state {
                        c.attempts.sent += 1;
                    }
                    return Some(Transmit {
                        len: INIT_LEN,
                        kind: Control::Initiation,
                    });
                }
            }
        }
        if std::mem::take(&mut self.owed.probe) {
            if let State::Established(est) = &mut self.state {
                if !est.ended {
                    let id = est.rtt.start_probe(now);
                    if let Ok(len) = est.sealer.seal_probe(buf, id, now) {
                        return Some(Transmit {
                            len,
                            kind: Control::Probe,
                        });
                    }
                }
            }
        }
        None
    }

    /// The next thing worth telling the driver, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The driver moved to a new path (a fresh UDP socket, a new TCP
    /// connection): tell the server soon. Connecting, that is a fresh
    /// initiation (unless one not yet sent is waiting); established, a probe,
    /// which the server follows to our new address.
    pub fn handle_path_change(&mut self, now: Instant) {
        match &mut self.state {
            State::Connecting(c) => {
                if self.pending.as_ref().is_some_and(|p| !p.sent) {
                    self.owed.initiation = true;
                    return;
                }
                if let Some(p) = &self.pending {
                    c.attempts.initiation_ended(p);
                }
                c.next_initiation = (now + self.retry_interval).min(c.deadline);
                self.initiate_connect(now);
            }
            State::Established(_) => self.probe(now),
            State::Closed => {}
        }
    }

    /// Owes the server a keepalive carrying an RTT probe now (a driver that
    /// wants a fresh sample, or a test).
    pub fn probe(&mut self, now: Instant) {
        if let State::Established(est) = &mut self.state {
            if !est.ended {
                est.timers.last_probe = now;
                self.owed.probe = true;
            }
        }
    }

    /// Records a transient I/O error (an ICMP error on the socket, a TCP
    /// connect that failed): while connecting, the verdict mentions the last.
    pub fn handle_io_error(&mut self, e: &dyn std::fmt::Display) {
        if let State::Connecting(c) = &mut self.state {
            tracing::debug!(error = %e, "handshake attempt failed");
            c.attempts.record_io_error(e);
        }
    }

    /// Ends the connection at `now`: an established session (even one lost to
    /// silence) owes the server a disconnect, so it can free the session now
    /// rather than at its idle timeout; anything else simply stops.
    pub fn close(&mut self, _now: Instant) {
        self.pending = None;
        self.owed = Owed::default();
        match &self.state {
            State::Established(_) => self.owed.disconnect = true,
            State::Connecting(_) | State::Closed => self.state = State::Closed,
        }
    }

    /// Whether a session is up (established and not ended).
    pub fn is_established(&self) -> bool {
        matches!(&self.state, State::Established(est) if !est.ended)
    }

    /// Whether the connection is over: nothing more will be sent or opened.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The current session's config, once established.
    pub fn session_config(&self) -> Option<&SessionConfig> {
        match &self.state {
            State::Established(est) => Some(&est.config),
            _ => None,
        }
    }

    /// The id frames are sealed with, once established.
    pub fn session_id(&self) -> Option<u32> {
        match &self.state {
            State::Established(est) => Some(est.sealer.session_id()),
            _ => None,
        }
    }

    /// When the current session began (its handshake, or the latest rekey).
    pub fn session_started(&self) -> Option<Instant> {
        match &self.state {
            State::Established(est) => Some(est.started),
            _ => None,
        }
    }

    /// When a frame was last sealed (or the session began).
    pub fn last_sent(&self) -> Option<Instant> {
        match &self.state {
            State::Established(est) => Some(est.sealer.last_sent()),
            _ => None,
        }
    }

    /// When a frame from the server last opened (or the session began).
    pub fn last_received(&self) -> Option<Instant> {
        match &self.state {
            State::Established(est) => Some(est.timers.last_received),
            _ => None,
        }
    }

    /// Whether a rekey is under way.
    pub fn is_rekeying(&self) -> bool {
        matches!(&self.state, State::Established(est) if est.timers.rekeying())
    }

    /// The counters this core updates.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Counts into `stats` from now on (so counters add up across the
    /// connections of one client).
    pub fn set_stats(&mut self, stats: Arc<Stats>) {
        self.stats = stats;
    }

    /// A fresh initiation while connecting; a broken random source ends it.
    fn initiate_connect(&mut self, now: Instant) {
        match Pending::new(&mut self.initiator, now, &mut self.rng) {
            Ok(p) => {
                self.pending = Some(p);
                self.owed.initiation = true;
            }
            Err(e) => {
                self.pending = None;
                self.state = State::Closed;
                self.events
                    .push_back(Event::ConnectFailed(ConnectFailure::Internal(
                        e.to_string(),
                    )));
            }
        }
    }

    /// A fresh initiation for a rekey; a broken random source ends the session.
    fn initiate_rekey(&mut self, now: Instant) {
        match Pending::new(&mut self.initiator, now, &mut self.rng) {
            Ok(p) => {
                self.pending = Some(p);
                self.owed.initiation = true;
                if let State::Established(est) = &mut self.state {
                    est.timers.rekey_initiated(now);
                }
            }
            Err(e) => self.lose(Lost::Internal(e.to_string())),
        }
    }

    /// Connecting ended without a session.
    fn fail_connect(&mut self, now: Instant) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.pending = None;
        self.owed = Owed::default();
        if let State::Connecting(c) = state {
            let verdict = c.attempts.verdict(now.saturating_duration_since(c.started));
            self.events.push_back(Event::ConnectFailed(verdict));
        }
    }

    /// The established session is over; a goodbye may still be sealed
    /// ([`Core::close`]) unless the server closed it.
    fn lose(&mut self, why: Lost) {
        self.pending = None;
        self.owed = Owed::default();
        match &mut self.state {
            State::Established(est)
                if why != Lost::ServerClosed && why != Lost::CounterExhausted =>
            {
                est.ended = true
            }
            _ => self.state = State::Closed,
        }
        self.events.push_back(Event::SessionLost(why));
    }

    /// A uniform draw in `[0, 1)` from the core's random source, for jitter
    /// (none if the source fails: jitter only spreads clients out).
    fn unit(&mut self) -> f64 {
        self.rng
            .next_u32()
            .map_or(0.0, |n| f64::from(n) / (f64::from(u32::MAX) + 1.0))
    }

    /// A handshake response or reject.
    fn handle_answer(&mut self, frame: &[u8], now: Instant) -> Inbound {
        let rx = &self.stats.rx;
        let Some(pending) = self.pending.as_mut() else {
            inc(&rx.dropped_malformed);
            return Inbound::Dropped(Dropped::Stray);
        };
        match pending.judge(frame, now) {
            Answer::Stray => {
                tracing::debug!(
                    len = frame.len(),
                    "ignoring a handshake frame that does not answer us"
                );
                inc(&rx.dropped_malformed);
                Inbound::Dropped(Dropped::Stray)
            }
            Answer::Rejected(reason) => {
                inc(&rx.rejects);
                match &mut self.state {
                    State::Connecting(c) => match c.attempts.record_reject(reason) {
                        Some(line) => tracing::warn!("{line}"),
                        None => tracing::debug!(?reason, "initiation rejected"),
                    },
                    _ => self.events.push_back(Event::Rejected(reason)),
                }
                Inbound::Consumed
            }
            Answer::Failed(e) => {
                inc(&rx.dropped_auth);
                match &mut self.state {
                    State::Connecting(c) => match c.attempts.record_failure(&e) {
                        Some(line) => tracing::warn!("{line}"),
                        None => tracing::debug!(error = %e, "handshake response refused"),
                    },
                    _ => tracing::warn!(error = %e, "the answer to our rekey did not hold up"),
                }
                Inbound::Dropped(Dropped::Auth)
            }
            Answer::Session(session, config) => {
                self.pending = None;
                self.owed.initiation = false;
                self.start_session(session, config, now);
                Inbound::Consumed
            }
        }
    }

    /// A session from a handshake: the first, or a rekey's.
    fn start_session(&mut self, session: Box<Session>, config: SessionConfig, now: Instant) {
        let session_id = session.id();
        let jitter = self.unit();
        let (sealer, opener) = session.split();
        match &mut self.state {
            State::Connecting(c) => {
                tracing::debug!(
                    session_id,
                    took = ?now.saturating_duration_since(c.started),
                    "handshake complete"
                );
                self.state = State::Established(Box::new(Established {
                    sealer,
                    opener,
                    previous: None,
                    config,
                    started: now,
                    timers: Timers::new(&config, &self.options, now, jitter),
                    rtt: Rtt::default(),
                    ended: false,
                }));
                self.events
                    .push_back(Event::Connected { session_id, config });
            }
            State::Established(est) if !est.ended => {
                est.sealer = sealer;
                est.previous = Some(std::mem::replace(&mut est.opener, opener));
                est.config = config;
                est.started = now;
                est.timers.session_began(&config, now, jitter);
                tracing::debug!(session_id, "rekeyed");
                self.events.push_back(Event::Rekeyed { session_id, config });
            }
            // An answer after the end: nothing to do with it.
            State::Established(_) | State::Closed => {}
        }
    }

    /// A transport frame: open it with the session it belongs to.
    fn handle_transport(&mut self, frame: &mut [u8], now: Instant) -> Inbound {
        let rx = &self.stats.rx;
        let est = match &mut self.state {
            State::Established(est) if !est.ended => est,
            _ => {
                inc(&rx.dropped_wrong_session);
                return Inbound::Dropped(Dropped::NoSession);
            }
        };
        // The old session's frames still in flight open with the old keys
        // (a server reusing the id gets the new ones).
        let opener = match &mut est.previous {
            Some(p)
                if p.session_id() != est.opener.session_id()
                    && peek_session_id(frame) == Some(p.session_id()) =>
            {
                p
            }
            _ => &mut est.opener,
        };
        let opened = match opener.open(frame, now) {
            Ok(opened) => opened,
            Err(e) => {
                let (counter, why) = match e {
                    OpenError::Malformed(_) => (&rx.dropped_malformed, Dropped::Malformed),
                    OpenError::WrongSession => (&rx.dropped_wrong_session, Dropped::WrongSession),
                    OpenError::Replay(_) => (&rx.dropped_replay, Dropped::Replay),
                    OpenError::Auth => (&rx.dropped_auth, Dropped::Auth),
                };
                inc(counter);
                tracing::trace!(error = %e, len = frame.len(), "dropped an inbound frame");
                return Inbound::Dropped(why);
            }
        };
        est.timers.last_received = now;
        match opened.kind {
            FrameType::Data => {
                let packet = &frame[opened.payload.clone()];
                if ip::ipv4_destination(packet) != Some(est.config.client_addr) {
                    inc(&rx.dropped_not_for_us);
                    return Inbound::Dropped(Dropped::NotForUs);
                }
                inc(&rx.packets);
                bump(&rx.bytes, packet.len() as u64);
                Inbound::Packet(opened.payload)
            }
            FrameType::Keepalive => {
                inc(&rx.keepalives);
                if let Some(id) = probe_id(&frame[opened.payload]) {
                    if let Some(rtt) = est.rtt.on_echo(id, now) {
                        tracing::trace!(?rtt, "probe echoed");
                        if let Some(smoothed) = est.rtt.smoothed() {
                            self.stats.record_rtt(rtt, smoothed);
                        }
                    }
                }
                Inbound::Consumed
            }
            FrameType::Disconnect => {
                tracing::debug!(
                    session_id = est.sealer.session_id(),
                    "the server closed the session"
                );
                self.lose(Lost::ServerClosed);
                Inbound::Consumed
            }
            // `open` accepts transport frames only.
            FrameType::HandshakeInit | FrameType::HandshakeResp | FrameType::HandshakeReject => {
                inc(&rx.dropped_malformed);
                Inbound::Dropped(Dropped::Malformed)
            }
        }
    }
}

#[cfg(test)]
mod tests;
