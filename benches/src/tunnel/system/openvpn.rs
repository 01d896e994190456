//! OpenVPN over UDP in point-to-point TLS mode, with AES-256-GCM on the data channel.
//!
//! Static-key mode (`--secret`) cannot use an AEAD cipher and is deprecated, so each end gets
//! a self-signed P-256 certificate made by `openssl` at start, and pins the other's by its
//! SHA-256 fingerprint (`--peer-fingerprint`, OpenVPN 2.6: TLS 1.3 without a CA). The data
//! channel is `--data-ciphers AES-256-GCM`; one thread per end, as OpenVPN is; kernel offload
//! (DCO) off so the process does the work we measure; no `--daemon`, so the PID is ours.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result};

use super::pair::{self, Pair, Side, SERVER_INSIDE_IP, SERVER_OUTSIDE_IP, TUNNEL_MTU};
use super::{install, Running, System};
use crate::tunnel::build::Build;

/// The server's UDP port.
const PORT: u16 = 1194;
/// The TUN device at both ends (one per namespace, so one name does).
const DEVICE: &str = "ovpn-rw";

/// OpenVPN at both ends.
#[derive(Debug, Default)]
pub struct Openvpn {
    version: OnceLock<String>,
}

impl System for Openvpn {
    fn name(&self) -> String {
        "openvpn".to_owned()
    }

    fn build(&self) -> Option<&Build> {
        None
    }

    fn describe(&self) -> String {
        format!(
            "{}: UDP, TLS 1.3 with pinned self-signed P-256 certificates, data channel \
             AES-256-GCM, one thread, no DCO, MTU 1420",
            self.version.get().map_or("OpenVPN", String::as_str)
        )
    }

    fn prepare(&self) -> Result<()> {
        install::debian(&[("openvpn", "openvpn"), ("openssl", "openssl")])?;
        if let Some(v) = install::version(Command::new("openvpn").arg("--version")) {
            // "OpenVPN 2.6.14 x86_64-pc-linux-gnu [SSL (OpenSSL)] ...": name and version.
            let short: Vec<&str> = v.split_whitespace().take(2).collect();
            let _ = self.version.set(short.join(" "));
        }
        Ok(())
    }

    /// OpenVPN completes its initialisation about 2 s after the TLS handshake.
    fn setup_secs(&self) -> f64 {
        2.4
    }

    fn start(&self) -> Result<Box<dyn Running>> {
        let mut pair = Pair::create("openvpn")?;
        let dir = pair.dir().to_owned();
        let certs = Side::BOTH
            .map(|side| Certificate::generate(&dir, side))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        for side in Side::BOTH {
            let (own, peer) = match side {
                Side::Server => (&certs[0], &certs[1]),
                Side::Client => (&certs[1], &certs[0]),
            };
            let mut cmd = pair.ns(side).command("openvpn");
            cmd.args(["--dev", DEVICE, "--dev-type", "tun", "--proto", "udp"])
                .args(["--data-ciphers", "AES-256-GCM", "--disable-dco"])
                .args(["--tun-mtu", &TUNNEL_MTU.to_string(), "--verb", "3"])
                .args(["--ifconfig"])
                .arg(side.inside_ip().to_string())
                .arg(side.peer().inside_ip().to_string())
                .arg("--cert")
                .arg(&own.cert)
                .arg("--key")
                .arg(&own.key)
                .args(["--peer-fingerprint", &peer.fingerprint]);
            match side {
                Side::Server => cmd
                    .args(["--tls-server", "--dh", "none", "--local"])
                    .arg(SERVER_OUTSIDE_IP.to_string())
                    .args(["--lport", &PORT.to_string()]),
                Side::Client => cmd
                    .args(["--tls-client", "--nobind", "--remote"])
                    .arg(SERVER_OUTSIDE_IP.to_string())
                    .arg(PORT.to_string()),
            };
            pair.spawn(side, "openvpn", &mut cmd)?;
            if side == Side::Server {
                pair.wait_udp_bound(side, PORT)?;
            }
        }
        pair.wait_tunnel()
            .with_context(|| format!("OpenVPN to {SERVER_INSIDE_IP}"))?;
        Ok(Box::new(pair))
    }
}

/// A self-signed certificate, its key and its fingerprint.
struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    fingerprint: String,
}

impl Certificate {
    /// A P-256 key and certificate for `side` in `dir`, valid two days.
    fn generate(dir: &Path, side: Side) -> Result<Self> {
        let cert = dir.join(format!("{}.crt", side.role()));
        let key = dir.join(format!("{}.key", side.role()));
        pair::output(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec"])
                .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
                .args(["-days", "2", "-subj"])
                .arg(format!("/CN=ringway-bench-{}", side.role()))
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        )
        .context("making a certificate with openssl")?;
        let printed = pair::output(
            Command::new("openssl")
                .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
                .arg(&cert),
        )?;
        let fingerprint = parse_fingerprint(&printed)
            .with_context(|| format!("no fingerprint in {printed:?}"))?;
        Ok(Self {
            cert,
            key,
            fingerprint,
        })
    }
}

/// The colon-separated hex of `openssl x509 -fingerprint` output
/// (`sha256 Fingerprint=AB:CD:...`, `SHA256 Fingerprint=...` in older versions).
fn parse_fingerprint(printed: &str) -> Option<String> {
    let (label, hex) = printed.trim().split_once('=')?;
    let ok = label.to_ascii_lowercase().contains("fingerprint")
        && hex.len() == 95
        && hex
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| hex.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sha256_fingerprints() {
        let hex = "84:B1:15:57:C0:57:D4:E4:53:1C:9E:8B:2A:8D:F3:E6:E6:3E:B9:CE:D0:A1:8F:37:0E:70:39:D4:1E:D3:EE:96";
        assert_eq!(
            parse_fingerprint(&format!("sha256 Fingerprint={hex}\n")).as_deref(),
            Some(hex)
        );
        assert_eq!(
            parse_fingerprint(&format!("SHA256 Fingerprint={hex}")).as_deref(),
            Some(hex)
        );
        assert_eq!(parse_fingerprint("SHA1 Fingerprint=AB:CD"), None);
        assert_eq!(parse_fingerprint("unable to load certificate"), None);
    }
}
