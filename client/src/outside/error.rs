//! Why connecting, sending or receiving failed, and whose doing it was.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ringway_proto::wire;

use super::Transport;
use crate::core::{ConnectFailure, Refused};

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

impl ConnectError {
    /// Whether this failure rests only on what anyone could have sent (or withheld): no
    /// answer, a reject, or responses that failed to authenticate. An authenticated answer
    /// with an unusable config, or a local failure, is not.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            ConnectError::Unreachable { .. }
                | ConnectError::KeyMismatch { .. }
                | ConnectError::UnknownServerKey { .. }
                | ConnectError::NotAuthorised { .. }
        )
    }

    /// The driver's error for the core's verdict on a connect to `server`
    /// over `transport`.
    pub fn from_failure(failure: ConnectFailure, server: SocketAddr, transport: Transport) -> Self {
        match failure {
            ConnectFailure::Unreachable {
                waited,
                attempts,
                last_error,
            } => ConnectError::Unreachable {
                server,
                transport,
                waited,
                attempts,
                last_error,
            },
            ConnectFailure::KeyMismatch => ConnectError::KeyMismatch { server },
            ConnectFailure::UnknownServerKey => ConnectError::UnknownServerKey { server },
            ConnectFailure::NotAuthorised => ConnectError::NotAuthorised { server },
            ConnectFailure::BadSessionConfig(reason) => {
                ConnectError::BadSessionConfig { server, reason }
            }
            ConnectFailure::Internal(why) => ConnectError::Internal(why),
        }
    }
}

/// Why a frame could not be sent.
///
/// Transient UDP errors never get here: the sender counts and drops them, as
/// a router drops a packet it has no route for.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The core refused to seal the packet: not IPv4, oversized, a buffer
    /// without room for header and tag, or no session (it ended).
    #[error("cannot seal the packet: {0}")]
    Refused(#[from] Refused),
    /// The UDP socket failed in a way that will not pass.
    #[error("cannot send to the server: {0}")]
    Io(#[from] io::Error),
    /// The TCP connection failed (reset, timed out, closed by the server), or
    /// its local address went away.
    #[error("the connection to the server was lost: {0}")]
    ConnectionLost(io::Error),
}

impl SendError {
    /// Whether the tunnel cannot go on: a failed link, or no session. One
    /// packet the core refused (not IPv4, too large) is that packet's problem.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            SendError::Refused(Refused::NotIpv4 | Refused::TooLarge)
        )
    }

    /// Whether the session ended on the server's side or the path's, rather
    /// than through a failure of ours.
    pub fn is_session_lost(&self) -> bool {
        matches!(self, SendError::ConnectionLost(_))
    }
}

/// Why no more frames will come.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The server closed the TCP connection.
    #[error("the server closed the connection")]
    Closed,
    /// The TCP connection failed (reset, timed out).
    #[error("the connection to the server was lost: {0}")]
    ConnectionLost(io::Error),
    /// The server sent a length prefix of zero or over the limit: the stream
    /// cannot be followed any more.
    #[error("the server sent a corrupt stream: {0}")]
    Corrupt(wire::Error),
    /// The UDP socket failed in a way that will not pass.
    #[error("receiving from the server failed: {0}")]
    Io(io::Error),
}

impl RecvError {
    /// Whether the session ended on the server's side or the path's, rather
    /// than through a failure of ours.
    pub fn is_session_lost(&self) -> bool {
        !matches!(self, RecvError::Io(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refused_packets_are_survivable() {
        assert!(!SendError::Refused(Refused::TooLarge).is_fatal());
        assert!(!SendError::Refused(Refused::NotIpv4).is_fatal());
        assert!(SendError::Refused(Refused::NoSession).is_fatal());
        assert!(SendError::Io(io::ErrorKind::InvalidInput.into()).is_fatal());
        assert!(SendError::ConnectionLost(io::ErrorKind::BrokenPipe.into()).is_fatal());
    }

    #[test]
    fn whose_fault() {
        assert!(SendError::ConnectionLost(io::ErrorKind::BrokenPipe.into()).is_session_lost());
        assert!(!SendError::Io(io::ErrorKind::InvalidInput.into()).is_session_lost());
        assert!(RecvError::Closed.is_session_lost());
        assert!(RecvError::Corrupt(wire::Error::TooLong).is_session_lost());
        assert!(RecvError::ConnectionLost(io::ErrorKind::ConnectionReset.into()).is_session_lost());
        assert!(!RecvError::Io(io::ErrorKind::InvalidInput.into()).is_session_lost());
    }

    #[test]
    fn verdicts_name_the_server_and_transport() {
        let server: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let e = ConnectError::from_failure(
            ConnectFailure::Unreachable {
                waited: Duration::from_secs(10),
                attempts: 10,
                last_error: Some("connection refused".into()),
            },
            server,
            Transport::Tcp,
        )
        .to_string();
        assert!(e.starts_with("server unreachable"), "{e}");
        assert!(
            e.contains("from 192.0.2.1:51820 over TCP within 10.0s"),
            "{e}"
        );
        assert!(e.contains("10 initiations"), "{e}");
        assert!(e.contains("last socket error: connection refused"), "{e}");
        for (failure, start) in [
            (ConnectFailure::KeyMismatch, "server key or psk mismatch"),
            (ConnectFailure::UnknownServerKey, "server key mismatch"),
            (ConnectFailure::NotAuthorised, "not authorised"),
            (
                ConnectFailure::BadSessionConfig("mtu"),
                "server 192.0.2.1:51820 sent an unusable",
            ),
        ] {
            let e = ConnectError::from_failure(failure, server, Transport::Udp).to_string();
            assert!(e.starts_with(start), "{e}");
        }
    }
}
