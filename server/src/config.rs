//! The server's config file, and its validation into [`Settings`].
//!
//! The file is TOML (see `deploy/server.example.toml`). Every key has a default
//! except the listen address, key file, pool and peers, which `ringway-server
//! init` and `add-peer` write. Validation happens once at start, so a mistake is
//! one line naming the key, never a failure mid-run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ringway_proto::handshake::{key_from_base64, PublicKey, SecretKey};
use ringway_proto::Cipher;
use serde::Deserialize;

use crate::pool::Ipv4Net;

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
    /// Inner address pool in CIDR notation; the server takes its first host.
    pub pool: String,
    /// Name of the server's TUN device.
    #[serde(default = "default_tun_name")]
    pub tun_name: String,
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
        }
    }
}

/// `[tcp]`: limits that keep TCP peers from costing more than they should.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSection {
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: u32,
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
            handshake_timeout_secs: 10,
            send_queue_bytes: 256 * 1024,
            rx_buffer_bytes: 16 * 1024,
            socket_send_buffer: 0,
            socket_recv_buffer: 0,
        }
    }
}

/// One `[[peer]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// A label for logs.
    pub name: String,
    /// The client's static public key, base64.
    pub public_key: String,
    /// Optional pre-shared key, base64.
    pub psk: Option<String>,
}

fn default_udp_socket_buffer() -> usize {
    4 << 20
}
fn default_tun_name() -> String {
    "ringway0".into()
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

/// A peer, validated.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Label for logs.
    pub name: String,
    /// Its static key.
    pub public_key: PublicKey,
    /// Its PSK, if any.
    pub psk: Option<[u8; 32]>,
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
    /// TCP settings.
    pub tcp: TcpSection,
    /// Authorised peers.
    pub peers: Vec<Peer>,
}

impl ConfigFile {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("invalid config {}: {}", path.display(), e.message().trim())
        })
    }
}

impl Settings {
    /// Loads `path` and validates every value.
    pub fn load(path: &Path) -> Result<Self> {
        let file = ConfigFile::load(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::validate(file, dir)
    }

    /// Validates a parsed file; relative paths resolve against `dir`.
    pub fn validate(file: ConfigFile, dir: &Path) -> Result<Self> {
        let s = file.server;
        if s.listen_udp.is_none() && s.listen_tcp.is_none() {
            bail!("server: set listen_udp, listen_tcp or both");
        }
        let pool: Ipv4Net = s.pool.parse().context("server.pool")?;
        let cipher = Cipher::from_name(&s.cipher).with_context(|| {
            format!(
                "server.cipher: unknown cipher {:?} (use \"aes-256-gcm\" or \"chacha20-poly1305\")",
                s.cipher
            )
        })?;
        if s.mtu < 576 || usize::from(s.mtu) > 9000 {
            bail!("server.mtu: {} is outside 576..=9000", s.mtu);
        }
        if s.keepalive_secs == 0 || s.idle_timeout_secs <= s.keepalive_secs {
            bail!("server.idle_timeout_secs must be greater than a non-zero server.keepalive_secs");
        }
        if s.tun_name.is_empty() || s.tun_name.len() > 15 {
            bail!("server.tun_name: must be 1 to 15 characters");
        }
        let key_path = dir.join(&s.private_key_file);
        let key_text = std::fs::read_to_string(&key_path).with_context(|| {
            format!(
                "server.private_key_file: cannot read {}",
                key_path.display()
            )
        })?;
        let secret_key = SecretKey::from_base64(&key_text).with_context(|| {
            format!(
                "server.private_key_file: {} does not hold a base64 key",
                key_path.display()
            )
        })?;
        let u = &file.uring;
        if !u.ring_entries.is_power_of_two() || u.ring_entries > 32768 {
            bail!("uring.ring_entries: must be a power of two up to 32768");
        }
        if u.tun_rx_slots == 0 || u.udp_rx_slots == 0 || u.tx_slots == 0 {
            bail!("uring: tun_rx_slots, udp_rx_slots and tx_slots must each be at least 1");
        }
        let t = &file.tcp;
        let min_rx = usize::from(s.mtu)
            + ringway_proto::wire::transport::OVERHEAD
            + ringway_proto::wire::STREAM_PREFIX_LEN;
        if t.rx_buffer_bytes < min_rx {
            bail!(
                "tcp.rx_buffer_bytes: {} cannot hold a full frame at mtu {}: use at least {min_rx}",
                t.rx_buffer_bytes,
                s.mtu
            );
        }
        if t.send_queue_bytes < 2 * min_rx {
            bail!(
                "tcp.send_queue_bytes: use at least {} (two full frames)",
                2 * min_rx
            );
        }
        if t.handshake_timeout_secs == 0 {
            bail!("tcp.handshake_timeout_secs must be at least 1");
        }
        let mut peers = Vec::with_capacity(file.peers.len());
        for (i, p) in file.peers.into_iter().enumerate() {
            let public_key: PublicKey = p
                .public_key
                .parse()
                .with_context(|| format!("peer[{i}] ({}).public_key", p.name))?;
            let psk = p
                .psk
                .as_deref()
                .map(key_from_base64)
                .transpose()
                .with_context(|| format!("peer[{i}] ({}).psk", p.name))?;
            if peers.iter().any(|q: &Peer| q.public_key == public_key) {
                bail!("peer[{i}] ({}): public key listed twice", p.name);
            }
            peers.push(Peer {
                name: p.name,
                public_key,
                psk,
            });
        }
        Ok(Settings {
            listen_udp: s.listen_udp,
            listen_tcp: s.listen_tcp,
            udp_socket_buffer: s.udp_socket_buffer,
            secret_key,
            pool,
            tun_name: s.tun_name,
            mtu: s.mtu,
            keepalive_secs: s.keepalive_secs,
            idle_timeout_secs: s.idle_timeout_secs,
            cipher,
            rekey_after_secs: s.rekey_after_secs,
            uring: file.uring,
            tcp: file.tcp,
            peers,
        })
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
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        let d = tempdir("bad");
        write_key(&d);
        let base = |extra: &str| {
            format!(
                "[server]\nlisten_udp = \"0.0.0.0:1\"\nprivate_key_file = \"server.key\"\npool = \"198.18.0.0/24\"\n{extra}"
            )
        };
        let cases = [
            ("cipher = \"rot13\"", "server.cipher"),
            ("mtu = 100", "server.mtu"),
            ("[uring]\nring_entries = 1000", "uring.ring_entries"),
            ("[tcp]\nrx_buffer_bytes = 100", "tcp.rx_buffer_bytes"),
            ("[[peer]]\nname = \"x\"\npublic_key = \"zz\"", "public_key"),
        ];
        for (extra, key) in cases {
            let f: ConfigFile = toml::from_str(&base(extra)).unwrap();
            let err = format!("{:#}", Settings::validate(f, &d).unwrap_err());
            assert!(err.contains(key), "{err} should name {key}");
        }
        assert!(toml::from_str::<ConfigFile>(&base("bogus = 1")).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }
}
