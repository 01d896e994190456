//! wireguard-go, the Go userspace WireGuard (Debian's `wireguard-go`), configured by `wg`.
//!
//! Run in the foreground (`-f`) so the PID we hold is the daemon's. It uses as many threads
//! as Go's runtime gives it (GOMAXPROCS: one per CPU); the data cipher is WireGuard's only
//! one, ChaCha20-Poly1305.

use std::process::Command;
use std::sync::OnceLock;

use anyhow::Result;

use super::pair::Pair;
use super::{install, wg, Running, System};
use crate::tunnel::build::Build;

/// wireguard-go at both ends.
#[derive(Debug, Default)]
pub struct WireguardGo {
    version: OnceLock<String>,
}

impl System for WireguardGo {
    fn name(&self) -> String {
        "wireguard-go".to_owned()
    }

    fn build(&self) -> Option<&Build> {
        None
    }

    fn describe(&self) -> String {
        format!(
            "{}: ChaCha20-Poly1305, Go runtime threads (GOMAXPROCS = CPUs), MTU 1420, `wg set`",
            self.version.get().map_or("wireguard-go", String::as_str)
        )
    }

    fn prepare(&self) -> Result<()> {
        install::debian(&[("wireguard-go", "wireguard-go"), ("wg", "wireguard-tools")])?;
        if let Some(v) = install::version(Command::new("wireguard-go").arg("--version")) {
            let _ = self.version.set(v);
        }
        Ok(())
    }

    fn setup_secs(&self) -> f64 {
        0.3
    }

    fn start(&self) -> Result<Box<dyn Running>> {
        let mut pair = Pair::create("wireguard-go")?;
        wg::bring_up(&mut pair, "wireguard-go", |ns, device| {
            let mut cmd = ns.command("wireguard-go");
            cmd.args(["-f", device]);
            cmd
        })?;
        Ok(Box::new(pair))
    }
}
