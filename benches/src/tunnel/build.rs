//! A build of Ringway under test: a label and the directory holding its binaries.
//!
//! Comparing an optimisation with what came before means running both builds in the same
//! session on the same machine, alternating, so each build is named on the command line as
//! `LABEL=DIR` and carried through to every row and JSON record.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringway_e2e::binaries::Binaries;
use ringway_e2e::process;

/// One set of Ringway binaries.
#[derive(Debug, Clone)]
pub struct Build {
    /// The name it gets in tables (`base`, `new`).
    pub label: String,
    /// Where its `ringway-server` and `ringway` are.
    pub dir: PathBuf,
    /// The git commit it was built from, if known (see [`Build::new`]).
    pub commit: Option<String>,
    /// Its executables.
    pub binaries: Binaries,
    /// Extra arguments for `ringway-server run` (e.g. `--fair-queue off`), so one set of
    /// binaries can run as two builds with a feature on and off.
    pub server_args: Vec<String>,
    /// Extra arguments for `ringway up`.
    pub client_args: Vec<String>,
}

impl Build {
    /// Checks that `dir` holds both binaries and finds out which commit they were built from:
    /// a `COMMIT` file in `dir` if there is one, else the commit of the git checkout `dir` is
    /// in (with `+dirty` if tracked files differ from it), else unknown.
    pub fn new(label: &str, dir: &Path) -> Result<Self> {
        if label.is_empty()
            || !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("build label {label:?}: use letters, digits, '-', '_' or '.'");
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("build {label}: {}", dir.display()))?;
        let binaries = Binaries::in_dir(&dir).with_context(|| format!("build {label}"))?;
        Ok(Self {
            label: label.to_owned(),
            commit: commit_of(&dir),
            dir,
            binaries,
            server_args: Vec::new(),
            client_args: Vec::new(),
        })
    }

    /// Parses `LABEL=DIR`, or a bare `DIR` labelled `default_label`.
    pub fn parse(arg: &str, default_label: &str) -> Result<Self> {
        match arg.split_once('=') {
            Some((label, dir)) => Self::new(label, Path::new(dir)),
            None => Self::new(default_label, Path::new(arg)),
        }
    }
}

/// See [`Build::new`].
fn commit_of(dir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join("COMMIT")) {
        let commit = text.trim();
        if !commit.is_empty() {
            return Some(commit.to_owned());
        }
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = process::run(
            Command::new("git").arg("-C").arg(dir).args(args),
            Duration::from_secs(10),
        )
        .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_labels_and_missing_binaries() {
        let dir = std::env::temp_dir();
        assert!(Build::new("has space", &dir).is_err());
        let e = Build::new("ok", &dir).unwrap_err();
        assert!(format!("{e:#}").contains("not found"), "{e:#}");
        assert!(Build::parse("x=/nonexistent/ringway", "d").is_err());
    }

    #[test]
    fn reads_a_commit_file() {
        let dir = ringway_e2e::TempDir::new("ringway-bench-unit").unwrap();
        std::fs::write(dir.path().join("COMMIT"), "abc123\n").unwrap();
        assert_eq!(commit_of(dir.path()).as_deref(), Some("abc123"));
    }
}
