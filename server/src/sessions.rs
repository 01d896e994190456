//! The session layer: who may connect, which inner address each client has, and
//! where each packet goes. It knows nothing of io_uring: a driver hands it the
//! bytes it received (in the driver's own buffers) and gets back what to send
//! where, so the same layer can sit under a second (e.g. tokio) driver.
//!
//! Buffer layout shared with the drivers (see [`FRAME_OFFSET`]): a frame starts
//! at `FRAME_OFFSET` within a slot buffer, so its plaintext payload sits at
//! [`PAYLOAD_OFFSET`]; TUN reads land there directly and are sealed in place,
//! and received frames are opened in place and written to the TUN from there.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::time::Instant;

use std::time::Duration;

use ringway_proto::handshake::server::Responder;
use ringway_proto::handshake::{HandshakeError, Timestamp};
use ringway_proto::session::TimerEvent;
use ringway_proto::wire::handshake::{emit_reject, InitFrame, RejectReason, REJECT_LEN, RESP_LEN};
use ringway_proto::wire::transport::{peek_session_id, HEADER_LEN, OVERHEAD, PROBE_LEN};
use ringway_proto::wire::{frame_type, FrameType};
use ringway_proto::{CowBytes, Entropy, EntropyError, PublicKey, Session, SessionConfig};

use crate::config::{Peer, Settings};
use crate::metrics::SessionCounters;
use crate::pool::IpPool;
use crate::quiet_log::Quiet;

/// Bytes reserved in front of every payload in a slot buffer: a transport header
/// plus room for a stream length prefix, rounded up so payloads stay aligned.
pub const HEADROOM: usize = 32;
/// Where a frame starts within a slot buffer.
pub const FRAME_OFFSET: usize = HEADROOM - HEADER_LEN;
/// Where a payload starts within a slot buffer.
pub const PAYLOAD_OFFSET: usize = HEADROOM;
/// How long a replaced session still opens frames after its peer re-handshakes
/// (a rekey), so packets already in flight under the old keys are not lost.
pub const REKEY_GRACE: Duration = Duration::from_secs(10);

/// The server's randomness: session ids, and the ephemeral keys of handshake
/// responses. The driver supplies it (the OS's generator) so this layer stays
/// deterministic under test.
pub trait IdSource {
    /// A fresh 32-bit value.
    fn next_id(&mut self) -> u32;

    /// Fills `dest` with fresh random bytes; by default from [`IdSource::next_id`].
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(4) {
            chunk.copy_from_slice(&self.next_id().to_ne_bytes()[..chunk.len()]);
        }
    }
}

/// An [`IdSource`] as proto's random source.
struct Randomness<'a, I: ?Sized>(&'a mut I);

impl<I: IdSource + ?Sized> Entropy for Randomness<'_, I> {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
        self.0.fill(dest);
        Ok(())
    }
}

/// Session ids from the system RNG: what both I/O backends use.
#[derive(Debug)]
pub struct OsRandom(pub ring::rand::SystemRandom);

impl IdSource for OsRandom {
    fn next_id(&mut self) -> u32 {
        use ring::rand::SecureRandom;
        let mut b = [0u8; 4];
        // A failing system RNG leaves zero, which the session layer rejects
        // and asks again for; the kernel's getrandom does not fail after boot.
        let _ = self.0.fill(&mut b);
        u32::from_ne_bytes(b)
    }
}

/// A TCP connection as the driver names it: a slot index plus the slot's
/// generation, so a reused slot is never mistaken for the connection before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Slot in the driver's connection table.
    pub index: u32,
    /// Generation of that slot.
    pub generation: u32,
}

/// Where a peer is reached: a UDP address, or a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outside {
    /// Datagrams to and from this address.
    Udp(SocketAddr),
    /// Length-prefixed frames on this connection.
    Tcp(ConnId),
}

impl std::fmt::Display for Outside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outside::Udp(a) => write!(f, "udp:{a}"),
            Outside::Tcp(c) => write!(f, "tcp#{}.{}", c.index, c.generation),
        }
    }
}

/// What a received frame asks of the driver.
#[derive(Debug)]
pub enum OutsideAction<'a> {
    /// Nothing to send (keepalive, dropped frame, disconnect).
    None,
    /// Write the decrypted packet at this range of the frame buffer to the TUN.
    ToInside(Range<usize>),
    /// Send these bytes back to the sender (a handshake response).
    Reply(Outside, CowBytes<'a>),
}

/// What the timers ask of the driver.
#[derive(Debug)]
pub enum TimerOutput<'a> {
    /// Send this frame (a keepalive or a disconnect).
    Send(Outside, &'a [u8]),
    /// This session is over; a TCP connection carrying it can be closed.
    Ended(Outside),
}

/// What a packet read from the TUN asks of the driver.
#[derive(Debug, PartialEq, Eq)]
pub enum InsideAction {
    /// Dropped (and counted).
    Drop,
    /// Send `len` bytes from the frame start to `to`.
    Send {
        /// Where the peer is reached now.
        to: Outside,
        /// Sealed frame length.
        len: usize,
    },
}

/// The session packets from the TUN are sealed to, found once by
/// [`Sessions::route_inside`].
#[derive(Debug)]
pub struct InsideRoute<'a> {
    entry: &'a mut Entry,
    counters: &'a mut SessionCounters,
}

impl InsideRoute<'_> {
    /// Where the peer is reached now.
    pub fn to(&self) -> Outside {
        self.entry.outside
    }

    /// Seals the packet at `frame[HEADER_LEN..HEADER_LEN + len]` in place (`frame` has
    /// `TAG_LEN` spare bytes after it) and returns the frame's length; `None` (counted as
    /// `oversize`) if it cannot be sealed.
    pub fn seal(&mut self, frame: &mut [u8], len: usize, now: Instant) -> Option<usize> {
        match self.entry.session.sealer.seal_data(frame, len, now) {
            Ok(n) => {
                self.counters.inside_rx_packets += 1;
                self.counters.inside_rx_bytes += len as u64;
                Some(n)
            }
            Err(e) => {
                tracing::debug!(error = %e, "seal failed");
                self.counters.drop_oversize += 1;
                None
            }
        }
    }
}

#[derive(Debug)]
struct PeerState {
    config: Peer,
    last_timestamp: Option<Timestamp>,
    session: Option<u32>,
    /// A newer session answered but not yet confirmed by an authenticated frame from the
    /// client: `session` carries the traffic until then (see [`Entry::replaces`]).
    pending: Option<u32>,
    /// The inner address this peer had last, offered again when it returns.
    last_inner: Option<Ipv4Addr>,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    peer: usize,
    outside: Outside,
    inner: Ipv4Addr,
    /// Set when a newer session replaced this one: it may still open frames
    /// until then, but nothing is sent with it.
    retire_at: Option<Instant>,
    /// The live session this one takes over from once the client proves it holds the new
    /// keys (its first authenticated frame here). Until then nothing is sent with this one
    /// and the old one keeps carrying traffic, as WireGuard's responder does: anyone can
    /// replay a captured initiation, and answering it must not take the peer's traffic away
    /// from the session that works.
    replaces: Option<u32>,
    /// An authenticated frame from the client has arrived on it: it is known to work.
    confirmed: bool,
}

impl Entry {
    /// Whether packets are sent with this session (neither retired nor awaiting
    /// confirmation).
    fn is_current(&self) -> bool {
        self.retire_at.is_none() && self.replaces.is_none()
    }
}

/// All sessions of one server.
#[derive(Debug)]
pub struct Sessions {
    responder: Responder,
    peers: Vec<PeerState>,
    by_key: HashMap<PublicKey, usize>,
    sessions: HashMap<u32, Entry>,
    by_inner: HashMap<Ipv4Addr, u32>,
    /// The sessions each TCP connection carries (one; two while a rekey's old session
    /// retires), so a closing connection ends its own without a scan of every session.
    by_conn: HashMap<ConnId, Vec<u32>>,
    pool: IpPool,
    template: SessionConfig,
    /// What happened to traffic, by reason.
    pub counters: SessionCounters,
    reply: [u8; RESP_LEN],
    reject: [u8; REJECT_LEN],
    scratch: [u8; OVERHEAD + PROBE_LEN],
    expired: Vec<u32>,
    /// Log budgets for what anyone can send: unknown keys, replays, a full pool.
    quiet: QuietLogs,
    /// Timestamps restored for keys not in the peer list, kept to be written back (a peer
    /// removed and added again keeps its replay protection).
    other_timestamps: HashMap<PublicKey, Timestamp>,
    /// A handshake changed a peer's last timestamp since [`Sessions::timestamps_changed`].
    timestamps_dirty: bool,
}

/// One [`Quiet`] per floodable log line.
#[derive(Debug, Default)]
struct QuietLogs {
    unknown_peer: Quiet,
    replay: Quiet,
    pool_exhausted: Quiet,
}

impl Sessions {
    /// Sessions for a validated config.
    pub fn new(settings: &Settings) -> Self {
        let peers: Vec<PeerState> = settings
            .peers
            .iter()
            .map(|p| PeerState {
                config: p.clone(),
                last_timestamp: None,
                session: None,
                pending: None,
                last_inner: None,
            })
            .collect();
        let by_key = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.config.public_key, i))
            .collect();
        let pool = IpPool::new(settings.pool);
        let template = SessionConfig {
            cipher: settings.cipher,
            client_addr: Ipv4Addr::UNSPECIFIED,
            prefix_len: settings.pool.prefix_len(),
            server_addr: settings.pool.first_host(),
            mtu: settings.mtu,
            keepalive_secs: settings.keepalive_secs,
            idle_timeout_secs: settings.idle_timeout_secs,
            rekey_after_secs: settings.rekey_after_secs,
        };
        Sessions {
            responder: Responder::new(settings.secret_key.clone()),
            peers,
            by_key,
            sessions: HashMap::new(),
            by_inner: HashMap::new(),
            by_conn: HashMap::new(),
            pool,
            template,
            counters: SessionCounters::default(),
            reply: [0; RESP_LEN],
            reject: [0; REJECT_LEN],
            scratch: [0; OVERHEAD + PROBE_LEN],
            expired: Vec::new(),
            quiet: QuietLogs::default(),
            other_timestamps: HashMap::new(),
            timestamps_dirty: false,
        }
    }

    /// Restores each peer's newest accepted initiation timestamp (from the last run, see
    /// `handshake_state`): an initiation not newer than it is refused as a replay.
    pub fn restore_timestamps(&mut self, saved: HashMap<PublicKey, Timestamp>) {
        for (key, ts) in saved {
            match self.by_key.get(&key) {
                Some(&i) => {
                    let last = &mut self.peers[i].last_timestamp;
                    *last = Some(last.map_or(ts, |l| l.max(ts)));
                }
                None => {
                    self.other_timestamps.insert(key, ts);
                }
            }
        }
    }

    /// Whether a handshake changed the timestamps since the last call (which clears it).
    pub fn timestamps_changed(&mut self) -> bool {
        std::mem::take(&mut self.timestamps_dirty)
    }

    /// Every known key's newest accepted initiation timestamp, to save.
    pub fn timestamps(&self) -> impl Iterator<Item = (&PublicKey, Timestamp)> {
        let peers = self
            .peers
            .iter()
            .filter_map(|p| p.last_timestamp.map(|t| (&p.config.public_key, t)));
        peers.chain(self.other_timestamps.iter().map(|(k, t)| (k, *t)))
    }

    /// Number of live sessions (not counting ones retired by a rekey).
    pub fn len(&self) -> usize {
        self.sessions.values().filter(|e| e.is_current()).count()
    }

    /// Whether there are no live sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Handles one frame received from `from`. `frame` is the whole datagram,
    /// decrypted in place if it is a transport frame.
    pub fn handle_outside(
        &mut self,
        frame: &mut [u8],
        from: Outside,
        now: Instant,
        ids: &mut impl IdSource,
    ) -> OutsideAction<'_> {
        self.counters.outside_rx_frames += 1;
        match frame_type(frame) {
            Ok(FrameType::HandshakeInit) => self.handle_init(frame, from, now, ids),
            Ok(t) if t.is_transport() => self.handle_transport(frame, from, now),
            // Responses only ever go from server to client.
            Ok(_) | Err(_) => {
                self.counters.drop_malformed += 1;
                OutsideAction::None
            }
        }
    }

    fn handle_init(
        &mut self,
        frame: &[u8],
        from: Outside,
        now: Instant,
        ids: &mut impl IdSource,
    ) -> OutsideAction<'_> {
        let pending = match self.responder.read_init(frame, &mut Randomness(ids)) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%from, error = %e, "initiation rejected");
                self.counters.drop_handshake_invalid += 1;
                // A well-formed initiation keyed for another server: say so, so
                // the operator sees "server key mismatch", not "unreachable".
                if e == HandshakeError::BadMac {
                    if let Ok(init) = InitFrame::new_checked(frame) {
                        return self.reject_with(
                            from,
                            init.sender_index(),
                            RejectReason::UnknownServerKey,
                        );
                    }
                }
                return OutsideAction::None;
            }
        };
        let Some(&peer_idx) = self.by_key.get(pending.client_key()) else {
            if let Some(held) = self.quiet.unknown_peer.allow(now) {
                tracing::info!(%from, key = %pending.client_key(), held_back = held, "initiation from a key not in the peer list (at most one such line per 10 s)");
            }
            self.counters.drop_unknown_peer += 1;
            let index = InitFrame::new_checked(frame).map_or(0, |f| f.sender_index());
            return self.reject_with(from, index, RejectReason::NotAuthorised);
        };
        let ts = pending.payload().timestamp;
        let peer = &self.peers[peer_idx];
        if peer.last_timestamp.is_some_and(|last| ts <= last) {
            if let Some(held) = self.quiet.replay.allow(now) {
                tracing::info!(%from, peer = %peer.config.name, held_back = held, "replayed or stale initiation (at most one such line per 10 s)");
            }
            self.counters.drop_handshake_replay += 1;
            return OutsideAction::None;
        }
        // A re-handshaking peer keeps its address; its old session retires
        // (below, once the new one exists): it still opens frames for a grace
        // period (packets sent under the old keys before the client switched),
        // but is never used to send.
        let current = peer.session.filter(|id| self.sessions.contains_key(id));
        // Only a session that has carried an authenticated frame is worth keeping the traffic
        // on: one never confirmed (its answer lost, or a replayer's) is replaced at once.
        let proven = current.filter(|id| self.sessions.get(id).is_some_and(|e| e.confirmed));
        let inner = match current.and_then(|id| self.sessions.get(&id)) {
            Some(old) => old.inner,
            None => match self.pool.allocate_preferring(peer.last_inner) {
                Some(a) => a,
                None => {
                    if let Some(held) = self.quiet.pool_exhausted.allow(now) {
                        tracing::warn!(peer = %peer.config.name, held_back = held, "address pool exhausted (at most one such line per 10 s)");
                    }
                    self.counters.drop_pool_exhausted += 1;
                    return OutsideAction::None;
                }
            },
        };
        let session_id = loop {
            let id = ids.next_id();
            if id != 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        let config = SessionConfig {
            cipher: pending.payload().cipher.unwrap_or(self.template.cipher),
            client_addr: inner,
            ..self.template
        };
        let psk = peer.config.psk;
        let session = match pending.accept(psk.as_ref(), session_id, &config, now, &mut self.reply)
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "accepting a verified initiation failed");
                if current.is_none() {
                    self.pool.release(inner);
                }
                self.counters.drop_handshake_invalid += 1;
                return OutsideAction::None;
            }
        };
        let peer = &mut self.peers[peer_idx];
        peer.last_timestamp = Some(ts);
        self.timestamps_dirty = true;
        peer.last_inner = Some(inner);
        // With a proven session, the new one waits for the client's first frame on it; an
        // earlier one still waiting is superseded (the client retried). Otherwise the new
        // one is current at once and an unproven predecessor retires.
        let superseded = match proven {
            Some(_) => peer.pending.replace(session_id),
            None => {
                peer.session = Some(session_id);
                peer.pending.take()
            }
        };
        if proven.is_none() {
            if let Some(old) = current.and_then(|id| self.sessions.get_mut(&id)) {
                old.retire_at = Some(now + REKEY_GRACE);
            }
        }
        tracing::info!(peer = %peer.config.name, %from, %inner, session_id, cipher = config.cipher.name(), "session established");
        self.sessions.insert(
            session_id,
            Entry {
                session,
                peer: peer_idx,
                outside: from,
                inner,
                retire_at: None,
                replaces: proven,
                confirmed: false,
            },
        );
        if proven.is_none() {
            self.by_inner.insert(inner, session_id);
        }
        link(&mut self.by_conn, from, session_id);
        if let Some(old) = superseded {
            self.remove(old);
        }
        self.counters.handshakes += 1;
        OutsideAction::Reply(from, CowBytes::Borrowed(&self.reply))
    }

    fn reject_with(
        &mut self,
        to: Outside,
        receiver_index: u32,
        reason: RejectReason,
    ) -> OutsideAction<'_> {
        self.reject = emit_reject(receiver_index, reason);
        OutsideAction::Reply(to, CowBytes::Borrowed(&self.reject))
    }

    fn handle_transport(
        &mut self,
        frame: &mut [u8],
        from: Outside,
        now: Instant,
    ) -> OutsideAction<'_> {
        let Some((session_id, mut entry)) =
            peek_session_id(frame).and_then(|id| self.sessions.get_mut(&id).map(|e| (id, e)))
        else {
            self.counters.drop_unknown_session += 1;
            return OutsideAction::None;
        };
        let opened = match entry.session.opener.open(frame, now) {
            Ok(o) => o,
            Err(e) => {
                use ringway_proto::session::OpenError;
                match e {
                    OpenError::Malformed(_) | OpenError::WrongSession => {
                        self.counters.drop_malformed += 1
                    }
                    OpenError::Replay(_) => self.counters.drop_replay += 1,
                    OpenError::Auth => self.counters.drop_auth += 1,
                }
                return OutsideAction::None;
            }
        };
        // Authenticated: the client holds this session's keys. If it replaces another,
        // the switch happens now.
        entry.confirmed = true;
        if let Some(old) = entry.replaces.take() {
            // Rare (once per new session): the switch needs all of `self`, so the entry is
            // looked up again after it; every other frame keeps the one lookup.
            self.confirm(session_id, old, now);
            let Some(again) = self.sessions.get_mut(&session_id) else {
                return OutsideAction::None;
            };
            entry = again;
        }
        // Follow the client if its address changed (roaming, NAT rebinding).
        if entry.outside != from {
            let old = std::mem::replace(&mut entry.outside, from);
            unlink(&mut self.by_conn, old, session_id);
            link(&mut self.by_conn, from, session_id);
        }
        match opened.kind {
            FrameType::Data => {
                let packet = &frame[opened.payload.clone()];
                if ipv4_source(packet) != Some(entry.inner) {
                    self.counters.drop_bad_source += 1;
                    return OutsideAction::None;
                }
                self.counters.inside_tx_packets += 1;
                self.counters.inside_tx_bytes += packet.len() as u64;
                OutsideAction::ToInside(opened.payload)
            }
            FrameType::Keepalive if opened.payload.len() == PROBE_LEN => {
                // A probe: echo its id so the client can time the round trip.
                if entry.retire_at.is_some() {
                    return OutsideAction::None;
                }
                let mut id = [0u8; PROBE_LEN];
                id.copy_from_slice(&frame[opened.payload]);
                let probe = u64::from_be_bytes(id);
                match entry
                    .session
                    .sealer
                    .seal_probe(&mut self.scratch, probe, now)
                {
                    Ok(n) => OutsideAction::Reply(from, CowBytes::Borrowed(&self.scratch[..n])),
                    Err(_) => OutsideAction::None,
                }
            }
            FrameType::Disconnect => {
                let id = entry.session.id();
                tracing::info!(peer = %self.peers[entry.peer].config.name, session_id = id, "session closed by the client");
                self.remove(id);
                self.counters.sessions_disconnected += 1;
                OutsideAction::None
            }
            _ => OutsideAction::None,
        }
    }

    /// Session `new` (of the same peer) proved itself: it takes the route from `old`, which
    /// retires (still opening frames in flight for a grace period).
    fn confirm(&mut self, new: u32, old: u32, now: Instant) {
        let Some(entry) = self.sessions.get(&new) else {
            return;
        };
        let (peer_idx, inner) = (entry.peer, entry.inner);
        if let Some(o) = self.sessions.get_mut(&old) {
            o.retire_at = Some(now + REKEY_GRACE);
        }
        let peer = &mut self.peers[peer_idx];
        if peer.pending == Some(new) {
            peer.pending = None;
        }
        peer.session = Some(new);
        self.by_inner.insert(inner, new);
    }

    /// Handles a packet read from the TUN. `buf` starts at the frame start and
    /// holds the packet at `HEADER_LEN..HEADER_LEN + len`, with at least
    /// `TAG_LEN` bytes spare after it; it is sealed in place.
    pub fn handle_inside(&mut self, buf: &mut [u8], len: usize, now: Instant) -> InsideAction {
        let packet = buf.get(HEADER_LEN..HEADER_LEN + len).unwrap_or_default();
        let Some(mut route) = self.route_inside(packet) else {
            return InsideAction::Drop;
        };
        match route.seal(buf, len, now) {
            Some(n) => InsideAction::Send {
                to: route.to(),
                len: n,
            },
            None => InsideAction::Drop,
        }
    }

    /// Finds the session a packet read from the TUN goes to, once for every packet
    /// sealed to it: the segments of a superpacket share its destination, so one lookup
    /// serves them all. `None` (counted as `no_route`) for a packet that is not IPv4 or
    /// whose destination has no session.
    pub fn route_inside(&mut self, packet: &[u8]) -> Option<InsideRoute<'_>> {
        let entry = ipv4_destination(packet)
            .and_then(|d| self.by_inner.get(&d))
            .and_then(|id| self.sessions.get_mut(id));
        match entry {
            Some(entry) => Some(InsideRoute {
                entry,
                counters: &mut self.counters,
            }),
            None => {
                self.counters.drop_no_route += 1;
                None
            }
        }
    }

    /// Runs every session's timers: emits keepalives and the ends of expired
    /// sessions through `out`. Returns the earliest next deadline, if any.
    pub fn handle_timers(
        &mut self,
        now: Instant,
        mut out: impl FnMut(TimerOutput<'_>),
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        self.log_held_back(now);
        self.expired.clear();
        for (id, entry) in self.sessions.iter_mut() {
            if let Some(at) = entry.retire_at {
                if now >= at {
                    self.expired.push(*id);
                }
                continue;
            }
            match entry.session.handle_timeout(now) {
                TimerEvent::Expired => {
                    self.expired.push(*id);
                    continue;
                }
                // An unconfirmed session sends nothing (its outside may be a replayer's) and
                // sets no deadline of its own (a keepalive it does not send stays due): it
                // only expires, checked on the ticks the others set.
                _ if entry.replaces.is_some() => continue,
                TimerEvent::SendKeepalive => {
                    if let Ok(n) = entry.session.sealer.seal_keepalive(&mut self.scratch, now) {
                        out(TimerOutput::Send(entry.outside, &self.scratch[..n]));
                    }
                }
                TimerEvent::Idle => {}
            }
            let t = entry.session.poll_timeout();
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        for i in 0..self.expired.len() {
            let id = self.expired[i];
            let Some(e) = self.sessions.get(&id) else {
                continue;
            };
            if !e.is_current() {
                // A retired session ends quietly: its peer lives on in the new one; so does
                // one never confirmed (a replayed initiation's, or a lost retry's).
                self.remove(id);
                continue;
            }
            tracing::info!(peer = %self.peers[e.peer].config.name, session_id = id, "session expired");
            out(TimerOutput::Ended(e.outside));
            self.remove(id);
            self.counters.sessions_expired += 1;
        }
        next
    }

    /// Once a flood of unauthenticated input stops, says how much of it was not logged.
    fn log_held_back(&mut self, now: Instant) {
        let q = &mut self.quiet;
        if let Some(n) = q.unknown_peer.summary(now) {
            tracing::info!(count = n, "initiations from keys not in the peer list, not logged one by one (drop counter: unknown_peer)");
        }
        if let Some(n) = q.replay.summary(now) {
            tracing::info!(
                count = n,
                "replayed or stale initiations, not logged one by one (drop counter: hs_replay)"
            );
        }
        if let Some(n) = q.pool_exhausted.summary(now) {
            tracing::warn!(count = n, "initiations refused for a full address pool, not logged one by one (drop counter: pool_exhausted)");
        }
    }

    /// Seals a disconnect for every session (for a clean shutdown) and forgets them.
    pub fn disconnect_all(&mut self, now: Instant, mut out: impl FnMut(TimerOutput<'_>)) {
        for entry in self.sessions.values_mut().filter(|e| e.is_current()) {
            if let Ok(n) = entry.session.sealer.seal_disconnect(&mut self.scratch, now) {
                out(TimerOutput::Send(entry.outside, &self.scratch[..n]));
            }
        }
        let ids: Vec<u32> = self.sessions.keys().copied().collect();
        for id in ids {
            self.remove(id);
        }
    }

    /// A TCP connection is gone: any session carried only by it ends (the
    /// client re-handshakes on its next connection).
    pub fn connection_closed(&mut self, conn: ConnId) {
        // Only the connection's own sessions: a connection that never completed a handshake
        // costs one lookup, however many sessions the server has.
        let Some(ids) = self.by_conn.remove(&conn) else {
            return;
        };
        for id in ids {
            if let Some(e) = self.sessions.get(&id) {
                tracing::info!(peer = %self.peers[e.peer].config.name, session_id = id, "session ended with its TCP connection");
            }
            self.remove(id);
            self.counters.sessions_disconnected += 1;
        }
    }

    fn remove(&mut self, id: u32) {
        let Some(e) = self.sessions.remove(&id) else {
            return;
        };
        unlink(&mut self.by_conn, e.outside, id);
        // A retired or unconfirmed session shares its address with the current one:
        // only the peer's current session owns the route and the pool entry. If the current
        // one goes while a newer waits for confirmation, the newer takes them over.
        let peer = &mut self.peers[e.peer];
        if peer.pending == Some(id) {
            peer.pending = None;
        }
        if peer.session == Some(id) {
            match peer.pending.take() {
                Some(next) => {
                    peer.session = Some(next);
                    self.by_inner.insert(e.inner, next);
                    if let Some(n) = self.sessions.get_mut(&next) {
                        n.replaces = None;
                    }
                }
                None => {
                    peer.session = None;
                    self.by_inner.remove(&e.inner);
                    self.pool.release(e.inner);
                }
            }
        }
    }
}

/// Records that session `id` is reached over `outside`, if that is a TCP connection.
fn link(by_conn: &mut HashMap<ConnId, Vec<u32>>, outside: Outside, id: u32) {
    if let Outside::Tcp(conn) = outside {
        by_conn.entry(conn).or_default().push(id);
    }
}

/// Forgets that session `id` is reached over `outside`.
fn unlink(by_conn: &mut HashMap<ConnId, Vec<u32>>, outside: Outside, id: u32) {
    let Outside::Tcp(conn) = outside else {
        return;
    };
    if let Some(ids) = by_conn.get_mut(&conn) {
        ids.retain(|&s| s != id);
        if ids.is_empty() {
            by_conn.remove(&conn);
        }
    }
}

/// The destination of an IPv4 packet, `None` for anything else.
fn ipv4_destination(packet: &[u8]) -> Option<Ipv4Addr> {
    ipv4_field(packet, 16)
}

/// The source of an IPv4 packet, `None` for anything else.
fn ipv4_source(packet: &[u8]) -> Option<Ipv4Addr> {
    ipv4_field(packet, 12)
}

fn ipv4_field(packet: &[u8], at: usize) -> Option<Ipv4Addr> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let b = packet.get(at..at + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

#[cfg(test)]
mod tests;
