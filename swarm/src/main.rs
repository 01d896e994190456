//! `ringway-swarm`: thousands of client sessions from one process against a Ringway server.
//!
//! ```text
//! ringway-swarm --config SWARM.toml --sessions N --rate PPS --seconds S [--server-pid PID] [--json]
//! ringway-swarm provision --server-config server.toml --sessions N --endpoint HOST:PORT --out SWARM.toml
//! ringway-swarm namespaces --sessions 100,1000,10000 --rate PPS --seconds S [--json]
//! ```

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ringway_client::TransportChoice;
use ringway_swarm::report::Report;
use ringway_swarm::server::ServerWatch;
use ringway_swarm::swarm::{self, Options};
use ringway_swarm::{namespaces, peers, sys};

/// Exit status when the run finished but not every session came up.
const EXIT_INCOMPLETE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "ringway-swarm",
    version,
    about = "Ringway load generator: N client sessions from one process (no TUN), a paced \
             packet load through all but one, and echoes timed through the last",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Add N peers to a server config (in the format `ringway-server add-peer` writes) and
    /// write their keys to one swarm file (mode 0600). Restart the server to load them.
    Provision(ProvisionArgs),
    /// The whole measurement as root, in throwaway network namespaces: for each session count
    /// a fresh server with that many peers, the swarm, the server's own counters; prints a
    /// Markdown table.
    Namespaces(NamespacesArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The swarm file `provision` wrote.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Sessions to open (the first is the latency probe); default: every peer in the file.
    #[arg(long)]
    sessions: Option<usize>,
    #[command(flatten)]
    load: LoadArgs,
    /// The server's PID, to read its memory, CPU and kernel counters from /proc.
    #[arg(long, conflicts_with = "server_pidfile")]
    server_pid: Option<u32>,
    /// A file holding the server's PID.
    #[arg(long, value_name = "FILE")]
    server_pidfile: Option<PathBuf>,
    /// The server's TUN device (its packet counters are the server's delivered rate).
    #[arg(long, default_value = "ringway0")]
    server_tun: String,
    /// Where load packets go (IP:PORT behind the server's TUN); default: the server's inner
    /// address, port 9.
    #[arg(long)]
    target: Option<SocketAddrV4>,
}

/// How the load looks, for both the plain run and the namespaces mode.
#[derive(Args, Clone)]
struct LoadArgs {
    /// Packets per second over all load sessions.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Bytes of each inner packet (IPv4 + UDP + payload), at most the session MTU.
    #[arg(long, default_value_t = 128)]
    packet_len: usize,
    /// Outside transport of every session.
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// Handshakes in flight at most while connecting.
    #[arg(long, default_value_t = 256)]
    handshake_window: usize,
    /// Seconds one session may take to connect.
    #[arg(long, default_value_t = 30)]
    connect_timeout: u64,
    /// Milliseconds between the probe's echo requests.
    #[arg(long, default_value_t = 10)]
    probe_interval_ms: u64,
    /// Seconds with every session up and no load (the server's idle cost is measured here).
    #[arg(long, default_value_t = 1.0)]
    idle_seconds: f64,
    /// Pacer tasks the load sessions are spread over.
    #[arg(long, default_value_t = 1)]
    pacers: usize,
    /// Tokio worker threads (one leaves the other core of a 2-core machine to the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Transport {
    Udp,
    Tcp,
}

#[derive(Args)]
struct ProvisionArgs {
    /// The server config to add peers to.
    #[arg(long, value_name = "FILE")]
    server_config: PathBuf,
    /// How many peers.
    #[arg(long)]
    sessions: usize,
    /// The address the swarm reaches the server at (HOST:PORT).
    #[arg(long)]
    endpoint: String,
    /// The swarm file to write (must not exist).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Peer names are PREFIX-1 .. PREFIX-N.
    #[arg(long, default_value = "swarm")]
    prefix: String,
}

#[derive(Args)]
struct NamespacesArgs {
    /// Session counts, comma-separated; each gets a fresh server and namespaces.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000,10000",
        action = clap::ArgAction::Set
    )]
    sessions: Vec<usize>,
    #[command(flatten)]
    load: LoadArgs,
    /// Directory holding ringway-server (default: $RINGWAY_BIN_DIR, else target/release).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// An extra argument for `ringway-server run` (repeat for more).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

fn main() -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Provision(a)) => provision(a),
        Some(Command::Namespaces(a)) => run_namespaces(a),
        None => run(cli.run),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_INCOMPLETE),
        Err(e) => {
            eprintln!("ringway-swarm: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl LoadArgs {
    /// The swarm options for `sessions` sessions.
    fn options(&self, sessions: usize, target: Option<SocketAddrV4>) -> Result<Options> {
        if !(self.seconds > 0.0 && self.seconds <= 3600.0) {
            bail!("--seconds must be above 0 and at most 3600");
        }
        if !(self.idle_seconds >= 0.0 && self.idle_seconds <= 600.0) {
            bail!("--idle-seconds must be between 0 and 600");
        }
        if self.probe_interval_ms == 0 || self.pacers == 0 || self.threads == 0 {
            bail!("--probe-interval-ms, --pacers and --threads must be at least 1");
        }
        if self.packet_len < ringway_swarm::packet::MIN_LEN {
            bail!(
                "--packet-len must be at least {} (IPv4 and UDP headers)",
                ringway_swarm::packet::MIN_LEN
            );
        }
        Ok(Options {
            sessions,
            rate: self.rate,
            load_for: Duration::from_secs_f64(self.seconds),
            idle_for: Duration::from_secs_f64(self.idle_seconds),
            packet_len: self.packet_len,
            transport: match self.transport {
                Transport::Udp => TransportChoice::Udp,
                Transport::Tcp => TransportChoice::Tcp,
            },
            handshake_window: self.handshake_window.max(1),
            connect_deadline: Duration::from_secs(self.connect_timeout.max(1)),
            probe_interval: Duration::from_millis(self.probe_interval_ms),
            target,
            pacers: self.pacers,
        })
    }
}

/// Raises the descriptor limit and checks it covers `sessions` sockets.
fn descriptors_for(sessions: usize) -> Result<()> {
    let limit = sys::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    // One socket per session, plus what the runtime, /proc reads and logs hold.
    let need = sessions as u64 + 64;
    if limit < need {
        bail!(
            "{sessions} sessions need about {need} open files, and the hard limit is {limit}: \
             raise it (ulimit -Hn, or LimitNOFILE= under systemd)"
        );
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<bool> {
    let Some(config) = &args.config else {
        bail!("--config SWARM.toml is required (write one with `ringway-swarm provision`)");
    };
    let peers = peers::load(config)?;
    let sessions = args.sessions.unwrap_or(peers.len());
    let opts = args.load.options(sessions, args.target)?;
    descriptors_for(sessions)?;
    let pid = match (&args.server_pid, &args.server_pidfile) {
        (Some(pid), _) => Some(*pid),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?
                .trim()
                .parse()
                .with_context(|| format!("{} does not hold a PID", file.display()))?,
        ),
        (None, None) => None,
    };
    let watch = pid.map(|pid| ServerWatch {
        pid,
        tun: args.server_tun.clone(),
    });
    if let Some(w) = &watch {
        w.sample().with_context(|| {
            format!("reading the server's /proc/{} (wrong --server-pid?)", w.pid)
        })?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.load.threads)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let report = runtime.block_on(swarm::run(peers, &opts, watch.as_ref()))?;
    if args.load.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(report.handshakes.established == report.handshakes.requested)
}

fn provision(a: ProvisionArgs) -> Result<bool> {
    let done = peers::provision(&a.server_config, a.sessions, &a.prefix, &a.endpoint, &a.out)?;
    println!(
        "added {} peers to {} (its pool holds {} clients) and wrote their keys to {}; \
         restart the server to load them",
        done.peers,
        a.server_config.display(),
        done.pool_clients,
        a.out.display()
    );
    Ok(true)
}

fn run_namespaces(a: NamespacesArgs) -> Result<bool> {
    if !ringway_e2e::prereq::on_path("ip") {
        bail!("`ip` (iproute2) is needed for the namespaces");
    }
    let largest = a.sessions.iter().copied().max().unwrap_or(0);
    if largest == 0 {
        bail!("--sessions: give at least one count above 0");
    }
    descriptors_for(largest)?;
    let plan = namespaces::Plan {
        sessions: a.sessions.clone(),
        swarm: a.load.options(0, None)?,
        threads: a.load.threads,
        binaries: namespaces::binaries(a.bin_dir.as_ref())?,
        server_args: a.server_args,
    };
    let machine = ringway_swarm::machine();
    let json = a.load.json;
    let reports = namespaces::run_all(&plan, |r| {
        // Progress goes to stderr, so stdout holds only the result.
        eprintln!("--- {} sessions\n{}", r.sessions, r.text());
    })?;
    let complete = reports
        .iter()
        .all(|r| r.handshakes.established == r.handshakes.requested);
    if json {
        let doc = serde_json::json!({
            "machine": machine,
            "rate": a.load.rate,
            "seconds": a.load.seconds,
            "packet_len": a.load.packet_len,
            "runs": reports,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("{}", Report::markdown_header());
        for r in &reports {
            println!("{}", r.markdown_row());
        }
    }
    Ok(complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_needs_no_subcommand() {
        let cli = Cli::try_parse_from([
            "ringway-swarm",
            "--config",
            "s.toml",
            "--sessions",
            "5",
            "--rate",
            "100",
            "--seconds",
            "2",
            "--json",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.sessions, Some(5));
        assert_eq!(cli.run.load.rate, 100);
        assert!(cli.run.load.json);
        let opts = cli.run.load.options(5, None).unwrap();
        assert_eq!(opts.load_for, Duration::from_secs(2));
    }

    #[test]
    fn later_values_win_so_scripts_can_set_defaults() {
        let cli = Cli::try_parse_from([
            "ringway-swarm",
            "namespaces",
            "--sessions",
            "100,1000,10000",
            "--rate",
            "200000",
            "--sessions",
            "20",
            "--rate",
            "5",
            "--server-arg",
            "--offload",
            "--server-arg",
            "off",
        ])
        .unwrap();
        let Some(Command::Namespaces(a)) = cli.command else {
            panic!("namespaces expected");
        };
        assert_eq!(a.sessions, [20]);
        assert_eq!(a.load.rate, 5);
        assert_eq!(a.server_args, ["--offload", "off"]);
    }

    #[test]
    fn bad_load_values_are_refused() {
        let cli = Cli::try_parse_from(["ringway-swarm", "--seconds", "0"]).unwrap();
        assert!(cli.run.load.options(1, None).is_err());
        let cli = Cli::try_parse_from(["ringway-swarm", "--packet-len", "20"]).unwrap();
        assert!(cli.run.load.options(1, None).is_err());
        assert!(Cli::try_parse_from(["ringway-swarm", "provision", "--rate", "5"]).is_err());
    }
}
