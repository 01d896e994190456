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
            ExitCode::FAILURE
        }
    }
}

#[cfg(target_os = "linux")]
fn run(args: RunArgs) -> Result<()> {
    use anyhow::Context;
    use ringway_server::config::Settings;
    use ringway_server::inside::tun::Tun;
    use ringway_server::outside::udp::Udp;
    use ringway_server::sessions::Sessions;
    use ringway_server::uring::{signals, Driver, Tunables};
    use std::os::fd::AsRawFd;

    // First, before anything could start a thread: route SIGINT/SIGTERM to the ring.
    let signal_fd = signals::shutdown_signalfd().context("cannot set up signal handling")?;
    let mut settings = Settings::load(&args.config)?;
    let u = &mut settings.uring;
    u.ring_entries = args.ring_entries.unwrap_or(u.ring_entries);
    u.tun_rx_slots = args.tun_rx_slots.unwrap_or(u.tun_rx_slots);
    u.udp_rx_slots = args.udp_rx_slots.unwrap_or(u.udp_rx_slots);
    u.tx_slots = args.tx_slots.unwrap_or(u.tx_slots);
    u.sqpoll_idle_ms = args.sqpoll_idle_ms.unwrap_or(u.sqpoll_idle_ms);
    u.tun_blocking = args.tun_blocking.unwrap_or(u.tun_blocking);
    let tunables = Tunables {
        ring_entries: u.ring_entries,
        tun_rx_slots: u.tun_rx_slots,
        udp_rx_slots: u.udp_rx_slots,
        tx_slots: u.tx_slots,
        sqpoll_idle_ms: u.sqpoll_idle_ms,
    };
    tunables.check()?;

    let tun = Tun::create(&settings.tun_name, settings.uring.tun_blocking)?;
    tun.configure(
        settings.pool.first_host(),
        settings.pool.prefix_len(),
        settings.mtu,
    )?;
    let udp = Udp::bind(settings.listen_udp)?;
    tracing::info!(
        tun = tun.name(),
        addr = %settings.pool.first_host(),
        pool = %settings.pool,
        listen = %udp.local_addr()?,
        peers = settings.peers.len(),
        public_key = %settings.secret_key.public_key(),
        ?tunables,
        tun_blocking = settings.uring.tun_blocking,
        "ringway-server running"
    );
    let sessions = Sessions::new(&settings);
    let mut driver = Driver::new(
        &tunables,
        settings.mtu,
        tun.fd(),
        udp.fd(),
        signal_fd.as_raw_fd(),
        sessions,
    )?;
    driver.run()?;
    // The driver (and its ring) goes before the descriptors it used.
    drop(driver);
    drop(udp);
    drop(tun);
    drop(signal_fd);
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn run(_args: RunArgs) -> Result<()> {
    anyhow::bail!("ringway-server runs on Linux only (it needs io_uring and /dev/net/tun)")
}
