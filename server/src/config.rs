//! The server's config file, and its validation into [`Settings`].
//!
//! The file is TOML (see `deploy/server.example.toml`). Every key has a default
//! except the listen address, key file, pool and peers, which `ringway-server
//! init` and `add-peer` write. There is one way in: the file is parsed,
//! command-line [`Overrides`] replace values in it, and then everything is
//! validated once ([`Settings::validate`]), so a mistake from either source is
//! a [`ConfigError`] naming the key, at start, never a failure mid-run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ringway_proto::handshake::{key_from_base64, KeyParseError, PublicKey, SecretKey};
use ringway_proto::Cipher;
pub use ringway_tun::Offload;
use serde::Deserialize;

use crate::pool::{Ipv4Net, PoolParseError};

/// Requests the driver keeps in flight outside its slot tables: the timer,
/// the signal read, the accept and the TUN readiness poll.
pub const FIXED_REQUESTS: u32 = 4;
/// The largest submission queue the server asks for.
pub const MAX_RING_ENTRIES: u32 = 32768;
/// The most 64 KiB offload buffers the server allocates (256 MiB).
pub const MAX_OFFLOAD_BUFFERS: u32 = 4096;
/// The most packets a flow queue may hold: each queued packet keeps a packet buffer
/// (about 1.5 KiB at the default MTU), so 16384 is ~25 MiB per direction.
pub const MAX_FQ_PACKETS: u32 = 16384;
/// The most bytes a flow queue may hold (64 MiB): past this the queue is no longer a
/// latency tool.
pub const MAX_FQ_BYTES: u32 = 64 << 20;

/// A config value the server cannot run with. Each message names the key
/// (as `section.key`) and, where it helps, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("invalid config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Neither transport is on.
    #[error("server: set listen_udp, listen_tcp or both")]
    NoListener,
    /// `server.pool` is not a usable network.
    #[error("server.pool: {0}")]
    Pool(#[from] PoolParseError),
    /// `server.cipher` names no cipher we have.
    #[error("server.cipher: unknown cipher {0:?} (use \"aes-256-gcm\" or \"chacha20-poly1305\")")]
    Cipher(String),
    /// `server.mtu` out of range.
    #[error("server.mtu: {0} is outside 576..=9000")]
    Mtu(u16),
    /// Keepalive and idle timeout do not fit together.
    #[error("server.idle_timeout_secs ({idle}) must be greater than a non-zero server.keepalive_secs ({keepalive})")]
    Keepalive {
        /// `server.keepalive_secs`.
        keepalive: u16,
        /// `server.idle_timeout_secs`.
        idle: u16,
    },
    /// `server.tun_name` is not a name the kernel accepts.
    #[error("server.tun_name: {name:?} {reason}")]
    TunName {
        /// The value given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `server.offload` is neither `auto` nor `off`.
    #[error("server.offload: {0}")]
    Offload(ringway_tun::UnknownOffload),
    /// `server.fair_queue` is neither `on` nor `off`.
    #[error("server.fair_queue: unknown mode {0:?} (use \"on\" or \"off\")")]
    FairQueueMode(String),
    /// `server.io` is not a backend.
    #[error("server.io: unknown I/O backend {0:?} (use \"auto\", \"uring\" or \"tokio\")")]
    IoBackend(String),
    /// A `[fq]` value out of range.
    #[error("fq.{key}: {reason}")]
    Fq {
        /// The key, without its section.
        key: &'static str,
        /// The range it must lie in.
        reason: String,
    },
    /// The key file could not be read.
    #[error("server.private_key_file: cannot read {}: {source}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("server.private_key_file: {} does not hold a base64 key", path.display())]
    KeyFormat {
        /// The key file.
        path: PathBuf,
    },
    /// `uring.ring_entries` is not a power of two in range.
    #[error("uring.ring_entries: {0} must be a power of two, at most {MAX_RING_ENTRIES}")]
    RingEntries(u32),
    /// A slot count is zero: that path could never carry a packet.
    #[error("uring.{key}: must be at least 1 (0 would leave the server unable to forward)")]
    NoSlots {
        /// `tun_rx_slots`, `udp_rx_slots` or `tx_slots`.
        key: &'static str,
    },
    /// Too many offload buffers.
    #[error("uring.offload_buffers: {0} is more than {MAX_OFFLOAD_BUFFERS} (64 KiB each)")]
    OffloadBuffers(u32),
    /// The ring cannot hold every slot's request at once.
    #[error(
        "uring.ring_entries: {entries} is too small for {tun_rx} TUN rx + {udp_rx} UDP rx + {tx} tx slots: use at least {min} (or fewer slots)"
    )]
    RingTooSmall {
        /// The value given.
        entries: u32,
        /// The smallest that works.
        min: u64,
        /// `uring.tun_rx_slots`.
        tun_rx: u32,
        /// `uring.udp_rx_slots`.
        udp_rx: u32,
        /// `uring.tx_slots`.
        tx: u32,
    },
    /// `tcp.max_connections` is zero while TCP is on.
    #[error("tcp.max_connections: must be at least 1 when server.listen_tcp is set")]
    NoConnections,
    /// `tcp.max_connections_per_source` is zero while TCP is on.
    #[error("tcp.max_connections_per_source: must be at least 1 when server.listen_tcp is set")]
    NoConnectionsPerSource,
    /// A TCP receive buffer too small for one frame.
    #[error(
        "tcp.rx_buffer_bytes: {given} cannot hold a full frame at mtu {mtu}: use at least {min}"
    )]
    TcpRxBuffer {
        /// The value given.
        given: usize,
        /// `server.mtu`.
        mtu: u16,
        /// The smallest that works.
        min: usize,
    },
    /// A TCP send queue too small for two frames.
    #[error("tcp.send_queue_bytes: {given} is too small: use at least {min} (two full frames)")]
    TcpSendQueue {
        /// The value given.
        given: usize,
        /// The smallest that works.
        min: usize,
    },
    /// `tcp.handshake_timeout_secs` is zero.
    #[error("tcp.handshake_timeout_secs: must be at least 1")]
    TcpHandshakeTimeout,
    /// A peer's public key or PSK is not 32 bytes of base64.
    #[error("peer[{index}] ({name}).{key}: {source}")]
    PeerKey {
        /// Position in the file.
        index: usize,
        /// The peer's name.
        name: String,
        /// `public_key` or `psk`.
        key: &'static str,
        /// Why.
        source: KeyParseError,
    },
    /// Two peers share a public key.
    #[error("peer[{index}] ({name}).public_key: listed twice")]
    DuplicatePeer {
        /// Position in the file of the second one.
        index: usize,
        /// Its name.
        name: String,
    },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Network and tunnel settings.
    pub server: ServerSection,
    /// io_uring tunables.
    #[serde(default)]
    pub uring: UringSection,
    /// TCP transport settings.
    #[serde(default)]
    pub tcp: TcpSection,
    /// Flow queue tunables (used while `server.fair_queue` is on).
    #[serde(default)]
    pub fq: FqSection,
    /// Authorised clients.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerSection>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// UDP address to listen on; leave out to disable UDP.
    pub listen_udp: Option<SocketAddr>,
    /// TCP address to listen on; leave out to disable TCP.
    pub listen_tcp: Option<SocketAddr>,
    /// UDP socket send and receive buffer size asked of the kernel.
    #[serde(default = "default_udp_socket_buffer")]
    pub udp_socket_buffer: usize,
    /// File holding the server's base64 secret key (relative to the config file).
    pub private_key_file: PathBuf,
    /// Where each peer's newest accepted initiation timestamp is kept across restarts
    /// (relative to the config's directory), so a captured initiation cannot be replayed to
    /// a restarted server.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    /// Inner address pool in CIDR notation; the server takes its first host.
    pub pool: String,
    /// Name of the server's TUN device.
    #[serde(default = "default_tun_name")]
    pub tun_name: String,
    /// TUN offloads: `auto` (virtio_net_hdr, TSO, USO where the kernel has them) or `off`.
    /// Checked by [`Settings::validate`], so a command-line value is checked the same way.
    #[serde(default = "default_offload")]
    pub offload: String,
    /// Flow queueing of inner packets, `on` (default) or `off`: with it, packets bound for
    /// the TUN wait in a fair queue (per inner flow, CoDel at each flow's head) in front of
    /// a few TUN writes in flight, instead of in the UDP socket's receive buffer, so a
    /// sparse flow (ping, ACKs, DNS) overtakes a bulk upload's backlog and the bulk flow's
    /// standing queue stays near `fq.target_ms`. `off`: every opened packet is written at
    /// once, as before. Checked by [`Settings::validate`].
    #[serde(default = "default_fair_queue")]
    pub fair_queue: String,
    /// The data path's I/O backend: `auto` (default: io_uring, or the tokio backend with
    /// one warning where io_uring is not permitted), `uring` or `tokio`. Checked by
    /// [`Settings::validate`].
    #[serde(default = "default_io")]
    pub io: String,
    /// MTU of the TUN devices on both ends.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Seconds of silence before a keepalive is sent.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u16,
    /// Seconds without a frame before a session is dropped.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u16,
    /// AEAD used when the client states no preference.
    #[serde(default = "default_cipher")]
    pub cipher: String,
    /// Seconds after which clients re-handshake for fresh keys (0 = never).
    #[serde(default = "default_rekey_after")]
    pub rekey_after_secs: u16,
}

/// `[uring]`: how many requests each I/O path keeps in flight.
///
/// The values are checked by [`Tunables::check`], through [`Settings::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UringSection {
    /// Submission queue entries (a power of two; completion queue is twice this).
    pub ring_entries: u32,
    /// TUN reads kept in flight.
    pub tun_rx_slots: u32,
    /// UDP receives kept in flight.
    pub udp_rx_slots: u32,
    /// Sends (UDP and TUN writes) that may be in flight at once.
    pub tx_slots: u32,
    /// Kernel submission polling: idle milliseconds before the poller sleeps (0 = off).
    pub sqpoll_idle_ms: u32,
    /// Open the TUN in blocking mode (see the README for the kernel caveat).
    pub tun_blocking: bool,
    /// With offload, 64 KiB buffers beyond the receive slots' own: coalesced superpackets
    /// being built and written to the TUN, and multi-datagram UDP sends in flight.
    pub offload_buffers: u32,
}

impl Default for UringSection {
    fn default() -> Self {
        UringSection {
            ring_entries: 1024,
            tun_rx_slots: 64,
            udp_rx_slots: 32,
            tx_slots: 512,
            sqpoll_idle_ms: 0,
            tun_blocking: false,
            offload_buffers: 48,
        }
    }
}

/// `[tcp]`: limits that keep TCP peers from costing more than they should.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSection {
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: u32,
    /// Connections from one source address at once (a NAT's clients share one).
    pub max_connections_per_source: u32,
    /// Seconds a new connection has to complete a handshake.
    pub handshake_timeout_secs: u16,
    /// Bytes queued per connection before frames to it are dropped: bounds
    /// the latency TCP-in-TCP can build.
    pub send_queue_bytes: usize,
    /// Receive buffer per connection (frames are reassembled in it).
    pub rx_buffer_bytes: usize,
    /// SO_SNDBUF for connections; 0 keeps the kernel's autotuning.
    pub socket_send_buffer: usize,
    /// SO_RCVBUF for connections; 0 keeps the kernel's autotuning.
    pub socket_recv_buffer: usize,
}

impl Default for TcpSection {
    fn default() -> Self {
        TcpSection {
            max_connections: 1024,
            max_connections_per_source: 32,
            handshake_timeout_secs: 10,
            send_queue_bytes: 256 * 1024,
            // A whole 64 KiB burst of frames (one superpacket split by an offloading peer)
            // and the frame that straddles it, per receive.
            rx_buffer_bytes: 80 * 1024,
            socket_send_buffer: 0,
            socket_recv_buffer: 0,
        }
    }
}

/// `[fq]`: the flow queue's tunables (with `server.fair_queue = "on"`).
///
/// Checked by [`Tunables::check`], through [`Settings::validate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FqSection {
    /// CoDel's acceptable standing delay per flow, in milliseconds: a bulk flow whose
    /// packets wait longer than this for a whole `interval_ms` starts losing (or, if
    /// ECN-capable, CE-marking) packets at its head. 5, as RFC 8289 recommends.
    pub target_ms: u32,
    /// CoDel's window in milliseconds: about the RTT of the flows it controls (the
    /// time a sender needs to react to a drop). 100, the Internet default.
    pub interval_ms: u32,
    /// Packets queued at most (per direction); at the limit the fattest flow loses
    /// from its head. Each queued packet keeps a packet buffer, allocated at start.
    pub limit_packets: u32,
    /// Bytes queued at most (per direction), enforced like `limit_packets`. 8 MiB, as
    /// much as the 4 MiB UDP receive buffer holds (the kernel doubles it): bulk TCP
    /// senders such as BBR keep several MiB in flight whatever the drops, and a smaller
    /// limit turned that into overflow drops (3-6 % retransmits with 4 streams at 4 MiB).
    pub limit_bytes: u32,
    /// Mark ECN-capable packets CE instead of dropping them.
    pub ecn: bool,
    /// TUN writes in flight at once. Small, so that the TUN write (where the kernel
    /// runs the inner TCP receive) never delays the socket receives behind a long
    /// row of writes, and the waiting happens in the flow queue, where a sparse flow
    /// can go first.
    pub tun_writes_in_flight: u32,
}

impl Default for FqSection {
    fn default() -> Self {
        FqSection {
            target_ms: 5,
            interval_ms: 100,
            limit_packets: 1024,
            limit_bytes: 8 << 20,
            ecn: true,
            tun_writes_in_flight: 4,
        }
    }
}

impl FqSection {
    /// The queue settings in this section.
    pub fn fair_queue(&self) -> FairQueue {
        FairQueue {
            queue: ringway_fq::Config {
                target: Duration::from_millis(u64::from(self.target_ms)),
                interval: Duration::from_millis(u64::from(self.interval_ms)),
                limit_items: self.limit_packets,
                limit_bytes: self.limit_bytes,
                ecn: self.ecn,
                ..ringway_fq::Config::default()
            },
            tun_writes_in_flight: self.tun_writes_in_flight,
        }
    }
}

/// The flow queues the driver runs with (`server.fair_queue = "on"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairQueue {
    /// Each direction's queue.
    pub queue: ringway_fq::Config,
    /// TUN writes in flight at once.
    pub tun_writes_in_flight: u32,
}

impl Default for FairQueue {
    fn default() -> Self {
        FqSection::default().fair_queue()
    }
}

impl FairQueue {
    /// Refuses values the queue cannot run with, naming the `[fq]` key.
    pub fn check(&self, tx_slots: u32) -> Result<(), ConfigError> {
        let q = &self.queue;
        let bad = |key, reason: String| Err(ConfigError::Fq { key, reason });
        let ms = |d: Duration| d.as_millis();
        if q.target.is_zero() || q.target >= q.interval {
            return bad(
                "target_ms",
                format!(
                    "{} must be at least 1 and below interval_ms ({})",
                    ms(q.target),
                    ms(q.interval)
                ),
            );
        }
        if q.interval > Duration::from_secs(10) {
            return bad(
                "interval_ms",
                format!("{} is more than 10000", ms(q.interval)),
            );
        }
        if q.limit_items == 0 || q.limit_items > MAX_FQ_PACKETS {
            return bad(
                "limit_packets",
                format!("{} is outside 1..={MAX_FQ_PACKETS}", q.limit_items),
            );
        }
        if q.limit_bytes < 65536 || q.limit_bytes > MAX_FQ_BYTES {
            return bad(
                "limit_bytes",
                format!(
                    "{} is outside 65536..={MAX_FQ_BYTES} (it must hold a 64 KiB superpacket)",
                    q.limit_bytes
                ),
            );
        }
        if self.tun_writes_in_flight == 0 || self.tun_writes_in_flight > tx_slots {
            return bad(
                "tun_writes_in_flight",
                format!(
                    "{} is outside 1..=uring.tx_slots ({tx_slots})",
                    self.tun_writes_in_flight
                ),
            );
        }
        // Anything left is the queue's own rule; name it as the queue does.
        q.validate()
            .or_else(|e| bad("limit_packets", e.to_string()))
    }
}

/// Whether a file of this mode can be read or written by anyone but its owner.
fn exposed(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// Warns (once, at load) when a file holding secrets is open to group or others, naming
/// the fix. A warning, not a refusal: a deployment that shares a key with a group on purpose
/// still starts.
fn warn_if_exposed(path: &Path, holds: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if exposed(mode) {
        let path = path.display();
        tracing::warn!("{path} holds {holds} but has mode {mode:o}: others on this host can read it (chmod 600 {path})");
    }
}

/// One `[[peer]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// A label for logs.
    pub name: String,
    /// The client's static public key, base64.
    pub public_key: String,
    /// Optional pre-shared key, base64.
    pub psk: Option<String>,
}

// By hand: the pre-shared key is a secret and must not reach a log.
impl std::fmt::Debug for PeerSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSection")
            .field("name", &self.name)
            .field("public_key", &self.public_key)
            .field("psk", &self.psk.as_ref().map(|_| ".."))
            .finish()
    }
}

fn default_udp_socket_buffer() -> usize {
    4 << 20
}
fn default_tun_name() -> String {
    "ringway0".into()
}
fn default_offload() -> String {
    Offload::default().as_str().into()
}
fn default_fair_queue() -> String {
    "on".into()
}
fn default_state_file() -> PathBuf {
    PathBuf::from("last-handshakes")
}
fn default_io() -> String {
    IoBackend::Auto.as_str().into()
}
fn default_mtu() -> u16 {
    1420
}
fn default_keepalive() -> u16 {
    25
}
fn default_idle_timeout() -> u16 {
    180
}
fn default_rekey_after() -> u16 {
    900
}
fn default_cipher() -> String {
    Cipher::default().name().into()
}

/// The ring settings the driver runs with: `[uring]` without the TUN mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunables {
    /// Submission queue entries.
    pub ring_entries: u32,
    /// TUN reads in flight.
    pub tun_rx_slots: u32,
    /// UDP receives in flight.
    pub udp_rx_slots: u32,
    /// Sends in flight.
    pub tx_slots: u32,
    /// SQPOLL idle time in ms; 0 disables SQPOLL.
    pub sqpoll_idle_ms: u32,
    /// With offload: 64 KiB buffers beyond the receive slots' own.
    pub offload_buffers: u32,
    /// Flow queues in front of the TUN writes, or `None` (`server.fair_queue = "off"`):
    /// every packet written at once.
    pub fair_queue: Option<FairQueue>,
}

impl Tunables {
    /// The smallest ring that can hold every slot's request at once.
    pub fn min_ring_entries(&self) -> u64 {
        let requests = u64::from(self.tun_rx_slots)
            + u64::from(self.udp_rx_slots)
            + u64::from(self.tx_slots)
            + u64::from(FIXED_REQUESTS);
        requests.next_power_of_two()
    }

    /// Refuses settings the ring cannot carry or that cannot forward.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !self.ring_entries.is_power_of_two() || self.ring_entries > MAX_RING_ENTRIES {
            return Err(ConfigError::RingEntries(self.ring_entries));
        }
        for (key, n) in [
            ("tun_rx_slots", self.tun_rx_slots),
            ("udp_rx_slots", self.udp_rx_slots),
            ("tx_slots", self.tx_slots),
        ] {
            if n == 0 {
                return Err(ConfigError::NoSlots { key });
            }
        }
        if self.offload_buffers > MAX_OFFLOAD_BUFFERS {
            return Err(ConfigError::OffloadBuffers(self.offload_buffers));
        }
        if let Some(fq) = &self.fair_queue {
            fq.check(self.tx_slots)?;
        }
        let min = self.min_ring_entries();
        if u64::from(self.ring_entries) < min {
            return Err(ConfigError::RingTooSmall {
                entries: self.ring_entries,
                min,
                tun_rx: self.tun_rx_slots,
                udp_rx: self.udp_rx_slots,
                tx: self.tx_slots,
            });
        }
        Ok(())
    }
}

impl UringSection {
    /// The ring settings in this section.
    pub fn tunables(&self) -> Tunables {
        Tunables {
            ring_entries: self.ring_entries,
            tun_rx_slots: self.tun_rx_slots,
            udp_rx_slots: self.udp_rx_slots,
            tx_slots: self.tx_slots,
            sqpoll_idle_ms: self.sqpoll_idle_ms,
            offload_buffers: self.offload_buffers,
            fair_queue: None,
        }
    }
}

/// Values given on the command line, each replacing its key in the file
/// before validation.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `uring.ring_entries`.
    pub ring_entries: Option<u32>,
    /// `uring.tun_rx_slots`.
    pub tun_rx_slots: Option<u32>,
    /// `uring.udp_rx_slots`.
    pub udp_rx_slots: Option<u32>,
    /// `uring.tx_slots`.
    pub tx_slots: Option<u32>,
    /// `uring.sqpoll_idle_ms`.
    pub sqpoll_idle_ms: Option<u32>,
    /// `uring.tun_blocking`.
    pub tun_blocking: Option<bool>,
    /// `uring.offload_buffers`.
    pub offload_buffers: Option<u32>,
    /// `server.udp_socket_buffer`.
    pub udp_socket_buffer: Option<usize>,
    /// `server.offload`, as given (validated with the file's values).
    pub offload: Option<String>,
    /// `server.fair_queue`, as given (validated with the file's values).
    pub fair_queue: Option<String>,
    /// `server.io`, as given (validated with the file's values).
    pub io: Option<String>,
    /// `fq.target_ms`.
    pub fq_target_ms: Option<u32>,
    /// `fq.interval_ms`.
    pub fq_interval_ms: Option<u32>,
    /// `fq.limit_packets`.
    pub fq_limit_packets: Option<u32>,
    /// `fq.limit_bytes`.
    pub fq_limit_bytes: Option<u32>,
    /// `fq.ecn`.
    pub fq_ecn: Option<bool>,
    /// `fq.tun_writes_in_flight`.
    pub fq_tun_writes_in_flight: Option<u32>,
    /// `tcp.max_connections`.
    pub max_tcp_connections: Option<u32>,
    /// `tcp.max_connections_per_source`.
    pub max_tcp_connections_per_source: Option<u32>,
    /// `tcp.handshake_timeout_secs`.
    pub tcp_handshake_timeout_secs: Option<u16>,
    /// `tcp.send_queue_bytes`.
    pub tcp_send_queue_bytes: Option<usize>,
    /// `tcp.socket_send_buffer`.
    pub tcp_socket_send_buffer: Option<usize>,
    /// `tcp.socket_recv_buffer`.
    pub tcp_socket_recv_buffer: Option<usize>,
}

impl Overrides {
    /// Replaces the overridden keys in `file`.
    pub fn apply(&self, file: &mut ConfigFile) {
        fn set<T: Copy>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        let u = &mut file.uring;
        set(&mut u.ring_entries, self.ring_entries);
        set(&mut u.tun_rx_slots, self.tun_rx_slots);
        set(&mut u.udp_rx_slots, self.udp_rx_slots);
        set(&mut u.tx_slots, self.tx_slots);
        set(&mut u.sqpoll_idle_ms, self.sqpoll_idle_ms);
        set(&mut u.tun_blocking, self.tun_blocking);
        set(&mut u.offload_buffers, self.offload_buffers);
        set(&mut file.server.udp_socket_buffer, self.udp_socket_buffer);
        if let Some(offload) = &self.offload {
            file.server.offload.clone_from(offload);
        }
        if let Some(mode) = &self.fair_queue {
            file.server.fair_queue.clone_from(mode);
        }
        if let Some(io) = &self.io {
            file.server.io.clone_from(io);
        }
        let q = &mut file.fq;
        set(&mut q.target_ms, self.fq_target_ms);
        set(&mut q.interval_ms, self.fq_interval_ms);
        set(&mut q.limit_packets, self.fq_limit_packets);
        set(&mut q.limit_bytes, self.fq_limit_bytes);
        set(&mut q.ecn, self.fq_ecn);
        set(&mut q.tun_writes_in_flight, self.fq_tun_writes_in_flight);
        let t = &mut file.tcp;
        set(&mut t.max_connections, self.max_tcp_connections);
        set(
            &mut t.max_connections_per_source,
            self.max_tcp_connections_per_source,
        );
        set(
            &mut t.handshake_timeout_secs,
            self.tcp_handshake_timeout_secs,
        );
        set(&mut t.send_queue_bytes, self.tcp_send_queue_bytes);
        set(&mut t.socket_send_buffer, self.tcp_socket_send_buffer);
        set(&mut t.socket_recv_buffer, self.tcp_socket_recv_buffer);
    }
}

/// A peer, validated.
#[derive(Clone)]
pub struct Peer {
    /// Label for logs.
    pub name: String,
    /// Its static key.
    pub public_key: PublicKey,
    /// Its PSK, if any.
    pub psk: Option<[u8; 32]>,
}

// By hand: the pre-shared key is a secret and must not reach a log.
impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("public_key", &self.public_key)
            .field("psk", &self.psk.map(|_| ".."))
            .finish()
    }
}

/// The validated configuration the server runs with.
#[derive(Debug)]
pub struct Settings {
    /// UDP listen address, if UDP is on.
    pub listen_udp: Option<SocketAddr>,
    /// TCP listen address, if TCP is on.
    pub listen_tcp: Option<SocketAddr>,
    /// UDP socket buffer size.
    pub udp_socket_buffer: usize,
    /// The server's static key.
    pub secret_key: SecretKey,
    /// Inner address pool.
    pub pool: Ipv4Net,
    /// TUN name.
    pub tun_name: String,
    /// TUN offload mode asked for (`auto`: what the kernel has; `off`: one packet per call).
    pub offload: Offload,
    /// Tunnel MTU.
    pub mtu: u16,
    /// Keepalive interval, seconds.
    pub keepalive_secs: u16,
    /// Idle timeout, seconds.
    pub idle_timeout_secs: u16,
    /// Default cipher.
    pub cipher: Cipher,
    /// Rekey interval asked of clients, seconds (0 = never).
    pub rekey_after_secs: u16,
    /// io_uring tunables.
    pub uring: UringSection,
    /// Flow queues, or `None` with `server.fair_queue = "off"`.
    pub fair_queue: Option<FairQueue>,
    /// Which I/O backend runs the data path.
    pub io: IoBackend,
    /// The handshake state file, resolved against the config's directory.
    pub state_file: PathBuf,
    /// TCP settings.
    pub tcp: TcpSection,
    /// Authorised peers.
    pub peers: Vec<Peer>,
}

/// The data path's I/O backend (`server.io`, `--io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoBackend {
    /// io_uring where the kernel and its policy allow it, else tokio (with a warning).
    #[default]
    Auto,
    /// The io_uring loop, or a clear error where io_uring is not permitted.
    Uring,
    /// The tokio (epoll) loop: the same sessions, offloads and counters, readiness I/O.
    Tokio,
}

impl IoBackend {
    /// The name in config files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            IoBackend::Auto => "auto",
            IoBackend::Uring => "uring",
            IoBackend::Tokio => "tokio",
        }
    }
}

impl std::str::FromStr for IoBackend {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "auto" => Ok(IoBackend::Auto),
            "uring" => Ok(IoBackend::Uring),
            "tokio" => Ok(IoBackend::Tokio),
            other => Err(ConfigError::IoBackend(other.to_owned())),
        }
    }
}

impl ConfigFile {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().trim().to_owned(),
        })
    }
}

impl Settings {
    /// Loads `path`, applies `overrides`, and validates every value.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut file = ConfigFile::load(path)?;
        overrides.apply(&mut file);
        let dir = path.parent().unwrap_or(Path::new("."));
        let settings = Self::validate(file, dir)?;
        if settings.peers.iter().any(|p| p.psk.is_some()) {
            warn_if_exposed(path, "pre-shared keys");
        }
        Ok(settings)
    }

    /// Validates a parsed file; relative paths resolve against `dir`. The one
    /// place every value is checked.
    pub fn validate(file: ConfigFile, dir: &Path) -> Result<Self, ConfigError> {
        let s = file.server;
        if s.listen_udp.is_none() && s.listen_tcp.is_none() {
            return Err(ConfigError::NoListener);
        }
        let pool: Ipv4Net = s.pool.parse()?;
        let cipher =
            Cipher::from_name(&s.cipher).ok_or_else(|| ConfigError::Cipher(s.cipher.clone()))?;
        if s.mtu < 576 || usize::from(s.mtu) > 9000 {
            return Err(ConfigError::Mtu(s.mtu));
        }
        if s.keepalive_secs == 0 || s.idle_timeout_secs <= s.keepalive_secs {
            return Err(ConfigError::Keepalive {
                keepalive: s.keepalive_secs,
                idle: s.idle_timeout_secs,
            });
        }
        ringway_tun::check_name(&s.tun_name).map_err(|reason| ConfigError::TunName {
            name: s.tun_name.clone(),
            reason,
        })?;
        let offload: Offload = s.offload.parse().map_err(ConfigError::Offload)?;
        file.uring.tunables().check()?;
        // `[fq]` is checked even while the queue is off, so turning it on later cannot
        // turn up a mistake made now.
        let fq = file.fq.fair_queue();
        fq.check(file.uring.tx_slots)?;
        let fair_queue = match s.fair_queue.as_str() {
            "on" => Some(fq),
            "off" => None,
            other => return Err(ConfigError::FairQueueMode(other.to_owned())),
        };
        let io: IoBackend = s.io.parse()?;
        let t = &file.tcp;
        if s.listen_tcp.is_some() && t.max_connections == 0 {
            return Err(ConfigError::NoConnections);
        }
        if s.listen_tcp.is_some() && t.max_connections_per_source == 0 {
            return Err(ConfigError::NoConnectionsPerSource);
        }
        let min_rx = usize::from(s.mtu)
            + ringway_proto::wire::transport::OVERHEAD
            + ringway_proto::wire::STREAM_PREFIX_LEN;
        if t.rx_buffer_bytes < min_rx {
            return Err(ConfigError::TcpRxBuffer {
                given: t.rx_buffer_bytes,
                mtu: s.mtu,
                min: min_rx,
            });
        }
        if t.send_queue_bytes < 2 * min_rx {
            return Err(ConfigError::TcpSendQueue {
                given: t.send_queue_bytes,
                min: 2 * min_rx,
            });
        }
        if t.handshake_timeout_secs == 0 {
            return Err(ConfigError::TcpHandshakeTimeout);
        }
        let mut peers: Vec<Peer> = Vec::with_capacity(file.peers.len());
        for (index, p) in file.peers.into_iter().enumerate() {
            let key_error = |key, source| ConfigError::PeerKey {
                index,
                name: p.name.clone(),
                key,
                source,
            };
            let public_key: PublicKey = p
                .public_key
                .parse()
                .map_err(|e| key_error("public_key", e))?;
            let psk = p
                .psk
                .as_deref()
                .map(key_from_base64)
                .transpose()
                .map_err(|e| key_error("psk", e))?;
            if peers.iter().any(|q| q.public_key == public_key) {
                return Err(ConfigError::DuplicatePeer {
                    index,
                    name: p.name,
                });
            }
            peers.push(Peer {
                name: p.name,
                public_key,
                psk,
            });
        }
        // The key file last: every value in the file is checked before we
        // touch another file.
        let key_path = dir.join(&s.private_key_file);
        let key_text =
            std::fs::read_to_string(&key_path).map_err(|source| ConfigError::KeyFile {
                path: key_path.clone(),
                source,
            })?;
        let secret_key = SecretKey::from_base64(&key_text).map_err(|_| ConfigError::KeyFormat {
            path: key_path.clone(),
        })?;
        warn_if_exposed(&key_path, "the server's private key");
        Ok(Settings {
            listen_udp: s.listen_udp,
            listen_tcp: s.listen_tcp,
            udp_socket_buffer: s.udp_socket_buffer,
            secret_key,
            pool,
            tun_name: s.tun_name,
            offload,
            mtu: s.mtu,
            keepalive_secs: s.keepalive_secs,
            idle_timeout_secs: s.idle_timeout_secs,
            cipher,
            rekey_after_secs: s.rekey_after_secs,
            uring: file.uring,
            fair_queue,
            io,
            state_file: dir.join(&s.state_file),
            tcp: file.tcp,
            peers,
        })
    }

    /// The ring settings the driver runs with: `[uring]` and the flow queues.
    pub fn tunables(&self) -> Tunables {
        Tunables {
            fair_queue: self.fair_queue.clone(),
            ..self.uring.tunables()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_key(dir: &Path) {
        std::fs::write(
            dir.join("server.key"),
            ringway_proto::Keypair::from_random([1; 32])
                .secret
                .to_base64(),
        )
        .unwrap();
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringway-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let d = tempdir("min");
        write_key(&d);
        let f: ConfigFile = toml::from_str(
            r#"
            [server]
            listen_udp = "0.0.0.0:51820"
            private_key_file = "server.key"
            pool = "198.18.0.0/24"
            [[peer]]
            name = "a"
            public_key = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
            "#,
        )
        .unwrap();
        let s = Settings::validate(f, &d).unwrap();
        assert_eq!(s.mtu, 1420);
        assert_eq!(s.uring.tun_rx_slots, 64);
        assert_eq!(s.uring.udp_rx_slots, 32);
        assert_eq!(s.uring.tx_slots, 512);
        assert_eq!(s.uring.ring_entries, 1024);
        assert_eq!(s.listen_tcp, None);
        assert_eq!(s.tcp.max_connections, 1024);
        assert_eq!(s.peers.len(), 1);
        assert_eq!(s.offload, Offload::Auto);
        assert_eq!(s.fair_queue, Some(FairQueue::default()));
        assert_eq!(s.tunables().fair_queue, Some(FairQueue::default()));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_fair_queue_is_on_by_default_and_tunable_from_file_and_command_line() {
        let d = tempdir("fq");
        write_key(&d);
        let path = d.join("server.toml");
        std::fs::write(
            &path,
            base("[fq]\ntarget_ms = 2\ninterval_ms = 20\necn = false"),
        )
        .unwrap();
        let over = |o: Overrides| Settings::load(&path, &o).unwrap();
        let s = over(Overrides {
            fq_limit_packets: Some(512),
            fq_tun_writes_in_flight: Some(2),
            ..Default::default()
        });
        let fq = s.fair_queue.expect("on by default");
        assert_eq!(fq.queue.target, Duration::from_millis(2));
        assert_eq!(fq.queue.interval, Duration::from_millis(20));
        assert!(!fq.queue.ecn);
        assert_eq!(fq.queue.limit_items, 512);
        assert_eq!(fq.queue.limit_bytes, 8 << 20);
        assert_eq!(fq.tun_writes_in_flight, 2);
        let s = over(Overrides {
            fair_queue: Some("off".into()),
            ..Default::default()
        });
        assert_eq!(s.fair_queue, None);
        assert_eq!(s.tunables().fair_queue, None);
        // `[fq]` is checked while off too.
        let e = Settings::load(
            &path,
            &Overrides {
                fair_queue: Some("off".into()),
                fq_target_ms: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Fq {
                    key: "target_ms",
                    ..
                }
            ),
            "{e}"
        );
        let e = Settings::load(
            &path,
            &Overrides {
                fair_queue: Some("yes".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "server.fair_queue: unknown mode \"yes\" (use \"on\" or \"off\")"
        );
        // `--io` replaces `server.io` and is checked the same way.
        assert_eq!(over(Overrides::default()).io, IoBackend::Auto);
        let s = over(Overrides {
            io: Some("tokio".into()),
            ..Default::default()
        });
        assert_eq!(s.io, IoBackend::Tokio);
        let e = Settings::load(
            &path,
            &Overrides {
                io: Some("epoll".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "server.io: unknown I/O backend \"epoll\" (use \"auto\", \"uring\" or \"tokio\")"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_example_config_documents_the_defaults() {
        let f: ConfigFile =
            toml::from_str(include_str!("../../deploy/server.example.toml")).unwrap();
        let (u, d) = (&f.uring, UringSection::default());
        assert_eq!(u.tunables(), d.tunables());
        assert_eq!(u.tun_blocking, d.tun_blocking);
        let (t, d) = (&f.tcp, TcpSection::default());
        assert_eq!(
            (
                t.max_connections,
                t.handshake_timeout_secs,
                t.send_queue_bytes,
                t.rx_buffer_bytes,
                t.socket_send_buffer,
                t.socket_recv_buffer
            ),
            (
                d.max_connections,
                d.handshake_timeout_secs,
                d.send_queue_bytes,
                d.rx_buffer_bytes,
                d.socket_send_buffer,
                d.socket_recv_buffer
            )
        );
        assert_eq!(f.server.offload, default_offload());
        assert_eq!(f.server.fair_queue, default_fair_queue());
        assert_eq!(f.server.io, "auto");
        assert_eq!(f.fq.fair_queue(), FairQueue::default());
    }

    fn base(extra: &str) -> String {
        format!(
            "[server]\nlisten_udp = \"0.0.0.0:1\"\nlisten_tcp = \"0.0.0.0:2\"\nprivate_key_file = \"server.key\"\npool = \"198.18.0.0/24\"\n{extra}"
        )
    }

    #[test]
    fn errors_name_the_key() {
        let d = tempdir("bad");
        write_key(&d);
        let cases = [
            ("cipher = \"rot13\"", "server.cipher"),
            ("mtu = 100", "server.mtu"),
            ("keepalive_secs = 0", "server.keepalive_secs"),
            ("tun_name = \"\"", "server.tun_name"),
            ("tun_name = \"a/b\"", "server.tun_name"),
            ("offload = \"on\"", "server.offload"),
            ("pool = \"10.0.0.0/31\"", "server.pool"),
            ("[uring]\nring_entries = 1000", "uring.ring_entries"),
            ("[uring]\nring_entries = 65536", "uring.ring_entries"),
            ("[uring]\nring_entries = 64", "uring.ring_entries"),
            ("[uring]\ntx_slots = 0", "uring.tx_slots"),
            ("[uring]\ntun_rx_slots = 0", "uring.tun_rx_slots"),
            ("[uring]\nudp_rx_slots = 0", "uring.udp_rx_slots"),
            ("fair_queue = \"maybe\"", "server.fair_queue"),
            (
                "[tcp]\nmax_connections_per_source = 0",
                "tcp.max_connections_per_source",
            ),
            ("io = \"epoll\"", "server.io"),
            ("[fq]\ntarget_ms = 0", "fq.target_ms"),
            ("[fq]\ntarget_ms = 100", "fq.target_ms"),
            ("[fq]\ninterval_ms = 60000", "fq.interval_ms"),
            ("[fq]\nlimit_packets = 0", "fq.limit_packets"),
            ("[fq]\nlimit_packets = 100000", "fq.limit_packets"),
            ("[fq]\nlimit_bytes = 1500", "fq.limit_bytes"),
            ("[fq]\ntun_writes_in_flight = 0", "fq.tun_writes_in_flight"),
            (
                "[fq]\ntun_writes_in_flight = 513",
                "fq.tun_writes_in_flight",
            ),
            ("[tcp]\nrx_buffer_bytes = 100", "tcp.rx_buffer_bytes"),
            ("[tcp]\nsend_queue_bytes = 100", "tcp.send_queue_bytes"),
            (
                "[tcp]\nhandshake_timeout_secs = 0",
                "tcp.handshake_timeout_secs",
            ),
            ("[tcp]\nmax_connections = 0", "tcp.max_connections"),
            (
                "[[peer]]\nname = \"x\"\npublic_key = \"zz\"",
                "peer[0] (x).public_key",
            ),
            (
                "private_key_file = \"missing.key\"",
                "server.private_key_file",
            ),
        ];
        for (extra, key) in cases {
            // A key given twice in [server] is a parse error: replace instead.
            let text = if let Some(v) = extra.strip_prefix("pool = ") {
                base("").replace("\"198.18.0.0/24\"", v)
            } else if let Some(v) = extra.strip_prefix("private_key_file = ") {
                base("").replace("\"server.key\"", v)
            } else if extra.starts_with('[') {
                base(extra)
            } else {
                base("").replacen("\n", &format!("\n{extra}\n"), 1)
            };
            let f: ConfigFile = toml::from_str(&text).unwrap();
            let err = Settings::validate(f, &d).unwrap_err().to_string();
            assert!(err.contains(key), "{err:?} should name {key}");
        }
        assert!(toml::from_str::<ConfigFile>(&base("bogus = 1")).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn overrides_are_applied_before_validation() {
        let d = tempdir("over");
        write_key(&d);
        let path = d.join("server.toml");
        std::fs::write(&path, base("")).unwrap();
        let over = |o: Overrides| Settings::load(&path, &o);
        assert!(matches!(
            over(Overrides {
                ring_entries: Some(65536),
                ..Default::default()
            }),
            Err(ConfigError::RingEntries(65536))
        ));
        for (o, key) in [
            (
                Overrides {
                    tx_slots: Some(0),
                    ..Default::default()
                },
                "tx_slots",
            ),
            (
                Overrides {
                    tun_rx_slots: Some(0),
                    ..Default::default()
                },
                "tun_rx_slots",
            ),
            (
                Overrides {
                    udp_rx_slots: Some(0),
                    ..Default::default()
                },
                "udp_rx_slots",
            ),
        ] {
            match over(o) {
                Err(ConfigError::NoSlots { key: k }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
        match over(Overrides {
            ring_entries: Some(512),
            tx_slots: Some(600),
            ..Default::default()
        }) {
            Err(ConfigError::RingTooSmall {
                entries: 512,
                min: 1024,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            over(Overrides {
                tcp_handshake_timeout_secs: Some(0),
                ..Default::default()
            }),
            Err(ConfigError::TcpHandshakeTimeout)
        ));
        // A file value an override replaces is not checked: only the result is.
        std::fs::write(&path, base("[uring]\ntx_slots = 0")).unwrap();
        let s = over(Overrides {
            tx_slots: Some(8),
            tun_blocking: Some(true),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((s.uring.tx_slots, s.uring.tun_blocking), (8, true));
        // `--offload` is checked like the key it replaces, and replaces a bad file value.
        let e = over(Overrides {
            offload: Some("tso".into()),
            tx_slots: Some(8),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, ConfigError::Offload(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "server.offload: unknown offload mode \"tso\" (use \"auto\" or \"off\")"
        );
        std::fs::write(&path, base("offload = \"bogus\"")).unwrap();
        let s = over(Overrides {
            offload: Some("off".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.offload, Offload::Off);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn the_ring_must_hold_every_slot() {
        let t = Tunables {
            ring_entries: 128,
            tun_rx_slots: 64,
            udp_rx_slots: 32,
            tx_slots: 28,
            sqpoll_idle_ms: 0,
            offload_buffers: 48,
            fair_queue: None,
        };
        assert_eq!(t.min_ring_entries(), 128);
        assert!(t.check().is_ok());
        let huge = Tunables {
            offload_buffers: MAX_OFFLOAD_BUFFERS + 1,
            ..t.clone()
        };
        assert!(matches!(
            huge.check(),
            Err(ConfigError::OffloadBuffers(n)) if n == MAX_OFFLOAD_BUFFERS + 1
        ));
        let t = Tunables { tx_slots: 29, ..t };
        assert_eq!(t.min_ring_entries(), 256);
        assert!(matches!(
            t.check(),
            Err(ConfigError::RingTooSmall { min: 256, .. })
        ));
        // Sums past u32 do not wrap.
        let t = Tunables {
            tx_slots: u32::MAX,
            ..t
        };
        assert!(matches!(t.check(), Err(ConfigError::RingTooSmall { .. })));
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let psk = [0x5a; 32];
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(psk);
        let section = PeerSection {
            name: "alice".into(),
            public_key: "pub".into(),
            psk: Some(b64.clone()),
        };
        let peer = Peer {
            name: "alice".into(),
            public_key: ringway_proto::handshake::Keypair::from_random([1; 32]).public,
            psk: Some(psk),
        };
        for shown in [format!("{section:?}"), format!("{peer:?}")] {
            assert!(!shown.contains(&b64), "{shown}");
            assert!(!shown.contains("90, 90"), "{shown}");
            assert!(shown.contains("alice") && shown.contains("psk"), "{shown}");
        }
        let secret = ringway_proto::handshake::Keypair::from_random([7; 32]).secret;
        assert_eq!(format!("{secret:?}"), "SecretKey(..)");
    }

    #[test]
    fn files_with_secrets_are_exposed_unless_only_their_owner_has_them() {
        assert!(!exposed(0o600));
        assert!(!exposed(0o400));
        assert!(!exposed(0o700));
        assert!(exposed(0o644));
        assert!(exposed(0o640));
        assert!(exposed(0o602));
    }
}
