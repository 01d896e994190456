//! Deciding whether an end-to-end test can run here, and running them one at a time.
//!
//! The tests need root (namespaces, TUN devices) and a few tools. A developer without them
//! should still get a green `cargo test` with a note saying what was skipped, while CI must
//! never silently skip, so with `CI` set a missing prerequisite fails the test instead.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::sys;

/// Tools every testbed needs (`ss` ships with `ip` in iproute2).
pub const BASE_TOOLS: &[&str] = &["ip", "ss"];

/// Returns whether `test` can run; otherwise prints why and returns `false`, or panics under CI.
///
/// `tools` are looked up on `PATH` in addition to [`BASE_TOOLS`].
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    match missing(tools) {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: cannot run: {why} (CI is set, so this is a failure, not a skip)")
        }
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// Why the environment cannot run a testbed, or `None` if it can.
pub fn missing(tools: &[&str]) -> Option<String> {
    if !sys::is_root() {
        return Some("needs root for network namespaces and TUN devices".to_owned());
    }
    let absent: Vec<&str> = BASE_TOOLS
        .iter()
        .chain(tools)
        .copied()
        .filter(|t| !on_path(t))
        .collect();
    if absent.is_empty() {
        None
    } else {
        Some(format!(
            "missing tools: {} (scripts/test installs them)",
            absent.join(", ")
        ))
    }
}

/// Whether an executable called `tool` exists in a `PATH` directory.
pub fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        let candidate = Path::new(&dir).join(tool);
        candidate
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Holds a process-wide lock so testbeds in one test binary run one after another.
///
/// Throughput tests sharing two cores measure each other; a poisoned lock (an earlier test
/// panicked) is still a valid lock, since the guarded state is `()`.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_but_not_nonsense() {
        assert!(on_path("sh"));
        assert!(!on_path("ringway-e2e-definitely-not-a-tool"));
    }
}
