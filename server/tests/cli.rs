//! The built `ringway-server` binary refuses bad values at start, from the
//! file or the command line alike: exit status 78 (EX_CONFIG), one line on
//! stderr naming the key, no panic. Validation runs before the TUN device is
//! created, so this needs no root.
//!
//! Should validation ever wrongly pass, the server would go on to create a TUN
//! device: when these tests run as root, each server therefore runs in a
//! network namespace of its own (`unshare --net`), so nothing can appear in
//! the host's, and a server still running after the bound is killed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringway-server");
/// Bound on one run: validation takes milliseconds; only a server that
/// wrongly started runs this long.
const BOUND: Duration = Duration::from_secs(30);
const EX_CONFIG: i32 = 78;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("ringway-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// A server directory written by `ringway-server init`.
fn server_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    let out = Command::new(BIN)
        .args(["init", "--dir"])
        .arg(&dir.0)
        .args(["--listen", "127.0.0.1:51820", "--pool", "198.18.0.0/24"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

struct Outcome {
    status: Option<i32>,
    stderr: String,
}

/// Runs `ringway-server run --config CONFIG ARGS...` to its end.
fn run(config: &Path, args: &[&str]) -> Outcome {
    let mut cmd = if running_as_root() {
        let mut c = Command::new("unshare");
        c.args(["--net", "--"]).arg(BIN);
        c
    } else {
        Command::new(BIN)
    };
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("cannot start ringway-server (or unshare, as root)");
    let deadline = Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringway-server {args:?} was still running after {BOUND:?}: it accepted a bad value");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Outcome {
        status: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn assert_refused(o: &Outcome, args: &[&str], key: &str) {
    assert_eq!(o.status, Some(EX_CONFIG), "{args:?}: stderr: {}", o.stderr);
    assert!(
        !o.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        o.stderr
    );
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one line, got {:?}",
        o.stderr
    );
    assert!(
        lines[0].contains(key),
        "{args:?}: {:?} does not name {key}",
        lines[0]
    );
}

#[test]
fn bad_command_line_values_are_refused_naming_the_key() {
    let dir = server_dir("flags");
    let config = dir.0.join("server.toml");
    let cases: [(&[&str], &str); 8] = [
        (&["--ring-entries", "65536"], "uring.ring_entries"),
        (&["--tx-slots", "0"], "uring.tx_slots"),
        (&["--tun-rx-slots", "0"], "uring.tun_rx_slots"),
        (&["--udp-rx-slots", "0"], "uring.udp_rx_slots"),
        // 64 + 32 + 512 slots and 4 fixed requests need 1024 entries.
        (
            &["--ring-entries", "64"],
            "uring.ring_entries: 64 is too small",
        ),
        (&["--tx-slots", "2000"], "use at least 4096"),
        (
            &["--tcp-handshake-timeout-secs", "0"],
            "tcp.handshake_timeout_secs",
        ),
        (
            &["--offload", "tso"],
            "server.offload: unknown offload mode \"tso\"",
        ),
    ];
    for (args, key) in cases {
        assert_refused(&run(&config, args), args, key);
    }
}

#[test]
fn bad_file_values_are_refused_the_same_way() {
    let dir = server_dir("file");
    let config = dir.0.join("server.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("tx_slots = 512"),
        "init's config changed: {text}"
    );
    std::fs::write(&config, text.replace("tx_slots = 512", "tx_slots = 0")).unwrap();
    assert_refused(&run(&config, &[]), &[], "uring.tx_slots");
    // The command line replaces the file's value before anything is checked.
    assert_refused(
        &run(&config, &["--tx-slots", "8", "--ring-entries", "3"]),
        &[],
        "uring.ring_entries: 3",
    );
    let missing = dir.0.join("missing.toml");
    assert_refused(&run(&missing, &[]), &[], "missing.toml");
}
