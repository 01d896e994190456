//! Getting the other VPNs onto the machine: Debian packages through `apt-get`, and boringtun
//! (not packaged) through `cargo install` into a cache directory.
//!
//! Only what is missing is installed. `apt-get update` runs at most once per benchmark, and
//! only after an install failed (a fresh machine's package lists may be missing or stale).
//! Every command is bounded in time; a failure comes back as one line that the report shows
//! as the system's "failed to start" reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringway_e2e::{prereq, process};

/// Bound for one `apt-get install` (downloads included).
const APT_INSTALL_LIMIT: Duration = Duration::from_secs(600);
/// Bound for `apt-get update`.
const APT_UPDATE_LIMIT: Duration = Duration::from_secs(300);
/// Bound for one `cargo install` (boringtun-cli builds in about two minutes on two cores).
const CARGO_INSTALL_LIMIT: Duration = Duration::from_secs(1800);

/// Whether this benchmark has run `apt-get update` already.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Where tools built by the benchmark itself (`cargo install`) are kept between runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCache {
    dir: PathBuf,
}

impl ToolCache {
    /// Keeps tools under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// `$RINGWAY_BENCH_TOOLS`, else `$HOME/.cache/ringway-bench`, else
    /// `/var/cache/ringway-bench`.
    pub fn default_dir() -> PathBuf {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dir) = env("RINGWAY_BENCH_TOOLS") {
            return dir.into();
        }
        match env("HOME") {
            Some(home) => Path::new(&home).join(".cache").join("ringway-bench"),
            None => PathBuf::from("/var/cache/ringway-bench"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The executable `bin` of crate `krate`: from `PATH` if there, else from this cache,
    /// else built now with `cargo install --locked --root <cache>/<krate>`.
    pub fn cargo_binary(&self, krate: &str, bin: &str) -> Result<PathBuf> {
        if let Some(found) = find_on_path(bin) {
            return Ok(found);
        }
        let root = self.dir.join(krate);
        let path = root.join("bin").join(bin);
        if path.is_file() {
            return Ok(path);
        }
        if !prereq::on_path("cargo") {
            bail!("{bin} is not installed and cargo is not on PATH to build it");
        }
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        println!(
            "  installing {krate} with cargo into {} (once; a few minutes)",
            root.display()
        );
        let mut cmd = Command::new("cargo");
        cmd.args(["install", krate, "--locked", "--root"])
            .arg(&root)
            // Its own temporary target directory: the caller's may be locked by a build.
            .env_remove("CARGO_TARGET_DIR");
        let out = process::run(&mut cmd, CARGO_INSTALL_LIMIT)
            .with_context(|| format!("cargo install {krate}"))?;
        if !out.status.success() {
            bail!(
                "cargo install {krate} failed ({}): {}",
                out.status,
                last_line(&String::from_utf8_lossy(&out.stderr))
            );
        }
        if !path.is_file() {
            bail!(
                "cargo install {krate} succeeded but left no {}",
                path.display()
            );
        }
        Ok(path)
    }
}

/// Makes sure every `(tool, Debian package)` pair's tool is on `PATH`, installing the
/// packages of those that are not.
pub fn debian(tools: &[(&str, &str)]) -> Result<()> {
    let mut packages: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| !prereq::on_path(tool))
        .map(|(_, package)| *package)
        .collect();
    packages.sort_unstable();
    packages.dedup();
    if packages.is_empty() {
        return Ok(());
    }
    if !prereq::on_path("apt-get") {
        bail!(
            "missing {} and there is no apt-get to install it",
            packages.join(" ")
        );
    }
    println!("  installing {} with apt-get", packages.join(" "));
    let first = apt_install(&packages);
    if first.is_err() && !APT_UPDATED.swap(true, Ordering::Relaxed) {
        println!("  apt-get install failed; running apt-get update once and retrying");
        apt(&["update"], APT_UPDATE_LIMIT).context("apt-get update")?;
        apt_install(&packages)?;
    } else {
        first?;
    }
    for (tool, package) in tools {
        if !prereq::on_path(tool) {
            bail!("installed {package}, yet {tool} is not on PATH");
        }
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(packages);
    apt(&args, APT_INSTALL_LIMIT).with_context(|| format!("apt-get install {}", packages.join(" ")))
}

/// Runs `apt-get args` non-interactively; fails with the last line it printed to stderr.
fn apt(args: &[&str], limit: Duration) -> Result<()> {
    let out = process::run(
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        limit,
    )?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            out.status,
            last_line(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(())
}

/// The full path of `tool` in a `PATH` directory, if there is one.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// The last non-empty line of a command's output: usually the error itself.
pub fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("(no output)")
        .to_owned()
}

/// The first line of `tool --version` style output, for the report.
pub fn version(cmd: &mut Command) -> Option<String> {
    let out = process::run(cmd, Duration::from_secs(10)).ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_last_line() {
        assert_eq!(
            last_line("Reading package lists...\nE: Unable to locate package nope\n\n"),
            "E: Unable to locate package nope"
        );
        assert_eq!(last_line(""), "(no output)");
    }

    #[test]
    fn present_tools_need_no_install() {
        debian(&[("sh", "dash")]).unwrap();
        assert!(find_on_path("sh").is_some());
        let cache = ToolCache::new("/nonexistent".into());
        // Found on PATH: no cargo involved.
        assert_eq!(
            cache.cargo_binary("unused", "sh").unwrap(),
            find_on_path("sh").unwrap()
        );
        assert!(version(Command::new("sh").args(["-c", "echo v1.2; echo x"])).is_some());
    }
}
