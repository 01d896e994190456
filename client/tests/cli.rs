//! The `ringway` binary's failures that need neither root nor a server: each is
//! one `ringway: ...` line on stderr with its documented exit status.

use std::process::{Command, Output};

fn ringway(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ringway-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn help_documents_the_exit_statuses() {
    let out = ringway(&["up", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Exit status:",
        "  3  bad config file",
        "  4  permission denied",
        "  6  server unreachable",
        "  7  server key mismatch",
        "  8  session lost",
        "  9  peer not authorised",
        " 10  no /dev/net/tun",
        " 11  address already in use",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
}

#[test]
fn every_transport_is_accepted_and_others_are_usage_errors() {
    // Accepted: the run gets as far as reading the (missing) config.
    for transport in ["udp", "tcp", "auto"] {
        let out = ringway(&["up", "/nonexistent/ringway.toml", "--transport", transport]);
        assert_eq!(out.status.code(), Some(3), "{transport}: {}", stderr(&out));
    }
    let out = ringway(&["up", "/nonexistent/ringway.toml", "--transport", "quic"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("possible values: udp, tcp, auto"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_config_is_a_config_error() {
    let out = ringway(&["up", "/nonexistent/ringway.toml"]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.starts_with("ringway: cannot read /nonexistent/ringway.toml"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_bad_key_is_named() {
    let path = temp_config(
        "typo",
        "endpoint = \"192.0.2.1:51820\"\nserver_publickey = \"x\"\n",
    );
    let out = ringway(&["up", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("line 2: unknown field `server_publickey`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn every_up_option_is_accepted() {
    let out = ringway(&[
        "up",
        "/nonexistent/ringway.toml",
        "--full-tunnel",
        "--stats",
        "1",
        "--no-reconnect",
        "--status-socket",
        "/tmp/x.sock",
        "--connect-timeout",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = ringway(&["up", "/nonexistent/ringway.toml", "--stats", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_route_is_named() {
    let path = temp_config(
        "route",
        "endpoint = \"192.0.2.1:51820\"\n\
         server_public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n\
         private_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n\
         routes = [\"10.1.0.0/8\"]\n",
    );
    let out = ringway(&["up", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("`routes`"), "{err}");
    assert!(err.contains("did you mean \"10.0.0.0/8\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn status_without_a_running_client_says_so() {
    let out = ringway(&["status", "--tun", "rw-not-running-x"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("ringway: no running ringway client for rw-not-running-x"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = ringway(&["status", "--socket", "/nonexistent/rw.sock", "--json"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/rw.sock"),
        "{}",
        stderr(&out)
    );

    let out = ringway(&["status", "--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 13  no running client"));
}

#[test]
fn missing_arguments_are_a_usage_error() {
    assert_eq!(ringway(&["up"]).status.code(), Some(2));
    assert_eq!(ringway(&["down"]).status.code(), Some(2));
}
