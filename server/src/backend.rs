//! Which loop runs the data path: `server.io` / `--io`, decided once at start, before the
//! TUN is opened (its blocking mode depends on it).

use crate::config::IoBackend;
use crate::uring::DriverError;

/// The backend to run for `asked`, given whether io_uring can be set up here (`probe`, run
/// only for `auto`): `auto` takes io_uring, or tokio with the warning to log where the kernel
/// or a policy refuses io_uring. Any other probe failure is an error, as are the explicit
/// choices' own failures later.
pub fn choose(
    asked: IoBackend,
    probe: impl FnOnce() -> Result<(), DriverError>,
) -> Result<(IoBackend, Option<String>), DriverError> {
    match asked {
        IoBackend::Auto => match probe() {
            Ok(()) => Ok((IoBackend::Uring, None)),
            Err(e @ (DriverError::NotPermitted | DriverError::Setup(_))) => Ok((
                IoBackend::Tokio,
                Some(format!(
                    "{e}; running the tokio backend instead (set server.io = \"tokio\" to say so)"
                )),
            )),
            Err(e) => Err(e),
        },
        chosen => Ok((chosen, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_tokio_with_one_warning_only_where_io_uring_is_refused() {
        let (b, warning) = choose(IoBackend::Auto, || Ok(())).unwrap();
        assert_eq!((b, warning), (IoBackend::Uring, None));
        let (b, warning) = choose(IoBackend::Auto, || Err(DriverError::NotPermitted)).unwrap();
        assert_eq!(b, IoBackend::Tokio);
        let warning = warning.unwrap();
        assert!(warning.contains("io_uring is not permitted"), "{warning}");
        assert!(warning.contains("tokio backend"), "{warning}");
        let enosys = std::io::Error::from_raw_os_error(libc::ENOSYS);
        let (b, _) = choose(IoBackend::Auto, || Err(DriverError::Setup(enosys))).unwrap();
        assert_eq!(b, IoBackend::Tokio);
    }

    #[test]
    fn an_explicit_choice_is_kept_and_never_probed() {
        for asked in [IoBackend::Uring, IoBackend::Tokio] {
            let (b, warning) = choose(asked, || panic!("probed")).unwrap();
            assert_eq!((b, warning), (asked, None));
        }
    }
}
