//! fastd, the small userspace VPN daemon of the Freifunk networks (Debian's `fastd`), in TUN
//! mode between one pair of peers.
//!
//! Method `salsa2012+umac`: fastd's recommended default (Salsa20/12 with UMAC, fast without
//! AES instructions and authenticated); `null` methods would be faster and insecure. Keys from
//! `fastd --generate-key`; one thread per end, as fastd is; foreground by default, so the PID
//! is ours. The harness gives the TUN its address once fastd has made it.

use std::fmt::Write as _;
use std::net::SocketAddrV4;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result};

use super::pair::{self, Pair, Side, SERVER_OUTSIDE_IP, TUNNEL_MTU};
use super::{install, Running, System};
use crate::tunnel::build::Build;

/// The server's UDP port.
const PORT: u16 = 10000;
/// The TUN device at both ends (one per namespace).
const DEVICE: &str = "fastd-rw";
/// The cipher and MAC.
pub const METHOD: &str = "salsa2012+umac";

/// fastd at both ends.
#[derive(Debug, Default)]
pub struct Fastd {
    version: OnceLock<String>,
}

/// A key pair as `fastd --generate-key` prints it (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Keys {
    secret: String,
    public: String,
}

impl System for Fastd {
    fn name(&self) -> String {
        "fastd".to_owned()
    }

    fn build(&self) -> Option<&Build> {
        None
    }

    fn describe(&self) -> String {
        format!(
            "{}: UDP, method {METHOD}, one thread, TUN mode, MTU 1420",
            self.version.get().map_or("fastd", String::as_str)
        )
    }

    fn prepare(&self) -> Result<()> {
        install::debian(&[("fastd", "fastd")])?;
        if let Some(v) = install::version(Command::new("fastd").arg("--version")) {
            let _ = self.version.set(v);
        }
        Ok(())
    }

    fn setup_secs(&self) -> f64 {
        0.3
    }

    fn start(&self) -> Result<Box<dyn Running>> {
        let keys = [generate_keys()?, generate_keys()?];
        let mut pair = Pair::create("fastd")?;
        for (i, side) in Side::BOTH.into_iter().enumerate() {
            let path = pair.dir().join(format!("fastd-{}.conf", side.role()));
            pair::write_private(&path, &config(side, &keys[i].secret, &keys[1 - i].public))?;
            let mut cmd = pair.ns(side).command("fastd");
            cmd.arg("--config").arg(&path);
            pair.spawn(side, "fastd", &mut cmd)?;
            if side == Side::Server {
                pair.wait_udp_bound(side, PORT)?;
            }
        }
        for side in Side::BOTH {
            pair.wait_link(side, DEVICE)?;
            pair.configure_inside(side, DEVICE)?;
        }
        pair.wait_tunnel()?;
        Ok(Box::new(pair))
    }
}

fn generate_keys() -> Result<Keys> {
    let printed = pair::output(Command::new("fastd").arg("--generate-key"))?;
    parse_keys(&printed).with_context(|| format!("no keys in fastd's output {printed:?}"))
}

/// The `Secret:` and `Public:` lines of `fastd --generate-key`.
fn parse_keys(printed: &str) -> Option<Keys> {
    let field = |name: &str| {
        printed
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .filter(|v| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()))
    };
    Some(Keys {
        secret: field("Secret:")?,
        public: field("Public:")?,
    })
}

/// The config of one end: its secret, the peer's public key, and for the client where the
/// server is.
fn config(side: Side, secret: &str, peer_public: &str) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "log level info;");
    let _ = writeln!(c, "interface \"{DEVICE}\";");
    let _ = writeln!(c, "mode tun;");
    let _ = writeln!(c, "method \"{METHOD}\";");
    let _ = writeln!(c, "mtu {TUNNEL_MTU};");
    let server = SocketAddrV4::new(SERVER_OUTSIDE_IP, PORT);
    if side == Side::Server {
        let _ = writeln!(c, "bind {server};");
    }
    let _ = writeln!(c, "secret \"{secret}\";");
    let _ = writeln!(c, "peer \"{}\" {{", side.peer().role());
    let _ = writeln!(c, "    key \"{peer_public}\";");
    if side == Side::Client {
        let _ = writeln!(c, "    remote {server};");
    }
    let _ = writeln!(c, "}}");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "68d4440b3ce34743daa4362b0f4c311ad3f6f90c6f9fe011ddc706e7879ec34b";
    const PUBLIC: &str = "4404288d984309b431f015fab4788442e1314ac019ce053cac64045296e3dfba";

    #[test]
    fn parses_generated_keys() {
        let printed = format!("Secret: {SECRET}\nPublic: {PUBLIC}\n");
        assert_eq!(
            parse_keys(&printed),
            Some(Keys {
                secret: SECRET.into(),
                public: PUBLIC.into()
            })
        );
        assert_eq!(parse_keys(&format!("Secret: {SECRET}\n")), None);
        assert_eq!(parse_keys("Secret: abc\nPublic: def\n"), None);
    }

    #[test]
    fn configs_name_the_method_and_the_server() {
        let server = config(Side::Server, SECRET, PUBLIC);
        assert!(server.contains("method \"salsa2012+umac\";"), "{server}");
        assert!(server.contains("bind 192.0.2.1:10000;"), "{server}");
        assert!(server.contains("peer \"client\" {"), "{server}");
        assert!(!server.contains("remote"), "{server}");
        let client = config(Side::Client, SECRET, PUBLIC);
        assert!(client.contains("remote 192.0.2.1:10000;"), "{client}");
        assert!(!client.contains("bind"), "{client}");
        assert!(client.contains(&format!("key \"{PUBLIC}\";")), "{client}");
    }
}
