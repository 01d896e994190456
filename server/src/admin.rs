//! `init` and `add-peer`: writing a working server config, keys and client configs.
//!
//! Files holding keys are created with mode 0600 before any secret is written,
//! so a key is never readable by others even for a moment.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ring::rand::{SecureRandom, SystemRandom};
use ringway_proto::handshake::key_to_base64;
use ringway_proto::{Keypair, PublicKey};

use crate::config::{ConfigFile, Settings};
use crate::pool::Ipv4Net;

/// The config file name inside a server directory.
pub const CONFIG_NAME: &str = "server.toml";
/// The key file name inside a server directory.
pub const KEY_NAME: &str = "server.key";

fn random32() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(b)
}

/// Writes `contents` to a new file readable only by its owner.
fn write_private(path: &Path, contents: &str, overwrite: bool) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `ringway-server init`: a new key and a config with working defaults.
pub fn init(dir: &Path, listen: SocketAddr, pool: &str) -> Result<()> {
    let pool: Ipv4Net = pool.parse()?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config_path = dir.join(CONFIG_NAME);
    if config_path.exists() {
        bail!(
            "{} already exists; remove it first to start over",
            config_path.display()
        );
    }
    let keys = Keypair::from_random(random32()?);
    write_private(&dir.join(KEY_NAME), &keys.secret.to_base64(), false)?;
    let config = format!(
        r#"# Ringway server config. Reference: deploy/server.example.toml in the source tree.

[server]
# Where clients connect: UDP, and TCP for networks that block UDP. Remove a line
# to turn that transport off.
listen_udp = "{listen}"
listen_tcp = "{listen}"
# The server's static secret key (mode 0600), relative to this file.
private_key_file = "{KEY_NAME}"
# Inner addresses: the server's TUN takes the first host, clients get the rest.
pool = "{pool}"
tun_name = "ringway0"
# TUN offloads (TSO/USO superpackets): "auto" or "off".
offload = "auto"
mtu = 1420
keepalive_secs = 25
idle_timeout_secs = 180
# Used when a client states no preference: "aes-256-gcm" or "chacha20-poly1305".
cipher = "aes-256-gcm"
# Clients re-handshake for fresh keys after this many seconds (0 = never).
rekey_after_secs = 900

[uring]
# See the README's tuning section before changing these.
ring_entries = 1024
tun_rx_slots = 64
udp_rx_slots = 32
tx_slots = 512
sqpoll_idle_ms = 0
tun_blocking = false
# With offload: 64 KiB buffers for superpackets in flight, beyond the receives' own.
offload_buffers = 48

[tcp]
max_connections = 1024
handshake_timeout_secs = 10
# Bytes queued per connection before packets to it are dropped (bounds TCP-in-TCP latency).
send_queue_bytes = 262144
# Holds a 64 KiB burst of frames (a superpacket from an offloading client) per receive.
rx_buffer_bytes = 81920
# 0 keeps the kernel's buffer autotuning.
socket_send_buffer = 0
socket_recv_buffer = 0

# Peers are appended below by `ringway-server add-peer`.
"#
    );
    write_private(&config_path, &config, false)?;
    println!("public key: {}", keys.public);
    println!("wrote {}", config_path.display());
    Ok(())
}

/// A peer about to be authorised: fresh keys and PSK, and the two texts that carry them (the
/// server's `[[peer]]` entry and the client's config).
///
/// `add-peer` writes one; a load generator provisioning thousands writes many entries with one
/// [`append_peers`], in exactly the format `add-peer` writes.
pub struct NewPeer {
    /// The peer's name in the server config and its logs.
    pub name: String,
    /// The client's static keys.
    pub keys: Keypair,
    /// The pre-shared key both ends hold.
    pub psk: [u8; 32],
}

impl std::fmt::Debug for NewPeer {
    /// Written out by hand so the secrets never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPeer")
            .field("name", &self.name)
            .field("public_key", &self.keys.public)
            .finish_non_exhaustive()
    }
}

impl NewPeer {
    /// A peer called `name` with keys and PSK from the system's random source; fails on a name
    /// the config cannot hold.
    pub fn generate(name: &str) -> Result<Self> {
        check_peer_name(name)?;
        Ok(NewPeer {
            name: name.to_owned(),
            keys: Keypair::from_random(random32()?),
            psk: random32()?,
        })
    }

    /// The `[[peer]]` entry for the server config, with a blank line in front.
    pub fn server_entry(&self) -> String {
        format!(
            "\n[[peer]]\nname = \"{}\"\npublic_key = \"{}\"\npsk = \"{}\"\n",
            self.name,
            self.keys.public,
            key_to_base64(&self.psk)
        )
    }

    /// The client's config file: how to reach the server at `endpoint`, whose key is
    /// `server_public`.
    pub fn client_config(&self, endpoint: &str, server_public: &PublicKey) -> String {
        format!(
            r#"# Ringway client config for peer "{name}". Keep this file private.
endpoint = "{endpoint}"
server_public_key = "{server_public}"
private_key = "{secret}"
psk = "{psk}"
"#,
            name = self.name,
            secret = self.keys.secret.to_base64(),
            psk = key_to_base64(&self.psk),
        )
    }
}

/// Refuses a peer name that is empty or holds anything but letters, digits, '-', '_' and '.'.
fn check_peer_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("peer name {name:?}: use letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// Appends `peers` to the server config at `config_path` in one write, after checking that
/// the file is valid and that no name or key is taken; returns the validated settings as they
/// were before (for the server's public key and pool).
pub fn append_peers(config_path: &Path, peers: &[NewPeer]) -> Result<Settings> {
    let file = ConfigFile::load(config_path)?;
    let taken: std::collections::HashSet<&str> =
        file.peers.iter().map(|p| p.name.as_str()).collect();
    let mut names = std::collections::HashSet::with_capacity(peers.len());
    for p in peers {
        if taken.contains(p.name.as_str()) || !names.insert(p.name.as_str()) {
            bail!(
                "peer {:?} already exists in {}",
                p.name,
                config_path.display()
            );
        }
    }
    let dir = config_path.parent().unwrap_or(Path::new("."));
    let settings = Settings::validate(file, dir)?;
    if let Some(p) = peers
        .iter()
        .find(|p| settings.peers.iter().any(|q| q.public_key == p.keys.public))
    {
        bail!("the key of peer {:?} is already authorised", p.name);
    }
    let entries: String = peers.iter().map(NewPeer::server_entry).collect();
    let mut f = OpenOptions::new()
        .append(true)
        .open(config_path)
        .with_context(|| format!("cannot append to {}", config_path.display()))?;
    f.write_all(entries.as_bytes())
        .with_context(|| format!("cannot append to {}", config_path.display()))?;
    Ok(settings)
}

/// `ringway-server add-peer`: a new client key, the peer entry, and the client's config.
pub fn add_peer(name: &str, dir: &Path, endpoint: &str, out: &Path) -> Result<()> {
    let peer = NewPeer::generate(name)?;
    let config_path = dir.join(CONFIG_NAME);
    let file = ConfigFile::load(&config_path)?;
    if file.peers.iter().any(|p| p.name == name) {
        bail!("peer {name:?} already exists in {}", config_path.display());
    }
    let settings = Settings::validate(file, dir)?;
    let server_public = settings.secret_key.public_key();
    write_private(out, &peer.client_config(endpoint, &server_public), false)?;
    append_peers(&config_path, std::slice::from_ref(&peer))?;
    println!(
        "added peer {name} ({}); client config: {}",
        peer.keys.public,
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_then_add_peers_round_trips() {
        let dir = std::env::temp_dir().join(format!("ringway-admin-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init(&dir, "192.0.2.1:51820".parse().unwrap(), "198.18.0.0/24").unwrap();
        assert!(init(&dir, "192.0.2.1:51820".parse().unwrap(), "198.18.0.0/24").is_err());
        let mode = std::fs::metadata(dir.join(KEY_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        add_peer("alice", &dir, "192.0.2.1:51820", &dir.join("alice.toml")).unwrap();
        add_peer("bob", &dir, "192.0.2.1:51820", &dir.join("bob.toml")).unwrap();
        assert!(add_peer("alice", &dir, "x:1", &dir.join("again.toml")).is_err());
        let mode = std::fs::metadata(dir.join("alice.toml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let s =
            Settings::load(&dir.join(CONFIG_NAME), &crate::config::Overrides::default()).unwrap();
        assert_eq!(s.peers.len(), 2);
        assert_eq!(s.peers[0].name, "alice");
        assert!(s.peers[0].psk.is_some());
        let client = std::fs::read_to_string(dir.join("alice.toml")).unwrap();
        assert!(client.contains(&s.secret_key.public_key().to_string()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn append_peers_writes_many_in_add_peer_format() {
        let dir = std::env::temp_dir().join(format!("ringway-admin-bulk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init(&dir, "192.0.2.1:51820".parse().unwrap(), "198.18.0.0/16").unwrap();
        let config = dir.join(CONFIG_NAME);
        add_peer("first", &dir, "192.0.2.1:51820", &dir.join("first.toml")).unwrap();
        let peers: Vec<NewPeer> = (0..3)
            .map(|i| NewPeer::generate(&format!("bulk-{i}")).unwrap())
            .collect();
        let before = append_peers(&config, &peers).unwrap();
        assert_eq!(before.peers.len(), 1);
        let s = Settings::load(&config, &crate::config::Overrides::default()).unwrap();
        let names: Vec<&str> = s.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["first", "bulk-0", "bulk-1", "bulk-2"]);
        for (p, q) in peers.iter().zip(&s.peers[1..]) {
            assert_eq!(q.public_key, p.keys.public);
            assert_eq!(q.psk, Some(p.psk));
        }
        // A client config written for one of them parses back to its keys.
        let text = peers[0].client_config("192.0.2.1:51820", &s.secret_key.public_key());
        assert!(text.contains(&peers[0].keys.secret.to_base64()));
        assert!(!format!("{:?}", peers[0]).contains(&key_to_base64(&peers[0].psk)));
        // Taken names, twice in one batch or already in the file, are refused and nothing
        // is written.
        let again = [NewPeer::generate("bulk-1").unwrap()];
        assert!(append_peers(&config, &again).is_err());
        let twice = [
            NewPeer::generate("x").unwrap(),
            NewPeer::generate("x").unwrap(),
        ];
        assert!(append_peers(&config, &twice).is_err());
        assert!(NewPeer::generate("bad name").is_err());
        let s = Settings::load(&config, &crate::config::Overrides::default()).unwrap();
        assert_eq!(s.peers.len(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
