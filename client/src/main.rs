//! `ringway`: the command-line client.
//!
//! `ringway up CONFIG` creates the TUN device, handshakes with the server,
//! gives the TUN the address the server assigned, and forwards packets until
//! SIGINT or SIGTERM (then it sends the server a disconnect, removes the TUN
//! and exits 0) or until the session fails. Failures are one line on stderr,
//! `ringway: ...`, and an exit status per class of failure (see [`Exit`]), so
//! scripts and service managers can tell a typo from a dead server.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ringway_client::inside::tun::Tun;
use ringway_client::platform::TunError;
use ringway_client::Transport as OutsideTransport;
use ringway_client::{
    driver, ClientConfig, ConfigError, ConnectError, ConnectOptions, DriverError, Tunnel,
};
use ringway_proto::SessionConfig;
use tracing_subscriber::EnvFilter;

/// How long leftover blocking work (a DNS lookup cut short by a signal) may
/// delay the exit.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  stopped by SIGINT or SIGTERM (the server was told and the TUN removed)
  1  unexpected failure (I/O error on the TUN or the socket, a bug)
  2  usage error (bad arguments)
  3  bad config file (unreadable, unknown or missing key, invalid value)
  4  permission denied: creating the TUN needs root or CAP_NET_ADMIN
  5  system setup failed (no /dev/net/tun, TUN name in use, `ip` failed, unsupported OS)
  6  server unreachable (no handshake response before the deadline, or DNS failed)
  7  handshake rejected: server key or psk mismatch, or an unusable session config
  8  session lost: the server stopped responding or closed the session (or, over TCP,
     the connection closed or broke)

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to change the level (default info).";

#[derive(Debug, Parser)]
#[command(
    name = "ringway",
    version,
    about = "Ringway VPN client",
    after_long_help = EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to the server in CONFIG and route its tunnel subnet through a TUN device until stopped.
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Up {
        /// Client config file, as written by `ringway-server add-peer`.
        config: PathBuf,
        /// How to reach the server.
        #[arg(long, value_enum, default_value_t = Transport::Udp)]
        transport: Transport,
        /// Give up connecting after this many seconds without a handshake.
        #[arg(long, value_name = "SECS", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        connect_timeout: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    /// One frame per UDP datagram.
    Udp,
    /// Length-prefixed frames on a TCP connection to the same host and port
    /// (for networks that block UDP).
    Tcp,
    /// UDP for up to 3 s (at most half the connect timeout), then TCP if UDP
    /// got no answer.
    Auto,
}

impl From<Transport> for OutsideTransport {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Udp => OutsideTransport::Udp,
            Transport::Tcp => OutsideTransport::Tcp,
            Transport::Auto => OutsideTransport::Auto,
        }
    }
}

/// Exit statuses, one per class of failure; [`EXIT_STATUS_HELP`] documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Unexpected = 1,
    // 2, usage errors, is clap's to report.
    Config = 3,
    Permission = 4,
    System = 5,
    Unreachable = 6,
    Rejected = 7,
    SessionLost = 8,
}

/// A failure on its way to stderr and the exit status.
#[derive(Debug)]
struct Failure {
    exit: Exit,
    message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl std::fmt::Display) -> Self {
        Failure {
            exit,
            message: message.to_string(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::new(Exit::Config, e)
    }
}

impl From<TunError> for Failure {
    fn from(e: TunError) -> Self {
        let exit = if e.is_permission() {
            Exit::Permission
        } else {
            Exit::System
        };
        Failure::new(exit, e)
    }
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Self {
        let exit = match e {
            ConnectError::Resolve { .. } | ConnectError::Unreachable { .. } => Exit::Unreachable,
            ConnectError::KeyMismatch { .. } | ConnectError::BadSessionConfig { .. } => {
                Exit::Rejected
            }
            ConnectError::Socket { .. } => Exit::System,
            ConnectError::Internal(_) => Exit::Unexpected,
        };
        Failure::new(exit, e)
    }
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Self {
        let exit = if e.is_session_lost() {
            Exit::SessionLost
        } else {
            Exit::Unexpected
        };
        Failure::new(exit, e)
    }
}

fn main() -> ExitCode {
    // Usage errors exit 2 and --help/--version exit 0, both from clap.
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("ringway: {}", f.message);
            ExitCode::from(f.exit as u8)
        }
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(cli: Cli) -> Result<(), Failure> {
    let Command::Up {
        config,
        transport,
        connect_timeout,
    } = cli.command;
    let client_config = ClientConfig::load(&config)?;
    warn_if_exposed(&config);
    let opts = ConnectOptions {
        transport: transport.into(),
        deadline: Duration::from_secs(connect_timeout),
        ..ConnectOptions::default()
    };
    // Two directions, two tasks: more workers would only idle.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ringway")
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Unexpected, format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(up(client_config, opts));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    result
}

/// The config holds our private key: say so if others can read it.
fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "{} holds a private key but is readable by others (chmod 600 it)",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Everything between loading the config and exiting; the TUN is removed on
/// every path out (explicitly, or by `Tun`'s drop on an early return).
async fn up(config: ClientConfig, opts: ConnectOptions) -> Result<(), Failure> {
    let mut signals = Signals::install()
        .map_err(|e| Failure::new(Exit::Unexpected, format!("cannot handle signals: {e}")))?;
    // First, so a missing privilege is reported before any packet is sent.
    let tun = Tun::create(&config.tun_name)?;
    tracing::info!(tun = tun.name(), "created TUN device");

    tracing::info!(endpoint = %config.endpoint, transport = %opts.transport, "connecting");
    let tunnel = tokio::select! {
        r = Tunnel::connect_with(&config, &opts) => r?,
        signal = signals.recv() => {
            tracing::info!("received {signal} while connecting; stopping");
            tun.close();
            return Ok(());
        }
    };
    let session = *tunnel.session_config();
    tracing::info!(
        server = %tunnel.server_addr(),
        transport = %tunnel.transport(),
        session_id = tunnel.session_id(),
        "connected: address {}/{}, server {}, mtu {}, cipher {}, keepalive {:?}, idle timeout {:?}",
        session.client_addr,
        session.prefix_len,
        session.server_addr,
        session.mtu,
        session.cipher.name(),
        session.keepalive(),
        session.idle_timeout(),
    );

    let tun = match configure(tun, session).await {
        Ok(tun) => tun,
        Err(e) => {
            // Free the server's session now rather than at its idle timeout.
            let (mut sender, _) = tunnel.split();
            let _ = sender.send_disconnect().await;
            return Err(e);
        }
    };
    tracing::info!(
        tun = tun.name(),
        address = %format_args!("{}/{}", session.client_addr, session.prefix_len),
        mtu = session.mtu,
        "tunnel up"
    );

    let stats = Arc::clone(tunnel.stats());
    let shutdown = async {
        let signal = signals.recv().await;
        tracing::info!("received {signal}; disconnecting");
    };
    let result = driver::run(tunnel, tun.inside(), shutdown).await;
    tracing::info!("{}", stats.snapshot());
    tun.close();
    result.map_err(Failure::from)
}

/// Runs the blocking `ip` configuration off the runtime's workers.
async fn configure(tun: Tun, session: SessionConfig) -> Result<Tun, Failure> {
    let (tun, result) = tokio::task::spawn_blocking(move || {
        let result = tun.configure(&session);
        (tun, result)
    })
    .await
    .map_err(|e| Failure::new(Exit::Unexpected, format!("configuring the TUN: {e}")))?;
    result.map(|()| tun).map_err(Failure::from)
}

/// SIGINT and SIGTERM, registered up front so one arriving at any point is
/// seen by the next `recv`.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
