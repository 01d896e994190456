//! End-to-end tests of the client's failures: each class of error gives one clear line on
//! stderr, starting `ringway:`, and its own exit status, and leaves nothing behind in the
//! client's namespace.
//!
//! Every case runs the real `ringway up` one-shot in the testbed's client namespace, bounded in
//! time, with `RUST_LOG=off` so that the error line is all that stderr holds. Cases that need
//! a changed environment run the client under a wrapper that execs it: `setpriv` (another user,
//! or root without CAP_NET_ADMIN) or `unshare --mount` with an empty tmpfs over `/dev/net`
//! (no `/dev/net/tun`; the mount lives only in that new mount namespace and dies with it).
//!
//! Same prerequisites and rules as `udp_tunnel.rs`, plus `setpriv`, `unshare` and `mount`.

mod common;

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ringway_e2e::harness::{self, Needs, Scenario};
use ringway_e2e::netstate::{self, NetState};
use ringway_e2e::testbed::{SERVER_ENDPOINT, TUN_NAME};
use ringway_e2e::{process, Testbed, TestbedOptions, Transport};

/// The client's exit statuses, as `ringway --help` documents them.
mod exit {
    pub const CONFIG: i32 = 3;
    pub const PERMISSION: i32 = 4;
    pub const UNREACHABLE: i32 = 6;
    pub const KEY_MISMATCH: i32 = 7;
    pub const NOT_AUTHORISED: i32 = 9;
    pub const NO_TUN_DEVICE: i32 = 10;
    pub const IN_USE: i32 = 11;
}

/// Bound for one failing run; every case fails within a few seconds.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// A prefix that `address_already_in_use` adds by hand before a client configured with it.
const TAKEN_ROUTE: &str = "203.0.113.0/24";
/// `--connect-timeout` for cases that talk to a server.
const CONNECT_TIMEOUT_SECS: u64 = 2;

/// The classes of failure, each with its exit status and what its message must mention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Config,
    Permission,
    NoTunDevice,
    Unreachable,
    KeyMismatch,
    NotAuthorised,
    InUse,
}

impl Class {
    const ALL: [Class; 7] = [
        Class::Config,
        Class::Permission,
        Class::NoTunDevice,
        Class::Unreachable,
        Class::KeyMismatch,
        Class::NotAuthorised,
        Class::InUse,
    ];

    fn code(self) -> i32 {
        match self {
            Class::Config => exit::CONFIG,
            Class::Permission => exit::PERMISSION,
            Class::NoTunDevice => exit::NO_TUN_DEVICE,
            Class::Unreachable => exit::UNREACHABLE,
            Class::KeyMismatch => exit::KEY_MISMATCH,
            Class::NotAuthorised => exit::NOT_AUTHORISED,
            Class::InUse => exit::IN_USE,
        }
    }

    /// Words of which the message must contain at least one (case-insensitive).
    fn any_of(self) -> &'static [&'static str] {
        match self {
            // Which key or file is checked per case (`Case::mentions`); any text passes here.
            Class::Config => &[""],
            Class::Permission => &["root", "cap_net_admin"],
            Class::NoTunDevice => &["/dev/net/tun"],
            Class::Unreachable => &["unreachable"],
            Class::KeyMismatch => &["key"],
            Class::NotAuthorised => &["authoris", "authoriz"],
            Class::InUse => &["in use", "already exists"],
        }
    }
}

/// One failing run of `ringway up`.
struct Case {
    name: &'static str,
    class: Class,
    /// Program and arguments that exec the client (empty: run it directly).
    wrapper: Vec<String>,
    config: PathBuf,
    args: Vec<String>,
    /// More words the message must contain (a config key, a TUN name).
    mentions: Vec<String>,
}

impl Case {
    fn new(name: &'static str, class: Class, config: &Path) -> Self {
        Self {
            name,
            class,
            wrapper: Vec::new(),
            config: config.to_path_buf(),
            args: Vec::new(),
            mentions: Vec::new(),
        }
    }

    fn wrapper(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| (*s).to_owned()));
        self
    }

    fn mentions(mut self, word: impl Into<String>) -> Self {
        self.mentions.push(word.into());
        self
    }
}

/// How a run ended.
struct Outcome {
    code: Option<i32>,
    stderr: String,
    stdout: String,
    elapsed: Duration,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}; stderr {:?}",
            self.code, self.elapsed, self.stderr
        )?;
        if !self.stdout.is_empty() {
            write!(f, "; stdout {:?}", self.stdout)?;
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    harness::main([
        Scenario::testbed(
            "config_errors_name_the_key",
            &[],
            config_errors_name_the_key,
        ),
        Scenario::testbed(
            "no_privilege_or_no_tun_device",
            &["setpriv", "unshare", "mount"],
            no_privilege_or_no_tun_device,
        ),
        Scenario::testbed(
            "server_unreachable_over_udp_and_tcp",
            &[],
            server_unreachable_over_udp_and_tcp,
        ),
        Scenario::testbed(
            "server_rejects_wrong_key_and_unknown_peer",
            &[],
            server_rejects_wrong_key_and_unknown_peer,
        ),
        Scenario::testbed("address_already_in_use", &["ping"], address_already_in_use),
        Scenario::new(
            "exit_statuses_are_distinct_and_documented",
            Needs::Binaries,
            exit_statuses_are_distinct_and_documented,
        ),
        Scenario::plain("config_editing_helpers", config_editing_helpers),
    ])
}

fn config_errors_name_the_key(test: &str) -> Result<()> {
    let mut bed = common::start_without_client(TestbedOptions::udp())?;
    let good = bed.take_peer_config()?;
    let text = std::fs::read_to_string(&good)?;
    let dir = bed.dir().join("configs");
    std::fs::create_dir(&dir)?;
    let variant = |file: &str, text: String| -> Result<PathBuf> {
        let path = dir.join(file);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    };
    let missing = dir.join("does-not-exist.toml");
    let cases = vec![
        Case::new("unreadable (missing file)", Class::Config, &missing)
            .mentions(missing.display().to_string()),
        Case::new("unreadable (a directory)", Class::Config, &dir)
            .mentions(dir.display().to_string()),
        Case::new(
            "invalid server_public_key",
            Class::Config,
            &variant(
                "bad-key.toml",
                replace_key(&text, "server_public_key", "\"not-a-key\"")?,
            )?,
        )
        .mentions("server_public_key"),
        Case::new(
            "invalid endpoint",
            Class::Config,
            &variant(
                "bad-endpoint.toml",
                replace_key(&text, "endpoint", "\"192.0.2.1\"")?,
            )?,
        )
        .mentions("endpoint"),
        Case::new(
            "missing private_key",
            Class::Config,
            &variant("no-private-key.toml", remove_key(&text, "private_key"))?,
        )
        .mentions("private_key"),
        Case::new(
            "unknown key",
            Class::Config,
            &variant(
                "typo.toml",
                format!("{text}endpiont = \"192.0.2.1:51820\"\n"),
            )?,
        )
        .mentions("endpiont"),
        Case::new(
            "invalid tun_name",
            Class::Config,
            &variant(
                "bad-tun.toml",
                format!("{text}tun_name = \"no spaces/please\"\n"),
            )?,
        )
        .mentions("tun_name"),
        Case::new(
            "invalid routes",
            Class::Config,
            &variant(
                "bad-routes.toml",
                format!("{text}routes = [\"203.0.113.0/33\"]\n"),
            )?,
        )
        .mentions("routes"),
    ];
    run_cases(test, &mut bed, &cases)
}

fn no_privilege_or_no_tun_device(test: &str) -> Result<()> {
    let mut bed = common::start_without_client(TestbedOptions::udp())?;
    let config = bed.take_peer_config()?;
    // Readable by `nobody`, so that its run gets as far as creating the TUN.
    let shared = bed.dir().join("readable-by-all.toml");
    std::fs::copy(&config, &shared)?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644))?;
    let cases = vec![
        Case::new("not root", Class::Permission, &shared).wrapper(&[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ]),
        Case::new("root without CAP_NET_ADMIN", Class::Permission, &config).wrapper(&[
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
        ]),
        Case::new("no /dev/net/tun", Class::NoTunDevice, &config).wrapper(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o size=64k,mode=0755 ringway-e2e /dev/net && exec \"$@\"",
            "sh",
        ]),
    ];
    run_cases(test, &mut bed, &cases)
}

fn server_unreachable_over_udp_and_tcp(test: &str) -> Result<()> {
    let mut bed = common::start_without_client(TestbedOptions::udp())?;
    let config = bed.take_peer_config()?;
    bed.stop_server(Duration::from_secs(5))?;
    let timeout = CONNECT_TIMEOUT_SECS.to_string();
    let host = SERVER_ENDPOINT.split(':').next().unwrap_or(SERVER_ENDPOINT);
    let cases: Vec<Case> = Transport::ALL
        .iter()
        .map(|t| {
            Case::new(
                match t {
                    Transport::Udp => "no server (udp)",
                    Transport::Tcp => "no server (tcp)",
                },
                Class::Unreachable,
                &config,
            )
            .args(&["--transport", t.as_str(), "--connect-timeout", &timeout])
            .mentions(host)
        })
        .collect();
    run_cases(test, &mut bed, &cases)
}

fn server_rejects_wrong_key_and_unknown_peer(test: &str) -> Result<()> {
    let mut bed = common::start_without_client(TestbedOptions::udp())?;
    let config = bed.take_peer_config()?;
    let text = std::fs::read_to_string(&config)?;

    // A second server, never started, supplies keys the first one does not know.
    let other_dir = bed.dir().join("other-server");
    let other_public = init_server(&bed, &other_dir)?;
    let other_peer = bed.dir().join("other-peer.toml");
    add_peer(&bed, &other_dir, &other_peer)?;
    let other_text = std::fs::read_to_string(&other_peer)?;

    let write = |file: &str, text: String| -> Result<PathBuf> {
        let path = bed.dir().join(file);
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(path)
    };
    // Our peer's keys, but another server's public key.
    let wrong_server = write(
        "wrong-server-key.toml",
        replace_key(&text, "server_public_key", &format!("\"{other_public}\""))?,
    )?;
    // The right server's public key, but a client key (and psk) it never authorised.
    let mut stranger = text.clone();
    for key in ["private_key", "psk"] {
        stranger = replace_key(&stranger, key, &key_value(&other_text, key)?)?;
    }
    let stranger = write("unknown-peer.toml", stranger)?;

    let timeout = CONNECT_TIMEOUT_SECS.to_string();
    let mut cases = Vec::new();
    for t in Transport::ALL {
        let args = ["--transport", t.as_str(), "--connect-timeout", &timeout];
        let (key_case, peer_case) = match t {
            Transport::Udp => ("wrong server key (udp)", "unknown peer (udp)"),
            Transport::Tcp => ("wrong server key (tcp)", "unknown peer (tcp)"),
        };
        cases.push(Case::new(key_case, Class::KeyMismatch, &wrong_server).args(&args));
        cases.push(Case::new(peer_case, Class::NotAuthorised, &stranger).args(&args));
    }
    run_cases(test, &mut bed, &cases)?;
    // Turned away, not crashed.
    bed.server().ensure_running()
}

fn address_already_in_use(test: &str) -> Result<()> {
    let mut bed = common::start(TestbedOptions::udp().extra_peers(2))?;
    let timeout = CONNECT_TIMEOUT_SECS.to_string();

    // The running client's TUN name.
    let same_tun = bed.take_peer_config()?;
    let text = std::fs::read_to_string(&same_tun)?;
    std::fs::write(&same_tun, format!("{text}tun_name = \"{TUN_NAME}\"\n"))?;

    // A route the client is configured to add, already there (as if added by hand). The
    // client gets as far as its TUN and session, then must take both away again and leave
    // this route alone.
    let taken_route = bed.take_peer_config()?;
    let text = std::fs::read_to_string(&taken_route)?;
    std::fs::write(
        &taken_route,
        format!("{text}tun_name = \"ringway1\"\nroutes = [\"{TAKEN_ROUTE}\"]\n"),
    )?;
    bed.client_ns()
        .ip(&["route", "add", TAKEN_ROUTE, "dev", "veth-rw-c"])?;

    let cases = [
        Case::new(
            "TUN name taken by a running client",
            Class::InUse,
            &same_tun,
        )
        .args(&["--connect-timeout", &timeout])
        .mentions(TUN_NAME),
        Case::new(
            "configured route already present",
            Class::InUse,
            &taken_route,
        )
        .args(&["--connect-timeout", &timeout])
        .mentions(TAKEN_ROUTE),
    ];
    run_cases(test, &mut bed, &cases)?;
    // The failed clients must not have taken the running one's TUN or routes with them.
    bed.ping(2)?;
    bed.ensure_running()
}

/// The exit statuses the tests expect are pairwise distinct and each is in `ringway --help`.
fn exit_statuses_are_distinct_and_documented(_test: &str) -> Result<()> {
    let bins = ringway_e2e::binaries::Binaries::locate()?;
    for (i, a) in Class::ALL.iter().enumerate() {
        for b in &Class::ALL[i + 1..] {
            ensure!(
                a.code() != b.code(),
                "{a:?} and {b:?} share exit status {}",
                a.code()
            );
        }
    }
    let out = process::run(
        Command::new(&bins.client).args(["up", "--help"]),
        Duration::from_secs(10),
    )?;
    let help = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "`ringway up --help` failed: {help}");
    let documented: Vec<i32> = help
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    for class in Class::ALL {
        ensure!(
            documented.contains(&class.code()),
            "exit status {} ({class:?}) is not in `ringway up --help`:\n{help}",
            class.code()
        );
    }
    Ok(())
}

/// Runs every case, then fails listing every case that did not behave.
fn run_cases(test: &str, bed: &mut Testbed, cases: &[Case]) -> Result<()> {
    let mut failures = Vec::new();
    for case in cases {
        match run_case(bed, case) {
            Ok(outcome) => println!("{test}: {}: ok, {outcome}", case.name),
            Err(e) => {
                println!("{test}: {}: FAILED: {e:#}", case.name);
                failures.push(format!("{}: {e:#}", case.name));
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// Runs one case and checks its exit status, its one stderr line, and that the client
/// namespace is as it was.
fn run_case(bed: &Testbed, case: &Case) -> Result<Outcome> {
    let before = NetState::capture(bed.client_ns())?;
    let mut cmd = bed.client_command(&case.wrapper);
    cmd.arg("up")
        .arg(&case.config)
        .args(&case.args)
        .env("RUST_LOG", "off");
    let start = Instant::now();
    let out = process::run(&mut cmd, RUN_LIMIT)?;
    let outcome = Outcome {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        elapsed: start.elapsed(),
    };
    let want = case.class.code();
    ensure!(
        outcome.code == Some(want),
        "want exit status {want} ({:?}); got {outcome}",
        case.class
    );
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    ensure!(
        lines.len() == 1 && lines[0].starts_with("ringway: "),
        "stderr is not one `ringway: ...` line: {outcome}"
    );
    let message = lines[0].to_lowercase();
    ensure!(
        case.class
            .any_of()
            .iter()
            .any(|w| message.contains(&w.to_lowercase())),
        "the message mentions none of {:?}: {outcome}",
        case.class.any_of()
    );
    for word in &case.mentions {
        ensure!(
            message.contains(&word.to_lowercase()),
            "the message does not mention {word:?}: {outcome}"
        );
    }
    let after = NetState::capture(bed.client_ns())?;
    let left = before.changes(&after);
    ensure!(
        left.is_empty(),
        "the failed client left changes behind:\n{}",
        netstate::describe(&left)
    );
    Ok(outcome)
}

/// The config `text` with `key`'s value replaced by `value` (a TOML value, quotes included).
fn replace_key(text: &str, key: &str, value: &str) -> Result<String> {
    let mut found = false;
    let out: String = text
        .lines()
        .map(|line| {
            if line_key(line) == Some(key) {
                found = true;
                format!("{key} = {value}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    ensure!(found, "no `{key}` in the config:\n{text}");
    Ok(out)
}

/// The config `text` without `key`.
fn remove_key(text: &str, key: &str) -> String {
    text.lines()
        .filter(|line| line_key(line) != Some(key))
        .flat_map(|line| [line, "\n"])
        .collect()
}

/// The TOML value (quotes included) of `key` in `text`.
fn key_value(text: &str, key: &str) -> Result<String> {
    text.lines()
        .find(|line| line_key(line) == Some(key))
        .and_then(|line| line.split_once('='))
        .map(|(_, v)| v.trim().to_owned())
        .with_context(|| format!("no `{key}` in:\n{text}"))
}

/// The key of a `key = value` line.
fn line_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.starts_with('#')).then_some(key)
}

/// `ringway-server init` into `dir`; returns the new server's public key.
fn init_server(bed: &Testbed, dir: &Path) -> Result<String> {
    let out = process::run_ok(
        Command::new(&bed.binaries().server)
            .arg("init")
            .arg("--dir")
            .arg(dir)
            .args(["--listen", SERVER_ENDPOINT, "--pool", "198.18.0.0/24"]),
        Duration::from_secs(30),
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("public key:"))
        .map(|k| k.trim().to_owned())
        .with_context(|| format!("no `public key:` in the output of init:\n{out}"))
}

/// `ringway-server add-peer` into the server directory `dir`, writing the client config `out`.
fn add_peer(bed: &Testbed, dir: &Path, out: &Path) -> Result<()> {
    process::run_ok(
        Command::new(&bed.binaries().server)
            .args(["add-peer", "stranger", "--dir"])
            .arg(dir)
            .args(["--endpoint", SERVER_ENDPOINT, "--out"])
            .arg(out),
        Duration::from_secs(30),
    )?;
    Ok(())
}

fn config_editing_helpers(_test: &str) -> Result<()> {
    let text = "# comment = x\nendpoint = \"a:1\"\npsk = \"P\"\n";
    assert_eq!(
        replace_key(text, "psk", "\"Q\"").unwrap(),
        "# comment = x\nendpoint = \"a:1\"\npsk = \"Q\"\n"
    );
    assert!(replace_key(text, "cipher", "\"x\"").is_err());
    assert_eq!(remove_key(text, "endpoint"), "# comment = x\npsk = \"P\"\n");
    assert_eq!(key_value(text, "endpoint").unwrap(), "\"a:1\"");
    Ok(())
}
