//! Child processes that cannot outlive the test that started them.
//!
//! Every server, client and iperf3 we spawn is wrapped in a [`Process`] guard: dropping it (also
//! while a failed assertion unwinds) sends SIGTERM to that one PID, waits up to
//! [`KILL_GRACE`], then SIGKILLs and reaps it. We never signal by name, so parallel runs and
//! unrelated processes are safe. One-shot commands go through [`run`], which bounds them in
//! time the same way.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys;

/// How long a dropped guard lets its process shut down cleanly before SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How often exit status is polled while waiting.
const POLL: Duration = Duration::from_millis(5);

/// Signals the harness sends to its own children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: the contract's "please shut down".
    Term,
    /// SIGINT: what Ctrl-C sends; the binaries treat it like SIGTERM.
    Int,
    /// SIGKILL: last resort.
    Kill,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Self::Term => libc::SIGTERM,
            Self::Int => libc::SIGINT,
            Self::Kill => libc::SIGKILL,
        }
    }
}

/// How a process ended after we asked it to.
#[derive(Debug, Clone, Copy)]
pub struct Termination {
    /// Its exit status.
    pub status: ExitStatus,
    /// Time from sending the signal until the kernel reported the exit.
    pub elapsed: Duration,
}

/// A spawned long-running process, killed by PID when dropped.
///
/// Its stdout and stderr both go to a log file so that failures can quote the tail.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    /// Set once reaped; from then on the PID may belong to someone else and is never signalled.
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `cmd` with stdin closed and stdout/stderr appended to `log`.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command, log: &Path) -> Result<Self> {
        let name = name.into();
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log file {}", log.display()))?;
        let err = out.try_clone().context("duplicating log file handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(Self {
            name,
            child,
            log: log.to_path_buf(),
            status: None,
        })
    }

    /// The name given at spawn time, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's PID (with `ip netns exec`, which execs, this is the real program's PID).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file that receives the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("polling {}", self.name))?;
        }
        Ok(self.status)
    }

    /// Fails with the log tail if the process has already exited; used while it should be up.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_status()? {
            bail!(
                "{} exited early ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// Sends `signal` unless the process has already been reaped.
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        // Not reaped yet, so the PID is still ours (a zombie keeps it reserved).
        sys::send_signal(self.pid(), signal.raw())
            .with_context(|| format!("sending {signal:?} to {} (pid {})", self.name, self.pid()))
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGTERM and measures how long the process takes to exit.
    ///
    /// The clock starts just before `kill(2)` and stops when the kernel reports the exit
    /// through a pidfd, so neither spawning nor our polling is in the figure (a pidfd is
    /// unavailable only before Linux 5.3; then exit is polled every 5 ms). Fails if it is
    /// still running after `limit`; the guard then SIGKILLs it on drop. An already-exited
    /// process is reported with `elapsed` zero.
    pub fn terminate(&mut self, limit: Duration) -> Result<Termination> {
        if let Some(status) = self.try_status()? {
            return Ok(Termination {
                status,
                elapsed: Duration::ZERO,
            });
        }
        // Opened before the signal, while the child is certainly unreaped (see `pidfd_open`).
        let pidfd = sys::pidfd_open(self.pid()).ok();
        let start = Instant::now();
        self.signal(Signal::Term)?;
        let exited_at = match &pidfd {
            Some(fd) => {
                let exited = sys::wait_readable(fd, limit)
                    .with_context(|| format!("waiting for {} to exit", self.name))?;
                exited.then(Instant::now)
            }
            None => self.wait_timeout(limit)?.map(|_| Instant::now()),
        };
        let Some(exited_at) = exited_at else {
            bail!(
                "{} (pid {}) still running {limit:?} after SIGTERM; last lines of its log:\n{}",
                self.name,
                self.pid(),
                self.log_tail(20)
            );
        };
        // It has exited, so reaping cannot block for long.
        let status = match self.wait_timeout(KILL_GRACE)? {
            Some(status) => status,
            None => bail!("{} exited but could not be reaped", self.name),
        };
        Ok(Termination {
            status,
            elapsed: exited_at.duration_since(start),
        })
    }

    /// The last `lines` lines of the log (at most the last 64 KiB are read).
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.try_status(), Ok(Some(_))) {
            return;
        }
        let _ = self.signal(Signal::Term);
        if matches!(self.wait_timeout(KILL_GRACE), Ok(Some(_))) {
            return;
        }
        eprintln!(
            "ringway-e2e: {} (pid {}) ignored SIGTERM for {KILL_GRACE:?}; killing",
            self.name,
            self.pid()
        );
        // `Child::kill` is SIGKILL to this exact PID, and `wait` reaps it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of a text file, or a note saying why it could not be read.
pub fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            if tail.is_empty() {
                "(empty)".to_owned()
            } else {
                tail
            }
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs a one-shot command to completion, killing it if it takes longer than `limit`.
///
/// Output is captured through pipes drained by helper threads, so a chatty command cannot
/// block on a full pipe while we wait for it.
pub fn run(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().context("polling child")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {limit:?}; killed it");
        }
        std::thread::sleep(POLL);
    };
    // A grandchild could keep a pipe open after the child exits; don't wait for it forever.
    let grace = Duration::from_secs(2);
    Ok(Output {
        status,
        stdout: stdout.recv_timeout(grace).unwrap_or_default(),
        stderr: stderr.recv_timeout(grace).unwrap_or_default(),
    })
}

/// Like [`run`], but fails unless the command exits 0; returns its stdout.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Result<String> {
    let out = run(cmd, limit)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads a pipe to its end on a helper thread; the bytes arrive on the returned channel.
fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_captures_output_and_status() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn run_kills_on_timeout() {
        let start = Instant::now();
        let err = run(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn terminate_measures_exit_and_drop_reaps() {
        let dir = crate::TempDir::new("ringway-e2e-unit").unwrap();
        let log = dir.path().join("sleep.log");
        let mut p = Process::spawn("sleep", Command::new("sleep").arg("30"), &log).unwrap();
        p.ensure_running().unwrap();
        let t = p.terminate(Duration::from_secs(5)).unwrap();
        assert!(!t.status.success());
        assert!(t.elapsed < Duration::from_secs(5));
        // Second terminate is a no-op on a reaped process.
        p.terminate(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn drop_escalates_to_sigkill() {
        let dir = crate::TempDir::new("ringway-e2e-unit").unwrap();
        let log = dir.path().join("stubborn.log");
        let p = Process::spawn(
            "stubborn",
            // Short sleeps so that nothing outlives the SIGKILLed shell by more than 100 ms.
            Command::new("sh").args([
                "-c",
                "trap '' TERM; echo trapped; while :; do sleep 0.1; done",
            ]),
            &log,
        )
        .unwrap();
        // The trap must be in place before the drop's SIGTERM, or the shell simply dies.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !tail(&log, 5).contains("trapped") {
            assert!(Instant::now() < deadline, "the shell never set its trap");
            std::thread::sleep(POLL);
        }
        let start = Instant::now();
        drop(p);
        // Only a lower bound: the upper one would be a guess about this machine's load.
        assert!(start.elapsed() >= KILL_GRACE);
    }

    #[test]
    fn terminate_times_from_the_signal() {
        let dir = crate::TempDir::new("ringway-e2e-unit").unwrap();
        let log = dir.path().join("sleep.log");
        let mut p = Process::spawn("sleep", Command::new("sleep").arg("30"), &log).unwrap();
        let before = Instant::now();
        let t = p.terminate(Duration::from_secs(30)).unwrap();
        assert!(t.elapsed <= before.elapsed(), "{t:?}");
        assert_eq!(p.try_status().unwrap(), Some(t.status));
    }

    #[test]
    fn tail_keeps_last_lines() {
        let dir = crate::TempDir::new("ringway-e2e-unit").unwrap();
        let path = dir.path().join("t.log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&path, 2), "c\nd");
        assert!(tail(&dir.path().join("missing"), 2).starts_with("(cannot read"));
    }
}
