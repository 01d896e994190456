//! What a running client says about itself: `ringway up --stats` lines, and
//! the answer `ringway status` gets.
//!
//! [`LiveStatus`] is the shared, always-current picture: the
//! [`supervisor`](crate::supervisor) writes the session's state into it, the
//! tunnel halves count into its [`Stats`]. [`StatusReport`] is that picture at
//! one moment, as JSON on the status socket and as a few lines for people.
//!
//! The status socket (Unix only) is `/run/ringway/<tun>.sock`, or, where
//! `/run/ringway` cannot be written, the same name under
//! `$XDG_RUNTIME_DIR/ringway` or `/tmp/ringway` ([`socket_dirs`]). The
//! directory is made 0755 and the socket 0600, so only the user running the
//! client (usually root) can read its status; it is removed on exit. Each
//! connection gets one JSON object and a newline, then the socket closes:
//!
//! ```json
//! {"version":1,"interface":"ringway0","pid":4242,"state":"connected",
//!  "server":"192.0.2.1:51820","transport":"udp","session_id":305419896,
//!  "inner_address":"198.18.0.2/24","mtu":1420,"uptime_secs":3600,
//!  "session_secs":600,"reconnects":1,"rekeys":4,"last_error":null,
//!  "counters":{"tx_packets":10,"tx_bytes":1000,"rx_packets":9,"rx_bytes":900,
//!              "tx_keepalives":3,"rx_keepalives":3,"tx_dropped":0,"rx_dropped":0},
//!  "io":{"tun_rx_reads":4,"tun_rx_packets":10,"udp_tx_sends":2,"udp_tx_datagrams":10,
//!        "udp_rx_recvs":1,"udp_rx_datagrams":9,"tcp_tx_writes":0,"tcp_tx_frames":0,
//!        "tcp_rx_reads":0,"tcp_rx_frames":0,"tun_tx_writes":2,"tun_tx_packets":9},
//!  "queue_out":{"enqueued":4,"dequeued":4,"sparse":3,"dropped_codel":0,
//!               "dropped_overflow":0,"marked_ce":0,"flushed":0,"peak_items":2},
//!  "queue_in":{...the same for the inbound queue...},
//!  "rtt_ms":1.21,"srtt_ms":1.3}
//! ```
//!
//! `io` counts system calls per path and the packets they moved (a superpacket
//! read from the TUN counts the packets it was cut into), so packets per call
//! show how well offload batches; reports from clients before it lack `io`.
//! `queue_out` and `queue_in` are the fair queues' counters ([`crate::backlog`]): what
//! waited, what left as a sparse flow, what CoDel dropped or marked and what a full queue
//! dropped; all zero with `--fair-queue off`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringway_proto::SessionConfig;
use serde::{Deserialize, Serialize};

use crate::outside::Transport;
use crate::stats::{Millis, QueueSnapshot, Stats};

/// The version of [`StatusReport`]'s JSON.
pub const REPORT_VERSION: u32 = 1;

/// Whether the client has a session right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    /// Forwarding over a session.
    Connected,
    /// The session was lost; trying to get a new one.
    Reconnecting,
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnState::Connected => "connected",
            ConnState::Reconnecting => "reconnecting",
        })
    }
}

/// The client's state, kept current by the supervisor.
#[derive(Debug)]
pub struct LiveStatus {
    started: Instant,
    interface: Option<String>,
    stats: Arc<Stats>,
    live: Mutex<Live>,
}

#[derive(Debug)]
struct Live {
    state: ConnState,
    server: SocketAddr,
    transport: Transport,
    session_id: u32,
    config: SessionConfig,
    /// When the current session began, or the reconnecting started.
    since: Instant,
    reconnects: u64,
    rekeys: u64,
    last_error: Option<String>,
}

impl LiveStatus {
    /// A client connected to `server` over `transport` in session
    /// `session_id`, as `interface` (the TUN's name, if there is one).
    pub fn new(
        interface: Option<String>,
        stats: Arc<Stats>,
        server: SocketAddr,
        transport: Transport,
        session_id: u32,
        config: SessionConfig,
    ) -> Self {
        let now = crate::now();
        LiveStatus {
            started: now,
            interface,
            stats,
            live: Mutex::new(Live {
                state: ConnState::Connected,
                server,
                transport,
                session_id,
                config,
                since: now,
                reconnects: 0,
                rekeys: 0,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Connected or reconnecting.
    pub fn state(&self) -> ConnState {
        self.lock().state
    }

    /// The session config in force.
    pub fn session_config(&self) -> SessionConfig {
        self.lock().config
    }

    /// A new session after a reconnect.
    pub(crate) fn reconnected(
        &self,
        server: SocketAddr,
        transport: Transport,
        session_id: u32,
        config: SessionConfig,
    ) {
        let mut l = self.lock();
        l.state = ConnState::Connected;
        l.server = server;
        l.transport = transport;
        l.session_id = session_id;
        l.config = config;
        l.since = crate::now();
        l.reconnects += 1;
    }

    /// A rekey replaced the session in place.
    pub(crate) fn rekeyed(&self, session_id: u32, config: SessionConfig) {
        let mut l = self.lock();
        l.session_id = session_id;
        l.config = config;
        l.rekeys += 1;
    }

    /// The session was lost (or a reconnect attempt failed) for `why`.
    pub(crate) fn reconnecting(&self, why: &dyn fmt::Display) {
        let mut l = self.lock();
        if l.state == ConnState::Connected {
            l.since = crate::now();
        }
        l.state = ConnState::Reconnecting;
        l.last_error = Some(why.to_string());
    }

    /// Everything at this moment.
    pub fn report(&self) -> StatusReport {
        let now = crate::now();
        let s = self.stats.snapshot();
        let l = self.lock();
        StatusReport {
            version: REPORT_VERSION,
            interface: self.interface.clone(),
            pid: std::process::id(),
            state: l.state,
            server: l.server.to_string(),
            transport: l.transport.as_str().to_owned(),
            session_id: l.session_id,
            inner_address: format!("{}/{}", l.config.client_addr, l.config.prefix_len),
            mtu: l.config.mtu,
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            session_secs: now.saturating_duration_since(l.since).as_secs(),
            reconnects: l.reconnects,
            rekeys: l.rekeys,
            last_error: l.last_error.clone(),
            counters: ReportCounters {
                tx_packets: s.tx_packets,
                tx_bytes: s.tx_bytes,
                rx_packets: s.rx_packets,
                rx_bytes: s.rx_bytes,
                tx_keepalives: s.tx_keepalives,
                rx_keepalives: s.rx_keepalives,
                tx_dropped: s.tx_dropped(),
                rx_dropped: s.rx_dropped(),
            },
            io: ReportIo {
                tun_rx_reads: s.tun_rx_reads,
                tun_rx_packets: s.tun_rx_packets,
                udp_tx_sends: s.udp_tx_sends,
                udp_tx_datagrams: s.udp_tx_datagrams,
                udp_rx_recvs: s.udp_rx_recvs,
                udp_rx_datagrams: s.udp_rx_datagrams,
                tcp_tx_writes: s.tcp_tx_writes,
                tcp_tx_frames: s.tcp_tx_frames,
                tcp_rx_reads: s.tcp_rx_reads,
                tcp_rx_frames: s.tcp_rx_frames,
                tun_tx_writes: s.tun_tx_writes,
                tun_tx_packets: s.tun_tx_packets,
            },
            queue_out: s.tx_queue,
            queue_in: s.rx_queue,
            rtt_ms: s.rtt.map(as_ms),
            srtt_ms: s.srtt.map(as_ms),
        }
    }
}

fn as_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A running client's state at one moment: the status socket's JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// The TUN's name (absent for a library client without one).
    #[serde(default)]
    pub interface: Option<String>,
    /// The client's process id.
    pub pid: u32,
    /// Connected or reconnecting.
    pub state: ConnState,
    /// The server's address (the last one, while reconnecting).
    pub server: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The session id (the last one, while reconnecting).
    pub session_id: u32,
    /// Our inner address and prefix, `198.18.0.2/24`.
    pub inner_address: String,
    /// The tunnel MTU.
    pub mtu: u16,
    /// Seconds since the client started.
    pub uptime_secs: u64,
    /// Seconds in the current state: since the session began, or since
    /// reconnecting started.
    pub session_secs: u64,
    /// Sessions that replaced a lost one.
    pub reconnects: u64,
    /// Sessions rekeyed in place.
    pub rekeys: u64,
    /// Why the last session was lost (or the last attempt failed).
    #[serde(default)]
    pub last_error: Option<String>,
    /// Totals since the client started.
    pub counters: ReportCounters,
    /// System calls per path and the packets they moved.
    #[serde(default)]
    pub io: ReportIo,
    /// The outbound fair queue: reads from the TUN waiting to be sent, and what it
    /// dropped or marked (all zero with `--fair-queue off`).
    #[serde(default)]
    pub queue_out: QueueSnapshot,
    /// The inbound fair queue: opened packets waiting to be written to the TUN.
    #[serde(default)]
    pub queue_in: QueueSnapshot,
    /// The latest round-trip time, in milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// The smoothed round-trip time, in milliseconds.
    #[serde(default)]
    pub srtt_ms: Option<f64>,
}

/// Totals in a [`StatusReport`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // Each mirrors the counter of the same name in `StatsSnapshot`.
pub struct ReportCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_keepalives: u64,
    pub rx_keepalives: u64,
    pub tx_dropped: u64,
    pub rx_dropped: u64,
}

/// System calls per path in a [`StatusReport`], named as the server names its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)] // Each mirrors the field of the same name in `StatsSnapshot`.
pub struct ReportIo {
    pub tun_rx_reads: u64,
    pub tun_rx_packets: u64,
    pub udp_tx_sends: u64,
    pub udp_tx_datagrams: u64,
    pub udp_rx_recvs: u64,
    pub udp_rx_datagrams: u64,
    pub tcp_tx_writes: u64,
    pub tcp_tx_frames: u64,
    pub tcp_rx_reads: u64,
    pub tcp_rx_frames: u64,
    pub tun_tx_writes: u64,
    pub tun_tx_packets: u64,
}

impl StatusReport {
    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the JSON a client sent.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl fmt::Display for StatusReport {
    /// A few lines for people:
    ///
    /// ```text
    /// ringway0: connected to 192.0.2.1:51820 over UDP, session 0x12345678 (pid 4242)
    ///   address   198.18.0.2/24, mtu 1420
    ///   up        1h00m00s; this session 10m00s; 1 reconnect, 4 rekeys
    ///   sent      10 packets, 1.0 kB, 3 keepalives
    ///   received  9 packets, 900 B, 3 keepalives
    ///   dropped   0 outbound, 0 inbound
    ///   per call  TUN read 2.5, UDP send 5.0, UDP recv 9.0, TUN write 4.5 packets
    ///   rtt       1.21 ms (smoothed 1.30 ms)
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.interface.as_deref().unwrap_or("ringway");
        let over = self.transport.to_uppercase();
        match self.state {
            ConnState::Connected => writeln!(
                f,
                "{name}: connected to {} over {over}, session {:#010x} (pid {})",
                self.server, self.session_id, self.pid
            )?,
            ConnState::Reconnecting => writeln!(
                f,
                "{name}: reconnecting to {} (last over {over}) (pid {})",
                self.server, self.pid
            )?,
        }
        writeln!(f, "  address   {}, mtu {}", self.inner_address, self.mtu)?;
        let this = match self.state {
            ConnState::Connected => "this session",
            ConnState::Reconnecting => "reconnecting for",
        };
        writeln!(
            f,
            "  up        {}; {this} {}; {} reconnect{}, {} rekey{}",
            Age(self.uptime_secs),
            Age(self.session_secs),
            self.reconnects,
            if self.reconnects == 1 { "" } else { "s" },
            self.rekeys,
            if self.rekeys == 1 { "" } else { "s" },
        )?;
        let c = &self.counters;
        writeln!(
            f,
            "  sent      {} packets, {}, {} keepalives",
            c.tx_packets,
            Bytes(c.tx_bytes),
            c.tx_keepalives
        )?;
        writeln!(
            f,
            "  received  {} packets, {}, {} keepalives",
            c.rx_packets,
            Bytes(c.rx_bytes),
            c.rx_keepalives
        )?;
        writeln!(
            f,
            "  dropped   {} outbound, {} inbound",
            c.tx_dropped, c.rx_dropped
        )?;
        let io = &self.io;
        let paths = [
            ("TUN read", io.tun_rx_reads, io.tun_rx_packets),
            ("UDP send", io.udp_tx_sends, io.udp_tx_datagrams),
            ("UDP recv", io.udp_rx_recvs, io.udp_rx_datagrams),
            ("TCP write", io.tcp_tx_writes, io.tcp_tx_frames),
            ("TCP read", io.tcp_rx_reads, io.tcp_rx_frames),
            ("TUN write", io.tun_tx_writes, io.tun_tx_packets),
        ];
        let per_call: Vec<String> = paths
            .iter()
            .filter(|(_, calls, _)| *calls > 0)
            .map(|(what, calls, packets)| format!("{what} {:.1}", *packets as f64 / *calls as f64))
            .collect();
        if !per_call.is_empty() {
            writeln!(f, "  per call  {} packets", per_call.join(", "))?;
        }
        for (what, q) in [
            ("queue out", &self.queue_out),
            ("queue in ", &self.queue_in),
        ] {
            if q.enqueued > 0 {
                writeln!(
                    f,
                    "  {what} {} queued, {} sparse first, peak {}; dropped {} by CoDel, {} \
                     full, {} at session end; {} marked CE",
                    q.enqueued,
                    q.sparse,
                    q.peak_items,
                    q.dropped_codel,
                    q.dropped_overflow,
                    q.flushed,
                    q.marked_ce
                )?;
            }
        }
        match (self.rtt_ms, self.srtt_ms) {
            (Some(rtt), Some(srtt)) => writeln!(
                f,
                "  rtt       {} (smoothed {})",
                Millis(Duration::from_secs_f64(rtt.max(0.0) / 1e3)),
                Millis(Duration::from_secs_f64(srtt.max(0.0) / 1e3))
            )?,
            _ => writeln!(f, "  rtt       not measured yet")?,
        }
        if let Some(e) = &self.last_error {
            writeln!(f, "  last error: {e}")?;
        }
        Ok(())
    }
}

/// Seconds as `1h02m03s`, `5m10s` or `12s`.
#[derive(Debug, Clone, Copy)]
pub struct Age(pub u64);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, self.0 / 60 % 60, self.0 % 60);
        if h > 0 {
            write!(f, "{h}h{m:02}m{s:02}s")
        } else if m > 0 {
            write!(f, "{m}m{s:02}s")
        } else {
            write!(f, "{s}s")
        }
    }
}

/// A byte count in decimal units: `900 B`, `1.0 kB`, `2.5 MB`, `1.2 GB`.
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0 as f64;
        match self.0 {
            0..1_000 => write!(f, "{} B", self.0),
            1_000..1_000_000 => write!(f, "{:.1} kB", n / 1e3),
            1_000_000..1_000_000_000 => write!(f, "{:.1} MB", n / 1e6),
            _ => write!(f, "{:.1} GB", n / 1e9),
        }
    }
}

/// Where status sockets go, in order of preference: `/run/ringway`, then
/// `$XDG_RUNTIME_DIR/ringway` (if set), then `/tmp/ringway`.
pub fn socket_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/run/ringway")];
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(xdg).join("ringway"));
    }
    dirs.push(PathBuf::from("/tmp/ringway"));
    dirs
}

/// The socket's file name for the TUN `name`.
pub fn socket_file(name: &str) -> String {
    format!("{name}.sock")
}

/// The status socket: the server side in `ringway up`, the client side in
/// `ringway status`.
#[cfg(unix)]
pub mod socket {
    use std::io;
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{UnixListener, UnixStream};
    use tokio::task::JoinHandle;

    use super::{socket_dirs, socket_file, LiveStatus, StatusReport};

    /// How long one status exchange may take.
    const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

    /// A status socket being served; removed when dropped.
    #[derive(Debug)]
    pub struct StatusServer {
        path: PathBuf,
        task: JoinHandle<()>,
    }

    impl StatusServer {
        /// Serves `status` on `path`, or, without one, on the first of
        /// [`socket_dirs`] that takes `<name>.sock`. Fails if another live
        /// client already answers there, or no directory would do.
        pub fn bind(
            name: &str,
            path: Option<&Path>,
            status: Arc<LiveStatus>,
        ) -> io::Result<StatusServer> {
            let candidates = match path {
                Some(p) => vec![p.to_owned()],
                None => socket_dirs()
                    .into_iter()
                    .map(|d| d.join(socket_file(name)))
                    .collect(),
            };
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no socket directory");
            for path in candidates {
                match listen(&path) {
                    Ok(listener) => {
                        let task = tokio::spawn(serve(listener, status));
                        return Ok(StatusServer { path, task });
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("another ringway answers on {}", path.display()),
                        ))
                    }
                    Err(e) => {
                        tracing::debug!(path = %path.display(), error = %e, "cannot serve status here");
                        last = io::Error::new(e.kind(), format!("{}: {e}", path.display()));
                    }
                }
            }
            Err(last)
        }

        /// Where it listens.
        pub fn path(&self) -> &Path {
            &self.path
        }
    }

    impl Drop for StatusServer {
        fn drop(&mut self) {
            self.task.abort();
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::debug!(path = %self.path.display(), error = %e, "could not remove the status socket");
            }
        }
    }

    /// Binds `path` (making its directory 0755 and the socket 0600), replacing
    /// a stale socket nobody answers on.
    fn listen(path: &Path) -> io::Result<UnixListener> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
        if std::fs::symlink_metadata(path).is_ok() {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(io::ErrorKind::AddrInUse.into()),
                Err(_) => std::fs::remove_file(path)?,
            }
        }
        let listener = UnixListener::bind(path)?;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(listener)
    }

    /// Answers each connection with the report of the moment.
    async fn serve(listener: UnixListener, status: Arc<LiveStatus>) {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut json = status.report().to_json();
            json.push('\n');
            let write = async {
                stream.write_all(json.as_bytes()).await?;
                stream.shutdown().await
            };
            if let Ok(Err(e)) = tokio::time::timeout(EXCHANGE_TIMEOUT, write).await {
                tracing::debug!(error = %e, "status request failed");
            }
        }
    }

    /// Why `ringway status` got no report.
    #[derive(Debug, thiserror::Error)]
    pub enum QueryError {
        /// No socket, or nothing listening on it.
        #[error("no running ringway client{0}")]
        NotRunning(String),
        /// The socket is there but not ours to read.
        #[error("permission denied on {0} (try sudo)")]
        Permission(String),
        /// Something answered, but not with a report.
        #[error("{path}: {detail}")]
        Garbled {
            /// The socket.
            path: String,
            /// What went wrong.
            detail: String,
        },
    }

    /// Asks the client on `path` for its report.
    pub async fn query(path: &Path) -> Result<StatusReport, QueryError> {
        let shown = path.display().to_string();
        let mut stream = UnixStream::connect(path)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::PermissionDenied => QueryError::Permission(shown.clone()),
                _ => QueryError::NotRunning(format!(" at {shown} ({e})")),
            })?;
        let mut text = String::new();
        let read = tokio::time::timeout(EXCHANGE_TIMEOUT, stream.read_to_string(&mut text));
        let garbled = |detail: String| QueryError::Garbled {
            path: shown.clone(),
            detail,
        };
        match read.await {
            Err(_) => return Err(garbled("no answer within 2 s".into())),
            Ok(Err(e)) => return Err(garbled(e.to_string())),
            Ok(Ok(_)) => {}
        }
        StatusReport::from_json(text.trim())
            .map_err(|e| garbled(format!("not a status report: {e}")))
    }

    /// The status sockets present for the TUN `name`, or for any TUN.
    pub fn find(name: Option<&str>) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in socket_dirs() {
            match name {
                Some(name) => {
                    let path = dir.join(socket_file(name));
                    if std::fs::symlink_metadata(&path).is_ok() {
                        found.push(path);
                    }
                }
                None => {
                    let Ok(entries) = std::fs::read_dir(&dir) else {
                        continue;
                    };
                    let mut here: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                        .collect();
                    here.sort();
                    found.extend(here);
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn config() -> SessionConfig {
        SessionConfig {
            cipher: ringway_proto::Cipher::ChaCha20Poly1305,
            client_addr: Ipv4Addr::new(198, 18, 0, 2),
            prefix_len: 24,
            server_addr: Ipv4Addr::new(198, 18, 0, 1),
            mtu: 1420,
            keepalive_secs: 25,
            idle_timeout_secs: 180,
            rekey_after_secs: 0,
        }
    }

    fn live() -> LiveStatus {
        LiveStatus::new(
            Some("rw0".into()),
            Arc::default(),
            "192.0.2.1:51820".parse().unwrap(),
            Transport::Udp,
            0x1234_5678,
            config(),
        )
    }

    #[test]
    fn report_round_trips_through_json() {
        let status = live();
        crate::stats::inc(&status.stats().tx.packets);
        crate::stats::bump(&status.stats().tx.tun_reads, 2);
        crate::stats::bump(&status.stats().tx.tun_packets, 90);
        crate::stats::bump(&status.stats().rx.tun_writes, 3);
        let rtt = Duration::from_micros(1500);
        status.stats().record_rtt(rtt, rtt);
        let report = status.report();
        assert_eq!(report.state, ConnState::Connected);
        assert_eq!(report.inner_address, "198.18.0.2/24");
        assert_eq!(report.transport, "udp");
        assert_eq!(report.counters.tx_packets, 1);
        assert_eq!(
            (
                report.io.tun_rx_reads,
                report.io.tun_rx_packets,
                report.io.tun_tx_writes
            ),
            (2, 90, 3)
        );
        assert_eq!(report.rtt_ms, Some(1.5));
        let json = report.to_json();
        assert!(!json.contains('\n'), "{json}");
        assert!(json.contains("\"state\":\"connected\""), "{json}");
        assert!(json.contains("\"interface\":\"rw0\""), "{json}");
        assert!(json.contains("\"tun_rx_packets\":90"), "{json}");
        let text = report.to_string();
        assert!(
            text.contains("  per call  TUN read 45.0, TUN write 0.0 packets\n"),
            "{text}"
        );
        assert_eq!(StatusReport::from_json(&json).unwrap(), report);
    }

    #[test]
    fn state_follows_the_supervisor() {
        let status = live();
        status.reconnecting(&"server stopped responding");
        let r = status.report();
        assert_eq!(r.state, ConnState::Reconnecting);
        assert_eq!(r.last_error.as_deref(), Some("server stopped responding"));
        let mut new = config();
        new.client_addr = Ipv4Addr::new(198, 18, 0, 9);
        status.reconnected("192.0.2.1:51820".parse().unwrap(), Transport::Tcp, 7, new);
        status.rekeyed(8, new);
        let r = status.report();
        assert_eq!(r.state, ConnState::Connected);
        assert_eq!((r.session_id, r.reconnects, r.rekeys), (8, 1, 1));
        assert_eq!(r.transport, "tcp");
        assert_eq!(r.inner_address, "198.18.0.9/24");
        let text = r.to_string();
        assert!(
            text.starts_with("rw0: connected to 192.0.2.1:51820 over TCP, session 0x00000008"),
            "{text}"
        );
        assert!(text.contains("1 reconnect, 1 rekey\n"), "{text}");
        assert!(text.contains("rtt       not measured yet"), "{text}");
        assert!(!text.contains("per call"), "{text}");
        assert!(
            text.contains("last error: server stopped responding"),
            "{text}"
        );
    }

    #[test]
    fn reports_from_older_clients_still_parse() {
        let json = r#"{"version":1,"pid":1,"state":"reconnecting","server":"s","transport":"udp",
            "session_id":1,"inner_address":"a","mtu":1400,"uptime_secs":1,"session_secs":1,
            "reconnects":0,"rekeys":0,"counters":{"tx_packets":0,"tx_bytes":0,"rx_packets":0,
            "rx_bytes":0,"tx_keepalives":0,"rx_keepalives":0,"tx_dropped":0,"rx_dropped":0}}"#;
        let r = StatusReport::from_json(json).unwrap();
        assert_eq!(r.state, ConnState::Reconnecting);
        assert_eq!((r.interface, r.rtt_ms), (None, None));
        assert_eq!(r.io, ReportIo::default());
    }

    #[test]
    fn units() {
        assert_eq!(Age(12).to_string(), "12s");
        assert_eq!(Age(310).to_string(), "5m10s");
        assert_eq!(Age(3723).to_string(), "1h02m03s");
        assert_eq!(Bytes(900).to_string(), "900 B");
        assert_eq!(Bytes(1_000).to_string(), "1.0 kB");
        assert_eq!(Bytes(2_500_000).to_string(), "2.5 MB");
        assert_eq!(Bytes(1_200_000_000).to_string(), "1.2 GB");
    }

    #[test]
    fn socket_dirs_prefer_run() {
        let dirs = socket_dirs();
        assert_eq!(dirs[0], PathBuf::from("/run/ringway"));
        assert_eq!(dirs.last().unwrap(), &PathBuf::from("/tmp/ringway"));
        assert_eq!(socket_file("rw0"), "rw0.sock");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn socket_serves_one_report_per_connection_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("ringway-status-{}", std::process::id()));
        let path = dir.join("sub").join("rw0.sock");
        let status = Arc::new(live());
        let server = socket::StatusServer::bind("rw0", Some(&path), Arc::clone(&status)).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for _ in 0..2 {
            let r = socket::query(&path).await.unwrap();
            assert_eq!(r.session_id, 0x1234_5678);
        }
        // A second client on the same path is refused; the first keeps serving.
        let e = socket::StatusServer::bind("rw0", Some(&path), Arc::clone(&status)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        drop(server);
        assert!(!path.exists());
        let e = socket::query(&path).await.unwrap_err();
        assert!(
            e.to_string().starts_with("no running ringway client"),
            "{e}"
        );
        // A stale socket file (a client that was killed) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        let server = socket::StatusServer::bind("rw0", Some(&path), status).unwrap();
        assert!(socket::query(&path).await.is_ok());
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
