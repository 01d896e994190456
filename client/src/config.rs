//! The client config file, as `ringway-server add-peer` writes it.
//!
//! ```toml
//! # Ringway client config for peer "NAME"
//! endpoint = "192.0.2.1:51820"          # server address (host:port), UDP and TCP
//! server_public_key = "<base64 32 bytes>"
//! private_key = "<base64 32 bytes>"
//! psk = "<base64 32 bytes>"             # optional
//! cipher = "aes-256-gcm"                # optional: or "chacha20-poly1305"
//! tun_name = "ringway0"                 # optional
//! routes = ["10.0.0.0/8"]               # optional: more prefixes through the tunnel
//! ```
//!
//! Parsing is two steps: serde reads the flat table of strings (unknown keys
//! are refused, so a typo is an error rather than a silently ignored setting),
//! then [`ClientConfig`] validates each value. Every error names the key it is
//! about, because the person reading it has the file open next to it.

use std::fmt;
use std::path::{Path, PathBuf};

use ringway_proto::handshake::{client::ClientKeys, key_from_base64, KEY_LEN};
use ringway_proto::{Cipher, PublicKey, SecretKey};
use serde::Deserialize;

use crate::routes::Ipv4Cidr;

/// The TUN name used when the file has no `tun_name`.
pub const DEFAULT_TUN_NAME: &str = "ringway0";

/// Linux refuses interface names of `IFNAMSIZ` (16) bytes or more, counting the NUL.
const MAX_IFNAME_LEN: usize = 15;

/// A validated client config.
#[derive(Clone)]
pub struct ClientConfig {
    /// The server's outside address, `host:port`; resolved when connecting so a
    /// DNS name follows the server if it moves.
    pub endpoint: String,
    /// The server's static key, pinned: a server without its secret half cannot answer.
    pub server_public_key: PublicKey,
    /// This client's static key.
    pub private_key: SecretKey,
    /// Optional pre-shared key mixed into the handshake.
    pub psk: Option<[u8; KEY_LEN]>,
    /// The AEAD we ask the server for; `None` leaves the choice to the server.
    pub cipher: Option<Cipher>,
    /// Name of the TUN device to create.
    pub tun_name: String,
    /// Prefixes to route through the tunnel besides the tunnel subnet (split
    /// tunnel); empty by default.
    pub routes: Vec<Ipv4Cidr>,
}

impl fmt::Debug for ClientConfig {
    /// Written out by hand so the PSK never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("server_public_key", &self.server_public_key)
            .field("private_key", &self.private_key)
            .field("psk", &self.psk.map(|_| ".."))
            .field("cipher", &self.cipher)
            .field("tun_name", &self.tun_name)
            .field("routes", &self.routes)
            .finish()
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Not TOML, a key we do not know, a missing key, or a value of the wrong type.
    #[error("{origin}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Syntax {
        /// The file, or "config" when parsing a string.
        origin: String,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// toml's one-line description, which names the key.
        message: String,
    },
    /// A key is present but its value is unusable.
    #[error("{origin}: `{key}`: {reason}")]
    Invalid {
        /// The file, or "config" when parsing a string.
        origin: String,
        /// The offending key.
        key: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
}

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    endpoint: String,
    server_public_key: String,
    private_key: String,
    psk: Option<String>,
    cipher: Option<String>,
    tun_name: Option<String>,
    routes: Option<Vec<String>>,
}

/// Warns when the config (it holds the client's private key) is open to group or others,
/// naming the fix; a warning, not a refusal, as the server's key check.
#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777);
    if mode & 0o077 != 0 {
        let path = path.display();
        tracing::warn!("{path} holds the private key but has mode {mode:o}: others on this host can read it (chmod 600 {path})");
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path) {}

impl ClientConfig {
    /// Reads and validates the config at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse_from(&text, &path.display().to_string())?;
        warn_if_exposed(path);
        Ok(config)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::parse_from(text, "config")
    }

    fn parse_from(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().replace('\n', " "),
        })?;
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            reason,
        };
        let key_reason = |e: ringway_proto::handshake::KeyParseError| e.to_string();

        check_endpoint(&raw.endpoint).map_err(|r| invalid("endpoint", r))?;
        let server_public_key = raw
            .server_public_key
            .parse::<PublicKey>()
            .map_err(|e| invalid("server_public_key", key_reason(e)))?;
        let private_key = SecretKey::from_base64(&raw.private_key)
            .map_err(|e| invalid("private_key", key_reason(e)))?;
        let psk = raw
            .psk
            .as_deref()
            .map(key_from_base64)
            .transpose()
            .map_err(|e| invalid("psk", key_reason(e)))?;
        let cipher = raw
            .cipher
            .as_deref()
            .map(|name| {
                Cipher::from_name(name).ok_or_else(|| {
                    format!(
                        "unknown cipher {name:?} (expected {:?} or {:?})",
                        Cipher::Aes256Gcm.name(),
                        Cipher::ChaCha20Poly1305.name()
                    )
                })
            })
            .transpose()
            .map_err(|r| invalid("cipher", r))?;
        let tun_name = raw.tun_name.unwrap_or_else(|| DEFAULT_TUN_NAME.to_owned());
        check_ifname(&tun_name).map_err(|r| invalid("tun_name", r))?;
        let routes = raw
            .routes
            .unwrap_or_default()
            .iter()
            .map(|r| r.parse::<Ipv4Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|r| invalid("routes", r))?;

        Ok(ClientConfig {
            endpoint: raw.endpoint,
            server_public_key,
            private_key,
            psk,
            cipher,
            tun_name,
            routes,
        })
    }

    /// The keys the handshake needs.
    pub fn client_keys(&self) -> ClientKeys {
        ClientKeys {
            secret: self.private_key.clone(),
            server_public: self.server_public_key,
            psk: self.psk,
        }
    }
}

/// 1-based line number of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `host:port` or `[v6]:port` with a non-zero port; the host is resolved later.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let expected = "expected host:port, e.g. \"192.0.2.1:51820\"";
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("{endpoint:?} has no port; {expected}"))?;
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("{endpoint:?} has no valid host; {expected}"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "{endpoint:?}: put an IPv6 address in brackets, e.g. \"[2001:db8::1]:51820\""
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("{endpoint:?} has an invalid port; {expected}")),
    }
}

/// The names Linux accepts for a network interface (`dev_valid_name`).
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(format!("{name:?} must be 1 to {MAX_IFNAME_LEN} bytes long"));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!(
            "{name:?} is not a valid interface name (no '/', ':' or spaces)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_proto::handshake::key_to_base64;
    use ringway_proto::Keypair;

    fn keys() -> (Keypair, Keypair) {
        (
            Keypair::from_random([1u8; 32]),
            Keypair::from_random([2u8; 32]),
        )
    }

    fn full_text() -> String {
        let (server, client) = keys();
        format!(
            "# Ringway client config for peer \"laptop\"\n\
             endpoint = \"192.0.2.1:51820\"\n\
             server_public_key = \"{}\"\n\
             private_key = \"{}\"\n\
             psk = \"{}\"\n\
             cipher = \"chacha20-poly1305\"\n\
             tun_name = \"rw-test\"\n\
             routes = [\"10.0.0.0/8\", \"192.0.2.7\"]\n",
            server.public,
            client.secret.to_base64(),
            key_to_base64(&[9u8; 32]),
        )
    }

    /// `text` with the line for `key` replaced (or dropped when `line` is empty).
    fn with_line_in(text: &str, key: &str, line: &str) -> String {
        let prefix = format!("{key} ");
        text.lines()
            .map(|l| if l.starts_with(&prefix) { line } else { l })
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn with_line(key: &str, line: &str) -> String {
        with_line_in(&full_text(), key, line)
    }

    fn error(text: &str) -> String {
        ClientConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_key() {
        let (server, client) = keys();
        let c = ClientConfig::parse(&full_text()).unwrap();
        assert_eq!(c.endpoint, "192.0.2.1:51820");
        assert_eq!(c.server_public_key, server.public);
        assert_eq!(c.private_key.public_key(), client.public);
        assert_eq!(c.psk, Some([9u8; 32]));
        assert_eq!(c.cipher, Some(Cipher::ChaCha20Poly1305));
        assert_eq!(c.tun_name, "rw-test");
        assert_eq!(
            c.routes,
            [
                "10.0.0.0/8".parse().unwrap(),
                "192.0.2.7/32".parse().unwrap()
            ]
        );
        let k = c.client_keys();
        assert_eq!(k.server_public, server.public);
        assert_eq!(k.psk, Some([9u8; 32]));
    }

    #[test]
    fn optional_keys_have_defaults() {
        let text = ["psk", "cipher", "tun_name", "routes"]
            .iter()
            .fold(full_text(), |t, k| with_line_in(&t, k, ""));
        let c = ClientConfig::parse(&text).unwrap();
        assert_eq!(c.psk, None);
        assert_eq!(c.cipher, None);
        assert_eq!(c.tun_name, DEFAULT_TUN_NAME);
        assert!(c.routes.is_empty());
    }

    #[test]
    fn accepts_what_add_peer_writes() {
        let (server, client) = keys();
        let text = format!(
            "# Ringway client config for peer \"client1\". Keep this file private.\n\
             endpoint = \"vpn.example.net:51820\"\n\
             server_public_key = \"{}\"\n\
             private_key = \"{}\"\n\
             psk = \"{}\"\n",
            server.public,
            client.secret.to_base64(),
            key_to_base64(&[3u8; 32]),
        );
        let c = ClientConfig::parse(&text).unwrap();
        assert_eq!(c.endpoint, "vpn.example.net:51820");
        assert_eq!(c.tun_name, "ringway0");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{}keepalive = \"5\"\n", full_text());
        let e = error(&text);
        assert!(e.contains("keepalive"), "{e}");
        assert!(e.contains("line 9"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn missing_key_is_named() {
        let e = error(&with_line("server_public_key", ""));
        assert!(e.contains("server_public_key"), "{e}");
        let e = error(&with_line("endpoint", ""));
        assert!(e.contains("endpoint"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = error(&with_line("tun_name", "tun_name = 7"));
        assert!(e.contains("tun_name") || e.contains("line 7"), "{e}");
    }

    #[test]
    fn bad_keys_are_named() {
        for key in ["server_public_key", "private_key", "psk"] {
            let e = error(&with_line(key, &format!("{key} = \"AAAA\"")));
            assert!(e.contains(&format!("`{key}`")), "{e}");
            assert!(e.contains("32 bytes of base64"), "{e}");
        }
    }

    #[test]
    fn bad_cipher_is_named() {
        let e = error(&with_line("cipher", "cipher = \"rot13\""));
        assert!(e.contains("`cipher`") && e.contains("rot13"), "{e}");
        assert!(e.contains("aes-256-gcm"), "{e}");
    }

    #[test]
    fn endpoints() {
        for ok in [
            "192.0.2.1:51820",
            "vpn.example.net:443",
            "[2001:db8::1]:51820",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for bad in [
            "192.0.2.1",
            ":51820",
            "host:0",
            "host:70000",
            "host:port",
            "2001:db8::1:51820",
            "a b:1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
        let e = error(&with_line("endpoint", "endpoint = \"192.0.2.1\""));
        assert!(e.contains("`endpoint`") && e.contains("no port"), "{e}");
    }

    #[test]
    fn interface_names() {
        assert_eq!(check_ifname("ringway0"), Ok(()));
        assert_eq!(check_ifname("a23456789012345"), Ok(()));
        for bad in ["", "a234567890123456", "a/b", "a:b", "a b", ".", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
        let e = error(&with_line("tun_name", "tun_name = \"way/too/long\""));
        assert!(e.contains("`tun_name`"), "{e}");
    }

    #[test]
    fn bad_routes_are_named() {
        let e = error(&with_line("routes", "routes = [\"10.1.2.3/8\"]"));
        assert!(e.contains("`routes`"), "{e}");
        assert!(e.contains("did you mean \"10.0.0.0/8\""), "{e}");
        let e = error(&with_line("routes", "routes = [\"fd00::/8\"]"));
        assert!(
            e.contains("`routes`") && e.contains("not an IPv4 prefix"),
            "{e}"
        );
        let e = error(&with_line("routes", "routes = \"10.0.0.0/8\""));
        assert!(e.contains("routes") || e.contains("line 8"), "{e}");
    }

    #[test]
    fn not_toml() {
        let e = error("endpoint = ");
        assert!(e.starts_with("config line 1:"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let e = ClientConfig::load("/nonexistent/ringway.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ringway.toml"), "{e}");
    }

    #[test]
    fn debug_hides_secrets() {
        let c = ClientConfig::parse(&full_text()).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains(&key_to_base64(&[9u8; 32])), "{d}");
        assert!(!d.contains("9, 9"), "{d}");
        assert!(d.contains("SecretKey(..)"), "{d}");
    }
}
