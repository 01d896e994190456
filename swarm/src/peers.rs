//! The swarm file: every peer's keys in one file, and provisioning them on a server.
//!
//! `ringway-server add-peer` writes one client config per peer, which is right for people and
//! wrong for ten thousand sessions (ten thousand files, ten thousand processes). The swarm file
//! holds what every session needs in one TOML document, mode 0600:
//!
//! ```toml
//! endpoint = "192.0.2.1:51820"
//! server_public_key = "<base64>"
//!
//! [[peer]]
//! name = "swarm-1"
//! private_key = "<base64>"
//! psk = "<base64>"
//! ```
//!
//! [`provision`] writes it and, in the same step, appends the matching `[[peer]]` entries to
//! the server's config with the server's own code ([`ringway_server::admin::append_peers`],
//! the format `add-peer` writes), after checking the pool has an address for each.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use ringway_client::config::DEFAULT_TUN_NAME;
use ringway_client::ClientConfig;
use ringway_proto::handshake::{key_from_base64, key_to_base64};
use ringway_proto::{PublicKey, SecretKey};
use ringway_server::admin::{append_peers, NewPeer};
use serde::Deserialize;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwarmFile {
    endpoint: String,
    server_public_key: String,
    #[serde(default, rename = "peer")]
    peers: Vec<PeerEntry>,
}

/// One `[[peer]]` of the swarm file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerEntry {
    name: String,
    private_key: String,
    psk: Option<String>,
}

/// Reads the swarm file at `path`: one client config per peer, in file order.
pub fn load(path: &Path) -> Result<Vec<ClientConfig>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// Parses swarm file text (see [`load`]).
pub fn parse(text: &str) -> Result<Vec<ClientConfig>> {
    let file: SwarmFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let server_public_key: PublicKey = file
        .server_public_key
        .parse()
        .map_err(|e| anyhow::anyhow!("server_public_key: {e}"))?;
    file.peers
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let private_key = SecretKey::from_base64(&p.private_key)
                .map_err(|e| anyhow::anyhow!("peer[{i}] ({}).private_key: {e}", p.name))?;
            let psk = p
                .psk
                .as_deref()
                .map(key_from_base64)
                .transpose()
                .map_err(|e| anyhow::anyhow!("peer[{i}] ({}).psk: {e}", p.name))?;
            Ok(ClientConfig {
                endpoint: file.endpoint.clone(),
                server_public_key,
                private_key,
                psk,
                cipher: None,
                tun_name: DEFAULT_TUN_NAME.to_owned(),
                routes: Vec::new(),
            })
        })
        .collect()
}

/// What [`provision`] did.
#[derive(Debug)]
pub struct Provisioned {
    /// Peers added to the server config and written to the swarm file.
    pub peers: usize,
    /// Client addresses the server's pool has (the most sessions it can hold at once).
    pub pool_clients: u32,
}

/// Generates `count` peers named `<prefix>-1` .. `<prefix>-<count>`, appends them to the
/// server config at `server_config`, and writes their keys to a new swarm file at `out`
/// naming `endpoint` as the server's address.
///
/// Refuses before writing anything if the server's pool has fewer client addresses than
/// `count` (each session holds one), if a name is taken, or if `out` exists.
pub fn provision(
    server_config: &Path,
    count: usize,
    prefix: &str,
    endpoint: &str,
    out: &Path,
) -> Result<Provisioned> {
    ensure!(count > 0, "--sessions must be at least 1");
    ensure!(
        !out.exists(),
        "{} already exists; remove it or choose another --out",
        out.display()
    );
    let peers: Vec<NewPeer> = (1..=count)
        .map(|i| NewPeer::generate(&format!("{prefix}-{i}")))
        .collect::<Result<_>>()?;
    // The pool check needs the settings; `append_peers` validates the file before it writes,
    // so load them the same way first.
    let current = ringway_server::config::Settings::load(
        server_config,
        &ringway_server::config::Overrides::default(),
    )
    .with_context(|| format!("loading {}", server_config.display()))?;
    let pool_clients = current.pool.hosts().saturating_sub(1);
    if (pool_clients as usize) < count {
        bail!(
            "server.pool {} has {pool_clients} client addresses, fewer than {count} sessions: \
             use a larger pool (198.18.0.0/16 has 65533)",
            current.pool
        );
    }
    let server_public = current.secret_key.public_key();
    let mut text = format!(
        "# ringway-swarm peers ({count}) for the server at {endpoint}. Keep this file private.\n\
         endpoint = \"{endpoint}\"\nserver_public_key = \"{server_public}\"\n"
    );
    for p in &peers {
        text.push_str(&format!(
            "\n[[peer]]\nname = \"{}\"\nprivate_key = \"{}\"\npsk = \"{}\"\n",
            p.name,
            p.keys.secret.to_base64(),
            key_to_base64(&p.psk)
        ));
    }
    // The swarm file first (it must not exist yet), so a failure leaves the server untouched.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    if let Err(e) = append_peers(server_config, &peers) {
        let _ = std::fs::remove_file(out);
        return Err(e);
    }
    Ok(Provisioned {
        peers: count,
        pool_clients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_e2e::TempDir;

    /// A server directory as `ringway-server init` writes it, with `pool`.
    fn server_dir(dir: &Path, pool: &str) -> std::path::PathBuf {
        ringway_server::admin::init(dir, "192.0.2.1:51820".parse().unwrap(), pool).unwrap();
        dir.join(ringway_server::admin::CONFIG_NAME)
    }

    #[test]
    fn provisions_peers_both_ends_agree_on() {
        let dir = TempDir::new("ringway-swarm-unit").unwrap();
        let config = server_dir(&dir.path().join("server"), "198.18.0.0/16");
        let out = dir.path().join("swarm.toml");
        let done = provision(&config, 25, "swarm", "192.0.2.1:51820", &out).unwrap();
        assert_eq!(done.peers, 25);
        assert_eq!(done.pool_clients, 65533);

        let clients = load(&out).unwrap();
        assert_eq!(clients.len(), 25);
        let server = ringway_server::config::Settings::load(
            &config,
            &ringway_server::config::Overrides::default(),
        )
        .unwrap();
        assert_eq!(server.peers.len(), 25);
        for (c, s) in clients.iter().zip(&server.peers) {
            assert_eq!(c.endpoint, "192.0.2.1:51820");
            assert_eq!(c.server_public_key, server.secret_key.public_key());
            assert_eq!(c.private_key.public_key(), s.public_key);
            assert_eq!(c.psk, s.psk);
        }
        assert_eq!(server.peers[24].name, "swarm-25");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // Again into the same file: refused. Under another prefix: the names are new.
        assert!(provision(&config, 1, "swarm", "192.0.2.1:51820", &out).is_err());
        let out2 = dir.path().join("more.toml");
        assert!(provision(&config, 1, "swarm", "192.0.2.1:51820", &out2).is_err());
        assert!(!out2.exists(), "a refused provision leaves no swarm file");
        provision(&config, 2, "more", "192.0.2.1:51820", &out2).unwrap();
    }

    #[test]
    fn refuses_more_sessions_than_the_pool_has_addresses() {
        let dir = TempDir::new("ringway-swarm-unit").unwrap();
        let config = server_dir(&dir.path().join("server"), "198.18.0.0/24");
        let out = dir.path().join("swarm.toml");
        let err = provision(&config, 254, "swarm", "192.0.2.1:51820", &out).unwrap_err();
        assert!(err.to_string().contains("253 client addresses"), "{err}");
        assert!(!out.exists());
        provision(&config, 253, "swarm", "192.0.2.1:51820", &out).unwrap();
    }

    #[test]
    fn parse_names_the_bad_key() {
        let ok = "endpoint = \"192.0.2.1:51820\"\n\
                  server_public_key = \"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\"\n";
        assert!(parse(ok).unwrap().is_empty());
        let bad = format!("{ok}[[peer]]\nname = \"a\"\nprivate_key = \"short\"\n");
        let err = parse(&bad).unwrap_err().to_string();
        assert!(err.contains("peer[0] (a).private_key"), "{err}");
        assert!(parse("endpoint = 1").is_err());
    }
}
