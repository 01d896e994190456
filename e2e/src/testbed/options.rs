//! What a testbed can be asked for: the outside transport and extra arguments.
//!
//! Kept apart from the testbed itself so that adding a scenario (another transport, a server
//! tuning flag) is a change to plain data, not to the setup sequence.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::binaries::Binaries;

/// The outside transport between client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Datagrams over UDP (the default, and the only one the client may be given no flag for).
    #[default]
    Udp,
    /// A TCP stream, for networks that block UDP.
    Tcp,
}

impl Transport {
    /// Every transport, in the order the demo runs them.
    pub const ALL: [Transport; 2] = [Transport::Udp, Transport::Tcp];

    /// The name used on command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            other => bail!("unknown transport {other:?} (expected udp or tcp)"),
        }
    }
}

/// How to build a [`Testbed`](super::Testbed).
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// Outside transport of the first client; `--transport tcp` is passed only for
    /// [`Transport::Tcp`]. Added clients choose their own.
    pub transport: Transport,
    /// Extra arguments appended to `ringway-server run --config ...` (e.g. `--tun-rx-slots 64`).
    pub server_args: Vec<String>,
    /// Extra arguments appended to `ringway up FILE ...`, for every client.
    pub client_args: Vec<String>,
    /// Peers provisioned beyond the first, for [`Testbed::add_client`](super::Testbed::add_client).
    ///
    /// The server reads its peer list at start, so every client a test will add must be
    /// provisioned before then.
    pub extra_peers: usize,
    /// Bound for each readiness wait (server up, then each client up).
    pub ready_timeout: Duration,
    /// Whether [`Testbed::start`](super::Testbed::start) starts the first client; without
    /// one, the first peer's config is left for
    /// [`Testbed::add_client_with`](super::Testbed::add_client_with) or
    /// [`Testbed::take_peer_config`](super::Testbed::take_peer_config).
    pub start_client: bool,
    /// The server and client executables; `None` looks them up with [`Binaries::locate`].
    pub binaries: Option<Binaries>,
}

impl Default for TestbedOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Udp,
            server_args: Vec::new(),
            client_args: Vec::new(),
            extra_peers: 0,
            // Above the client's own 10 s connect deadline (after which it exits, which the
            // wait notices at once), so a slow handshake on a loaded machine is not a failure.
            ready_timeout: Duration::from_secs(20),
            start_client: true,
            binaries: None,
        }
    }
}

impl TestbedOptions {
    /// Defaults with the given transport.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            ..Self::default()
        }
    }

    /// Defaults over UDP.
    pub fn udp() -> Self {
        Self::new(Transport::Udp)
    }

    /// Defaults over TCP.
    pub fn tcp() -> Self {
        Self::new(Transport::Tcp)
    }

    /// Runs these executables instead of the ones [`Binaries::locate`] finds (for comparing
    /// builds side by side).
    pub fn binaries(mut self, binaries: Binaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    /// Appends arguments for `ringway-server run`.
    pub fn server_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.server_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends arguments for `ringway up`.
    pub fn client_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.client_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Provisions `n` more peers, so that `n` clients can be added after start.
    pub fn extra_peers(mut self, n: usize) -> Self {
        self.extra_peers = n;
        self
    }

    /// Starts only the server: the test starts its clients itself, each with its own
    /// arguments (see [`ClientOptions`]). Until one is added, the methods that measure through
    /// "the first client" fail.
    pub fn without_client(mut self) -> Self {
        self.start_client = false;
        self
    }
}

/// How to start one more client with [`Testbed::add_client_with`](super::Testbed::add_client_with).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Its outside transport.
    pub transport: Transport,
    /// Its TUN device name (at most 15 bytes).
    pub tun_name: String,
    /// Arguments appended to `ringway up FILE`, after the testbed's `client_args`.
    pub args: Vec<String>,
    /// Whether the testbed adds a source rule sending traffic from the client's inside address
    /// out of its TUN (see [`crate::path`]). Needed when several clients share the namespace;
    /// a test that inspects the namespace's routes turns it off so that every route there is
    /// the client's own.
    pub source_rule: bool,
    /// Lines appended to its config file (top-level keys, e.g. `routes = ["203.0.113.0/24"]`).
    pub config_lines: Vec<String>,
}

impl ClientOptions {
    /// A client over `transport` with TUN `tun_name`, no extra arguments, with a source rule.
    pub fn new(transport: Transport, tun_name: impl Into<String>) -> Self {
        Self {
            transport,
            tun_name: tun_name.into(),
            args: Vec::new(),
            source_rule: true,
            config_lines: Vec::new(),
        }
    }

    /// Appends arguments for this client's `ringway up`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends a line to the client's config file (see [`ClientOptions::config_lines`]).
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.config_lines.push(line.into());
        self
    }

    /// Leaves the namespace's routing to the client alone (see [`ClientOptions::source_rule`]).
    pub fn without_source_rule(mut self) -> Self {
        self.source_rule = false;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_round_trips() {
        for t in Transport::ALL {
            assert_eq!(t.as_str().parse::<Transport>().unwrap(), t);
        }
        assert!("quic".parse::<Transport>().is_err());
    }

    #[test]
    fn options_collect_extra_args() {
        let o = TestbedOptions::tcp()
            .server_args(["--tun-rx-slots", "64"])
            .client_args(["-v"])
            .extra_peers(2);
        assert_eq!(o.transport, Transport::Tcp);
        assert_eq!(o.extra_peers, 2);
        assert_eq!(o.server_args, ["--tun-rx-slots", "64"]);
        assert_eq!(o.client_args, ["-v"]);
        assert!(o.start_client);
        assert!(!o.without_client().start_client);
    }

    #[test]
    fn client_options_collect_args() {
        let c = ClientOptions::new(Transport::Tcp, "rw1")
            .args(["--full-tunnel"])
            .without_source_rule()
            .config_line("routes = []");
        assert_eq!(c.tun_name, "rw1");
        assert_eq!(c.config_lines, ["routes = []"]);
        assert_eq!(c.args, ["--full-tunnel"]);
        assert!(!c.source_rule);
        assert!(ClientOptions::new(Transport::Udp, "x").source_rule);
    }
}
