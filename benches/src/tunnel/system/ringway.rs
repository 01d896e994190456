//! One build of Ringway over one transport: the e2e testbed with one client.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ringway_e2e::counters::ServerCounters;
use ringway_e2e::path::TunnelPath;
use ringway_e2e::process;
use ringway_e2e::{Testbed, TestbedOptions, Transport, SERVER_TUNNEL_IP};

use super::{Running, System, TunnelProcess};
use crate::tunnel::build::Build;

/// How long a stopping server may take before it counts as a failed run (its contract is 1 s).
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Which I/O backend the server is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerIo {
    /// Whatever the server does without `--io` (io_uring).
    Default,
    /// `--io tokio`: the server's tokio backend, for comparison with its io_uring loop.
    Tokio,
}

/// Ringway: one build, one transport, one server backend.
#[derive(Debug, Clone)]
pub struct Ringway {
    /// The outside transport.
    pub transport: Transport,
    /// The server's I/O backend.
    pub io: ServerIo,
    /// The binaries.
    pub build: Build,
    /// Whether tables name the build (more than one build in the run).
    pub show_build: bool,
}

struct RunningRingway {
    bed: Testbed,
}

impl Ringway {
    /// The server's arguments: the build's, then the backend's.
    fn server_args(&self) -> Vec<String> {
        let mut args = self.build.server_args.clone();
        if self.io == ServerIo::Tokio {
            args.extend(["--io".to_owned(), "tokio".to_owned()]);
        }
        args
    }
}

impl System for Ringway {
    fn name(&self) -> String {
        let io = match self.io {
            ServerIo::Default => "",
            ServerIo::Tokio => "-tokio",
        };
        let base = format!("ringway-{}{io}", self.transport);
        if self.show_build {
            format!("{base}@{}", self.build.label)
        } else {
            base
        }
    }

    fn build(&self) -> Option<&Build> {
        Some(&self.build)
    }

    fn describe(&self) -> String {
        let server = match self.io {
            ServerIo::Default => "one io_uring thread",
            ServerIo::Tokio => "`--io tokio`",
        };
        let mut d = format!(
            "Ringway over {} (build {}), AES-256-GCM; server {server}, client tokio",
            self.transport, self.build.label
        );
        for (what, args) in [
            ("server", &self.server_args()),
            ("client", &self.build.client_args),
        ] {
            if !args.is_empty() {
                d.push_str(&format!("; {what} args `{}`", args.join(" ")));
            }
        }
        d
    }

    /// For the tokio backend: checks that this build's server has `--io` at all, so an
    /// older build fails once with that reason instead of once per run.
    fn prepare(&self) -> Result<()> {
        if self.io == ServerIo::Default {
            return Ok(());
        }
        let server = &self.build.binaries.server;
        let out = process::run(
            std::process::Command::new(server).args(["run", "--help"]),
            Duration::from_secs(10),
        )
        .with_context(|| format!("asking {} for its options", server.display()))?;
        let help = String::from_utf8_lossy(&out.stdout);
        if !offers_io(&help) {
            bail!(
                "{} (build {}) has no `run --io` option, so no tokio backend",
                server.display(),
                self.build.label
            );
        }
        Ok(())
    }

    fn setup_secs(&self) -> f64 {
        0.4
    }

    fn start(&self) -> Result<Box<dyn Running>> {
        let opts = TestbedOptions::new(self.transport)
            .binaries(self.build.binaries.clone())
            .server_args(self.server_args())
            .client_args(self.build.client_args.iter().cloned());
        let bed = Testbed::start(opts).with_context(|| format!("starting {}", self.name()))?;
        Ok(Box::new(RunningRingway { bed }))
    }
}

/// Whether `ringway-server run --help` lists the `--io` option.
fn offers_io(help: &str) -> bool {
    help.split_whitespace()
        .any(|word| word == "--io" || word.starts_with("--io="))
}

impl Running for RunningRingway {
    fn path(&self) -> TunnelPath<'_> {
        TunnelPath {
            server_ns: self.bed.server_ns(),
            server_ip: SERVER_TUNNEL_IP,
            client_ns: self.bed.client_ns(),
            client_ip: self.bed.client_tunnel_ip(),
        }
    }

    fn processes(&self) -> Vec<TunnelProcess> {
        vec![
            TunnelProcess {
                role: "server",
                pid: self.bed.server_pid(),
            },
            TunnelProcess {
                role: "client",
                pid: self.bed.client_pid(),
            },
        ]
    }

    fn client_counters(&mut self) -> BTreeMap<String, u64> {
        let client = self.bed.primary_client();
        let Ok(status) = self.bed.client_status(&client) else {
            return BTreeMap::new();
        };
        let mut out = BTreeMap::new();
        for group in ["counters", "io", "queue_out", "queue_in"] {
            if let Some(obj) = status[group].as_object() {
                for (name, value) in obj {
                    if let Some(v) = value.as_u64() {
                        out.insert(format!("client_{group}_{name}"), v);
                    }
                }
            }
        }
        out
    }

    fn finish(mut self: Box<Self>) -> Result<Option<ServerCounters>> {
        let stopped = self.bed.stop_server(STOP_LIMIT);
        let res = stopped.and_then(|t| {
            anyhow::ensure!(t.status.success(), "the server exited {}", t.status);
            Ok(self.bed.final_server_counters())
        });
        self.bed.explain(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringway_e2e::binaries::Binaries;

    fn build(label: &str, server_args: &[&str]) -> Build {
        Build {
            label: label.into(),
            dir: "/nonexistent".into(),
            commit: None,
            binaries: Binaries {
                server: "/nonexistent/ringway-server".into(),
                client: "/nonexistent/ringway".into(),
            },
            server_args: server_args.iter().map(|s| (*s).to_owned()).collect(),
            client_args: Vec::new(),
        }
    }

    #[test]
    fn tokio_systems_pass_the_backend_after_the_builds_args() {
        let tokio = Ringway {
            transport: Transport::Tcp,
            io: ServerIo::Tokio,
            build: build("new", &["--fair-queue", "off"]),
            show_build: true,
        };
        assert_eq!(tokio.name(), "ringway-tcp-tokio@new");
        assert_eq!(
            tokio.server_args(),
            ["--fair-queue", "off", "--io", "tokio"]
        );
        assert!(
            tokio.describe().contains("--io tokio"),
            "{}",
            tokio.describe()
        );
        let plain = Ringway {
            io: ServerIo::Default,
            show_build: false,
            ..tokio
        };
        assert_eq!(plain.name(), "ringway-tcp");
        assert_eq!(plain.server_args(), ["--fair-queue", "off"]);
    }

    #[test]
    fn the_io_option_is_found_in_the_help() {
        assert!(!offers_io(
            "Usage: ringway-server run --config <CONFIG>\n  --iodine x"
        ));
        assert!(offers_io("Options:\n      --io <IO>  uring, tokio or auto"));
        assert!(offers_io("  --io=<IO>"));
    }
}
