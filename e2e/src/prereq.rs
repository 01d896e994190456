//! Deciding whether an end-to-end test can run here, and running them one at a time.
//!
//! The tests need root (namespaces, TUN devices) and a few tools. A developer without them
//! gets a `cargo test` whose summary counts those tests as *ignored*, each with the reason
//! (see [`crate::harness`]), never as passed; CI must never silently skip, so with `CI` set a
//! missing prerequisite fails the test instead.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::sys;

/// Tools every testbed needs (`ss` ships with `ip` in iproute2).
pub const BASE_TOOLS: &[&str] = &["ip", "ss"];

/// What to do with a test, given what its environment lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Everything it needs is here.
    Run,
    /// Report it as skipped (ignored) with this reason.
    Skip(String),
    /// Report it as failed with this message: CI is set, so a skip would hide a broken setup.
    Fail(String),
}

/// Whether `CI` is set (to anything), which turns every skip into a failure.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// The decision for a test whose environment lacks `missing` (`None`: nothing), under CI or
/// not.
pub fn decide(missing: Option<String>, ci: bool) -> Decision {
    match missing {
        None => Decision::Run,
        Some(why) if ci => Decision::Fail(format!(
            "cannot run: {why} (CI is set, so this is a failure, not a skip)"
        )),
        Some(why) => Decision::Skip(why),
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
    fn missing_prerequisites_skip_or_fail_under_ci() {
        assert_eq!(decide(None, true), Decision::Run);
        assert_eq!(decide(None, false), Decision::Run);
        assert_eq!(
            decide(Some("needs root".into()), false),
            Decision::Skip("needs root".into())
        );
        match decide(Some("needs root".into()), true) {
            Decision::Fail(msg) => assert!(msg.contains("needs root") && msg.contains("CI")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finds_sh_but_not_nonsense() {
        assert!(on_path("sh"));
        assert!(!on_path("ringway-e2e-definitely-not-a-tool"));
    }
}
