//! `ringway-server`: set up, then hand everything to the io_uring loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ringway-server",
    version,
    about = "Ringway VPN server (Linux, io_uring)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write DIR/server.toml and a new server key (mode 0600) with working defaults.
    Init {
        /// Directory for the config and key.
        #[arg(long)]
        dir: PathBuf,
        /// UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:51820")]
        listen: SocketAddr,
        /// Inner address pool; the server takes the first host.
        #[arg(long, default_value = "10.77.0.0/24")]
        pool: String,
    },
    /// Authorise a new client: add it to the peer list and write its config to FILE (mode 0600).
    AddPeer {
        /// A name for the peer (letters, digits, '-', '_', '.').
        name: String,
        /// The server directory written by `init`.
        #[arg(long)]
        dir: PathBuf,
        /// The address clients reach the server at (HOST:PORT).
        #[arg(long)]
        endpoint: String,
        /// Where to write the client config.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the server in the foreground until SIGINT or SIGTERM.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The server config file.
    #[arg(long)]
    config: PathBuf,
    /// Override uring.ring_entries.
    #[arg(long)]
    ring_entries: Option<u32>,
    /// Override uring.tun_rx_slots.
    #[arg(long)]
    tun_rx_slots: Option<u32>,
    /// Override uring.udp_rx_slots.
    #[arg(long)]
    udp_rx_slots: Option<u32>,
    /// Override uring.tx_slots.
    #[arg(long)]
    tx_slots: Option<u32>,
    /// Override uring.sqpoll_idle_ms (0 = SQPOLL off).
    #[arg(long)]
    sqpoll_idle_ms: Option<u32>,
    /// Override uring.tun_blocking.
    #[arg(long)]
    tun_blocking: Option<bool>,
    /// Override uring.offload_buffers (64 KiB buffers for superpackets in flight).
    #[arg(long)]
    offload_buffers: Option<u32>,
    /// Override server.udp_socket_buffer (bytes).
    #[arg(long)]
    udp_socket_buffer: Option<usize>,
    /// Override server.offload: `auto` or `off` (TUN virtio_net_hdr, TSO, USO).
    #[arg(long, value_name = "auto|off")]
    offload: Option<String>,
    /// Override server.fair_queue: `on` or `off` (flow queueing in front of TUN writes).
    #[arg(long, value_name = "on|off")]
    fair_queue: Option<String>,
    /// Override server.io: the data path's I/O backend. `auto` (default): io_uring, or
    /// tokio with a warning where io_uring is not permitted; `uring`; `tokio` (epoll).
    #[arg(long, value_name = "auto|uring|tokio")]
    io: Option<String>,
    /// Override fq.target_ms (CoDel target, milliseconds).
    #[arg(long)]
    fq_target_ms: Option<u32>,
    /// Override fq.interval_ms (CoDel interval, milliseconds).
    #[arg(long)]
    fq_interval_ms: Option<u32>,
    /// Override fq.limit_packets (packets queued at most per direction).
    #[arg(long)]
    fq_limit_packets: Option<u32>,
    /// Override fq.limit_bytes (bytes queued at most per direction).
    #[arg(long)]
    fq_limit_bytes: Option<u32>,
    /// Override fq.ecn (CE-mark ECN-capable packets instead of dropping them).
    #[arg(long)]
    fq_ecn: Option<bool>,
    /// Override fq.tun_writes_in_flight.
    #[arg(long)]
    fq_tun_writes_in_flight: Option<u32>,
    /// Override tcp.max_connections.
    #[arg(long)]
    max_tcp_connections: Option<u32>,
    /// Override tcp.max_connections_per_source.
    #[arg(long)]
    max_tcp_connections_per_source: Option<u32>,
    /// Override tcp.handshake_timeout_secs.
    #[arg(long)]
    tcp_handshake_timeout_secs: Option<u16>,
    /// Override tcp.send_queue_bytes.
    #[arg(long)]
    tcp_send_queue_bytes: Option<usize>,
    /// Override tcp.socket_send_buffer (bytes; 0 = kernel autotuning).
    #[arg(long)]
    tcp_socket_send_buffer: Option<usize>,
    /// Override tcp.socket_recv_buffer (bytes; 0 = kernel autotuning).
    #[arg(long)]
    tcp_socket_recv_buffer: Option<usize>,
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init { dir, listen, pool } => ringway_server::admin::init(&dir, listen, &pool),
        Command::AddPeer {
            name,
            dir,
            endpoint,
            out,
        } => ringway_server::admin::add_peer(&name, &dir, &endpoint, &out),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringway-server: {e:#}");
            exit_code(&e)
        }
    }
}

/// EX_CONFIG (sysexits.h): a bad config value, from the file or the command line.
const EX_CONFIG: u8 = 78;

/// 78 for a configuration error, 1 for anything else.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<ringway_server::config::ConfigError>()
        .is_some()
    {
        ExitCode::from(EX_CONFIG)
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(target_os = "linux")]
fn run(args: RunArgs) -> Result<()> {
    use anyhow::Context;
    use ringway_proto::wire::transport::OVERHEAD;
    use ringway_server::config::IoBackend;
    use ringway_server::config::{Overrides, Settings};
    use ringway_server::handshake_state::HandshakeState;
    use ringway_server::inside::tun;
    use ringway_server::outside::tcp::listener::Listener;
    use ringway_server::outside::udp::Udp;
    use ringway_server::sessions::Sessions;
    use ringway_server::uring::{self, signals, DataPath, Driver, DriverError, Fds, TcpLimits};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    // First, before anything could start a thread: route SIGINT/SIGTERM to the ring.
    let signal_fd = signals::shutdown_signalfd().context("cannot set up signal handling")?;
    let overrides = Overrides {
        ring_entries: args.ring_entries,
        tun_rx_slots: args.tun_rx_slots,
        udp_rx_slots: args.udp_rx_slots,
        tx_slots: args.tx_slots,
        sqpoll_idle_ms: args.sqpoll_idle_ms,
        tun_blocking: args.tun_blocking,
        offload_buffers: args.offload_buffers,
        udp_socket_buffer: args.udp_socket_buffer,
        offload: args.offload,
        fair_queue: args.fair_queue,
        io: args.io,
        fq_target_ms: args.fq_target_ms,
        fq_interval_ms: args.fq_interval_ms,
        fq_limit_packets: args.fq_limit_packets,
        fq_limit_bytes: args.fq_limit_bytes,
        fq_ecn: args.fq_ecn,
        fq_tun_writes_in_flight: args.fq_tun_writes_in_flight,
        max_tcp_connections: args.max_tcp_connections,
        max_tcp_connections_per_source: args.max_tcp_connections_per_source,
        tcp_handshake_timeout_secs: args.tcp_handshake_timeout_secs,
        tcp_send_queue_bytes: args.tcp_send_queue_bytes,
        tcp_socket_send_buffer: args.tcp_socket_send_buffer,
        tcp_socket_recv_buffer: args.tcp_socket_recv_buffer,
    };
    // Every value, from the file or the command line, is checked here, before
    // anything is created.
    let settings = Settings::load(&args.config, &overrides)?;
    let tunables = settings.tunables();
    // The backend is chosen before anything is opened: the TUN's mode depends on it.
    let (backend, warning) = ringway_server::backend::choose(settings.io, uring::probe)?;
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
    let tokio = backend == IoBackend::Tokio;
    if tokio && settings.fair_queue.is_some() {
        tracing::warn!("the tokio backend has no flow queue: running without server.fair_queue");
    }

    let tun = tun::open(&settings, settings.uring.tun_blocking && !tokio)?;
    let udp = settings
        .listen_udp
        .map(|a| Udp::bind(a, settings.udp_socket_buffer))
        .transpose()?;
    let tcp = settings.listen_tcp.map(Listener::bind).transpose()?;
    // What each call may carry: decided here, once, from what the kernel accepted.
    let offloads = *tun.offloads();
    let path = DataPath {
        mtu: settings.mtu,
        vnet_hdr: offloads.vnet_hdr,
        uso: offloads.uso,
        udp_gso: offloads.tso && udp.as_ref().is_some_and(|u| u.probe_gso()),
        udp_gro: offloads.vnet_hdr && udp.as_ref().is_some_and(|u| u.enable_gro()),
    };
    if offloads.tso {
        tun::limit_superpackets(&tun, path.segments_per_send());
    }
    tracing::info!(
        tun = tun.name(),
        "offload: TUN {}; data path: {path}",
        tun::describe(&settings, &tun)
    );
    let t = &settings.tcp;
    let limits = TcpLimits {
        max_connections: t.max_connections,
        max_per_source: t.max_connections_per_source,
        handshake_timeout: Duration::from_secs(u64::from(t.handshake_timeout_secs)),
        send_queue_bytes: t.send_queue_bytes,
        rx_buffer_bytes: t.rx_buffer_bytes,
        max_frame: usize::from(settings.mtu) + OVERHEAD,
        socket_send_buffer: t.socket_send_buffer,
        socket_recv_buffer: t.socket_recv_buffer,
        idle_timeout: Duration::from_secs(u64::from(settings.idle_timeout_secs)),
    };
    let show = |a: Option<anyhow::Result<std::net::SocketAddr>>| match a {
        Some(Ok(a)) => a.to_string(),
        Some(Err(_)) => "?".to_string(),
        None => "off".to_string(),
    };
    tracing::info!(
        tun = tun.name(),
        addr = %settings.pool.first_host(),
        pool = %settings.pool,
        udp = %show(udp.as_ref().map(|u| u.local_addr())),
        tcp = %show(tcp.as_ref().map(|t| t.local_addr())),
        max_tcp_connections = t.max_connections,
        peers = settings.peers.len(),
        public_key = %settings.secret_key.public_key(),
        io = backend.as_str(),
        ?tunables,
        tun_blocking = settings.uring.tun_blocking && !tokio,
        "ringway-server running"
    );
    // Each peer's last accepted initiation, from the previous run: a captured one is not
    // accepted again after a restart.
    let sessions = || {
        let state = HandshakeState::new(settings.state_file.clone());
        let mut sessions = Sessions::new(&settings);
        sessions.restore_timestamps(state.load());
        (sessions, state)
    };
    let run_tokio = |tun, udp, tcp, signal| {
        let (sessions, state) = sessions();
        let parts = ringway_server::tokio_loop::Parts {
            tun,
            udp,
            tcp,
            signal,
            state: Some(state),
        };
        ringway_server::tokio_loop::run(path, limits.clone(), parts, sessions).map(drop)
    };
    if tokio {
        return run_tokio(tun, udp, tcp, signal_fd);
    }
    let fds = Fds {
        tun: tun.as_raw_fd(),
        udp: udp.as_ref().map(|u| u.fd()),
        tcp_listener: tcp.as_ref().map(|t| t.fd()),
        signal: signal_fd.as_raw_fd(),
    };
    let (sessions, state) = sessions();
    let mut driver = match Driver::new(&tunables, limits.clone(), path, fds, sessions) {
        Ok(driver) => driver.with_handshake_state(state),
        // The probe's two-entry ring passed but the real one did not (a memlock limit on an
        // old kernel, say): with `auto` and a non-blocking TUN, the tokio loop can still run.
        Err(e @ (DriverError::NotPermitted | DriverError::Setup(_)))
            if settings.io == IoBackend::Auto && !settings.uring.tun_blocking =>
        {
            tracing::warn!("{e}; running the tokio backend instead");
            return run_tokio(tun, udp, tcp, signal_fd);
        }
        Err(e) => return Err(e.into()),
    };
    driver.run()?;
    // The driver (and its ring) goes before the descriptors it used.
    drop(driver);
    drop(tcp);
    drop(udp);
    drop(tun);
    drop(signal_fd);
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn run(_args: RunArgs) -> Result<()> {
    anyhow::bail!("ringway-server runs on Linux only (it needs io_uring and /dev/net/tun)")
}
