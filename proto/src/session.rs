//! An established session: seal and open transport frames in place, and decide
//! when a keepalive is due or the session has gone quiet for too long.
//!
//! A [`Session`] splits into a [`Sealer`] (outbound key and counter) and an
//! [`Opener`] (inbound key and replay window) so a driver can run its two
//! directions on two tasks without a lock between them.
//!
//! Buffer contract for sealing, so no packet is ever copied to make room:
//!
//! ```text
//! frame: [ HEADER_LEN headroom | payload (payload_len) | TAG_LEN tailroom ]
//!          ^ header written here  ^ encrypted in place    ^ tag written here
//! ```

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::crypto::{Cipher, DataKey};
use crate::replay::{ReplayError, ReplayWindow};
use crate::wire::transport::{
    self, TransportFrame, HEADER_LEN, MAX_PAYLOAD_LEN, PROBE_LEN, TAG_LEN,
};
use crate::wire::{self, FrameType};

/// Stop sealing before the counter could wrap: a nonce must never repeat.
/// Far beyond any session's life at any line rate; a rekey comes first.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 16);

/// Why a frame could not be sealed. Always the caller's concern, never the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The buffer lacks headroom/tailroom for `payload_len`.
    #[error("buffer too small for header, payload and tag")]
    BufferTooSmall,
    /// The payload would not fit a transport frame.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The counter is used up: the session must be re-established.
    #[error("send counter exhausted")]
    CounterExhausted,
    /// Not a transport kind, or a payload its kind may not carry (a
    /// disconnect carries none, a keepalive none or a probe id).
    #[error("this kind of frame cannot carry this payload")]
    PayloadNotAllowed,
}

/// Why an incoming transport frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not a well-formed transport frame.
    #[error(transparent)]
    Malformed(#[from] wire::Error),
    /// Carries another session's id.
    #[error("frame for another session")]
    WrongSession,
    /// Counter replayed or too old.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The tag did not verify: forged, corrupted, or keyed differently.
    #[error("authentication failed")]
    Auth,
}

/// A frame that opened: its kind, and where its plaintext is within the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Data, keepalive or disconnect.
    pub kind: FrameType,
    /// The plaintext's range within the frame buffer (empty unless data).
    pub payload: Range<usize>,
}

/// The sending half: outbound key and counter.
#[derive(Debug)]
pub struct Sealer {
    session_id: u32,
    key: DataKey,
    next_counter: u64,
    last_sent: Instant,
}

impl Sealer {
    /// Seals a frame of `kind` in place; see the module doc for the layout.
    /// Returns the frame's total length.
    pub fn seal(
        &mut self,
        kind: FrameType,
        frame: &mut [u8],
        payload_len: usize,
        now: Instant,
    ) -> Result<usize, SealError> {
        if kind == FrameType::Data && payload_len > MAX_PAYLOAD_LEN {
            return Err(SealError::PayloadTooLarge);
        }
        if !transport::payload_allowed(kind, payload_len) {
            return Err(SealError::PayloadNotAllowed);
        }
        let total = HEADER_LEN + payload_len + TAG_LEN;
        let frame = frame.get_mut(..total).ok_or(SealError::BufferTooSmall)?;
        if self.next_counter >= REJECT_AFTER_MESSAGES {
            return Err(SealError::CounterExhausted);
        }
        let counter = self.next_counter;
        self.next_counter += 1;
        transport::emit_header(frame, kind, self.session_id, counter)
            .map_err(|_| SealError::BufferTooSmall)?;
        let (header, rest) = frame.split_at_mut(HEADER_LEN);
        let (payload, tag) = rest.split_at_mut(payload_len);
        let tag: &mut [u8; TAG_LEN] = tag.try_into().map_err(|_| SealError::BufferTooSmall)?;
        self.key.seal(counter, header, payload, tag);
        self.last_sent = now;
        Ok(total)
    }

    /// Seals a data frame carrying `payload_len` bytes already at `frame[HEADER_LEN..]`.
    pub fn seal_data(
        &mut self,
        frame: &mut [u8],
        payload_len: usize,
        now: Instant,
    ) -> Result<usize, SealError> {
        self.seal(FrameType::Data, frame, payload_len, now)
    }

    /// Seals a keepalive into `frame` (at least [`transport::OVERHEAD`] bytes).
    pub fn seal_keepalive(&mut self, frame: &mut [u8], now: Instant) -> Result<usize, SealError> {
        self.seal(FrameType::Keepalive, frame, 0, now)
    }

    /// Seals a keepalive carrying probe id `probe` into `frame` (at least
    /// [`transport::OVERHEAD`] + 8 bytes). The server answers a probe with a
    /// keepalive carrying the same id, so the sender can time the round trip.
    pub fn seal_probe(
        &mut self,
        frame: &mut [u8],
        probe: u64,
        now: Instant,
    ) -> Result<usize, SealError> {
        let slot = frame
            .get_mut(HEADER_LEN..HEADER_LEN + PROBE_LEN)
            .ok_or(SealError::BufferTooSmall)?;
        slot.copy_from_slice(&probe.to_be_bytes());
        self.seal(FrameType::Keepalive, frame, PROBE_LEN, now)
    }

    /// Seals a disconnect into `frame` (at least [`transport::OVERHEAD`] bytes).
    pub fn seal_disconnect(&mut self, frame: &mut [u8], now: Instant) -> Result<usize, SealError> {
        self.seal(FrameType::Disconnect, frame, 0, now)
    }

    /// When a frame was last sealed (or the session began).
    pub fn last_sent(&self) -> Instant {
        self.last_sent
    }

    /// The session id every frame carries.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }
}

/// The receiving half: inbound key and replay window.
#[derive(Debug)]
pub struct Opener {
    session_id: u32,
    key: DataKey,
    window: ReplayWindow,
    last_received: Instant,
}

impl Opener {
    /// Checks, decrypts in place and accepts a transport frame: replay window
    /// first (cheap), then the tag, and only then the counter is marked seen.
    pub fn open(&mut self, frame: &mut [u8], now: Instant) -> Result<Opened, OpenError> {
        let view = TransportFrame::new_checked(&*frame)?;
        let kind = view.kind();
        let counter = view.counter();
        if view.session_id() != self.session_id {
            return Err(OpenError::WrongSession);
        }
        self.window.check(counter)?;
        let (header, body) = frame.split_at_mut(HEADER_LEN);
        let plain_len = self
            .key
            .open(counter, header, body)
            .map_err(|_| OpenError::Auth)?;
        self.window.commit(counter)?;
        self.last_received = now;
        Ok(Opened {
            kind,
            payload: HEADER_LEN..HEADER_LEN + plain_len,
        })
    }

    /// When a frame last opened (or the session began).
    pub fn last_received(&self) -> Instant {
        self.last_received
    }

    /// The session id frames must carry.
    pub fn session_id(&self) -> u32 {
        self.session_id
    }
}

/// The probe id in an opened keepalive's payload, if it carries one.
pub fn probe_id(payload: &[u8]) -> Option<u64> {
    let b: [u8; PROBE_LEN] = payload.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// What a session's timer asks the driver to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// Nothing due yet.
    Idle,
    /// Nothing sent for a keepalive interval: seal and send a keepalive.
    SendKeepalive,
    /// Nothing received within the idle timeout: drop the session.
    Expired,
}

/// Both halves of a session plus its timers.
#[derive(Debug)]
pub struct Session {
    /// Outbound half.
    pub sealer: Sealer,
    /// Inbound half.
    pub opener: Opener,
    keepalive: Duration,
    idle_timeout: Duration,
}

impl Session {
    pub(crate) fn new(
        session_id: u32,
        cipher: Cipher,
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        keepalive: Duration,
        idle_timeout: Duration,
        now: Instant,
    ) -> Self {
        Session {
            sealer: Sealer {
                session_id,
                key: DataKey::derive(cipher, send_key),
                next_counter: 0,
                last_sent: now,
            },
            opener: Opener {
                session_id,
                key: DataKey::derive(cipher, recv_key),
                window: ReplayWindow::new(),
                last_received: now,
            },
            keepalive,
            idle_timeout,
        }
    }

    /// The session id both directions carry.
    pub fn id(&self) -> u32 {
        self.sealer.session_id
    }

    /// The next instant [`Session::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Instant {
        let keepalive = self.sealer.last_sent + self.keepalive;
        let expiry = self.opener.last_received + self.idle_timeout;
        keepalive.min(expiry)
    }

    /// What is due at `now`. Expiry wins over a keepalive.
    pub fn handle_timeout(&self, now: Instant) -> TimerEvent {
        if now >= self.opener.last_received + self.idle_timeout {
            TimerEvent::Expired
        } else if now >= self.sealer.last_sent + self.keepalive {
            TimerEvent::SendKeepalive
        } else {
            TimerEvent::Idle
        }
    }

    /// Separates the halves for drivers that run each direction on its own task.
    pub fn split(self) -> (Sealer, Opener) {
        (self.sealer, self.opener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::transport::OVERHEAD;
    use proptest::prelude::*;

    fn pair(now: Instant) -> (Session, Session) {
        let a = Session::new(
            7,
            Cipher::Aes256Gcm,
            &[1; 32],
            &[2; 32],
            Duration::from_secs(10),
            Duration::from_secs(60),
            now,
        );
        let b = Session::new(
            7,
            Cipher::Aes256Gcm,
            &[2; 32],
            &[1; 32],
            Duration::from_secs(10),
            Duration::from_secs(60),
            now,
        );
        (a, b)
    }

    fn sealed(s: &mut Session, payload: &[u8], now: Instant) -> Vec<u8> {
        let mut buf = vec![0u8; payload.len() + OVERHEAD];
        buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        let n = s.sealer.seal_data(&mut buf, payload.len(), now).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn data_round_trip_in_place() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut f = sealed(&mut a, b"ip packet", now);
        let opened = b.opener.open(&mut f, now).unwrap();
        assert_eq!(opened.kind, FrameType::Data);
        assert_eq!(&f[opened.payload], b"ip packet");
    }

    #[test]
    fn replay_rejected_and_reorder_accepted() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let f0 = sealed(&mut a, b"zero", now);
        let f1 = sealed(&mut a, b"one", now);
        b.opener.open(&mut f1.clone(), now).unwrap();
        b.opener.open(&mut f0.clone(), now).unwrap();
        assert_eq!(
            b.opener.open(&mut f1.clone(), now),
            Err(OpenError::Replay(ReplayError::Replayed))
        );
    }

    #[test]
    fn forged_frame_does_not_burn_its_counter() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let good = sealed(&mut a, b"real", now);
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(b.opener.open(&mut forged, now), Err(OpenError::Auth));
        // The genuine frame with the same counter still opens.
        b.opener.open(&mut good.clone(), now).unwrap();
    }

    #[test]
    fn keepalive_and_disconnect() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut buf = [0u8; OVERHEAD];
        let n = a.sealer.seal_keepalive(&mut buf, now).unwrap();
        assert_eq!(
            b.opener.open(&mut buf[..n], now).unwrap().kind,
            FrameType::Keepalive
        );
        let n = a.sealer.seal_disconnect(&mut buf, now).unwrap();
        let o = b.opener.open(&mut buf[..n], now).unwrap();
        assert_eq!(o.kind, FrameType::Disconnect);
        assert!(o.payload.is_empty());
        assert_eq!(
            a.sealer.seal(FrameType::Keepalive, &mut [0u8; 64], 1, now),
            Err(SealError::PayloadNotAllowed)
        );
        assert_eq!(
            a.sealer.seal(FrameType::Disconnect, &mut [0u8; 64], 8, now),
            Err(SealError::PayloadNotAllowed)
        );
        let mut probe = [0u8; OVERHEAD + PROBE_LEN];
        let n = a.sealer.seal_probe(&mut probe, 0xfeed, now).unwrap();
        let o = b.opener.open(&mut probe[..n], now).unwrap();
        assert_eq!(o.kind, FrameType::Keepalive);
        assert_eq!(probe_id(&probe[o.payload]), Some(0xfeed));
        assert_eq!(probe_id(&[]), None);
    }

    #[test]
    fn seal_checks_room() {
        let now = Instant::now();
        let (mut a, _) = pair(now);
        assert_eq!(
            a.sealer.seal_data(&mut [0u8; OVERHEAD + 3], 4, now),
            Err(SealError::BufferTooSmall)
        );
        assert_eq!(
            a.sealer
                .seal_data(&mut vec![0u8; 70_000], MAX_PAYLOAD_LEN + 1, now),
            Err(SealError::PayloadTooLarge)
        );
    }

    #[test]
    fn wrong_session_id() {
        let now = Instant::now();
        let (mut a, _) = pair(now);
        let mut other = Session::new(
            8,
            Cipher::Aes256Gcm,
            &[2; 32],
            &[1; 32],
            Duration::from_secs(10),
            Duration::from_secs(60),
            now,
        );
        let mut f = sealed(&mut a, b"x", now);
        assert_eq!(other.opener.open(&mut f, now), Err(OpenError::WrongSession));
    }

    #[test]
    fn timers_without_sleeping() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        assert_eq!(a.handle_timeout(t0), TimerEvent::Idle);
        assert_eq!(a.poll_timeout(), t0 + Duration::from_secs(10));
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(a.handle_timeout(t1), TimerEvent::SendKeepalive);
        let mut f = sealed(&mut a, b"k", t1);
        b.opener.open(&mut f, t1).unwrap();
        assert_eq!(a.handle_timeout(t1), TimerEvent::Idle);
        // b heard from a at t1, so it is alive until t1 + 60 s (only a keepalive due).
        assert_eq!(
            b.handle_timeout(t1 + Duration::from_secs(59)),
            TimerEvent::SendKeepalive
        );
        assert_eq!(
            b.handle_timeout(t1 + Duration::from_secs(60)),
            TimerEvent::Expired
        );
        assert_eq!(
            a.handle_timeout(t0 + Duration::from_secs(60)),
            TimerEvent::Expired
        );
    }

    proptest! {
        /// Flipping any single bit of a sealed frame makes it fail to open.
        #[test]
        fn any_bit_flip_fails(payload in proptest::collection::vec(any::<u8>(), 0..200), bit in any::<prop::sample::Index>()) {
            let now = Instant::now();
            let (mut a, mut b) = pair(now);
            let mut f = sealed(&mut a, &payload, now);
            let i = bit.index(f.len() * 8);
            f[i / 8] ^= 1 << (i % 8);
            prop_assert!(b.opener.open(&mut f, now).is_err());
        }

        /// Arbitrary bytes never panic the opener.
        #[test]
        fn arbitrary_input_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let now = Instant::now();
            let (_, mut b) = pair(now);
            let _ = b.opener.open(&mut data, now);
        }
    }
}
