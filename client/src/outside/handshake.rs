//! Starting handshakes and judging their answers, whatever the transport.
//!
//! Every try is a fresh initiation: the server accepts an initiation only if its
//! timestamp is newer than the last one it accepted from us, and a Noise state
//! that failed to read a response cannot be reused. [`Initiator`] makes those
//! initiations; [`Attempts`] remembers how the tries went, so that when the
//! deadline passes the error says what most likely went wrong. `Handshaker`
//! puts the two together for a transport's connect loop, which only moves the
//! bytes and decides when to retry.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use ringway_proto::handshake::client::{ClientHandshake, ClientKeys};
use ringway_proto::handshake::{HandshakeError, InitPayload, Timestamp};
use ringway_proto::wire::handshake::{RejectReason, INIT_LEN};
use ringway_proto::wire::STREAM_PREFIX_LEN;
use ringway_proto::{Cipher, Session, SessionConfig};

use super::Transport;
use crate::config::ClientConfig;

/// Why no session came of connecting.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint's host name did not resolve.
    #[error("cannot resolve endpoint {endpoint:?}: {source}")]
    Resolve {
        /// The configured endpoint.
        endpoint: String,
        /// The resolver's answer.
        source: io::Error,
    },
    /// The socket towards the server could not be set up.
    #[error("cannot open a {transport} socket towards {server}: {source}")]
    Socket {
        /// The resolved server address.
        server: SocketAddr,
        /// The transport the socket was for.
        transport: Transport,
        /// What the OS said.
        source: io::Error,
    },
    /// Nothing answered our initiations before the deadline.
    #[error(
        "server unreachable: no handshake response from {server} over {transport} within \
         {waited:.1?} ({attempts} initiations sent{}); check the endpoint, firewalls, \
         `server_public_key`, and that the server lists this client's key",
        last_error.as_ref().map(|e| format!(", last socket error: {e}")).unwrap_or_default()
    )]
    Unreachable {
        /// The resolved server address.
        server: SocketAddr,
        /// The transport tried last.
        transport: Transport,
        /// How long we tried.
        waited: Duration,
        /// Initiations sent.
        attempts: u32,
        /// The last transient socket error seen, often an ICMP "connection refused".
        last_error: Option<String>,
    },
    /// The server answered, but its response failed to authenticate: it holds a
    /// different key or PSK than our config says.
    #[error(
        "server key or psk mismatch: the handshake response from {server} failed to \
         authenticate; check `server_public_key` and `psk` against the server's peer entry"
    )]
    KeyMismatch {
        /// The resolved server address.
        server: SocketAddr,
    },
    /// No session came before the deadline, and the server refused our
    /// initiations because they were not made for its key: our
    /// `server_public_key` is wrong.
    #[error(
        "server key mismatch: {server} refused our initiations as not made for its key; \
         check `server_public_key` against the server's public key"
    )]
    UnknownServerKey {
        /// The resolved server address.
        server: SocketAddr,
    },
    /// No session came before the deadline, and the server refused our
    /// initiations because it does not list our key.
    #[error(
        "not authorised: {server} does not list this client's key as a peer; \
         add it on the server with `ringway-server add-peer`"
    )]
    NotAuthorised {
        /// The resolved server address.
        server: SocketAddr,
    },
    /// The server's response authenticated but carried a config we cannot use.
    #[error("server {server} sent an unusable session config: {reason}")]
    BadSessionConfig {
        /// The resolved server address.
        server: SocketAddr,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// Our side failed (no randomness, a handshake library misuse): a bug or a broken host.
    #[error("handshake failed on our side: {0}")]
    Internal(String),
}

/// Makes fresh initiations for one client identity.
#[derive(Clone)]
pub struct Initiator {
    keys: ClientKeys,
    cipher: Option<Cipher>,
    rng: SystemRandom,
    last: Timestamp,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("server_public", &self.keys.server_public)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// An initiator for the identity and cipher preference in `config`.
    pub fn new(config: &ClientConfig) -> Self {
        Initiator {
            keys: config.client_keys(),
            cipher: config.cipher,
            rng: SystemRandom::new(),
            last: Timestamp::default(),
        }
    }

    /// Writes a fresh initiation into `out`, with the current wall-clock time
    /// and a random sender index, and returns the state waiting for its answer.
    pub fn initiate(&mut self, out: &mut [u8; INIT_LEN]) -> Result<ClientHandshake, ConnectError> {
        let payload = InitPayload {
            timestamp: self.next_timestamp(),
            cipher: self.cipher,
        };
        let mut index = [0u8; 4];
        self.rng
            .fill(&mut index)
            .map_err(|_| ConnectError::Internal("the system random source failed".into()))?;
        ClientHandshake::initiate(&self.keys, payload, u32::from_ne_bytes(index), out)
            .map_err(|e| ConnectError::Internal(e.to_string()))
    }

    /// The wall clock, but strictly increasing: two tries within the clock's
    /// resolution (or a clock stepped back) must still look newer to the server.
    fn next_timestamp(&mut self) -> Timestamp {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(Timestamp::from_unix)
            .unwrap_or_default();
        let next = if now > self.last {
            now
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

/// After this many responses that fail to authenticate, stop waiting for the
/// deadline: a mismatched key or PSK fails every time, and only someone on the
/// path (who could as well drop our packets) can forge a matching failure.
const AUTH_FAILURES_BEFORE_GIVING_UP: u32 = 3;

/// How the tries went, for the verdict at the deadline.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Initiations sent.
    pub sent: u32,
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

    /// Whether more tries cannot help: the server keeps answering with a
    /// response that does not authenticate.
    pub fn is_hopeless(&self) -> bool {
        self.auth_failures >= AUTH_FAILURES_BEFORE_GIVING_UP
    }

    /// Records a transient socket error (or a connection that failed or closed).
    pub fn record_io_error(&mut self, e: &dyn fmt::Display) {
        self.last_io_error = Some(e.to_string());
    }

    /// The error to report when the deadline passed (or the tries became
    /// hopeless) without a session: an authentication failure is the most
    /// specific thing we learned, then the server's reject, then a config we
    /// could not use, and silence otherwise.
    pub fn verdict(
        self,
        server: SocketAddr,
        transport: Transport,
        waited: Duration,
    ) -> ConnectError {
        if self.auth_failures > 0 {
            ConnectError::KeyMismatch { server }
        } else if let Some(reason) = self.rejected {
            match reason {
                RejectReason::UnknownServerKey => ConnectError::UnknownServerKey { server },
                RejectReason::NotAuthorised => ConnectError::NotAuthorised { server },
            }
        } else if let Some(reason) = self.bad_config {
            ConnectError::BadSessionConfig { server, reason }
        } else {
            ConnectError::Unreachable {
                server,
                transport,
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

/// One connect's handshake over one transport: makes fresh initiations, judges
/// what comes back, and keeps the score for the verdict.
///
/// The transport's loop sends what [`Handshaker::initiate`] wrote, feeds every
/// frame it receives to [`Handshaker::handle_frame`], and calls
/// [`Handshaker::give_up`] at its deadline.
#[derive(Debug)]
pub(crate) struct Handshaker {
    initiator: Initiator,
    attempts: Attempts,
    /// The latest initiation's state; answers to earlier ones are strays.
    pending: Option<ClientHandshake>,
    server: SocketAddr,
    transport: Transport,
    started: Instant,
    /// The initiation at `[STREAM_PREFIX_LEN..]`, with room in front for a
    /// stream's length prefix, so TCP sends it in one write without a copy.
    init: [u8; STREAM_PREFIX_LEN + INIT_LEN],
}

impl Handshaker {
    pub(crate) fn new(config: &ClientConfig, server: SocketAddr, transport: Transport) -> Self {
        Handshaker {
            initiator: Initiator::new(config),
            attempts: Attempts::default(),
            pending: None,
            server,
            transport,
            started: crate::now(),
            init: [0; STREAM_PREFIX_LEN + INIT_LEN],
        }
    }

    /// Writes a fresh initiation, which replaces the pending one, and returns
    /// the buffer holding it at `[STREAM_PREFIX_LEN..]`.
    pub(crate) fn initiate(&mut self) -> Result<&mut [u8], ConnectError> {
        let out: &mut [u8; INIT_LEN] = (&mut self.init[STREAM_PREFIX_LEN..])
            .try_into()
            .map_err(|_| ConnectError::Internal("initiation buffer mis-sized".into()))?;
        self.pending = Some(self.initiator.initiate(out)?);
        self.attempts.sent += 1;
        tracing::debug!(
            server = %self.server,
            transport = %self.transport,
            attempt = self.attempts.sent,
            "sending handshake initiation"
        );
        Ok(&mut self.init)
    }

    /// Judges a frame that arrived while waiting: the session if it is the
    /// answer to the pending initiation and authenticates, `None` to keep
    /// waiting (a stray, or a response that failed), and an error once more
    /// tries cannot help.
    pub(crate) fn handle_frame(
        &mut self,
        frame: &[u8],
    ) -> Result<Option<(Session, SessionConfig)>, ConnectError> {
        // A reject is a hint, not an answer: the pending handshake stays, so a
        // genuine response still wins (a forged reject cannot cut us off).
        if let Some(reason) = self.pending.as_ref().and_then(|hs| hs.reject_reason(frame)) {
            match self.attempts.record_reject(reason) {
                Some(line) => tracing::warn!(server = %self.server, "{line}"),
                None => tracing::debug!(server = %self.server, ?reason, "initiation rejected"),
            }
            return Ok(None);
        }
        let Some(hs) = self.pending.take_if(|hs| hs.is_response_to_me(frame)) else {
            tracing::debug!(
                len = frame.len(),
                "ignoring a frame that does not answer us"
            );
            return Ok(None);
        };
        match hs.handle_response(frame, crate::now()) {
            Ok((session, config)) => {
                tracing::debug!(
                    server = %self.server,
                    transport = %self.transport,
                    session_id = session.id(),
                    took = ?(crate::now() - self.started),
                    "handshake complete"
                );
                Ok(Some((session, config)))
            }
            Err(e) => {
                if let Some(line) = self.attempts.record_failure(&e) {
                    tracing::warn!(server = %self.server, "{line}");
                } else {
                    tracing::debug!(
                        server = %self.server,
                        error = %e,
                        "handshake response refused"
                    );
                }
                if self.attempts.is_hopeless() {
                    Err(self.take_verdict())
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Records a transient socket error, or a connection that failed or closed.
    pub(crate) fn record_io_error(&mut self, e: &dyn fmt::Display) {
        tracing::debug!(
            server = %self.server,
            transport = %self.transport,
            error = %e,
            "handshake attempt failed"
        );
        self.attempts.record_io_error(e);
    }

    /// What makes the initiations, for the session's later rekeys.
    pub(crate) fn initiator(&self) -> &Initiator {
        &self.initiator
    }

    /// The error to report at the deadline.
    pub(crate) fn give_up(mut self) -> ConnectError {
        self.take_verdict()
    }

    fn take_verdict(&mut self) -> ConnectError {
        std::mem::take(&mut self.attempts).verdict(
            self.server,
            self.transport,
            crate::now() - self.started,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase() {
        assert_eq!(
            successor(Timestamp {
                secs: 5,
                nanos: 999_999_999
            }),
            Timestamp { secs: 6, nanos: 0 }
        );
        let config = ClientConfig {
            endpoint: "127.0.0.1:1".into(),
            server_public_key: ringway_proto::Keypair::from_random([1; 32]).public,
            private_key: ringway_proto::Keypair::from_random([2; 32]).secret,
            psk: None,
            cipher: None,
            tun_name: "t".into(),
            routes: Vec::new(),
        };
        let mut i = Initiator::new(&config);
        let mut prev = i.next_timestamp();
        for _ in 0..1000 {
            let t = i.next_timestamp();
            assert!(t > prev);
            prev = t;
        }
        // A wall clock behind the last timestamp (stepped back) still moves forward.
        i.last = Timestamp {
            secs: u64::MAX / 2,
            nanos: 0,
        };
        assert_eq!(
            i.next_timestamp(),
            Timestamp {
                secs: u64::MAX / 2,
                nanos: 1
            }
        );
        let mut out = [0u8; INIT_LEN];
        let a = i.initiate(&mut out).unwrap();
        let b = i.initiate(&mut out).unwrap();
        assert_ne!(a.sender_index(), b.sender_index());
    }

    #[test]
    fn verdict_prefers_the_most_specific_cause() {
        let server: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let wait = Duration::from_secs(10);
        let mut a = Attempts {
            sent: 10,
            ..Attempts::default()
        };
        a.record_io_error(&io::Error::from(io::ErrorKind::ConnectionRefused));
        let e = a.verdict(server, Transport::Tcp, wait).to_string();
        assert!(e.starts_with("server unreachable"), "{e}");
        assert!(e.contains("over TCP within 10.0s"), "{e}");
        assert!(e.contains("10 initiations"), "{e}");

        let mut a = Attempts::default();
        assert!(a.record_failure(&HandshakeError::BadPayload("x")).is_some());
        assert!(a.record_failure(&HandshakeError::Decrypt).is_some());
        assert!(a.record_failure(&HandshakeError::Decrypt).is_none());
        assert!(!a.is_hopeless());
        assert!(a.record_failure(&HandshakeError::Decrypt).is_none());
        assert!(a.is_hopeless());
        assert!(matches!(
            a.verdict(server, Transport::Udp, wait),
            ConnectError::KeyMismatch { .. }
        ));
    }

    #[test]
    fn rejects_explain_the_silence_but_not_a_failed_response() {
        let server: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let wait = Duration::from_secs(10);
        let mut a = Attempts::default();
        assert!(a.record_reject(RejectReason::NotAuthorised).is_some());
        assert!(a.record_reject(RejectReason::NotAuthorised).is_none());
        assert!(!a.is_hopeless());
        let e = a.verdict(server, Transport::Udp, wait);
        assert!(matches!(e, ConnectError::NotAuthorised { .. }), "{e}");
        assert!(e.to_string().starts_with("not authorised"), "{e}");

        let mut a = Attempts::default();
        a.record_reject(RejectReason::NotAuthorised);
        assert!(a.record_reject(RejectReason::UnknownServerKey).is_some());
        let e = a.verdict(server, Transport::Tcp, wait);
        assert!(matches!(e, ConnectError::UnknownServerKey { .. }), "{e}");
        assert!(e.to_string().starts_with("server key mismatch"), "{e}");

        // A response that failed to authenticate says more than a reject.
        let mut a = Attempts::default();
        a.record_reject(RejectReason::UnknownServerKey);
        a.record_failure(&HandshakeError::Decrypt);
        assert!(matches!(
            a.verdict(server, Transport::Udp, wait),
            ConnectError::KeyMismatch { .. }
        ));
    }
}
