//! Finding the server and client executables under test.
//!
//! The testbed runs the real release binaries, which `cargo test -p ringway-e2e` does not build
//! (they belong to other packages), so a missing binary gets a message that says what to run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Environment variable that overrides where the binaries are looked up.
pub const BIN_DIR_ENV: &str = "RINGWAY_BIN_DIR";

/// Paths of the binaries the testbed drives.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `ringway-server`.
    pub server: PathBuf,
    /// `ringway` (the client).
    pub client: PathBuf,
}

impl Binaries {
    /// Looks in `$RINGWAY_BIN_DIR`, else in `<workspace>/target/release`.
    pub fn locate() -> Result<Self> {
        Self::in_dir(&bin_dir())
    }

    /// Looks in `dir` (a benchmark comparing builds names each build's directory).
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let found = Self {
            server: dir.join("ringway-server"),
            client: dir.join("ringway"),
        };
        for path in [&found.server, &found.client] {
            if !path.is_file() {
                bail!(
                    "{} not found; run `cargo build --release --bins` first (or point {BIN_DIR_ENV} \
                     at a directory holding ringway-server and ringway)",
                    path.display()
                );
            }
        }
        Ok(found)
    }
}

/// The directory the binaries are expected in.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let dir = workspace.join("target").join("release");
            // Canonical paths make error messages readable; fall back to the joined path.
            dir.canonicalize().unwrap_or(dir)
        }
    }
}
