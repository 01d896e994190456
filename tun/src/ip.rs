//! iproute2's `ip`: the one helper server and client use to configure their TUN (and the
//! client its routes).
//!
//! It runs at start and on reconfiguration only, never on the data path, so a process per
//! change costs nothing that matters, and its error messages ("RTNETLINK answers: File
//! exists") are the ones operators already know and can search for. The two failures callers
//! treat specially get their own [`TunError`] variant: something already there
//! ([`TunError::AlreadyExists`]) and a missing privilege ([`TunError::PermissionDenied`]).

use std::io;
use std::process::Command;

use crate::TunError;

/// Runs `ip ARGS` and returns its stdout. A failure is one line naming the command, or
/// [`TunError::IpMissing`], [`TunError::AlreadyExists`], [`TunError::PermissionDenied`] when
/// that is what happened.
pub fn run(args: &[&str]) -> Result<String, TunError> {
    if cfg!(not(target_os = "linux")) {
        return Err(TunError::Unsupported(std::env::consts::OS));
    }
    let command = format!("ip {}", args.join(" "));
    tracing::debug!(%command, "running");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => TunError::IpMissing,
            _ => TunError::Command {
                command: command.clone(),
                detail: e.to_string(),
            },
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = stderr.trim().replace('\n', "; ");
    if let Some(e) = classify(args, &detail) {
        return Err(e);
    }
    Err(TunError::Command {
        command,
        detail: if detail.is_empty() {
            out.status.to_string()
        } else {
            detail
        },
    })
}

/// The `ip` failures with an error of their own: what we add is already there ("File
/// exists"), or we lack the privilege.
fn classify(args: &[&str], stderr: &str) -> Option<TunError> {
    if stderr.contains("File exists") {
        // `addr add CIDR ...` / `-4 route add DEST ...`: name the object.
        let what = args
            .iter()
            .position(|a| *a == "add")
            .and_then(|i| args.get(i + 1))
            .map(|obj| {
                let kind = if args.contains(&"route") {
                    "route"
                } else {
                    "address"
                };
                format!("{kind} {obj}")
            })
            .unwrap_or_else(|| format!("`ip {}`", args.join(" ")));
        return Some(TunError::AlreadyExists { what });
    }
    if stderr.contains("Operation not permitted") {
        return Some(TunError::PermissionDenied {
            action: format!("`ip {}`", args.join(" ")),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ip_failures() {
        let e = classify(
            &["-4", "route", "add", "0.0.0.0/1", "dev", "rw0"],
            "RTNETLINK answers: File exists",
        );
        assert_eq!(
            e.unwrap().to_string(),
            "route 0.0.0.0/1 already exists (is another ringway running, or was it added by hand?)"
        );
        let e = classify(
            &["addr", "add", "198.18.0.2/24", "dev", "rw0"],
            "RTNETLINK answers: File exists",
        );
        assert!(e
            .unwrap()
            .to_string()
            .starts_with("address 198.18.0.2/24 already exists"));
        let e = classify(
            &["link", "set", "dev", "rw0", "up"],
            "RTNETLINK answers: Operation not permitted",
        )
        .unwrap();
        assert!(e.is_permission());
        assert_eq!(
            e.to_string(),
            "`ip link set dev rw0 up` needs root or CAP_NET_ADMIN (run as root, or grant the CAP_NET_ADMIN capability)"
        );
        assert!(classify(&["link", "set"], "Cannot find device \"x\"").is_none());
    }

    #[test]
    fn a_missing_ip_says_install_iproute2() {
        assert_eq!(
            TunError::IpMissing.to_string(),
            "the `ip` command is missing: install iproute2 (it configures the TUN at start)"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failing_command_is_named_with_its_stderr() {
        // Read-only and refused by `ip` itself: touches nothing. Without iproute2 on this
        // machine the answer is the NotFound mapping, which is right too.
        match run(&["link", "show", "dev", "ringway-no-such"]) {
            Err(TunError::Command { command, detail }) => {
                assert_eq!(command, "ip link show dev ringway-no-such");
                assert!(detail.contains("ringway-no-such"), "{detail}");
            }
            Err(TunError::IpMissing) => {}
            other => panic!("expected a Command error, got {other:?}"),
        }
    }
}
