//! Which interface names the kernel accepts.

/// The longest interface name: `IFNAMSIZ` (16) less the terminating NUL.
pub const MAX_NAME_LEN: usize = 15;

/// Checks `name` the way the kernel's `dev_valid_name` does, so a bad name is refused with a
/// reason before any ioctl (which would only say EINVAL).
///
/// A `%d` in the name is the kernel's "next free number" pattern and is allowed: the name the
/// device really got is [`Tun::name`](crate::Tun::name).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} bytes long"));
    }
    if name == "." || name == ".." {
        return Err("must not be \".\" or \"..\"".to_owned());
    }
    if name.contains(['/', ':', '\0']) || name.contains(char::is_whitespace) {
        return Err("must not contain '/', ':', NUL or spaces".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_refuses() {
        for good in ["ringway0", "rw-test", "a", "tun%d", "x".repeat(15).as_str()] {
            assert_eq!(check_name(good), Ok(()), "{good:?}");
        }
        for (bad, why) in [
            ("", "1 to 15"),
            ("sixteen-chars-xx", "1 to 15"),
            (".", "\".\""),
            ("..", "\".\""),
            ("a/b", "'/'"),
            ("a:b", "':'"),
            ("a b", "spaces"),
            ("a\tb", "spaces"),
            ("a\0b", "NUL"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e:?} should mention {why}");
        }
    }
}
