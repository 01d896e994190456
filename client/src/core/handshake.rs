//! Starting handshakes and judging their answers, for the first connect and
//! for every rekey alike.
//!
//! Every try is a fresh initiation: the server accepts an initiation only if
//! its timestamp is newer than the last one it accepted from us. [`Initiator`]
//! makes those initiations; `Pending` is the one in flight and judges what
//! comes back; [`Attempts`] keeps the score of a connect, so that when it
//! ends without a session the [`ConnectFailure`] says what most likely went
//! wrong.
//!
//! A reject is a hint, never an answer (anyone can send one), and a response
//! that fails to authenticate does not use the initiation up: a genuine
//! answer arriving behind a forgery still completes it.

use std::fmt;
use std::time::{Duration, Instant};

use ringway_proto::handshake::client::{ClientHandshake, ClientKeys};
use ringway_proto::handshake::{HandshakeError, InitPayload, Timestamp};
use ringway_proto::wire::handshake::{RejectReason, INIT_LEN};
use ringway_proto::{Cipher, Entropy, Session, SessionConfig};

/// Why a connect ended without a session, as far as the core can tell; the
/// driver adds where it tried ([`crate::ConnectError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectFailure {
    /// Nothing answered our initiations in time.
    #[error("no handshake response within {waited:.1?} ({attempts} initiations sent)")]
    Unreachable {
        /// How long we tried.
        waited: Duration,
        /// Initiations sent.
        attempts: u32,
        /// The last transient socket error the driver reported, often an ICMP
        /// "connection refused".
        last_error: Option<String>,
    },
    /// Responses came but failed to authenticate: the server holds another
    /// key or PSK than our config says.
    #[error("the handshake response failed to authenticate")]
    KeyMismatch,
    /// The server refused our initiations as not made for its key.
    #[error("the server refused our initiations as not made for its key")]
    UnknownServerKey,
    /// The server refused our initiations: it does not list our key.
    #[error("the server does not list this client's key")]
    NotAuthorised,
    /// The server's response authenticated but carried a config we cannot use.
    #[error("the server sent an unusable session config: {0}")]
    BadSessionConfig(&'static str),
    /// Our side failed (no randomness): a broken host, not the server.
    #[error("handshake failed on our side: {0}")]
    Internal(String),
}

/// Makes fresh initiations for one client identity.
///
/// Timestamps are wall-clock time, but the core reads no clock: the caller
/// says what the wall clock read at one `Instant`, and later timestamps add
/// the monotonic time since. They also strictly increase, so two tries
/// within the clock's resolution still look newer to the server.
#[derive(Clone)]
pub struct Initiator {
    keys: ClientKeys,
    cipher: Option<Cipher>,
    anchor: Instant,
    wall_at_anchor: Duration,
    last: Timestamp,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("server_public", &self.keys.server_public)
            .field("cipher", &self.cipher)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// An initiator for `keys`, asking for `cipher`; `wall_clock` is the time
    /// since the Unix epoch at `now`.
    pub fn new(
        keys: ClientKeys,
        cipher: Option<Cipher>,
        now: Instant,
        wall_clock: Duration,
    ) -> Self {
        Initiator {
            keys,
            cipher,
            anchor: now,
            wall_at_anchor: wall_clock,
            last: Timestamp::default(),
        }
    }

    /// Writes a fresh initiation into `out` and returns the state waiting for
    /// its answer; its ephemeral key and sender index come from `rng`.
    pub fn initiate(
        &mut self,
        now: Instant,
        rng: &mut dyn Entropy,
        out: &mut [u8; INIT_LEN],
    ) -> Result<ClientHandshake, HandshakeError> {
        let payload = InitPayload {
            timestamp: self.next_timestamp(now),
            cipher: self.cipher,
        };
        ClientHandshake::initiate(&self.keys, payload, rng, out)
    }

    /// The wall clock at `now`, but strictly increasing.
    fn next_timestamp(&mut self, now: Instant) -> Timestamp {
        let wall = self.wall_at_anchor + now.saturating_duration_since(self.anchor);
        let t = Timestamp::from_unix(wall);
        let next = if t > self.last {
            t
        } else {
            successor(self.last)
        };
        self.last = next;
        next
    }
}

/// The next representable timestamp after `t`.
fn successor(t: Timestamp) -> Timestamp {
    if t.nanos + 1 < 1_000_000_000 {
        Timestamp {
            secs: t.secs,
            nanos: t.nanos + 1,
        }
    } else {
        Timestamp {
            secs: t.secs.saturating_add(1),
            nanos: 0,
        }
    }
}

/// The initiation in flight: its bytes (until sent) and its Noise state.
#[derive(Debug)]
pub(crate) struct Pending {
    hs: ClientHandshake,
    pub(crate) frame: [u8; INIT_LEN],
    /// Whether it went out (the driver took it with `poll_transmit`).
    pub(crate) sent: bool,
    /// Responses to it that failed to read.
    bad_answers: u32,
}

/// What a handshake frame turned out to be, for the initiation in flight.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The response: the new session.
    Session(Box<Session>, SessionConfig),
    /// A reject answering it: a hint, the initiation stays open.
    Rejected(RejectReason),
    /// A response to it that did not hold up: forged, or keyed differently.
    Failed(HandshakeError),
    /// Not about this initiation.
    Stray,
}

impl Pending {
    /// An initiation from `initiator`, drawing its keys from `rng`.
    pub(crate) fn new(
        initiator: &mut Initiator,
        now: Instant,
        rng: &mut dyn Entropy,
    ) -> Result<Self, HandshakeError> {
        let mut frame = [0u8; INIT_LEN];
        let hs = initiator.initiate(now, rng, &mut frame)?;
        tracing::debug!(sender_index = hs.sender_index(), "new handshake initiation");
        Ok(Pending {
            hs,
            frame,
            sent: false,
            bad_answers: 0,
        })
    }

    /// Judges a handshake frame (a response or a reject).
    pub(crate) fn judge(&mut self, frame: &[u8], now: Instant) -> Answer {
        if let Some(reason) = self.hs.reject_reason(frame) {
            return Answer::Rejected(reason);
        }
        if !self.hs.is_response_to_me(frame) {
            return Answer::Stray;
        }
        match self.hs.handle_response(frame, now) {
            Ok((session, config)) => Answer::Session(Box::new(session), config),
            Err(e) => {
                self.bad_answers += 1;
                Answer::Failed(e)
            }
        }
    }
}

/// How a connect's tries went, for the verdict when it ends.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Initiations sent (handed to the driver).
    pub sent: u32,
    /// Initiations answered only by responses that failed (for the log; never a reason to
    /// stop early: anyone on the path can forge a failing response to every initiation).
    failed_initiations: u32,
    auth_failures: u32,
    bad_config: Option<&'static str>,
    last_io_error: Option<String>,
    /// The latest reject that answered one of our initiations.
    rejected: Option<RejectReason>,
}

impl Attempts {
    /// Records a response that claimed to answer us and did not hold up.
    /// Returns a line worth logging the first time each kind happens.
    pub fn record_failure(&mut self, e: &HandshakeError) -> Option<String> {
        match e {
            HandshakeError::Decrypt => {
                self.auth_failures += 1;
                (self.auth_failures == 1).then(|| {
                    "handshake response failed to authenticate (server key or psk mismatch?); \
                     retrying"
                        .to_owned()
                })
            }
            HandshakeError::BadPayload(reason) => {
                let first = self.bad_config.is_none();
                self.bad_config = Some(reason);
                first.then(|| format!("server sent an unusable session config: {reason}"))
            }
            _ => None,
        }
    }

    /// Records a reject answering one of our initiations; a line worth
    /// logging the first time (or when the reason changes).
    pub fn record_reject(&mut self, reason: RejectReason) -> Option<String> {
        let new = self.rejected != Some(reason);
        self.rejected = Some(reason);
        new.then(|| {
            format!(
                "the server refused our initiation: {}; still waiting for a genuine answer",
                describe(reason)
            )
        })
    }

    /// Records a transient socket error (or a connection that failed or closed).
    pub fn record_io_error(&mut self, e: &dyn fmt::Display) {
        self.last_io_error = Some(e.to_string());
    }

    /// An initiation is being replaced by the next: scores it.
    pub(crate) fn initiation_ended(&mut self, pending: &Pending) {
        if pending.bad_answers > 0 {
            self.failed_initiations += 1;
        }
    }

    /// Initiations so far answered only by responses that failed to authenticate.
    pub fn failed_initiations(&self) -> u32 {
        self.failed_initiations
    }

    /// The verdict when the connect ended without a session: an
    /// authentication failure is the most specific thing we learned, then the
    /// server's reject, then a config we could not use, and silence otherwise.
    pub fn verdict(self, waited: Duration) -> ConnectFailure {
        if self.auth_failures > 0 {
            ConnectFailure::KeyMismatch
        } else if let Some(reason) = self.rejected {
            match reason {
                RejectReason::UnknownServerKey => ConnectFailure::UnknownServerKey,
                RejectReason::NotAuthorised => ConnectFailure::NotAuthorised,
            }
        } else if let Some(reason) = self.bad_config {
            ConnectFailure::BadSessionConfig(reason)
        } else {
            ConnectFailure::Unreachable {
                waited,
                attempts: self.sent,
                last_error: self.last_io_error,
            }
        }
    }
}

/// A reject reason in words.
fn describe(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::UnknownServerKey => "not made for its key (check `server_public_key`)",
        RejectReason::NotAuthorised => "this client's key is not in its peer list",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_proto::{EntropyError, Keypair};

    struct Counting(u8);
    impl Entropy for Counting {
        fn fill(&mut self, dest: &mut [u8]) -> Result<(), EntropyError> {
            self.0 = self.0.wrapping_add(1);
            dest.fill(self.0);
            Ok(())
        }
    }

    fn keys() -> ClientKeys {
        ClientKeys {
            secret: Keypair::from_random([2; 32]).secret,
            server_public: Keypair::from_random([1; 32]).public,
            psk: None,
        }
    }

    #[test]
    fn timestamps_follow_the_anchor_and_strictly_increase() {
        assert_eq!(
            successor(Timestamp {
                secs: 5,
                nanos: 999_999_999
            }),
            Timestamp { secs: 6, nanos: 0 }
        );
        let t0 = Instant::now();
        let mut i = Initiator::new(keys(), None, t0, Duration::from_secs(1_000));
        assert_eq!(
            i.next_timestamp(t0 + Duration::from_millis(1500)),
            Timestamp {
                secs: 1_001,
                nanos: 500_000_000
            }
        );
        // The same instant again (or an earlier one) still moves forward.
        let mut prev = i.next_timestamp(t0);
        for _ in 0..1000 {
            let t = i.next_timestamp(t0);
            assert!(t > prev);
            prev = t;
        }
        let mut out = [0u8; INIT_LEN];
        let mut rng = Counting(0);
        let a = i.initiate(t0, &mut rng, &mut out).unwrap();
        let b = i.initiate(t0, &mut rng, &mut out).unwrap();
        assert_ne!(a.sender_index(), b.sender_index());
    }

    #[test]
    fn verdict_prefers_the_most_specific_cause() {
        let wait = Duration::from_secs(10);
        let mut a = Attempts {
            sent: 10,
            ..Attempts::default()
        };
        a.record_io_error(&"connection refused");
        assert_eq!(
            a.verdict(wait),
            ConnectFailure::Unreachable {
                waited: wait,
                attempts: 10,
                last_error: Some("connection refused".into())
            }
        );

        let mut a = Attempts::default();
        assert!(a.record_failure(&HandshakeError::BadPayload("x")).is_some());
        assert!(a.record_failure(&HandshakeError::Decrypt).is_some());
        assert!(a.record_failure(&HandshakeError::Decrypt).is_none());
        assert_eq!(a.verdict(wait), ConnectFailure::KeyMismatch);

        let mut a = Attempts::default();
        assert!(a.record_reject(RejectReason::NotAuthorised).is_some());
        assert!(a.record_reject(RejectReason::NotAuthorised).is_none());
        assert_eq!(a.verdict(wait), ConnectFailure::NotAuthorised);

        let mut a = Attempts::default();
        a.record_reject(RejectReason::NotAuthorised);
        assert!(a.record_reject(RejectReason::UnknownServerKey).is_some());
        assert_eq!(a.verdict(wait), ConnectFailure::UnknownServerKey);

        // A response that failed to authenticate says more than a reject.
        let mut a = Attempts::default();
        a.record_reject(RejectReason::UnknownServerKey);
        a.record_failure(&HandshakeError::Decrypt);
        assert_eq!(a.verdict(wait), ConnectFailure::KeyMismatch);

        let mut a = Attempts::default();
        a.record_failure(&HandshakeError::BadPayload("mtu below the IPv4 minimum"));
        assert_eq!(
            a.verdict(wait),
            ConnectFailure::BadSessionConfig("mtu below the IPv4 minimum")
        );
    }

    #[test]
    fn initiations_with_only_failed_answers_are_counted_never_final() {
        let t0 = Instant::now();
        let mut initiator = Initiator::new(keys(), None, t0, Duration::from_secs(1));
        let mut rng = Counting(0);
        let mut a = Attempts::default();
        for _ in 1..=3 {
            let mut p = Pending::new(&mut initiator, t0, &mut rng).unwrap();
            let mut forged = [0u8; ringway_proto::wire::handshake::RESP_LEN];
            forged[0] = 2;
            forged[4..8].copy_from_slice(&p.hs.sender_index().to_be_bytes());
            assert!(matches!(
                p.judge(&forged, t0),
                Answer::Failed(HandshakeError::Decrypt)
            ));
            a.initiation_ended(&p);
        }
        assert_eq!(a.failed_initiations(), 3);
        // An initiation that drew nothing does not count.
        let mut a = Attempts::default();
        for _ in 0..5 {
            a.initiation_ended(&Pending::new(&mut initiator, t0, &mut rng).unwrap());
        }
        assert_eq!(a.failed_initiations(), 0);
    }
}
