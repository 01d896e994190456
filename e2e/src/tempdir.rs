//! A temporary directory that removes itself.
//!
//! Each testbed keeps its configs, keys and child logs here; removing it on drop (also while
//! unwinding from a failed assertion) keeps `/tmp` clean across many test runs. Set
//! `RINGWAY_E2E_KEEP=1` to keep it for post-mortem reading of the logs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Owns a directory under [`std::env::temp_dir`] and deletes it on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates a fresh, empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Result<Self> {
        let keep = std::env::var_os("RINGWAY_E2E_KEEP").is_some_and(|v| v != "0");
        let base = std::env::temp_dir();
        let mut last_err = None;
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{prefix}-{}-{n}", std::process::id()));
            // `create_dir` (not `create_dir_all`) fails on an existing directory, so we never
            // adopt, and later delete, a directory left behind by someone else.
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path, keep }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
        Err(last_err.map_or_else(|| anyhow::anyhow!("no attempt made"), anyhow::Error::from))
            .with_context(|| format!("no free temporary directory name under {}", base.display()))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("ringway-e2e: keeping {}", self.path.display());
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("ringway-e2e: could not remove {}: {e}", self.path.display());
        }
    }
}
