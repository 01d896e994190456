//! Keeping a tunnel up: reconnecting when the session is lost.
//!
//! A [`Supervisor`] owns a [`Driver`] and its inside for the client's whole
//! life. It starts from a session the caller established (so the first
//! connect's failures, with their exit codes, stay the caller's), and from
//! then on:
//!
//! ```text
//!   connected ──session lost──▶ reconnecting ──attempt ok──▶ connected
//!       │  ▲                        │    ▲
//!       └──┘ rekeyed in place       └────┘ attempt failed: wait (backoff), try again
//! ```
//!
//! While reconnecting the inside stays as it is (a TUN keeps its address and
//! routes) and what it sends is dropped. Each attempt is a full connect
//! (fresh initiations every retry interval, up to the attempt deadline; for
//! `auto`, UDP then TCP); between failed attempts it waits with capped
//! exponential backoff and jitter ([`Backoff`]). Every kind of failure is
//! retried, since a server that was there a moment ago may well come back
//! with its keys and peers as they were. A new session may bring a different
//! inner address or MTU: [`Notice::Reconnected`] carries old and new config
//! for the caller to reconfigure the inside.
//!
//! [`Supervisor::next`] runs all this and returns whenever there is something
//! to know; it is cancel-safe, so the caller can race it against a signal and
//! then [`stop`](Supervisor::stop).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_proto::{Entropy as _, SessionConfig};
use tokio::time::sleep_until;

use crate::backlog::QueueOptions;
use crate::backoff::{Backoff, BackoffPolicy, Rng};
use crate::config::ClientConfig;
use crate::driver::{Driver, DriverError, DriverEvent};
use crate::inside::Inside;
use crate::outside::{resolve, ConnectError, ConnectOptions, OsEntropy, Transport, Tunnel};
use crate::status::LiveStatus;

/// How the supervisor connects again and how long it waits in between.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Each reconnect attempt: transport, deadline, retry interval (and the
    /// session timers of what it connects).
    pub connect: ConnectOptions,
    /// The pauses between failed attempts.
    pub backoff: BackoffPolicy,
    /// Resolve the endpoint again for each attempt (falling back to the last
    /// address if that fails). Off: always the first address, which full
    /// tunnel needs (its host route is for that address, and DNS would go
    /// into the tunnel that is down).
    pub re_resolve: bool,
    /// The TUN's name, for the status report.
    pub interface: Option<String>,
    /// Each direction's fair queue (`None`: none; see [`crate::backlog`]).
    pub queue: Option<QueueOptions>,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            connect: ConnectOptions::default(),
            backoff: BackoffPolicy::default(),
            re_resolve: true,
            interface: None,
            queue: Some(QueueOptions::default()),
        }
    }
}

/// What happened, for the caller to act on or log.
#[derive(Debug)]
pub enum Notice {
    /// The session was lost; reconnecting starts now.
    Lost(DriverError),
    /// A reconnect attempt failed; the next one starts after `retry_in`.
    RetryFailed {
        /// Why.
        error: ConnectError,
        /// Attempts so far in this outage.
        attempt: u32,
        /// The pause before the next.
        retry_in: Duration,
    },
    /// A new session replaced the lost one and traffic flows again.
    Reconnected {
        /// The server (as resolved this time).
        server: SocketAddr,
        /// The transport it runs over.
        transport: Transport,
        /// The new session's config.
        config: SessionConfig,
        /// The config the inside was set up for.
        previous: SessionConfig,
    },
    /// The session was rekeyed in place.
    Rekeyed {
        /// The new session's config.
        config: SessionConfig,
        /// The one before.
        previous: SessionConfig,
    },
}

/// A tunnel kept up across lost sessions.
#[derive(Debug)]
pub struct Supervisor {
    driver: Driver,
    config: ClientConfig,
    opts: SupervisorOptions,
    status: Arc<LiveStatus>,
    /// The config the inside is set up for.
    session: SessionConfig,
    server: SocketAddr,
    outage: Option<Outage>,
}

/// A run of reconnect attempts.
#[derive(Debug)]
struct Outage {
    backoff: Backoff,
    attempts: u32,
    next_at: Instant,
}

impl Supervisor {
    /// Starts forwarding between `inside` and the session `tunnel`, which was
    /// established with `config`.
    pub fn start<I: Inside>(
        config: ClientConfig,
        tunnel: Tunnel,
        inside: I,
        opts: SupervisorOptions,
    ) -> Supervisor {
        let stats = Arc::clone(tunnel.stats());
        let session = *tunnel.session_config();
        let server = tunnel.server_addr();
        let status = Arc::new(LiveStatus::new(
            opts.interface.clone(),
            Arc::clone(&stats),
            server,
            tunnel.transport(),
            tunnel.session_id(),
            session,
        ));
        let mut driver = Driver::start_with(inside, stats, opts.queue.clone());
        driver.attach(tunnel);
        Supervisor {
            driver,
            config,
            opts,
            status,
            session,
            server,
            outage: None,
        }
    }

    /// The live state, for status reports and stats lines.
    pub fn status(&self) -> &Arc<LiveStatus> {
        &self.status
    }

    /// The session config the inside is set up for.
    pub fn session_config(&self) -> &SessionConfig {
        &self.session
    }

    /// Whether a session is up.
    pub fn is_connected(&self) -> bool {
        self.outage.is_none()
    }

    /// Runs until there is something to know. `Err` only when the inside
    /// failed (or a task died): then [`stop`](Self::stop) and give up.
    /// Cancel-safe: cancelled mid-attempt, the next call starts that attempt over.
    pub async fn next(&mut self) -> Result<Notice, DriverError> {
        let Some(outage) = &mut self.outage else {
            return match self.driver.next_event().await {
                DriverEvent::SessionEnded(e) => {
                    tracing::warn!("session lost: {e}; reconnecting");
                    self.status.reconnecting(&e);
                    self.outage = Some(Outage {
                        backoff: Backoff::with_rng(self.opts.backoff, jitter_rng()),
                        attempts: 0,
                        next_at: crate::now(),
                    });
                    Ok(Notice::Lost(e))
                }
                DriverEvent::Rekeyed { session_id, config } => {
                    self.status.rekeyed(session_id, config);
                    let previous = std::mem::replace(&mut self.session, config);
                    Ok(Notice::Rekeyed { config, previous })
                }
                DriverEvent::Failed(e) => Err(e),
            };
        };
        let Supervisor {
            driver,
            config,
            opts,
            server,
            ..
        } = self;
        // The inside can fail while we wait or connect; nothing else the
        // driver says matters without a session.
        let attempt = async {
            sleep_until(outage.next_at.into()).await;
            let target = if opts.re_resolve {
                match resolve(&config.endpoint).await {
                    Ok(addr) => addr,
                    Err(e) => {
                        tracing::debug!("{e}; trying the last address, {server}");
                        *server
                    }
                }
            } else {
                *server
            };
            Tunnel::connect_to(config, target, &opts.connect).await
        };
        let result = tokio::select! {
            result = attempt => result,
            failed = wait_for_failure(driver) => return Err(failed),
        };
        outage.attempts += 1;
        match result {
            Ok(tunnel) => {
                let new = *tunnel.session_config();
                let (server, transport) = (tunnel.server_addr(), tunnel.transport());
                tracing::info!(
                    %server,
                    %transport,
                    session_id = tunnel.session_id(),
                    attempts = outage.attempts,
                    "reconnected"
                );
                self.status
                    .reconnected(server, transport, tunnel.session_id(), new);
                self.driver.attach(tunnel);
                self.server = server;
                self.outage = None;
                let previous = std::mem::replace(&mut self.session, new);
                Ok(Notice::Reconnected {
                    server,
                    transport,
                    config: new,
                    previous,
                })
            }
            Err(error) => {
                let retry_in = outage.backoff.next_delay();
                outage.next_at = crate::now() + retry_in;
                tracing::warn!(
                    attempt = outage.attempts,
                    "reconnecting failed: {error}; next attempt in {retry_in:.1?}"
                );
                self.status.reconnecting(&error);
                Ok(Notice::RetryFailed {
                    error,
                    attempt: outage.attempts,
                    retry_in,
                })
            }
        }
    }

    /// Stops forwarding, telling the server if a session is up. When this
    /// returns the inside's halves are dropped.
    pub async fn stop(self) {
        let goodbye = self.driver.is_attached();
        self.driver.stop(goodbye).await;
    }
}

/// A jitter generator seeded from the system's random source, so clients
/// that lost the same server spread out (a fixed seed should that fail:
/// jitter is not a secret).
fn jitter_rng() -> Rng {
    let mut seed = [0u8; 8];
    let _ = OsEntropy::new().fill(&mut seed);
    Rng::seeded(u64::from_le_bytes(seed))
}

/// Waits until the driver reports a failure, ignoring the rest (stale
/// reports of a session already given up).
async fn wait_for_failure(driver: &mut Driver) -> DriverError {
    loop {
        if let DriverEvent::Failed(e) = driver.next_event().await {
            return e;
        }
    }
}
