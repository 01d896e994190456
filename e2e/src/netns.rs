//! Network namespaces that delete themselves.
//!
//! All testbed traffic lives in namespaces we create, so the root namespace never gains an
//! address or route. Names embed our PID and a counter (`rw-<pid>-<n>-s`), which keeps
//! parallel test binaries and leftovers of crashed runs apart; [`Netns`] deletes its
//! namespace on drop, also while a failing test unwinds.

use std::ffi::OsStr;
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{process, sys};

/// Where `ip netns add` mounts a namespace; opening this file gives a handle for `setns`.
const NETNS_DIR: &str = "/var/run/netns";

/// Bound for one `ip` invocation; they normally take milliseconds.
const IP_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted with `ip netns del` on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespaces `<prefix>-<suffix>` for every suffix, with `lo` up in each.
    ///
    /// The prefix is `rw-<pid>-<n>`, with `n` advanced past any name that already exists, so a
    /// namespace left by a crashed run with a recycled PID is skipped, never adopted or deleted.
    pub fn create_set<const N: usize>(suffixes: [&str; N]) -> Result<[Netns; N]> {
        let pid = std::process::id();
        let prefix = loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let prefix = format!("rw-{pid}-{n}");
            let taken = suffixes
                .iter()
                .any(|s| Self::path_of(&format!("{prefix}-{s}")).exists());
            if !taken {
                break prefix;
            }
            if n > 10_000 {
                bail!("no free namespace name for pid {pid}; clean up with `ip netns list`");
            }
        };
        let mut created = Vec::with_capacity(N);
        for s in suffixes {
            created.push(Self::create(format!("{prefix}-{s}"))?);
        }
        created
            .try_into()
            .map_err(|_| anyhow::anyhow!("namespace count mismatch"))
    }

    /// Creates one namespace with exactly this name and brings its loopback up.
    fn create(name: String) -> Result<Self> {
        process::run_ok(Command::new("ip").args(["netns", "add", &name]), IP_TIMEOUT)
            .with_context(|| format!("creating network namespace {name}"))?;
        // From here on the guard owns it, so any later failure still deletes it.
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path_of(name: &str) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(name)
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, usable with `setns`.
    pub fn path(&self) -> PathBuf {
        Self::path_of(&self.name)
    }

    /// Runs `ip -n <ns> <args>` and returns its stdout; fails with stderr on a non-zero exit.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        process::run_ok(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            IP_TIMEOUT,
        )
        .with_context(|| format!("in namespace {}", self.name))
    }

    /// A command that runs `program` inside the namespace via `ip netns exec`.
    ///
    /// `ip netns exec` execs the program without forking, so the spawned child's PID is the
    /// program's own and signals sent to it reach the program.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(&self.name).arg(program);
        cmd
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    ///
    /// `setns` changes only the calling thread, so the caller stays where it is. Sockets `f`
    /// creates belong to this namespace for their whole life, also when used from other threads
    /// afterwards. `f` must bound itself in time; if it has not finished after `limit`, this
    /// returns an error and leaves the thread to end on its own.
    pub fn run_inside<T, F>(&self, limit: Duration, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let path = self.path();
        let ns = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                let res = sys::enter_netns(&ns)
                    .context("entering namespace")
                    .and_then(|()| f());
                let _ = tx.send(res);
            })
            .context("spawning namespace thread")?;
        rx.recv_timeout(limit)
            .map_err(|_| anyhow::anyhow!("work in {} did not finish within {limit:?}", self.name))?
            .with_context(|| format!("in namespace {}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let res = process::run_ok(
            Command::new("ip").args(["netns", "del", &self.name]),
            IP_TIMEOUT,
        );
        if let Err(e) = res {
            eprintln!(
                "ringway-e2e: could not delete namespace {}: {e:#}",
                self.name
            );
        }
    }
}

/// Connects two namespaces with a veth pair, created directly inside them.
///
/// The pair is born in `a` with its peer placed in `b`, so it never appears in the root
/// namespace, and fixed interface names cannot collide between testbeds. Deleting either
/// namespace deletes the pair.
pub fn connect(
    a: &Netns,
    a_if: &str,
    a_cidr: &str,
    b: &Netns,
    b_if: &str,
    b_cidr: &str,
) -> Result<()> {
    for name in [a_if, b_if] {
        if name.len() > 15 {
            bail!("interface name {name:?} is longer than the kernel's 15 characters");
        }
    }
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])
    .context("creating veth pair")?;
    for (ns, ifname, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        ns.ip(&["addr", "add", cidr, "dev", ifname])?;
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(())
}
