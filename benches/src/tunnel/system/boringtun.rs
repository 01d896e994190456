//! boringtun, Cloudflare's Rust userspace WireGuard, configured by `wg`.
//!
//! It is not packaged for Debian, so `prepare` takes `boringtun-cli` from `PATH` or builds it
//! once with `cargo install --locked` into the tool cache. Run in the foreground with one
//! worker thread (`--threads 1`; its default is 4) and without dropping privileges (we are
//! root and it must keep them to be stopped cleanly). ChaCha20-Poly1305, as every WireGuard.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result};

use super::pair::Pair;
use super::{install, wg, Running, System, ToolCache};
use crate::tunnel::build::Build;

/// The crate and the executable it installs.
const CRATE: &str = "boringtun-cli";

/// boringtun at both ends.
#[derive(Debug)]
pub struct Boringtun {
    tools: ToolCache,
    found: OnceLock<(PathBuf, String)>,
}

impl Boringtun {
    /// boringtun, built into `tools` if it is not on `PATH`.
    pub fn new(tools: ToolCache) -> Self {
        Self {
            tools,
            found: OnceLock::new(),
        }
    }
}

impl System for Boringtun {
    fn name(&self) -> String {
        "boringtun".to_owned()
    }

    fn build(&self) -> Option<&Build> {
        None
    }

    fn describe(&self) -> String {
        format!(
            "{}: ChaCha20-Poly1305, `--threads 1`, MTU 1420, `wg set`",
            self.found.get().map_or(CRATE, |(_, v)| v.as_str())
        )
    }

    fn prepare(&self) -> Result<()> {
        install::debian(&[("wg", "wireguard-tools")])?;
        let path = self.tools.cargo_binary(CRATE, CRATE)?;
        let version = install::version(Command::new(&path).arg("--version"))
            .unwrap_or_else(|| CRATE.to_owned());
        let _ = self.found.set((path, version));
        Ok(())
    }

    fn setup_secs(&self) -> f64 {
        0.3
    }

    fn start(&self) -> Result<Box<dyn Running>> {
        let (path, _) = self.found.get().context("boringtun was not prepared")?;
        let mut pair = Pair::create("boringtun")?;
        let log_dir = pair.dir().to_owned();
        wg::bring_up(&mut pair, "boringtun", |ns, device| {
            let mut cmd = ns.command(path);
            cmd.args([
                "--foreground",
                "--threads",
                "1",
                "--disable-drop-privileges",
            ])
            .args(["--verbosity", "error", "--log"])
            .arg(log_dir.join(format!("{device}.out")))
            .arg(device);
            cmd
        })?;
        Ok(Box::new(pair))
    }
}
