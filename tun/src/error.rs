//! One error type for everything that can go wrong setting up the TUN, each message naming
//! the fix. The client maps the classes to exit statuses ([`is_permission`](TunError::is_permission),
//! [`is_no_tun`](TunError::is_no_tun), [`is_in_use`](TunError::is_in_use)); the server prints
//! the message and exits.

use std::io;

/// Why the TUN device could not be created or set up, or a route not changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunError {
    /// The kernel refused: creating network devices and changing addresses and routes takes
    /// `CAP_NET_ADMIN`.
    #[error(
        "{action} needs root or CAP_NET_ADMIN (run as root, or grant the CAP_NET_ADMIN capability)"
    )]
    PermissionDenied {
        /// What was refused: "creating TUN \"rw0\"", "`ip route add ...`".
        action: String,
    },
    /// The TUN driver is not there, or its device node is not.
    #[error("no TUN support: /dev/net/tun is missing or has no driver behind it (load it with `modprobe tun`; in a container, pass the device in, e.g. `--device /dev/net/tun`)")]
    NoTunDevice,
    /// Another process holds a TUN of that name, or another kind of device has it.
    #[error("TUN name {name:?} is in use (another ringway running, or another device with that name?): stop it, or set tun_name to a free name")]
    Busy {
        /// The requested name.
        name: String,
    },
    /// A name the kernel would refuse.
    #[error("bad TUN name {name:?}: {reason}")]
    BadName {
        /// The requested name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Creating the device failed otherwise.
    #[error("cannot create TUN {name:?}: {source}")]
    Create {
        /// The requested name.
        name: String,
        /// What the OS said.
        source: io::Error,
    },
    /// An address or route about to be added is already there (left by another client, or
    /// added by hand).
    #[error("{what} already exists (is another ringway running, or was it added by hand?)")]
    AlreadyExists {
        /// The address or route.
        what: String,
    },
    /// The system's state does not allow what was asked.
    #[error("{0}")]
    Invalid(String),
    /// iproute2 is not installed.
    #[error("the `ip` command is missing: install iproute2 (it configures the TUN at start)")]
    IpMissing,
    /// An `ip` command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr, or why it could not run.
        detail: String,
    },
    /// This OS has no TUN support in ringway yet.
    #[error("unsupported platform: ringway cannot create TUN devices on {0} yet")]
    Unsupported(&'static str),
}

impl TunError {
    /// Whether running with more privileges would help.
    pub fn is_permission(&self) -> bool {
        matches!(self, TunError::PermissionDenied { .. })
    }

    /// Whether something of ours is already taken: the TUN name, an address or a route.
    pub fn is_in_use(&self) -> bool {
        matches!(self, TunError::Busy { .. } | TunError::AlreadyExists { .. })
    }

    /// Whether the system has no TUN driver.
    pub fn is_no_tun(&self) -> bool {
        matches!(self, TunError::NoTunDevice)
    }
}

/// Where creating the device failed.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `open("/dev/net/tun")`.
    Open,
    /// `TUNSETIFF`.
    SetIff,
}

/// Names the usual reasons creating a TUN fails. `name_taken` tells whether some network
/// device already has `name`; it is asked only for EINVAL, which is what `TUNSETIFF` answers
/// when that device is not a TUN.
#[cfg(target_os = "linux")]
pub(crate) fn create_error(
    name: &str,
    stage: Stage,
    e: io::Error,
    name_taken: impl FnOnce() -> bool,
) -> TunError {
    let errno = e.raw_os_error();
    match (stage, errno) {
        (Stage::Open, Some(libc::ENOENT | libc::ENODEV | libc::ENXIO)) => TunError::NoTunDevice,
        (Stage::Open, Some(libc::EPERM | libc::EACCES)) => TunError::PermissionDenied {
            action: "opening /dev/net/tun".to_owned(),
        },
        (Stage::SetIff, Some(libc::EPERM | libc::EACCES)) => TunError::PermissionDenied {
            action: format!("creating TUN {name:?}"),
        },
        (Stage::SetIff, Some(libc::EBUSY)) => TunError::Busy {
            name: name.to_owned(),
        },
        (Stage::SetIff, Some(libc::EINVAL)) if name_taken() => TunError::Busy {
            name: name.to_owned(),
        },
        _ => TunError::Create {
            name: name.to_owned(),
            source: e,
        },
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn classify(stage: Stage, errno: i32, taken: bool) -> TunError {
        create_error("rw0", stage, io::Error::from_raw_os_error(errno), || taken)
    }

    #[test]
    fn names_the_usual_failures() {
        use Stage::{Open, SetIff};
        for errno in [libc::ENOENT, libc::ENODEV, libc::ENXIO] {
            assert!(classify(Open, errno, false).is_no_tun(), "{errno}");
        }
        for (stage, errno) in [
            (Open, libc::EPERM),
            (Open, libc::EACCES),
            (SetIff, libc::EPERM),
            (SetIff, libc::EACCES),
        ] {
            assert!(
                classify(stage, errno, false).is_permission(),
                "{stage:?} {errno}"
            );
        }
        assert!(classify(SetIff, libc::EBUSY, false).is_in_use());
        // EINVAL names the taken name only when some device really has it.
        assert!(classify(SetIff, libc::EINVAL, true).is_in_use());
        assert!(matches!(
            classify(SetIff, libc::EINVAL, false),
            TunError::Create { .. }
        ));
        assert!(matches!(
            classify(Open, libc::EMFILE, true),
            TunError::Create { .. }
        ));
    }

    #[test]
    fn messages_name_the_fix() {
        let msg = |stage, errno| classify(stage, errno, false).to_string();
        assert_eq!(
            msg(Stage::SetIff, libc::EPERM),
            "creating TUN \"rw0\" needs root or CAP_NET_ADMIN (run as root, or grant the CAP_NET_ADMIN capability)"
        );
        assert!(msg(Stage::Open, libc::EACCES).starts_with("opening /dev/net/tun needs root"));
        let no_tun = msg(Stage::Open, libc::ENOENT);
        assert!(
            no_tun.contains("/dev/net/tun") && no_tun.contains("modprobe tun"),
            "{no_tun}"
        );
        let busy = msg(Stage::SetIff, libc::EBUSY);
        assert!(
            busy.contains("\"rw0\" is in use") && busy.contains("tun_name"),
            "{busy}"
        );
        assert_eq!(
            msg(Stage::SetIff, libc::EMFILE),
            format!(
                "cannot create TUN \"rw0\": {}",
                io::Error::from_raw_os_error(libc::EMFILE)
            )
        );
    }
}
