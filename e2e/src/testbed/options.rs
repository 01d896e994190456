//! What a testbed can be asked for: the outside transport and extra arguments.
//!
//! Kept apart from the testbed itself so that adding a scenario (another transport, a server
//! tuning flag) is a change to plain data, not to the setup sequence.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Result};

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
}

impl Default for TestbedOptions {
    fn default() -> Self {
        Self {
            transport: Transport::Udp,
            server_args: Vec::new(),
            client_args: Vec::new(),
            extra_peers: 0,
            ready_timeout: Duration::from_secs(10),
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
    }
}
