//! `ringway`: the command-line client.
//!
//! `ringway up CONFIG` creates the TUN device, handshakes with the server,
//! gives the TUN the address the server assigned, adds the routes (split
//! tunnel by default, everything with `--full-tunnel`), and forwards packets
//! until SIGINT or SIGTERM. A lost session is replaced with a new one
//! (backoff between attempts) while the TUN stays up. On every way out
//! (a signal, an error, a panic unwinding) the routes it added and the TUN
//! are removed. Failures are one line on stderr, `ringway: ...`, and an exit
//! status per class of failure (see [`Exit`]), so scripts and service
//! managers can tell a typo from a dead server.
//!
//! `ringway status` asks a running client, over its status socket, how it is
//! doing.

use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ringway_client::backlog::QueueOptions;
use ringway_client::inside::tun::Tun;
use ringway_client::platform::{self, Offload, SystemRoutes, TunError};
use ringway_client::routes::{RoutePlan, RouteTable};
use ringway_client::stats::LiveLine;
use ringway_client::status::{ConnState, LiveStatus};
use ringway_client::{
    ClientConfig, ConfigError, ConnectError, ConnectOptions, DriverError, Notice, SessionOptions,
    Supervisor, SupervisorOptions, TransportChoice, Tunnel,
};
use ringway_proto::SessionConfig;
use tracing_subscriber::EnvFilter;

/// How long leftover blocking work (a DNS lookup cut short by a signal) may
/// delay the exit.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  stopped by SIGINT or SIGTERM (the server was told, routes and TUN removed)
  1  unexpected failure (I/O error on the TUN or the socket, a bug)
  2  usage error (bad arguments)
  3  bad config file (unreadable, unknown or missing key, invalid value; the key is named)
  4  permission denied: creating the TUN needs root or CAP_NET_ADMIN
  5  system setup failed (`ip` failed, unsupported OS)
  6  server unreachable (no handshake response before the deadline, or DNS failed)
  7  server key mismatch: `server_public_key` or `psk` does not match the server
  8  session lost (only with --no-reconnect: the server stopped responding or closed
     the session, or the TCP connection closed or broke)
  9  peer not authorised: the server does not list this client's key
 10  no /dev/net/tun: the kernel has no TUN support (try `modprobe tun`)
 11  address already in use: the TUN name is taken, or an address or route to add
     is already there (another ringway running?)
 12  incompatible server: it sent a session config this client cannot use

After the first session, lost sessions are retried (200 ms doubling to 15 s, +/-20 %)
and none of 6-12 ends the client.

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to change the level (default info).";

const STATUS_EXIT_HELP: &str = "\
Exit status:
  0  printed the status of every client found
  4  permission denied on the status socket (try sudo)
 13  no running client (no status socket, or nothing answers on it)";

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
    /// Connect to the server in CONFIG and route through a TUN device until stopped.
    ///
    /// Split tunnel by default: the tunnel subnet and the config's `routes` go
    /// through the TUN. The session is kept up: if it is lost, the client
    /// reconnects by itself while the TUN stays up.
    #[command(after_long_help = EXIT_STATUS_HELP)]
    Up {
        /// Client config file, as written by `ringway-server add-peer`.
        config: PathBuf,
        /// How to reach the server.
        #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
        transport: TransportArg,
        /// Give up connecting after this many seconds without a handshake
        /// (each reconnect attempt gets as long).
        #[arg(long, value_name = "SECS", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        connect_timeout: u64,
        /// Print a line every SECS seconds: throughput and packets each way,
        /// drops and round-trip time over the interval.
        #[arg(long, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        stats: Option<u64>,
        /// Route all IPv4 traffic through the tunnel (0.0.0.0/1 and 128.0.0.0/1,
        /// leaving the default route alone), keeping the route to the server
        /// itself outside it.
        #[arg(long)]
        full_tunnel: bool,
        /// Exit (status 8) when the session is lost instead of reconnecting.
        #[arg(long)]
        no_reconnect: bool,
        /// Serve `ringway status` on this socket instead of
        /// /run/ringway/TUN.sock (TUN: the config's `tun_name`).
        #[arg(long, value_name = "PATH")]
        status_socket: Option<PathBuf>,
        /// Batching: `auto` enables what the kernel has (TUN virtio_net_hdr with TSO and USO:
        /// 64 KiB per TUN read and write; UDP GSO and GRO: many datagrams per send and
        /// receive) and falls back for what is missing; `off`: one packet per system call.
        /// The log line `offload: ...` says what is on.
        #[arg(long, value_name = "auto|off", default_value_t = Offload::Auto)]
        offload: Offload,
        /// Per-flow fair queueing with CoDel in each direction: packets are taken from the
        /// TUN and the socket as soon as they arrive and wait in Ringway's own queue, where
        /// a ping or an SSH keystroke goes ahead of a bulk transfer and a bulk flow's
        /// standing queue is held near --fq-target-ms. `off`: packets wait in the kernel's
        /// first-in first-out queues, as before.
        #[arg(long, value_name = "on|off", default_value_t = OnOff::On)]
        fair_queue: OnOff,
        /// CoDel's target: the standing delay a flow may keep in the queue before it loses
        /// (or gets CE-marked on) packets.
        #[arg(long, value_name = "MS", default_value_t = 5,
              value_parser = clap::value_parser!(u64).range(1..=1000))]
        fq_target_ms: u64,
        /// CoDel's interval: about the round-trip time of the flows through the tunnel.
        #[arg(long, value_name = "MS", default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=10_000))]
        fq_interval_ms: u64,
        /// Bytes each direction's queue holds at most (it drops from the fattest flow
        /// beyond that); outbound, also what its buffers take.
        #[arg(long, value_name = "BYTES", default_value_t = ringway_client::backlog::DEFAULT_LIMIT_BYTES,
              value_parser = clap::value_parser!(u32).range(65_536..=(256 << 20)))]
        fq_limit_bytes: u32,
    },
    /// Show how a running client is doing: session, counters, round-trip time.
    ///
    /// Looks for status sockets in /run/ringway, $XDG_RUNTIME_DIR/ringway and
    /// /tmp/ringway; without --tun, shows every client found.
    #[command(after_long_help = STATUS_EXIT_HELP)]
    Status {
        /// The client's TUN name (its config's `tun_name`).
        #[arg(long, value_name = "NAME")]
        tun: Option<String>,
        /// Print the raw JSON report (one object per line).
        #[arg(long)]
        json: bool,
        /// Ask the client on this socket (as given to `up --status-socket`).
        #[arg(long, value_name = "PATH", conflicts_with = "tun")]
        socket: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    /// One frame per UDP datagram.
    Udp,
    /// Length-prefixed frames on a TCP connection to the same host and port
    /// (for networks that block UDP).
    Tcp,
    /// UDP for up to 3 s (at most half the connect timeout), then TCP if UDP
    /// got no answer.
    Auto,
}

impl From<TransportArg> for TransportChoice {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Udp => TransportChoice::Udp,
            TransportArg::Tcp => TransportChoice::Tcp,
            TransportArg::Auto => TransportChoice::Auto,
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
    KeyMismatch = 7,
    SessionLost = 8,
    NotAuthorised = 9,
    NoTun = 10,
    InUse = 11,
    Incompatible = 12,
    NotRunning = 13,
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
        } else if e.is_no_tun() {
            Exit::NoTun
        } else if e.is_in_use() {
            Exit::InUse
        } else {
            Exit::System
        };
        Failure::new(exit, e)
    }
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Self {
        let exit = match &e {
            ConnectError::Resolve { .. } | ConnectError::Unreachable { .. } => Exit::Unreachable,
            ConnectError::KeyMismatch { .. } | ConnectError::UnknownServerKey { .. } => {
                Exit::KeyMismatch
            }
            ConnectError::NotAuthorised { .. } => Exit::NotAuthorised,
            ConnectError::BadSessionConfig { .. } => Exit::Incompatible,
            // No route towards the server: as good as unreachable.
            ConnectError::Socket { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable
                ) =>
            {
                Exit::Unreachable
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
    let result = match cli.command {
        Command::Up {
            config,
            transport,
            connect_timeout,
            stats,
            full_tunnel,
            no_reconnect,
            status_socket,
            offload,
            fair_queue,
            fq_target_ms,
            fq_interval_ms,
            fq_limit_bytes,
        } => run_up(UpArgs {
            config,
            connect: ConnectOptions {
                transport: transport.into(),
                deadline: Duration::from_secs(connect_timeout),
                // With live stats, an RTT sample for every line.
                session: SessionOptions {
                    probe_every: stats.map(Duration::from_secs),
                    ..SessionOptions::default()
                },
                udp_offload: offload == Offload::Auto,
                ..ConnectOptions::default()
            },
            stats: stats.map(Duration::from_secs),
            full_tunnel,
            reconnect: !no_reconnect,
            status_socket,
            offload,
            queue: (fair_queue == OnOff::On).then(|| QueueOptions {
                fq: ringway_fq::Config {
                    target: Duration::from_millis(fq_target_ms),
                    interval: Duration::from_millis(fq_interval_ms),
                    limit_bytes: fq_limit_bytes,
                    ..ringway_fq::Config::default()
                },
            }),
        }),
        Command::Status { tun, json, socket } => run_status(tun, json, socket),
    };
    match result {
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

/// `ringway up`'s settings.
#[derive(Debug)]
struct UpArgs {
    config: PathBuf,
    connect: ConnectOptions,
    stats: Option<Duration>,
    full_tunnel: bool,
    reconnect: bool,
    status_socket: Option<PathBuf>,
    offload: Offload,
    queue: Option<QueueOptions>,
}

/// A feature switched on or off on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

impl std::fmt::Display for OnOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnOff::On => "on",
            OnOff::Off => "off",
        })
    }
}

fn run_up(args: UpArgs) -> Result<(), Failure> {
    if let Some(q) = &args.queue {
        q.validate()
            .map_err(|e| Failure::new(Exit::Config, format!("{e} (check the --fq-* flags)")))?;
    }
    let client_config = ClientConfig::load(&args.config)?;
    warn_if_exposed(&args.config);
    // Two directions, two tasks, and `ip` runs in place on a worker
    // (`block_in_place`), which needs the multi-threaded runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ringway")
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Unexpected, format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(up(client_config, args));
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

/// Runs blocking system configuration (`ip`) without stalling the other worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Everything between loading the config and exiting.
///
/// Cleanup is by ownership: `tun` and `routes` remove what they added when
/// dropped, routes first (declared later), on every path out of here. The
/// normal path does the same explicitly, to log it in order.
async fn up(config: ClientConfig, args: UpArgs) -> Result<(), Failure> {
    let mut signals = Signals::install()
        .map_err(|e| Failure::new(Exit::Unexpected, format!("cannot handle signals: {e}")))?;
    // First, so a missing privilege is reported before any packet is sent.
    let tun = Tun::create(&config.tun_name, args.offload)?;
    tracing::info!(tun = tun.name(), "created TUN device");
    let mut routes = RouteTable::new(SystemRoutes);

    tracing::info!(endpoint = %config.endpoint, transport = %args.connect.transport, "connecting");
    let tunnel = tokio::select! {
        r = Tunnel::connect_with(&config, &args.connect) => r?,
        signal = signals.recv() => {
            tracing::info!("received {signal} while connecting; stopping");
            return Ok(());
        }
    };
    let session = *tunnel.session_config();
    let server = tunnel.server_addr();
    log_session("connected", &tunnel, &session);
    tracing::info!(
        "offload: {}",
        describe_offload(args.offload, &tun.offloads(), &tunnel)
    );

    if let Err(e) = set_up_inside(&tun, &mut routes, &config, &args, &session, server) {
        // Free the server's session now rather than at its idle timeout.
        let (mut sender, _) = tunnel.split();
        let _ = sender.send_disconnect().await;
        return Err(e);
    }
    tracing::info!(
        tun = tun.name(),
        address = %format_args!("{}/{}", session.client_addr, session.prefix_len),
        mtu = session.mtu,
        full_tunnel = args.full_tunnel,
        "tunnel up"
    );

    let mut supervisor = Supervisor::start(
        config.clone(),
        tunnel,
        tun.inside(),
        SupervisorOptions {
            connect: args.connect.clone(),
            re_resolve: !args.full_tunnel,
            interface: Some(tun.name().to_owned()),
            queue: args.queue.clone(),
            ..SupervisorOptions::default()
        },
    );
    let status = Arc::clone(supervisor.status());
    let status_server = serve_status(tun.name(), args.status_socket.as_deref(), &status);
    let stats_printer = args
        .stats
        .map(|every| tokio::spawn(print_stats(Arc::clone(&status), every)));

    let result = loop {
        tokio::select! {
            signal = signals.recv() => {
                tracing::info!("received {signal}; disconnecting");
                break Ok(());
            }
            notice = supervisor.next() => match notice {
                Err(e) => break Err(Failure::from(e)),
                Ok(Notice::Lost(e)) if !args.reconnect => break Err(Failure::from(e)),
                Ok(Notice::Reconnected { server, config: new, previous, .. }) => {
                    if let Err(e) = follow_session(&tun, &mut routes, &args, server, &previous, &new) {
                        break Err(e);
                    }
                }
                Ok(Notice::Rekeyed { config: new, previous }) => {
                    if let Err(e) = follow_session(&tun, &mut routes, &args, server, &previous, &new) {
                        break Err(e);
                    }
                }
                Ok(Notice::Lost(_) | Notice::RetryFailed { .. }) => {}
            }
        }
    };
    supervisor.stop().await;
    if let Some(task) = stats_printer {
        task.abort();
    }
    let totals = status.stats().snapshot();
    tracing::info!("{totals}");
    tracing::info!(
        "system calls: {}",
        totals
            .io_counters()
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(status_server);
    blocking(|| {
        for (route, e) in routes.remove_all() {
            tracing::debug!(route = %route, "not removed (gone with the TUN?): {e}");
        }
    });
    tun.close();
    result
}

/// Logs what the server assigned.
fn log_session(what: &str, tunnel: &Tunnel, session: &SessionConfig) {
    tracing::info!(
        server = %tunnel.server_addr(),
        transport = %tunnel.transport(),
        session_id = tunnel.session_id(),
        "{what}: address {}/{}, server {}, mtu {}, cipher {}, keepalive {:?}, idle timeout {:?}, rekey after {:?}",
        session.client_addr,
        session.prefix_len,
        session.server_addr,
        session.mtu,
        session.cipher.name(),
        session.keepalive(),
        session.idle_timeout(),
        session.rekey_after(),
    );
}

/// The start-up line's value: what batches on each side, or why nothing does.
fn describe_offload(mode: Offload, tun: &platform::Offloads, tunnel: &Tunnel) -> String {
    if mode == Offload::Off {
        return "off (--offload off): one packet per TUN read and write, one datagram per UDP \
                send and receive"
            .into();
    }
    let outside = match tunnel.udp_offload() {
        Some(udp) => format!("UDP {udp}"),
        None => "TCP: all frames of a superpacket in one write, up to 64 KiB per read".into(),
    };
    format!("TUN {tun}; {outside}")
}

/// Address, MTU and link up on the TUN, then the routes.
fn set_up_inside(
    tun: &Tun,
    routes: &mut RouteTable<SystemRoutes>,
    config: &ClientConfig,
    args: &UpArgs,
    session: &SessionConfig,
    server: std::net::SocketAddr,
) -> Result<(), Failure> {
    blocking(|| tun.configure(session))?;
    let plan = RoutePlan {
        full_tunnel: args.full_tunnel,
        extra: config.routes.clone(),
    };
    blocking(|| routes.apply(&plan, tun.name(), server_v4(server)))?;
    Ok(())
}

/// The server's IPv4 address: IPv4 routes cannot capture an IPv6 server.
fn server_v4(server: std::net::SocketAddr) -> Option<std::net::Ipv4Addr> {
    match server.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

/// Brings the TUN (and, in full tunnel, the server's host route) in line
/// with a new session.
fn follow_session(
    tun: &Tun,
    routes: &mut RouteTable<SystemRoutes>,
    args: &UpArgs,
    server: std::net::SocketAddr,
    previous: &SessionConfig,
    new: &SessionConfig,
) -> Result<(), Failure> {
    if args.full_tunnel {
        if let Some(v4) = server_v4(server) {
            if let Err(e) = blocking(|| routes.add_server_route(v4, tun.name())) {
                tracing::warn!("cannot pin the route to the server {v4}: {e}");
            }
        }
    }
    let changed = (previous.client_addr, previous.prefix_len, previous.mtu)
        != (new.client_addr, new.prefix_len, new.mtu);
    if changed {
        tracing::info!(
            tun = tun.name(),
            "the new session assigned {}/{} mtu {} (was {}/{} mtu {}); reconfiguring",
            new.client_addr,
            new.prefix_len,
            new.mtu,
            previous.client_addr,
            previous.prefix_len,
            previous.mtu
        );
        blocking(|| platform::reconfigure(tun.name(), previous, new))?;
    }
    Ok(())
}

/// Serves `ringway status`; without a socket the client still runs.
#[cfg(unix)]
fn serve_status(
    tun: &str,
    path: Option<&Path>,
    status: &Arc<LiveStatus>,
) -> Option<ringway_client::status::socket::StatusServer> {
    use ringway_client::status::socket::StatusServer;
    match StatusServer::bind(tun, path, Arc::clone(status)) {
        Ok(server) => {
            tracing::info!(socket = %server.path().display(), "serving status");
            Some(server)
        }
        Err(e) => {
            tracing::warn!("no status socket ({e}); `ringway status` will not see this client");
            None
        }
    }
}

#[cfg(not(unix))]
fn serve_status(_tun: &str, _path: Option<&Path>, _status: &Arc<LiveStatus>) -> Option<()> {
    None
}

/// Prints a [`LiveLine`] every `every` to stdout.
async fn print_stats(status: Arc<LiveStatus>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev = status.stats().snapshot();
    let mut at = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let (cur, now) = (status.stats().snapshot(), tokio::time::Instant::now());
        let line = LiveLine {
            prev: &prev,
            cur: &cur,
            elapsed: now - at,
        };
        match status.state() {
            ConnState::Connected => println!("{line}"),
            ConnState::Reconnecting => println!("[reconnecting] {line}"),
        }
        (prev, at) = (cur, now);
    }
}

/// `ringway status`.
fn run_status(tun: Option<String>, json: bool, socket: Option<PathBuf>) -> Result<(), Failure> {
    #[cfg(unix)]
    {
        use ringway_client::status::socket::{self, QueryError};
        use ringway_client::status::socket_dirs;
        let paths = match socket {
            Some(p) => vec![p],
            None => socket::find(tun.as_deref()),
        };
        if paths.is_empty() {
            let dirs: Vec<String> = socket_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            let which = tun.map(|t| format!(" for {t}")).unwrap_or_default();
            return Err(Failure::new(
                Exit::NotRunning,
                format!(
                    "no running ringway client{which} (no status socket in {})",
                    dirs.join(", ")
                ),
            ));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                Failure::new(Exit::Unexpected, format!("cannot start the runtime: {e}"))
            })?;
        let mut first_error = None;
        let mut shown = 0;
        for path in &paths {
            match runtime.block_on(socket::query(path)) {
                Ok(report) => {
                    if json {
                        println!("{}", report.to_json());
                    } else {
                        if shown > 0 {
                            println!();
                        }
                        print!("{report}");
                    }
                    shown += 1;
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), "{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match (shown, first_error) {
            (0, Some(e)) => {
                let exit = match e {
                    QueryError::Permission(_) => Exit::Permission,
                    QueryError::NotRunning(_) => Exit::NotRunning,
                    QueryError::Garbled { .. } => Exit::Unexpected,
                };
                Err(Failure::new(exit, e))
            }
            _ => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (tun, json, socket);
        Err(Failure::new(
            Exit::System,
            "`ringway status` needs Unix domain sockets",
        ))
    }
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
