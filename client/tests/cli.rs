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
        "  6  server unreachable",
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
fn missing_arguments_are_a_usage_error() {
    assert_eq!(ringway(&["up"]).status.code(), Some(2));
    assert_eq!(ringway(&["down"]).status.code(), Some(2));
}
